"""Scripts end every error with one line and exit code 1, before any work where possible (issue #13, items 4,
7, 8, 9): command-line errors, unusable export targets, damaged weights, folders given to infer.py, errno
errors naming their flag, unavailable devices without MindSpore's log lines."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mindspore as ms
import pytest

from src.cli import ArgumentParser, _os_error_line

from ..conftest import ROOT
from ..run_scripts import run_script, tiny_model_files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, config, checkpoint, class names) of a random-weight 3-class model."""
    folder = tmp_path_factory.mktemp("errors")
    return (folder, *tiny_model_files(folder))


def _damaged_copy(ckpt: Path, folder: Path) -> Path:
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2:len(data) // 2 + 40] = bytes(40)
    damaged = folder / "damaged.ckpt"
    damaged.write_bytes(bytes(data))
    return damaged


# ------------------------------------------------------------------------------------- item 8: command lines

@pytest.mark.parametrize("script,argv,line", [
    ("eval.py", ["--config", "c.yaml", "--device_target", "TPU"],
     "--device_target: invalid choice: 'TPU' (choose from 'Ascend', 'GPU', 'CPU')"),
    ("infer.py", ["--model", "m.ckpt", "--topk", "0", "a.png"], "--topk: expected an int >= 1, got 0"),
    ("train.py", ["--stop_after_epoch", "0"], "--stop_after_epoch: expected an int >= 1, got 0"),
    ("export.py", ["--config", "c.yaml", "--ckpt", "w.ckpt"],
     "the following arguments are required: --file_name/--out"),
    ("export.py", ["--config", "c.yaml", "--ckpt", "w.ckpt", "--out", "x", "--batch_size", "two"],
     "--batch_size: invalid int value: 'two'"),
    ("convert.py", ["a.pth", "b.ckpt", "--img_size", "64"], "--img_size: needs --model"),
    ("visualize.py", ["--config", "c.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    ("budget.py", ["--config", "c.yaml", "--device", "TPU", "--target", "0.5"],
     "--device_target: invalid choice: 'TPU' (choose from 'Ascend', 'GPU', 'CPU')"),
])
def test_command_line_errors_are_one_line_naming_the_flag(capsys, script, argv, line):
    # Before: argparse's usage block and exit code 2.
    code, out, err = run_script(ROOT / script, argv, capsys)
    assert (code, out, err) == (1, "", [f"{script}: error: {line}"])


def test_help_still_shows_the_usage(capsys):
    code, out, err = run_script(ROOT / "infer.py", ["-h"], capsys)
    assert code == 0 and out.startswith("usage: infer.py") and err == []


def test_errno_errors_name_the_flag_that_gave_the_path():
    parser = ArgumentParser(prog="x.py")
    parser.add_argument("--output_dir", "--output")
    parser.add_argument("--config")
    parser.parse_args(["--output_dir", "out/run", "--config", "c.yaml"])
    denied = "Permission denied"
    assert _os_error_line(PermissionError(13, denied, "out/run")) == f"--output_dir out/run: {denied}"
    assert (_os_error_line(PermissionError(13, denied, "out/run/log.jsonl"))
            == f"--output_dir out/run: out/run/log.jsonl: {denied}")
    assert _os_error_line(FileNotFoundError(2, "No such file or directory", "else/x")) == \
        "else/x: No such file or directory"
    assert _os_error_line(OSError("no errno")) == "no errno"


def test_train_output_dir_errno_names_the_flag(capsys):
    # Before: "train.py: error: [Errno 13] Permission denied: '...'" without the flag.
    code, _, err = run_script(ROOT / "train.py", ["--output_dir", "/sys/ppt_out", "--no_progress"], capsys)
    assert code == 1 and len(err) == 1
    assert err[0].startswith("train.py: error: --output_dir /sys/ppt_out: "), err


def test_infer_on_a_folder_says_it_is_not_an_image_file(tiny, capsys):
    folder, config, ckpt, _ = tiny
    code, _, err = run_script(ROOT / "infer.py", ["--model", ckpt, "--config", config, folder], capsys)
    assert (code, err) == (1, [f"infer.py: error: {folder}: is a folder, not an image file (infer.py takes image "
                               f"files; visualize.py also searches folders)"])


def test_convert_honours_ppt_debug(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.pth").write_bytes(b"not a zip")
    argv = [tmp_path / "bad.pth", tmp_path / "out.ckpt"]
    code, _, err = run_script(ROOT / "convert.py", argv, capsys)
    assert code == 1 and len(err) == 1 and err[0].startswith("convert.py: error: ")
    monkeypatch.setenv("PPT_DEBUG", "1")
    with pytest.raises(ValueError, match="not a PyTorch zip checkpoint"):
        run_script(ROOT / "convert.py", argv, capsys)
    assert sorted(os.listdir(tmp_path)) == ["bad.pth"]


# ------------------------------------------------------------------------------------- item 4: damaged weights

@pytest.mark.parametrize("script", ["eval.py", "export.py"])
def test_damaged_weights_are_refused_by_the_scripts(tiny, tmp_path, capsys, script):
    folder, config, ckpt, _ = tiny
    damaged = _damaged_copy(ckpt, tmp_path)
    extra = ["--out", tmp_path / "out"] if script == "export.py" else ["--out", tmp_path / "out.json"]
    code, _, err = run_script(ROOT / script, ["--config", config, "--ckpt", damaged, *extra], capsys)
    assert (code, err) == (1, [f"{script}: error: {damaged}: the file is damaged: its CRC32 checksum does not "
                               f"match its contents"])
    assert sorted(os.listdir(tmp_path)) == ["damaged.ckpt"]


# ------------------------------------------------------------------------------------- item 7: export target

@pytest.fixture
def no_export(monkeypatch):
    """Fail the test if the model would be exported: the target must be checked before."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("mindspore.export was called before the target was checked")
    monkeypatch.setattr(ms, "export", refuse)


def _unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    try:  # root ignores permission bits; sysfs takes no new files
        os.close(tempfile.mkstemp(dir="/sys")[0])
    except OSError:
        return Path("/sys")
    pytest.skip("no unwritable folder for root on this machine")


def test_export_to_an_existing_folder_fails_before_exporting(tiny, tmp_path, capsys, no_export):
    _, config, ckpt, _ = tiny
    (tmp_path / "model.mindir").mkdir()
    code, _, err = run_script(ROOT / "export.py", ["--config", config, "--ckpt", ckpt, "--out", tmp_path / "model"],
                              capsys)
    assert (code, err) == (1, [f"export.py: error: {tmp_path / 'model.mindir'}: a folder of that name exists; "
                               f"choose another file name"])
    assert os.listdir(tmp_path) == ["model.mindir"] and os.listdir(tmp_path / "model.mindir") == []


def test_export_to_an_unwritable_folder_fails_before_exporting(tiny, tmp_path, capsys, no_export):
    _, config, ckpt, _ = tiny
    folder = _unwritable_folder(tmp_path)
    code, _, err = run_script(ROOT / "export.py", ["--config", config, "--ckpt", ckpt, "--out", folder / "m"],
                              capsys)
    assert (code, err) == (1, [f"export.py: error: {folder / 'm.mindir'}: cannot write in folder {folder} "
                               f"(Permission denied)"])


# ------------------------------------------------------------------------------------- item 9: device probe

@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_unavailable_device_is_one_line_without_mindspore_logs(tiny, device):
    # Before: two to four MindSpore [ERROR]/[WARNING] lines about missing libraries came first.
    _, config, ckpt, _ = tiny
    result = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--config", str(config), "--ckpt", str(ckpt),
                             "--device_target", device], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if result.returncode == 0 or "not available" not in result.stderr:
        pytest.skip(f"{device} is available here")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"eval.py: error: --device_target {device}: not available on this machine (Unsupported device target "
        f"{device})"]
