"""What a config builds: the model (with its weights) and its data pipelines. Engine code (training,
evaluation, export, analysis) builds through here, so the config's structure is read in one place."""
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import configured_spec, model_kwargs
from .data import DatasetInfo, create_dataset, resolve_data_root
from .io.checkpoint import load_weights
from .models import VisionTransformer, create_model

__all__ = ["build_model", "dataset_from_config"]


def build_model(cfg: Mapping[str, Any], ckpt_file: str | None = None, with_ppt: bool = True,
                drop_head: bool = False) -> VisionTransformer:
    """The configured model (its token reduction as configured, or none with ``with_ppt=False``) with
    ``ckpt_file`` loaded strictly. Without a checkpoint the weights are random: callers that need trained
    weights must require one."""
    kwargs = model_kwargs(cfg)
    if not with_ppt:
        kwargs["ppt"] = None
    model = create_model(**kwargs)
    if ckpt_file is not None:
        if not Path(ckpt_file).is_file():
            raise FileNotFoundError(f"weights {ckpt_file}: no such file")
        load_weights(model, ckpt_file, drop_head=drop_head)
    return model


def dataset_from_config(cfg: Mapping[str, Any], split: str, *, training: bool = False,
                        data_path: str | None = None, batch_size: int | None = None,
                        **options: Any) -> tuple[Any, DatasetInfo]:
    """``create_dataset`` on ``<data_path or data.path>/<split>`` (``demo`` is the built-in set) with the
    config's preprocessing, batch size, workers and classes, and for training its augmentation and repeated
    augmentation. ``options`` go to ``create_dataset`` as they are (seed, num_shards, shard_id, shuffle,
    strict, pad_last)."""
    data = cfg["data"]
    kwargs = dict(crop_pct=data["crop_pct"], interpolation=data["interpolation"], mean=data["mean"],
                  std=data["std"], num_workers=data["num_workers"], num_classes=cfg["model"]["num_classes"])
    if training:
        kwargs.update(aug=cfg["aug"], repeated_aug=data["repeated_aug"])
    root = resolve_data_root(data_path or data["path"])
    return create_dataset(root, split, configured_spec(cfg).img_size, batch_size or data["batch_size"],
                          training=training, **kwargs, **options)
