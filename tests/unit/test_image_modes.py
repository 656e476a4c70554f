"""Image modes (issue #13, item 5): 16-bit grey is scaled, modes without a defined 8-bit conversion are reported
as unreadable by eval, infer and visualize instead of being evaluated silently wrong."""

import numpy as np
import pytest
from PIL import Image

from src.config import load_config
from src.data.folder import load_rgb
from src.evaluation import evaluate_checkpoint

from ..run_scripts import tiny_model_files

GREY16 = np.array([[0, 1, 128, 129], [257, 32767, 32768, 65535]], dtype=np.uint16)


@pytest.mark.parametrize("name,dtype", [("g.png", "<u2"), ("g.tif", "<u2"), ("gb.tif", ">u2")])
def test_16_bit_grey_is_scaled_to_8_bits(tmp_path, name, dtype):
    # Before: convert("RGB") clipped at 255, so 99.7 % of a 16-bit photo's pixels became white.
    path = tmp_path / name
    Image.fromarray(GREY16.astype(dtype)).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")
    rgb = load_rgb(path)
    expected = np.rint(GREY16 / 257.0).astype(np.uint8)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], expected)


@pytest.mark.parametrize("mode,array", [
    ("F", np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)),
    ("I", np.arange(8, dtype=np.int32).reshape(2, 4) * 1000),
])
def test_float_and_int32_images_are_refused(tmp_path, mode, array):
    # Before: all 0 (floats in [0, 1]) or all 255 (int32), evaluated without a warning.
    path = tmp_path / "x.tif"
    Image.fromarray(array).save(path)
    with pytest.raises(ValueError, match=rf"^pixel format {mode} \(32-bit .* pixels\) has no defined conversion to "
                                         r"8-bit RGB; convert the image to 8-bit RGB first$"):
        load_rgb(path)


def test_lab_is_refused(tmp_path):
    Image.new("LAB", (4, 4), (255, 128, 128)).save(tmp_path / "lab.tif")
    with pytest.raises(ValueError, match=r"pixel format LAB \(CIELAB\)"):
        load_rgb(tmp_path / "lab.tif")


@pytest.mark.parametrize("mode,name", [("1", "a.png"), ("L", "a.png"), ("P", "a.png"), ("LA", "a.png"),
                                       ("RGBA", "a.png"), ("CMYK", "a.jpg"), ("CMYK", "a.tif")])
def test_8_bit_modes_are_converted_by_pillow(tmp_path, mode, name):
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (6, 5, 4), dtype=np.uint8), "RGBA")
    img = (rgba if "A" in mode else rgba.convert("RGB")).convert(mode)
    img.save(tmp_path / name)
    with Image.open(tmp_path / name) as reread:
        expected = np.asarray(reread.convert("RGB"))
    np.testing.assert_array_equal(load_rgb(tmp_path / name), expected)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A val folder with an 8-bit PNG and a 16-bit PNG per class, one float TIFF; the tiny model's files."""
    root = tmp_path_factory.mktemp("modes")
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cat"):
        (root / "data" / "val" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "data" / "val" / c / "a.png")
        Image.fromarray(rng.integers(0, 65536, (40, 40), dtype=np.uint16)).save(root / "data" / "val" / c / "b.png")
    Image.fromarray(rng.random((40, 40), dtype=np.float32)).save(root / "data" / "val" / "cat" / "f.tif")
    return root, tiny_model_files(root, str(root / "data"))


def test_eval_counts_16_bit_and_reports_float_tiff(images):
    root, (config, ckpt, _) = images
    report = evaluate_checkpoint(load_config(config), str(ckpt), progress=False)
    assert report["num_files"] == 7 and report["num_images"] == 6
    [bad] = report["unreadable_files"]
    assert bad["path"].endswith("f.tif") and "pixel format F (32-bit float pixels)" in bad["reason"]

