"""Tests of src/config.py and the shipped config/*.yaml files."""
import pathlib

import pytest
import yaml

from src.config import SCHEMA, ConfigError, configured_spec, load_config, model_kwargs, save_config, schema_markdown
from src.models import create_model, list_models, model_spec
from src.token_reduction import PPTSetting

from ..conftest import ROOT

SHIPPED = sorted((ROOT / "config").glob("*.yaml"))
BASES = sorted((ROOT / "config" / "base").glob("*.yaml"))  # what several configs start from

MINIMAL = """
model:
  name: deit_small_patch16_224
ppt:
  r: 50
  layers: [3, 6, 9]
  threshold: 7e-5
data:
  path: demo
"""


def write(tmp_path: pathlib.Path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def minimal_with(**edits: str) -> str:
    """MINIMAL with `section.key: value` lines replaced or added (keys given as section__key)."""
    doc = yaml.safe_load(MINIMAL)
    for dotted, value in edits.items():
        section, key = dotted.split("__")
        doc.setdefault(section, {})[key] = yaml.safe_load(value)
    return yaml.safe_dump(doc)


def error_of(path: str, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ shipped files

def test_every_registered_model_has_a_config():
    stems = sorted(p.stem for p in SHIPPED)
    assert sorted(s for s in stems if not s.startswith("demo") and not s.endswith("_finetune")) == list_models()
    assert {"demo", "demo_finetune", "deit_small_patch16_224_finetune"} <= set(stems)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_loads_and_matches_its_model(path):
    cfg = load_config(path)
    kwargs = model_kwargs(cfg)
    spec = configured_spec(cfg)
    if not path.stem.startswith("demo"):
        assert kwargs["name"] == path.stem.removesuffix("_finetune")
        assert kwargs["num_classes"] == 1000
        # the ImageNet configs keep the registered architecture (no overrides)
        assert set(kwargs) == {"name", "num_classes", "ppt", "drop_path_rate"} and spec == model_spec(kwargs["name"])
    ppt = kwargs["ppt"]
    assert isinstance(ppt, PPTSetting) and ppt.policy == "ppt" and ppt.threshold is not None
    counts, clamped = ppt.schedule(spec.num_tokens, spec.depth)
    # every PP block removes tokens, and about half the tokens or more are gone at the end
    assert all(r > 0 for r in clamped) and counts[-1] <= 0.55 * spec.num_tokens


@pytest.mark.parametrize("path", SHIPPED + BASES, ids=lambda p: str(p.relative_to(ROOT / "config")))
def test_shipped_file_holds_only_what_differs(path):
    """A config sets a key only to change it: from its base file's value, else from the schema's default."""
    assert SCHEMA.restated_keys(path) == []


def test_paper_setting_for_deit_small():
    ppt = load_config(ROOT / "config" / "deit_small_patch16_224.yaml")["ppt"]
    assert (ppt["r"], ppt["layers"], ppt["threshold"]) == (50, [3, 6, 9], 7e-5)


def test_384_configs_remove_the_same_fraction_as_224():
    r224 = load_config(ROOT / "config" / "deit_base_patch16_224.yaml")["ppt"]["r"]
    r384 = load_config(ROOT / "config" / "deit_base_patch16_384.yaml")["ppt"]["r"]
    assert r384 == round(r224 * 576 / 196)


def test_demo_config_builds_the_small_model():
    model = create_model(**model_kwargs(load_config(ROOT / "config" / "demo.yaml")))
    assert (model.img_size, model.patch_size, model.embed_dim, model.depth, model.num_heads,
            model.num_classes) == (64, 8, 96, 6, 3, 10)
    assert model.ppt_layers == (1, 3)
    assert model.tokens_per_block == (65, 49, 49, 33, 33, 33)


def test_readme_table_matches_schema():
    assert schema_markdown() in (ROOT / "config" / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------ defaults and output

def test_defaults_are_filled(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    # Every schema section is filled in; the train/aug/distill defaults are checked by tests/test_train.py and
    # tests/test_distill.py.
    assert set(cfg) == {"seed", "model", "ppt", "data", "train", "aug", "distill"}
    assert cfg["train"] == {k: key.default for k, key in SCHEMA["train"].items()}
    assert {k: cfg[k] for k in ("seed", "model", "ppt", "data")} == {
        "seed": 0,
        "model": {"name": "deit_small_patch16_224", "num_classes": 1000, "img_size": None, "patch_size": None,
                  "embed_dim": None, "depth": None, "num_heads": None, "mlp_ratio": None, "drop_path_rate": 0.0},
        "ppt": {"enabled": True, "policy": "ppt", "r": 50, "layers": [3, 6, 9], "threshold": 7e-5, "prop_attn": True},
        "data": {"path": "demo", "batch_size": 64, "num_workers": 2, "crop_pct": 0.875,
                 "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "repeated_aug": 1},
    }
    assert isinstance(cfg["ppt"]["threshold"], float)


def test_defaults_are_not_shared(tmp_path):
    path = write(tmp_path, MINIMAL)
    load_config(path)["data"]["mean"][0] = 9.0
    assert load_config(path)["data"]["mean"][0] == 0.485


def test_int_given_for_float_becomes_float(tmp_path):
    cfg = load_config(write(tmp_path, minimal_with(ppt__threshold="0", data__crop_pct="1")))
    assert cfg["ppt"]["threshold"] == 0.0 and isinstance(cfg["ppt"]["threshold"], float)
    assert isinstance(cfg["data"]["crop_pct"], float)


def test_exponent_floats_without_dot_are_floats(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), ["ppt.threshold=1e9"])
    assert cfg["ppt"]["threshold"] == 1e9


def test_quoted_number_is_not_a_float(tmp_path):
    path = write(tmp_path, MINIMAL.replace("threshold: 7e-5", "threshold: '7e-5'"))
    assert error_of(path) == f'{path}: ppt.threshold: expected a float >= 0 or null, got "7e-5"'


def test_disabled_ppt_needs_no_ppt_keys(tmp_path):
    path = write(tmp_path, "model: {name: deit_tiny_patch16_224}\nppt: {enabled: false}\ndata: {path: demo}\n")
    cfg = load_config(path)
    assert cfg["ppt"] == {"enabled": False, "policy": "ppt", "r": None, "layers": None, "threshold": None,
                          "prop_attn": True}
    assert model_kwargs(cfg) == {"name": "deit_tiny_patch16_224", "num_classes": 1000, "ppt": None,
                                 "drop_path_rate": 0.0}


def test_model_kwargs_pass_only_set_overrides(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), ["model.img_size=112", "model.num_classes=10",
                                                 "ppt.prop_attn=false"])
    assert model_kwargs(cfg) == {
        "name": "deit_small_patch16_224", "num_classes": 10, "img_size": 112, "drop_path_rate": 0.0,
        "ppt": PPTSetting(r=50, layers=(3, 6, 9), threshold=7e-5, prop_attn=False)}


def test_save_config_round_trip(tmp_path):
    cfg = load_config(ROOT / "config" / "demo.yaml", ["ppt.r=[10,12]", "seed=7"])
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["resolved.yaml"]  # no temporary file left


# -------------------------------------------------------------------------------------------- base files

def test_a_file_starts_from_its_base_chain(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, MINIMAL + "train:\n  epochs: 30\n", "sub/root.yaml")
    write(tmp_path, "base: root.yaml\nppt:\n  r: 20\n", "sub/middle.yaml")  # relative to its own folder
    path = write(tmp_path, "base: sub/middle.yaml\ntrain:\n  epochs: 8\n")
    flat = write(tmp_path, minimal_with(ppt__r="20", train__epochs="8"), "flat.yaml")
    assert load_config(path) == load_config(flat)


def test_restated_keys_finds_defaults_and_base_values(tmp_path):
    write(tmp_path, minimal_with(data__crop_pct="1", train__epochs="30"), "base.yaml")
    path = write(tmp_path, "base: base.yaml\nppt:\n  r: 50\n  threshold: 1e-4\ndata:\n  batch_size: 64\n"
                           "  crop_pct: 1.0\n  num_workers: 2.0\ntrain:\n  epochs: 30\n")
    # an int given for a float equals that float; an invalid value (2.0 workers) restates nothing
    assert SCHEMA.restated_keys(path) == ["ppt.r", "data.batch_size", "data.crop_pct", "train.epochs"]
    assert SCHEMA.restated_keys(write(tmp_path, minimal_with(train__epochs="300"))) == ["train.epochs"]


def test_a_bad_value_of_a_base_is_blamed_on_the_base(tmp_path):
    base = write(tmp_path, minimal_with(ppt__r="-3"), "base.yaml")
    assert error_of(write(tmp_path, "base: base.yaml\n")).startswith(f"{base}: ppt.r: expected an int >= 0")
    assert load_config(write(tmp_path, "base: base.yaml\nppt:\n  r: 3\n"))["ppt"]["r"] == 3


def test_base_errors(tmp_path):
    path = write(tmp_path, "base: nope.yaml\n")
    assert error_of(path) == (f'{path}: base: expected an existing YAML file, got "nope.yaml" '
                              f"({tmp_path / 'nope.yaml'} not found)")
    path = write(tmp_path, "base: [a.yaml]\n")
    assert error_of(path) == f'{path}: base: expected the name of a YAML file relative to this one, got ["a.yaml"]'
    a, b = write(tmp_path, "base: b.yaml\n", "a.yaml"), write(tmp_path, "base: a.yaml\n", "b.yaml")
    assert error_of(a) == f"{b}: base: expected a file that does not lead back to itself, got the cycle " \
                          f"{a} -> {b} -> {a}"
    path = write(tmp_path, "base: self.yaml\n", "self.yaml")
    assert error_of(path).endswith(f"got the cycle {path} -> {path}")


# --------------------------------------------------------------------------------------------- overrides

def test_overrides_list_bool_and_order(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL),
                      ["ppt.r=[30,60,90]", "ppt.enabled=false", "ppt.enabled=true", "seed=5", "data.path=/x"])
    assert cfg["ppt"]["r"] == [30, 60, 90] and cfg["ppt"]["enabled"] is True
    assert cfg["seed"] == 5 and cfg["data"]["path"] == "/x"


def test_override_fixes_a_bad_file_value(tmp_path):
    path = write(tmp_path, minimal_with(ppt__r="-3"))
    assert load_config(path, ["ppt.r=8"])["ppt"]["r"] == 8


@pytest.mark.parametrize("override, expected", [
    ("ppt.r", "override 'ppt.r': expected 'section.key=value'"),
    ("=3", "override '=3': expected 'section.key=value'"),
    ("ppt.rr=3", "override 'ppt.rr=3': ppt.rr: unknown key (did you mean 'r'?)"),
    ("modle.depth=3", "override 'modle.depth=3': modle: unknown section or key (did you mean 'model'?)"),
    ("ppt=3", "override 'ppt=3': expected exactly one key under 'ppt'"),
    ("ppt.r.x=3", "override 'ppt.r.x=3': expected exactly one key under 'ppt'"),
    ("seed.x=3", "override 'seed.x=3': seed is a top-level key, not a section"),
    ("ppt.r=[1,", "override 'ppt.r=[1,': ppt.r: value is invalid YAML"),
    ("ppt.r=-1", "override 'ppt.r=-1': ppt.r: expected an int >= 0 or a list of them, got -1"),
    ("model.depth=true", "override 'model.depth=true': model.depth: expected an int >= 1 or null, got true"),
])
def test_override_errors(tmp_path, override, expected):
    assert error_of(write(tmp_path, MINIMAL), [override]).startswith(expected)


# -------------------------------------------------------------------------------------------- file errors

def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    assert error_of(path) == f"{path}: config file not found"


def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "model:\n  name: [deit\n")
    message = error_of(path)
    assert message.startswith(f"{path}: invalid YAML at line ")


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, MINIMAL + "ppt:\n  r: 3\n")
    assert error_of(path).startswith(f"{path}: invalid YAML at line 10, column 1: duplicate key 'ppt'")


