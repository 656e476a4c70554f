"""Token-source rendering (src/analysis/visualize.py) on tiny models."""

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from src.analysis.visualize import (
    MIN_PANEL,
    _fit,
    _font,
    render_block,
    render_grid,
    token_map,
    trace_tokens,
    visualize_images,
)
from src.data import collect_images
from src.deploy import Preprocess
from src.models import create_model

PRE = Preprocess(32, 0.875, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


TINT = 0.55  # src.analysis.visualize._TINT


def tiny_model(threshold: float, r=(4, 4), layers=(1, 2)):
    ms.set_seed(0)
    model = create_model("deit_tiny_patch16_224", num_classes=3, img_size=32, patch_size=8, embed_dim=48, depth=4,
                         num_heads=3, ppt=dict(r=list(r), layers=list(layers), threshold=threshold, prop_attn=True))
    model.set_train(False)
    return model


def test_token_map_from_a_source_matrix():
    # 2x2 patches, class token + 4 patch columns; token 1 = patches 0 and 3 pooled, token 2 = patch 1, patch 2 pruned
    source = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]], np.float32)
    tokens = token_map(source, num_prefix_tokens=1, grid=2)
    np.testing.assert_array_equal(tokens.owner, [[1, 2], [-1, 1]])
    assert tokens.sizes.tolist() == [0, 2, 1] and tokens.group_sizes == [2] and tokens.num_pruned == 1
    with pytest.raises(ValueError, match="patch 3 is covered by 2 tokens"):
        token_map(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 1]], np.float32), 1, 2)
    with pytest.raises(ValueError, match=r"expected a \[tokens, 5\] source matrix"):
        token_map(np.ones((3, 4)), 1, 2)


@pytest.mark.parametrize("threshold", [0.0, 1e9], ids=["prune-only", "pool-only"])
def test_traced_tokens_cover_each_patch_at_most_once(threshold):
    """Traced sources of a real model: no patch in two tokens; pooling r tokens leaves groups whose sizes add
    up to r extra patches and prunes none; pruning r tokens blanks r patches and forms no group."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    model = tiny_model(threshold)
    x = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    _, pooled, _, sources = trace_tokens(model, x, batch_size=2)  # 2 chunks, the last one padded
    assert pooled.shape == (3, 2) and pooled.all() == (threshold > 0) and [s.shape for s in sources] == [
        (3, 13, 17), (3, 9, 17)]
    removed = 0
    for k, r in enumerate(model.ppt_r):
        removed += r
        for b in range(3):
            tokens = token_map(sources[k][b], 1, 4)
            assert (sources[k][b][:, 1:].sum(axis=0) <= 1).all()
            assert tokens.sizes.sum() == 16 - tokens.num_pruned  # every kept patch counted once
            if threshold > 0:
                assert tokens.num_pruned == 0 and sum(s - 1 for s in tokens.group_sizes) == removed
            else:
                assert tokens.num_pruned == removed and tokens.group_sizes == []


def test_render_block_blacks_out_pruned_and_tints_each_group_in_one_colour():
    rng = np.random.default_rng(0)
    display = rng.integers(30, 220, (16, 16, 3), dtype=np.uint8)  # 2x2 patches of 8 px
    source = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]], np.float32)
    panel = np.asarray(render_block(display, token_map(source, 1, 2), 8, ["a", "b", "c"]))
    scale = -(-MIN_PANEL // 16)
    image = panel[panel.shape[0] - 16 * scale:].astype(np.float32)  # below the caption
    assert image.shape[:2] == (16 * scale, 16 * scale)

    def inner(py, px):  # patch interior, away from the outlines, and the matching original pixels
        sl = (slice(py * 8 * scale + 2, (py + 1) * 8 * scale - 2), slice(px * 8 * scale + 2, (px + 1) * 8 * scale - 2))
        return image[sl], np.repeat(np.repeat(display, scale, 0), scale, 1)[sl].astype(np.float32)

    pruned, _ = inner(1, 0)
    assert (pruned == 0).all()
    single, original = inner(0, 1)
    np.testing.assert_array_equal(single, original)
    colours = []
    for py, px in ((0, 0), (1, 1)):  # the group of patches 0 and 3
        tinted, original = inner(py, px)
        colour = (tinted - (1 - TINT) * original) / TINT
        assert np.ptp(colour.reshape(-1, 3), axis=0).max() < 3  # one colour (up to rounding)
        colours.append(colour.reshape(-1, 3).mean(axis=0))
    np.testing.assert_allclose(colours[0], colours[1], atol=2)
    assert render_grid([Image.fromarray(panel)] * 3).size == (3 * panel.shape[1] + 12, panel.shape[0])


def test_long_captions_are_cut_to_the_panel():
    font = _font()
    name = "toilet tissue, toilet paper, bathroom tissue"  # ImageNet class 999
    cut = _fit(f"prediction: {name} (class 999, 87 %)", 218, font)
    assert cut.endswith("...") and cut.startswith("prediction: toilet tissue") and font.getlength(cut) <= 218
    assert _fit("prediction: ant", 218, font) == "prediction: ant"


def test_visualize_images_writes_one_png_per_block_and_a_grid(tmp_path):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    for name in ("x", "y"):
        Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            tmp_path / f"{name}.png")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (36, 36), (10, 200, 30)).save(tmp_path / "sub" / "x.png")  # same stem as x.png
    paths = collect_images([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["sub/x.png", "x.png", "y.png"]
    classes = ("ant", "bee", "cat")
    with pytest.raises(ValueError, match="2 class names, but the model has 3 classes"):
        visualize_images(tiny_model(1e9), paths, tmp_path / "out", PRE, "RANDOM WEIGHTS", classes[:2])
    results = visualize_images(tiny_model(1e9), paths, tmp_path / "out", PRE, "RANDOM WEIGHTS", classes)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{stem}_{suffix}.png" for stem in ("sub_x", f"{tmp_path.name}_x", "y")
                           for suffix in ("block1", "block2", "grid"))
    assert [b["tokens"] for b in results[0]["blocks"]] == [13, 9]
    assert all(b["decision"] == "pool" for item in results for b in item["blocks"])
    assert [item["prediction_name"] for item in results] == [classes[item["prediction"]] for item in results]
    with Image.open(results[0]["blocks"][0]["png"]) as block, Image.open(results[0]["grid"]) as grid:
        assert block.format == grid.format == "PNG" and block.width == 224 and block.height > 224
        assert grid.size == (3 * 224 + 2 * 6, block.height)
    with pytest.raises(ValueError, match="given more than once"):
        collect_images([tmp_path / "y.png", tmp_path])

