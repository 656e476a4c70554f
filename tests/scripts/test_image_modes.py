"""Image modes through the scripts: infer.py and visualize.py refuse a float TIFF in one line."""

import pytest

import infer as infer_script
from src.config import load_config
from src.deploy.inference import load_images, preprocess_from_config

from ..run_scripts import run_main
from ..unit.test_image_modes import images  # noqa: F401 (fixtures, helpers)


def test_infer_and_visualize_refuse_float_tiff_in_one_line(images, capsys):
    root, (config, ckpt, names) = images
    tif = root / "data" / "val" / "cat" / "f.tif"
    argv = ["--model", str(ckpt), "--config", str(config), "--class_names", str(names), str(tif)]
    code, out, err = run_main(lambda: infer_script.main(argv), "infer.py", capsys)
    assert (code, out) == (1, "")
    assert err == [f"infer.py: error: {tif}: cannot read the image (ValueError: pixel format F (32-bit float "
                   f"pixels) has no defined conversion to 8-bit RGB; convert the image to 8-bit RGB first)"]
    with pytest.raises(ValueError, match=r"f\.tif: cannot read the image \(ValueError: pixel format F"):
        load_images([tif], preprocess_from_config(load_config(config)))

