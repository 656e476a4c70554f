"""RandAugment (timm rand-m9-mstd0.5-inc1): each op against hand-computed pixels, and the sampling statistics.

Expected values are worked out here from the formulas (level mappings, PIL's blend/LUT rules), never by
calling the same PIL function the module calls. Blend-based ops (enhance) allow +-1 for PIL's float32
factor and truncation; everything else is exact.
"""
import math

import numpy as np
import pytest
from PIL import Image

from src.data.randaugment import DEIT_FILL, OP_NAMES, OPS, RandAugment

FILL = (7, 222, 33)  # distinctive, so filled pixels cannot be mistaken for content
BICUBIC = Image.Resampling.BICUBIC


def _seed_for(sign: int) -> int:
    """A generator seed whose first random() gives the requested sign (> 0.5 means negated)."""
    for seed in range(100):
        negated = np.random.default_rng(seed).random() > 0.5
        if negated == (sign < 0):
            return seed
    raise AssertionError("no seed found")


SEED = {+1: _seed_for(+1), -1: _seed_for(-1)}


def run(name: str, arr: np.ndarray, magnitude: float, sign: int = +1, resample: int = BICUBIC) -> np.ndarray:
    out = OPS[name](Image.fromarray(arr.astype(np.uint8)), magnitude, np.random.default_rng(SEED[sign]),
                    FILL, resample)
    assert out.mode == "RGB" and out.size == (arr.shape[1], arr.shape[0])
    return np.asarray(out).astype(int)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def grey(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.uint8)
    return np.repeat(v[..., None], 3, axis=-1)


