"""Classify images with a checkpoint or an exported MindIR and print the top-k classes.

    python infer.py --model deit_small.ckpt --config_path config/deit_small_patch16_224.yaml cat.jpg dog.png
    python infer.py --model deit_small_ppt.mindir cat.jpg dog.png

Images are preprocessed as in evaluation (the config's data settings; for a MindIR written by export.py the
settings stored in it when no config is given). A checkpoint needs the config to build the model. A MindIR
fixes the batch size and image size: images are run in chunks of that batch size (the last one padded).
Class names: --class_names FILE, else ImageNet-1k's for 1000 classes, else the demo dataset's folders.
"""
from pathlib import Path
from typing import Optional, Sequence

from src.cli import ArgumentParser, UsageError, add_common_args, load_args_config, run, setup_context
from src.factory import build_model
from src.inference import (CellPredictor, MindIRPredictor, Preprocess, predict, preprocess_from_config,
                           preprocess_images, resolve_class_names, topk_probs)

WEIGHT_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".safetensors")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    # An empty default makes the config optional: a MindIR from export.py carries its data settings.
    add_common_args(parser, ckpt="none", default_config="")
    parser.add_argument("--model", required=True, help="weights (.ckpt, .pth, .safetensors) or a .mindir")
    parser.add_argument("--class_names", default=None, help="text file with one class name per line")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per image (default: 5)")
    parser.add_argument("images", nargs="+", help="image files (not folders)")
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error(f"--topk: expected an int >= 1, got {args.topk}")
    folders = [p for p in args.images if Path(p).is_dir()]
    if folders:
        raise UsageError(f"{folders[0]}: is a folder, not an image file (infer.py takes image files; "
                         f"visualize.py also searches folders)")
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:  # before loading anything: a typo should not cost a model load
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"{missing[0]}: no such image file{more}")
    model_path = Path(args.model)
    if not model_path.is_file():
        raise UsageError(f"--model {model_path}: no such file")
    is_mindir = model_path.suffix.lower() == ".mindir"
    if not is_mindir and model_path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise UsageError(f"--model {model_path}: expected a .mindir or weights ({', '.join(WEIGHT_SUFFIXES)})")
    if not args.config_path and (args.overrides or not is_mindir):
        raise UsageError(f"--model {model_path}: --config_path is required "
                         f"{'with --set' if is_mindir else 'to build the model of a checkpoint'}")
    cfg = load_args_config(args) if args.config_path else None
    setup_context(args.device_target, args.mode)

    if is_mindir:
        predictor = MindIRPredictor(model_path)
        if cfg is not None:
            pre = preprocess_from_config(cfg)
            if pre.img_size != predictor.input_shape[2] or cfg["model"]["num_classes"] != predictor.num_classes:
                raise UsageError(f"{args.config_path}: the config's model ({pre.img_size} px, "
                                 f"{cfg['model']['num_classes']} classes) is not the one exported to {model_path} "
                                 f"({predictor.input_shape[2]} px, {predictor.num_classes} classes)")
        elif predictor.info is not None:
            pre = Preprocess.from_dict(predictor.info, str(model_path))
        else:
            raise UsageError(f"--model {model_path}: the file stores no preprocessing settings "
                             f"(not written by export.py): pass --config_path")
    else:
        pre = preprocess_from_config(cfg)
        batch_size = min(len(args.images), cfg["data"]["batch_size"])
        predictor = CellPredictor(build_model(cfg, str(model_path)), batch_size)
    names = resolve_class_names(predictor.num_classes, args.class_names, pre.data_path)

    probs, idx = topk_probs(predict(predictor, preprocess_images(args.images, pre)), args.topk)
    for path, p_row, i_row in zip(args.images, probs, idx):
        print(path)
        for rank, (p, i) in enumerate(zip(p_row, i_row), 1):
            print(f"  {rank}. {p:7.2%}  {names[i]} (class {i})")


if __name__ == "__main__":
    run(main)
