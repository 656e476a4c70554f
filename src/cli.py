"""What every top-level script shares: the model-zoo flags, the MindSpore context, the JSON report, and turning
expected errors into one line on stderr instead of a traceback."""
import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import mindspore as ms

from .config import load_config
from .fileio import write_json_atomic

DEVICES = ("Ascend", "GPU", "CPU")


class UsageError(ValueError):
    """A bad command line or input the script can name precisely (reported as one line)."""


def add_common_args(parser: argparse.ArgumentParser, ckpt: str = "optional",
                    default_config: Optional[str] = None) -> None:
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
        ms.set_device(device_target)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--device_target {device_target}: not available on this machine ({str(e).split('. ')[0]})") from e


def load_args_config(args: argparse.Namespace) -> Dict[str, Any]:
    return load_config(args.config_path, args.overrides)


def write_report(args: argparse.Namespace, report: Dict[str, Any], text: str, kind: str) -> None:
    """Print ``text`` and write ``report`` (plus the command line's config, overrides, device and mode) as JSON
    to ``args.out``, default ``outputs/<kind>_<config stem>.json``."""
    report.update(config=args.config_path, overrides=args.overrides, device=args.device_target, mode=args.mode)
    out = args.out or str(Path("outputs") / f"{kind}_{Path(args.config_path).stem}.json")
    print(text)
    write_json_atomic(out, report)
    print(f"results written to {out}")


def run(main: Callable[[], Any], prog: Optional[str] = None) -> None:
    """Run ``main``; expected errors (bad config, input, checkpoint, file) end the process with one line and
    exit code 1. ``PPT_DEBUG=1`` re-raises them with the traceback."""
    prog = prog or Path(sys.argv[0]).name
    try:
        main()
    except (ValueError, OSError) as e:
        if os.environ.get("PPT_DEBUG") == "1":
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
