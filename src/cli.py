"""What every top-level script shares: the model-zoo flags, the MindSpore context, the JSON report, and turning
expected errors into one line on stderr instead of a traceback.

Every error a script reports -- a bad command line included -- is one line ``prog: error: ...`` on stderr with
exit code 1 (``-h`` prints the usage); ``PPT_DEBUG=1`` shows the traceback of errors raised after parsing.
A warning is one line ``prog: warning: ...``.
"""
import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import mindspore as ms

from .config import load_config
from .io.fileio import write_json_atomic
from .mslog import held_mindspore_logs

DEVICES = ("Ascend", "GPU", "CPU")


class UsageError(ValueError):
    """A bad command line or input the script can name precisely (reported as one line)."""


# (flag, value) of the options of the last parsed command line, so that run() can name the flag that gave a
# path an OSError is about (e.g. an unwritable --output_dir).
_GIVEN_PATHS: list[tuple[str, str]] = []


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the scripts' one-line errors: ``prog: error: --flag: message`` and exit code 1, without the
    usage block (``-h`` shows it). A negative number in scientific notation (``-1e-4``) is a value, as ``-0.5``
    is, not an unknown option, so that the value check can say what is wrong with it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str) -> NoReturn:
        # argparse says "argument --device_target/--device: invalid choice ..."; name the flag once.
        message = re.sub(r"^argument ([^/:]+)(/[^:]+)?: ", r"\1: ", message)
        self.exit(1, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        _GIVEN_PATHS[:] = [(action.option_strings[0], value) for action in self._actions if action.option_strings
                           and isinstance(value := getattr(parsed, action.dest, None), str) and value]
        return parsed, rest


def add_common_args(parser: argparse.ArgumentParser, ckpt: str = "optional",
                    default_config: str | None = None) -> None:
    """``--config_path/--config``, ``--device_target/--device``, ``--mode``, ``--set`` and, unless
    ``ckpt == "none"``, ``--ckpt_file/--ckpt`` (``ckpt == "required"`` makes it mandatory)."""
    parser.add_argument("--config_path", "--config", dest="config_path", default=default_config,
                        required=default_config is None, help="YAML config (see config/README.md)")
    parser.add_argument("--device_target", "--device", dest="device_target", choices=DEVICES, default="CPU",
                        help="where to run (default: CPU)")
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph",
                        help="MindSpore execution mode (default: graph, as on Ascend)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="SECTION.KEY=VALUE", help="override config keys, e.g. --set ppt.r=30 data.batch_size=8")
    if ckpt != "none":
        parser.add_argument("--ckpt_file", "--ckpt", dest="ckpt_file", required=ckpt == "required",
                            help="weights: .ckpt, PyTorch .pth or timm .safetensors")


def setup_context(device_target: str, mode: str = "graph") -> None:
    """Select the device and execution mode; an unavailable device is a clear error, not a silent CPU run."""
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        # MindSpore logs why the device's libraries are missing before raising; our one line says it.
        with held_mindspore_logs():
            ms.set_device(device_target)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--device_target {device_target}: not available on this machine "
                         f"({str(e).split('. ')[0]})") from e


def load_args_config(args: argparse.Namespace) -> dict[str, Any]:
    return load_config(args.config_path, args.overrides)


def report_path(args: argparse.Namespace, kind: str) -> str:
    """``args.out``, default ``outputs/<kind>_<config stem>.json``."""
    return args.out or str(Path("outputs") / f"{kind}_{Path(args.config_path).stem}.json")


def write_report(args: argparse.Namespace, report: dict[str, Any], text: str, kind: str) -> None:
    """Print ``text`` and write ``report`` (plus the command line's config, overrides, device and mode) as JSON
    to :func:`report_path`."""
    report.update(config=args.config_path, overrides=args.overrides, device=args.device_target, mode=args.mode)
    out = report_path(args, kind)
    print(text)
    write_json_atomic(out, report)
    print(f"results written to {out}")


@contextmanager
def flag_fixes(errors: type[Exception] | tuple[type[Exception], ...], flag: str) -> Iterator[None]:
    """Re-raise ``errors`` raised inside as a :class:`UsageError` that adds the command-line ``flag`` fixing them:
    the library describes the problem, the script names its option."""
    try:
        yield
    except errors as e:
        raise UsageError(f"{e} (give {flag})") from e


def _os_error_line(e: OSError) -> str:
    """``[Errno 13] Permission denied: 'out/x'`` as ``--output_dir out: out/x: Permission denied`` when a flag
    of the command line gave that path or a folder above it."""
    if e.filename is None or not e.strerror:
        return str(e)
    path = os.path.abspath(os.fsdecode(e.filename))
    where = os.fsdecode(e.filename) + (f" -> {os.fsdecode(e.filename2)}" if e.filename2 is not None else "")
    for flag, value in _GIVEN_PATHS:
        given = os.path.abspath(value)
        if path == given:
            return f"{flag} {value}: {e.strerror}"
        if path.startswith(given.rstrip(os.sep) + os.sep):
            return f"{flag} {value}: {where}: {e.strerror}"
    return f"{where}: {e.strerror}"


def run(main: Callable[[], Any], prog: str | None = None) -> None:
    """Run ``main``; expected errors (bad config, input, checkpoint, file) end the process with one line and
    exit code 1. ``PPT_DEBUG=1`` re-raises them with the traceback. Warnings are shown as one line each."""
    prog = prog or Path(sys.argv[0]).name

    def one_line(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            main()
    except (ValueError, OSError) as e:
        if os.environ.get("PPT_DEBUG") == "1":
            raise
        print(f"{prog}: error: {_os_error_line(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        sys.exit(1)