def test_op_set_is_timm_increasing_list():
    assert OP_NAMES == (
        "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
        "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
        "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def test_deit_fill_is_rounded_imagenet_mean():
    assert DEIT_FILL == tuple(round(255 * m) for m in (0.485, 0.456, 0.406)) == (124, 116, 104)
    assert RandAugment().fill == (124, 116, 104)


# ---------------------------------------------------------------- colour / LUT ops


def test_invert():
    a = texture(4, 4)
    np.testing.assert_array_equal(run("Invert", a, 9), 255 - a.astype(int))


def test_auto_contrast_stretches_each_channel():
    a = np.zeros((10, 10, 3), np.uint8)
    a[..., 0] = 80
    a[5:, :, 0] = 120
    a[0, 0, 0], a[9, 9, 0] = 50, 150        # single extreme pixels: no histogram cut-off, 50 -> 0, 150 -> 255
    a[..., 1] = np.arange(100).reshape(10, 10) % 2 * 255   # already full range -> unchanged
    a[..., 2] = 77                          # constant -> unchanged
    out = run("AutoContrast", a, 9)
    # (x - 50) * 255 / 100, truncated: 80 -> 76.5 -> 76, 120 -> 178.5 -> 178
    assert out[0, 0, 0] == 0 and out[9, 9, 0] == 255
    assert (out[1:5, :, 0] == 76).all() and (out[5:9, :, 0] == 178).all()
    np.testing.assert_array_equal(out[..., 1], a[..., 1])
    np.testing.assert_array_equal(out[..., 2], a[..., 2])


def test_equalize_two_level_image():
    a = np.zeros((32, 32, 3), np.uint8)
    a[:16, :, 0], a[16:, :, 0] = 100, 150    # two levels, 512 pixels each -> 0 and 255
    a[..., 1] = 60                           # one level -> unchanged
    a[:, :8, 2], a[:, 8:, 2] = 30, 40        # 256 vs 768 pixels: step 1, 30 -> 0, 40 -> 256 clipped to 255
    out = run("Equalize", a, 9)
    np.testing.assert_array_equal(out[:16, :, 0], 0)
    np.testing.assert_array_equal(out[16:, :, 0], 255)
    np.testing.assert_array_equal(out[..., 1], 60)
    np.testing.assert_array_equal(out[:, :8, 2], 0)
    np.testing.assert_array_equal(out[:, 8:, 2], 255)


@pytest.mark.parametrize("magnitude, kept_mask", [(0, 0xF0), (5, 0xC0), (9, 0x80), (10, 0x00)])
def test_posterize_keeps_top_bits(magnitude, kept_mask):
    # bits kept = 4 - int(m / 10 * 4): m=0 -> 4, m=5 -> 2, m=9 -> 1, m=10 -> 0
    values = [[0b10110111, 0b01111111], [0b11000001, 255]]
    expected = {0xF0: [[0b10110000, 0b01110000], [0b11000000, 0xF0]],
                0xC0: [[0b10000000, 0b01000000], [0b11000000, 0xC0]],
                0x80: [[0b10000000, 0], [0b10000000, 0x80]],
                0x00: [[0, 0], [0, 0]]}[kept_mask]
    np.testing.assert_array_equal(run("PosterizeIncreasing", grey(values), magnitude)[..., 0], expected)


@pytest.mark.parametrize("magnitude, threshold", [(9, 26), (5, 128), (0, 256), (10, 0)])
def test_solarize_inverts_exactly_pixels_at_or_above_threshold(magnitude, threshold):
    # threshold = 256 - int(m / 10 * 256): m=9 -> 256 - 230 = 26
    values = np.array([[0, 25, 26, 27], [127, 128, 200, 255]])
    expected = np.where(values >= threshold, 255 - values, values)
    np.testing.assert_array_equal(run("SolarizeIncreasing", grey(values), magnitude)[..., 0], expected)


def test_solarize_threshold_at_m9_by_hand():
    out = run("SolarizeIncreasing", grey([[25, 26]]), 9)[..., 0]
    np.testing.assert_array_equal(out, [[25, 229]])


@pytest.mark.parametrize("magnitude, add", [(9, 99), (5, 55), (10, 110), (0, 0)])
def test_solarize_add_below_128_only(magnitude, add):
    values = np.array([[0, 100, 127, 128], [129, 200, 250, 255]])
    # add = int(m / 10 * 110); pixels >= 128 untouched; the 255 clip cannot trigger (127 + 110 < 255)
    expected = np.where(values < 128, np.minimum(values + add, 255), values)
    out = run("SolarizeAdd", grey(values), magnitude)
    np.testing.assert_array_equal(out[..., 0], expected)
    assert out[0, 2, 0] == 127 + add


def _blend(degenerate, image, factor):
    """PIL Image.blend: degenerate + f * (image - degenerate), truncated and clipped to 0..255."""
    v = np.asarray(degenerate, float) + factor * (np.asarray(image, float) - np.asarray(degenerate, float))
    return np.clip(np.trunc(v), 0, 255)


@pytest.mark.parametrize("sign", [+1, -1])
def test_brightness(sign):
    factor = 1 + sign * 0.45                 # m=5: 1 +/- 5/10 * 0.9
    values = np.array([[0, 10], [100, 200]])
    out = run("BrightnessIncreasing", grey(values), 5, sign)[..., 0]
    expected = _blend(0, values, factor)     # blend with black
    np.testing.assert_allclose(out, expected, atol=1)
    assert out[1, 1] == (255 if sign > 0 else 110)


@pytest.mark.parametrize("sign", [+1, -1])
def test_color(sign):
    factor = 1 + sign * 0.9 * 0.7            # m=7
    px = np.array([[[200, 100, 50], [80, 80, 80]]])
    lum = np.round((299 * px[..., 0] + 587 * px[..., 1] + 114 * px[..., 2]) / 1000)[..., None]  # ITU-R 601 L
    out = run("ColorIncreasing", px, 7, sign)
    np.testing.assert_allclose(out, _blend(lum, px, factor), atol=1)
    np.testing.assert_array_equal(out[0, 1], [80, 80, 80])   # grey pixels have no colour to change


@pytest.mark.parametrize("sign", [+1, -1])
def test_contrast(sign):
    factor = 1 + sign * 0.45                 # m=5
    values = np.array([[40, 80], [120, 160]])
    mean = 100                               # mean grey level, rounded
    out = run("ContrastIncreasing", grey(values), 5, sign)[..., 0]
    np.testing.assert_allclose(out, _blend(mean, values, factor), atol=1)
    expected = [[13, 71], [129, 187]] if sign > 0 else [[67, 89], [111, 133]]
    np.testing.assert_allclose(out, expected, atol=1)


@pytest.mark.parametrize("sign", [+1, -1])
def test_sharpness(sign):
    factor = 1 + sign * 0.45                 # m=5
    a = np.full((7, 7), 50)
    a[3, 3] = 200
    # PIL SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 (rounded), outer ring copied unchanged
    centre = round((5 * 200 + 8 * 50) / 13)          # 108
    beside = round((200 + 12 * 50) / 13)             # 62
    out = run("SharpnessIncreasing", grey(a), 5, sign)[..., 0]
    assert abs(out[3, 3] - _blend(centre, 200, factor)) <= 1
    assert abs(out[2, 3] - _blend(beside, 50, factor)) <= 1
    assert out[3, 3] == (241 if sign > 0 else 158)
    assert out[0, 0] == 50 and out[6, 6] == 50 and out[1, 6] == 50   # unaffected pixels


# ---------------------------------------------------------------- geometric ops


def _fill_mask_check(out, source_xy, size, colour):
    """Pixels whose source (pixel-centre convention) is outside the image get FILL, others keep colour.

    Pixels whose source lies within 0.05 px of the border are not checked (rounding either way).
    """
    w, h = size
    sx, sy = source_xy
    outside = (sx < 0) | (sx >= w) | (sy < 0) | (sy >= h)
    margin = np.minimum.reduce([np.abs(sx), np.abs(sx - w), np.abs(sy), np.abs(sy - h)])
    sure = margin > 0.05
    assert outside.any() and (~outside).any()
    assert (out[outside & sure] == FILL).all()
    assert (out[~outside & sure] == colour).all()


def _centres(w, h):
    ys, xs = np.mgrid[0:h, 0:w]
    return xs + 0.5, ys + 0.5


@pytest.mark.parametrize("sign", [+1, -1])
@pytest.mark.parametrize("name", ["ShearX", "ShearY"])
def test_shear_fills_exactly_the_uncovered_pixels(name, sign):
    colour = (200, 150, 100)
    a = np.empty((10, 10, 3), np.uint8)
    a[:] = colour
    s = sign * 0.3                          # m=10: 10/10 * 0.3
    x, y = _centres(10, 10)
    source = (x + s * y, y) if name == "ShearX" else (x, y + s * x)
    out = run(name, a, 10, sign)
    _fill_mask_check(out, source, (10, 10), colour)
    corner = (9, 9) if sign > 0 else ((9, 0) if name == "ShearX" else (0, 9))  # (row, col) pushed out
    assert tuple(out[corner]) == FILL


@pytest.mark.parametrize("sign", [+1, -1])
@pytest.mark.parametrize("magnitude", [9, 10])
def test_rotate_fills_corners_counter_clockwise(magnitude, sign):
    colour = (200, 150, 100)
    n = 41
    a = np.empty((n, n, 3), np.uint8)
    a[:] = colour
    theta = math.radians(sign * magnitude * 3.0)   # m / 10 * 30 degrees, positive = counter-clockwise
    x, y = _centres(n, n)
    dx, dy = x - n / 2, y - n / 2
    # output pixel samples the input rotated back (clockwise on screen, y pointing down)
    source = (n / 2 + dx * math.cos(theta) - dy * math.sin(theta), n / 2 + dx * math.sin(theta) + dy * math.cos(theta))
    out = run("Rotate", a, magnitude, sign)
    _fill_mask_check(out, source, (n, n), colour)
    assert tuple(out[n // 2, n // 2]) == colour


def test_rotate_direction_on_pattern():
    # top half white, bottom black; rotating counter-clockwise lifts the right end of the horizon
    a = np.zeros((21, 21, 3), np.uint8)
    a[:10] = 255
    a[10] = 128
    out = run("Rotate", a, 10, +1)           # +30 degrees
    assert out[9, 18, 0] == 0                # right of centre, just above the old horizon -> now below it
    assert out[11, 2, 0] == 255              # left of centre, just below -> now above
    out = run("Rotate", a, 10, -1)
    assert out[9, 18, 0] == 255 and out[11, 2, 0] == 0


@pytest.mark.parametrize("sign", [+1, -1])
def test_translate_x(sign):
    a = texture(4, 20)
    out = run("TranslateXRel", a, 10, sign)   # 10/10 * 0.45 * 20 = 9 pixels
    if sign > 0:                              # sample input x + 9: content moves left
        np.testing.assert_array_equal(out[:, :11], a[:, 9:])
        assert (out[:, 11:] == FILL).all()
    else:
        np.testing.assert_array_equal(out[:, 9:], a[:, :11])
        assert (out[:, :9] == FILL).all()


@pytest.mark.parametrize("sign", [+1, -1])
def test_translate_y(sign):
    a = np.zeros((20, 3, 3), np.uint8)
    a[12, 1] = (255, 1, 2)                    # one marker pixel
    out = run("TranslateYRel", a, 10, sign)   # 9 pixels
    row = 12 - 9 if sign > 0 else 12 + 9
    if sign > 0:
        assert tuple(out[row, 1]) == (255, 1, 2) and out[:11].sum() == 255 + 3
        assert (out[11:] == FILL).all()
    else:
        assert row >= 20                      # marker pushed out of the image
        assert (out[:9] == FILL).all() and (out[9:] == 0).all()


def test_translate_scales_with_magnitude():
    a = texture(3, 40)
    out = run("TranslateXRel", a, 5, +1)     # 5/10 * 0.45 * 40 = 9 pixels
    np.testing.assert_array_equal(out[:, :31], a[:, 9:])
    assert (out[:, 31:] == FILL).all()


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"])
def test_geometric_ops_are_identity_at_magnitude_zero(name):
    a = texture(9, 13)
    np.testing.assert_array_equal(run(name, a, 0), a)


# ---------------------------------------------------------------- sampling


def test_magnitude_noise_mean_std_and_clip():
    ra = RandAugment(prob=1.0)
    rng = np.random.default_rng(1)
    mags = np.array([m for _ in range(10000) for _, m in ra.sample(rng)])
    assert mags.size == 20000
    # N(9, 0.5) clipped at 10: mean 9 - 0.5 * (pdf(2) - 2 * sf(2)) = 8.9958, std ~0.49, 2.3 % at 10
    assert abs(mags.mean() - 8.9958) < 0.015
    assert 0.47 < mags.std() < 0.51
    assert mags.max() == 10.0 and 0.015 < np.mean(mags == 10.0) < 0.032
    assert mags.min() > 6.5


def test_random_sign_is_fair():
    img = Image.fromarray(grey([[100]]))
    rng = np.random.default_rng(6)
    brighter = [np.asarray(OPS["BrightnessIncreasing"](img, 5, rng, FILL, BICUBIC))[0, 0, 0] > 100
                for _ in range(4000)]
    assert abs(np.mean(brighter) - 0.5) < 0.03


def test_magnitude_fixed_without_std():
    ra = RandAugment(prob=1.0, magnitude_std=0)
    rng = np.random.default_rng(2)
    mags = [m for _ in range(500) for _, m in ra.sample(rng)]
    assert len(mags) == 1000 and set(mags) == {9.0}


def test_magnitude_clipped_at_both_ends():
    rng = np.random.default_rng(3)
    high = [m for _ in range(500) for _, m in RandAugment(magnitude=10, magnitude_std=2, prob=1).sample(rng)]
    low = [m for _ in range(500) for _, m in RandAugment(magnitude=0, magnitude_std=2, prob=1).sample(rng)]
    assert max(high) == 10.0 and min(low) == 0.0
    assert 0 <= min(high) and max(low) <= 10


def test_half_of_the_chosen_ops_are_skipped():
    ra = RandAugment()
    rng = np.random.default_rng(4)
    applied = sum(len(ra.sample(rng)) for _ in range(10000))
    assert abs(applied / 20000 - 0.5) < 0.02
    assert all(len(RandAugment(prob=1.0).sample(rng)) == 2 for _ in range(200))
    assert all(len(RandAugment(prob=0.0).sample(rng)) == 0 for _ in range(200))


def test_op_choice_uniform_with_replacement():
    ra = RandAugment(prob=1.0)
    rng = np.random.default_rng(5)
    plans = [[name for name, _ in ra.sample(rng)] for _ in range(15000)]
    counts = np.array([sum(p.count(name) for p in plans) for name in OP_NAMES])
    expected = 30000 / 15
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 36.1                       # 14 degrees of freedom, p = 0.001
    repeats = np.mean([p[0] == p[1] for p in plans])
    assert abs(repeats - 1 / 15) < 0.012     # with replacement; without it this would be 0


def test_call_applies_the_sampled_plan(monkeypatch):
    calls = []
    for name in OP_NAMES:
        monkeypatch.setitem(OPS, name, lambda img, m, rng, fill, rs, name=name: calls.append((name, m)) or img)
    ra = RandAugment(num_ops=3)
    for seed in range(30):
        calls.clear()
        ra(Image.fromarray(texture(4, 4)), np.random.default_rng(seed))
        assert calls == ra.sample(np.random.default_rng(seed))


def test_fill_and_interpolation_reach_the_ops(monkeypatch):
    seen = []
    for name in OP_NAMES:
        monkeypatch.setitem(OPS, name, lambda img, m, rng, fill, rs: seen.append((fill, rs)) or img)
    RandAugment(prob=1.0, fill=(1, 2, 3), interpolation="bilinear")(Image.fromarray(texture(4, 4)),
                                                                     np.random.default_rng(0))
    assert seen == [((1, 2, 3), Image.Resampling.BILINEAR)] * 2
    seen.clear()
    RandAugment(prob=1.0)(Image.fromarray(texture(4, 4)), np.random.default_rng(0))
    assert seen == [((124, 116, 104), Image.Resampling.BICUBIC)] * 2


# ---------------------------------------------------------------- determinism and I/O


def test_same_seed_same_image_different_seeds_differ():
    img = Image.fromarray(texture(32, 24))
    ra = RandAugment()
    outs = []
    for seed in range(20):
        a = np.asarray(ra(img, np.random.default_rng(seed)))
        b = np.asarray(ra(img, np.random.default_rng(seed)))
        np.testing.assert_array_equal(a, b)
        assert a.shape == (32, 24, 3)
        outs.append(a.tobytes())
    assert len(set(outs)) >= 12              # ~1/4 of seeds skip both ops, the rest differ
    strong = RandAugment(prob=1.0)
    first = np.asarray(strong(img, np.random.default_rng(0)))
    assert not np.array_equal(first, np.asarray(strong(img, np.random.default_rng(1))))


def test_input_image_not_modified_and_output_rgb_same_size():
    arr = texture(23, 37)
    img = Image.fromarray(arr)
    ra = RandAugment(prob=1.0)
    for seed in range(40):
        out = ra(img, np.random.default_rng(seed))
        assert out.mode == "RGB" and out.size == (37, 23)
    np.testing.assert_array_equal(np.asarray(img), arr)


def test_every_op_keeps_size_and_mode():
    img = Image.fromarray(texture(9, 14))
    for name in OP_NAMES:
        out = OPS[name](img, 9.0, np.random.default_rng(0), FILL, BICUBIC)
        assert out.mode == "RGB" and out.size == (14, 9), name


@pytest.mark.parametrize("kwargs, name", [
    ({"magnitude": 12}, "magnitude"),
    ({"magnitude": -1}, "magnitude"),
    ({"magnitude": "9"}, "magnitude"),
    ({"num_ops": -1}, "num_ops"),
    ({"num_ops": 1.5}, "num_ops"),
    ({"num_ops": True}, "num_ops"),
    ({"magnitude_std": -0.1}, "magnitude_std"),
    ({"magnitude_std": float("inf")}, "magnitude_std"),
    ({"prob": 1.5}, "prob"),
    ({"fill": (1, 2)}, "fill"),
    ({"fill": (1, 2, 256)}, "fill"),
    ({"fill": (1.0, 2, 3)}, "fill"),
    ({"interpolation": "nearest"}, "interpolation"),
    ({"interpolation": "random"}, "interpolation"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=rf"^randaugment: {name} must be ") as info:
        RandAugment(**kwargs)
    assert "\n" not in str(info.value)
    assert "got" in str(info.value)


def test_magnitude_message_format():
    with pytest.raises(ValueError) as info:
        RandAugment(magnitude=12)
    assert str(info.value) == "randaugment: magnitude must be in [0, 10], got 12"


def test_bad_inputs():
    ra = RandAugment()
    with pytest.raises(ValueError, match="RGB"):
        ra(Image.new("L", (4, 4)), np.random.default_rng(0))
    with pytest.raises(TypeError, match="PIL image"):
        ra(texture(4, 4), np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        ra(Image.fromarray(texture(4, 4)), np.random.RandomState(0))
