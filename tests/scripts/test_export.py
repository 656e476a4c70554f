"""export.py and class names: they come from the weights or --class_names, never from a dataset, so weights without
names export without a dataset (even with data.path: demo and another class count than the demo's), and names that
do not fit are refused in one line before anything is written."""
import pytest

from src.config import load_config
from src.deploy.mindir import read_mindir_meta
from src.factory import build_model
from src.io.checkpoint import save_weights

from ..conftest import ROOT
from ..run_scripts import TINY_CONFIG, run_script

NAMES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]


@pytest.fixture(scope="module")
def seven(tmp_path_factory):
    """A 7-class tiny config per data.path (an absent folder, the demo's 10 classes), random weights without names
    (as official weights store none) and with names, and a names file."""
    d = tmp_path_factory.mktemp("export")
    configs = {}
    for key, data in (("absent", "/nonexistent/imagenet"), ("demo", "demo")):
        configs[key] = d / f"{key}.yaml"
        configs[key].write_text(TINY_CONFIG.replace("num_classes: 3", "num_classes: 7").replace("DATA", data))
    model = build_model(load_config(configs["absent"]))
    save_weights(model, d / "plain.ckpt")
    save_weights(model, d / "named.ckpt", meta={"class_names": NAMES})
    (d / "names.txt").write_text("\n".join(NAMES) + "\n")
    return d, configs


def _export(capsys, config, ckpt, out, *extra):
    return run_script(ROOT / "export.py", ["--config", config, "--ckpt", ckpt, "--out", out, "--mode", "pynative",
                                           *extra], capsys)


@pytest.mark.parametrize("data", ["absent", "demo"])
def test_weights_without_names_export_without_a_dataset(seven, capsys, tmp_path, data):
    d, configs = seven
    code, out, err = _export(capsys, configs[data], d / "plain.ckpt", tmp_path / "m")
    assert (code, err) == (0, [])
    assert out.splitlines()[-1] == (f"class names: none stored ({d / 'plain.ckpt'} stores none and no "
                                    f"--class_names FILE was given)")
    assert read_mindir_meta(tmp_path / "m.mindir").info["class_names"] is None


@pytest.mark.parametrize("ckpt, extra, source", [("named.ckpt", [], "the metadata of {d}/named.ckpt"),
                                                 ("plain.ckpt", ["--class_names", "names.txt"], "{d}/names.txt")])
def test_names_from_the_weights_or_the_names_file(seven, capsys, tmp_path, ckpt, extra, source):
    d, configs = seven
    extra = [d / e if e.endswith(".txt") else e for e in extra]
    code, out, err = _export(capsys, configs["demo"], d / ckpt, tmp_path / "m", *extra)
    assert (code, err) == (0, [])
    assert out.splitlines()[-1] == f"class names: 7 from {source.format(d=d)}"
    assert read_mindir_meta(tmp_path / "m.mindir").info["class_names"] == NAMES


@pytest.mark.parametrize("names, ckpt, message", [
    (NAMES[:6], "plain.ckpt", "{f}: 6 class names, but the model has 7 classes"),
    (NAMES[1:] + NAMES[:1], "named.ckpt", "{f}: the class names differ from those stored in {d}/named.ckpt (class 0 "
                                          "is 'bee' vs 'ant'); expected the same names in the same order"),
])
def test_names_that_do_not_fit_are_refused_in_one_line(seven, capsys, tmp_path, names, ckpt, message):
    d, configs = seven
    names_file = tmp_path / "other.txt"
    names_file.write_text("\n".join(names) + "\n")
    code, out, err = _export(capsys, configs["absent"], d / ckpt, tmp_path / "m", "--class_names", names_file)
    assert (code, out) == (1, "")
    assert err == [f"export.py: error: {message.format(f=names_file, d=d)}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]