@pytest.mark.parametrize("text, got", [("", "an empty document"), ("- 1\n- 2\n", "[1, 2]"), ("3\n", "3")])
def test_top_level_must_be_a_mapping(tmp_path, text, got):
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}: expected a mapping of sections at the top level, got {got}"


def test_section_must_be_a_mapping(tmp_path):
    path = write(tmp_path, MINIMAL.replace("data:\n  path: demo", "data: demo"))
    assert error_of(path) == f'{path}: data: expected a mapping of data keys, got "demo"'


def test_unknown_section_suggests(tmp_path):
    path = write(tmp_path, MINIMAL + "dta:\n  batch_size: 3\n")
    assert error_of(path).startswith(f"{path}: dta: unknown section or key (did you mean 'data'?); known: seed, ")


def test_unknown_key_suggests(tmp_path):
    path = write(tmp_path, MINIMAL.replace("threshold", "treshold"))
    assert error_of(path) == (f"{path}: ppt.treshold: unknown key (did you mean 'threshold'?); "
                              f"known ppt keys: enabled, policy, r, layers, threshold, prop_attn")


def test_missing_required_key(tmp_path):
    path = write(tmp_path, MINIMAL.replace("  name: deit_small_patch16_224\n", "  num_classes: 3\n"))
    assert error_of(path) == f"{path}: model.name: missing required key; expected a non-empty string"
    path = write(tmp_path, MINIMAL.replace("  r: 50\n", ""))
    assert error_of(path).startswith(f"{path}: ppt.r: missing required key (as ppt.enabled is true)")


