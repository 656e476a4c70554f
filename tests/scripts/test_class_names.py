"""Issue #15 as a new user meets it: train on an own ImageFolder, export a MindIR, classify an image. The class
names travel with the model from the training folders to the checkpoint, the MindIR and infer.py's output,
without a names file and after the dataset has gone."""
import numpy as np
from PIL import Image

from src.io.checkpoint import read_class_names

from ..conftest import ROOT
from ..run_scripts import run_script

CONFIG = """
seed: 0
model: {name: deit_tiny_patch16_224, num_classes: 3, img_size: 32, patch_size: 8, embed_dim: 48, depth: 2,
        num_heads: 3}
ppt: {r: 3, layers: [0], threshold: 1.0e-4}
data: {path: DATA, batch_size: 6, num_workers: 1}
train: {epochs: 1, warmup_epochs: 0, log_interval: 100}
"""
CLASSES = ("tomato", "apple", "kiwi")  # created in this order; the labels follow the sorted folder names


def _image_folder(root):
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_names_travel_from_the_training_folders_to_infer(tmp_path, capsys):
    data = tmp_path / "fruit"
    _image_folder(data)
    config = tmp_path / "fruit.yaml"
    config.write_text(CONFIG.replace("DATA", str(data)))
    run = tmp_path / "run"
    code, _, err = run_script(ROOT / "train.py", ["--config", config, "--output_dir", run, "--no_progress",
                                                  "--mode", "pynative"], capsys)
    assert code == 0, err
    assert read_class_names(run / "best.ckpt") == ["apple", "kiwi", "tomato"]

    code, out, err = run_script(ROOT / "export.py", ["--config", config, "--ckpt", run / "best.ckpt",
                                                     "--out", tmp_path / "fruit"], capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == f"class names: 3 from the metadata of {run / 'best.ckpt'}"

    image = tmp_path / "photo.png"
    (data / "val" / "kiwi" / "0.png").rename(image)
    data.rename(tmp_path / "archived")  # deployed elsewhere: the training folders are not there
    code, out, err = run_script(ROOT / "infer.py", ["--model", tmp_path / "fruit.mindir", "--topk", "3", image],
                                capsys)
    assert (code, err) == (0, [])
    lines = out.splitlines()
    assert lines[0] == str(image) and len(lines) == 4
    assert sorted(line.split("%  ")[1] for line in lines[1:]) == ["apple (class 0)", "kiwi (class 1)",
                                                                  "tomato (class 2)"]
    # The checkpoint names its classes just as well, through the config that builds its model.
    code, out_ckpt, err = run_script(ROOT / "infer.py", ["--model", run / "best.ckpt", "--config", config,
                                                         "--topk", "3", image], capsys)
    assert (code, err, out_ckpt) == (0, [], out)
