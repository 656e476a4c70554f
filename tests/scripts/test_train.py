"""Training through msrun and train.py (slow): two data-parallel ranks stay identical and augment their copies
differently; the quick start runs."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from ..unit.test_train import COLOURS, ROOT, TINY, _params, image_folder, write_config  # noqa: F401 (fixtures, helpers)

_DRIVER = """
import sys
import numpy as np
from mindspore.communication import get_rank
from src.cli import setup_context
from src.config import load_config
from src.train import train

setup_context("CPU", "graph")
config, out, dump, *start = sys.argv[1:]
result = train(load_config(config), output_dir=f"{out}_rank{get_rank()}", ckpt_file=(start or [None])[0],
               progress=False)
np.savez(f"{dump}_rank{get_rank()}.npz", **{n: p.asnumpy() for n, p in result.model.parameters_and_names()})
"""


def _free_port() -> int:
    """A port nobody listens on now (tests running at the same time must not share msrun's master port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_self_distillation(config, start):
    """Soft distillation from the self teacher, starting from random no-PPT weights saved to ``start``."""
    import yaml

    from src.io.checkpoint import save_weights
    from src.models import create_model

    doc = yaml.safe_load(config.read_text())
    doc["distill"] = {"type": "soft", "teacher": "self", "tau": 2.0}
    config.write_text(yaml.safe_dump(doc))
    save_weights(create_model("deit_tiny_patch16_224", num_classes=3, **TINY), start)
    return [str(start)]


@pytest.mark.slow
@pytest.mark.parametrize("distill", [False, True], ids=["plain", "self_distillation"])
def test_msrun_two_workers_data_parallel(tmp_path, image_folder, distill):
    """The documented msrun command: ranks end with identical weights, only rank 0 writes outputs; the same
    with a self teacher in the step."""
    config = write_config(tmp_path, image_folder, batch_size=6)  # 3 steps per epoch on each of 2 ranks
    start = _with_self_distillation(config, tmp_path / "start.ckpt") if distill else []
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", f"--log_dir={tmp_path / 'LOGS'}", "--join=True", str(driver), str(config),
           str(tmp_path / "out"), str(tmp_path / "params"), *start]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "LOGS").glob("worker_*.log")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs[-4000:]
    ranks = [np.load(tmp_path / f"params_rank{r}.npz") for r in (0, 1)]
    assert sorted(ranks[0].files) == sorted(ranks[1].files)
    for key in ranks[0].files:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    start = _params(tmp_path / "out_rank0" / "epoch_0001.ckpt")
    assert any(not np.array_equal(start[k], ranks[0][k]) for k in start)  # it did train in epoch 2
    assert (tmp_path / "out_rank0" / "epoch_0002.ckpt").exists() and (tmp_path / "out_rank0" / "log.jsonl").exists()
    assert not (tmp_path / "out_rank1").exists()
    assert "on 2 device(s)" in logs
    assert ("distillation: soft" in logs) == distill


_AUG_DRIVER = """
import sys
import numpy as np
from src.cli import setup_context
from src.config import load_config
from src.train import engine

setup_context("CPU", "graph")
config, dump = sys.argv[1:]
cfg = load_config(config, ["data.repeated_aug=2", "aug.randaug_magnitude=9", "aug.hflip=0.5", "aug.mixup_alpha=0",
                          "aug.label_smoothing=0"])
dist = engine._init_distributed()
dataset, _ = engine.train_dataset(cfg, 0, dist)
images, labels = next(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
np.savez(f"{dump}_rank{dist.rank}.npz", images=images, labels=labels)
"""


@pytest.mark.slow
def test_msrun_ranks_augment_their_copies_differently(tmp_path, image_folder):
    """With 2 copies on 2 ranks both ranks read the same images; per-rank seeds make their augmentation differ."""
    config = write_config(tmp_path, image_folder, batch_size=6)
    driver = tmp_path / "aug_driver.py"
    driver.write_text(_AUG_DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1", "--master_port=8131",
           f"--log_dir={tmp_path / 'LOGS'}", "--join=True", str(driver), str(config), str(tmp_path / "batch")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "LOGS").glob("worker_*.log")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs[-4000:]
    rank0, rank1 = (np.load(tmp_path / f"batch_rank{r}.npz") for r in (0, 1))
    np.testing.assert_array_equal(rank0["labels"], rank1["labels"])
    assert all(not np.array_equal(a, b) for a, b in zip(rank0["images"], rank1["images"]))


@pytest.mark.slow
def test_quick_start_runs(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--output_dir", str(out), "--no_progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "baseline (no PPT)" in proc.stdout and (out / "best.ckpt").exists()