# ------------------------------------------------------------------------------------ type/range errors

@pytest.mark.parametrize("edit, expected", [
    ({"model__num_classes": "true"}, "model.num_classes: expected an int >= 1, got true"),
    ({"model__num_classes": "0"}, "model.num_classes: expected an int >= 1, got 0"),
    ({"model__depth": "2.0"}, "model.depth: expected an int >= 1 or null, got 2.0"),
    ({"model__drop_path_rate": "1"}, "model.drop_path_rate: expected a float in [0, 1), got 1"),
    ({"ppt__enabled": "1"}, "ppt.enabled: expected true or false, got 1"),
    ({"ppt__r": "-3"}, "ppt.r: expected an int >= 0 or a list of them, got -3"),
    ({"ppt__r": "[10, -1, 5]"}, "ppt.r: expected an int >= 0 or a list of them, got [10, -1, 5]"),
    ({"ppt__layers": "[3, 3, 9]"},
     "ppt.layers: expected a list of distinct ints >= 0 in ascending order, got [3, 3, 9]"),
    ({"ppt__layers": "[9, 6, 3]"},
     "ppt.layers: expected a list of distinct ints >= 0 in ascending order, got [9, 6, 3]"),
    ({"ppt__layers": "[3, 6, 12]"},
     "ppt.layers: expected block indices in [0, 12) (the model has 12 blocks), got [3, 6, 12]"),
    ({"ppt__r": "[10, 20]"}, "ppt.r: expected an int >= 0 or one per entry of the PP layers [3, 6, 9] "
                             "(3 values), got [10, 20]"),
    ({"ppt__threshold": "-1e-5"}, "ppt.threshold: expected a float >= 0 or null, got -1e-05"),
    ({"ppt__threshold": ".nan"}, "ppt.threshold: expected a float >= 0 or null, got NaN"),
    ({"data__batch_size": "0"}, "data.batch_size: expected an int >= 1, got 0"),
    ({"data__path": "''"}, 'data.path: expected a non-empty string, got ""'),
    ({"data__interpolation": "nearest"},
     "data.interpolation: expected one of 'bicubic', 'bilinear', got \"nearest\""),
    ({"data__mean": "[0.5, 0.5]"}, "data.mean: expected a list of 3 floats in [0, 1], got [0.5, 0.5]"),
    ({"data__mean": "[123.7, 116.3, 103.5]"}, "data.mean: expected a list of 3 floats in [0, 1], got "),
    ({"data__std": "[0.2, 0, 0.2]"}, "data.std: expected a list of 3 floats in (0, 1], got [0.2, 0, 0.2]"),
    ({"model__name": "deit_smal_patch16_224"}, "model.name: expected one of deit3_base_patch16_224, "),
    ({"model__img_size": "100"}, "model.img_size: expected a multiple of the patch size 16, got 100"),
    ({"model__patch_size": "15"}, "model.patch_size: expected a divisor of the image size 224, got 15"),
    ({"model__embed_dim": "100"}, "model.embed_dim: expected a multiple of num_heads 6, got 100"),
])
def test_value_errors_name_file_and_key(tmp_path, edit, expected):
    path = write(tmp_path, minimal_with(**edit))
    assert error_of(path).startswith(f"{path}: {expected}")


def test_unknown_model_name_suggests(tmp_path):
    path = write(tmp_path, minimal_with(model__name="deit_smal_patch16_224"))
    assert error_of(path).endswith("got \"deit_smal_patch16_224\" (did you mean 'deit_small_patch16_224'?)")


def test_depth_override_checks_layers_and_blames_the_right_source(tmp_path):
    path = write(tmp_path, MINIMAL)
    # the layers come from the file, so the file is named even though depth came from an override
    assert error_of(path, ["model.depth=8"]).startswith(f"{path}: ppt.layers: expected block indices in [0, 8)")
    assert load_config(path, ["model.depth=8", "ppt.layers=[1,3,5]"])["ppt"]["layers"] == [1, 3, 5]


def test_ppt_checks_skipped_when_disabled(tmp_path):
    path = write(tmp_path, minimal_with(ppt__layers="[3, 6, 40]"))
    assert load_config(path, ["ppt.enabled=false"])["ppt"]["layers"] == [3, 6, 40]


def test_exponent_floats_with_a_dot_and_no_sign_are_floats(tmp_path):
    """YAML 1.1 reads 1.0e9 as a string; the documented pool-only threshold must load as a float."""
    from src.config import load_config
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: deit_tiny_patch16_224}\nppt: {r: 1, layers: [1], threshold: 1.0e9}\n"
                    "data: {path: demo}\n")
    assert load_config(path)["ppt"]["threshold"] == 1e9
    assert load_config(path, ["ppt.threshold=2.5E-5"])["ppt"]["threshold"] == 2.5e-5
