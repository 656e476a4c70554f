"""Inference speed of the baseline DeiT against PPT on random input, and the cost of the token reduction.

    python benchmark.py --config config/deit_small_patch16_224.yaml --batch-size 32 1 --runs 5
    python benchmark.py --config config/deit_small_patch16_224.yaml --backend both

--backend onnxruntime times the same models exported to temporary ONNX files; both times the two interleaved.
Every round also times a large matmul in each backend: MAC utilisation is reported against it. No weights are
needed (random initialisation; PPT's cost does not depend on the weights). Results are printed and written as
JSON to --out (default: outputs/bench_<config name>.json).

    python benchmark.py --config config/demo.yaml --sweep 4 8 16 --sweep-data demo --ckpt_file best.ckpt

With --sweep, it measures the accuracy / MACs / throughput trade-off over r values (and optionally PP layer sets
and thresholds) instead, writing CSV, JSON and a PNG plot (see src/analysis/sweep.py).
"""
import argparse
from pathlib import Path

from src.analysis.benchmark import BACKENDS, benchmark, format_benchmark
from src.analysis.sweep import format_sweep, run_sweep
from src.cli import ArgumentParser, UsageError, add_common_args, load_args_config, run, setup_context, write_report
from src.config import model_kwargs


def _layer_set(text: str) -> list[int]:
    try:
        layers = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices such as 3,6,9, got '{text}'")
    if not layers:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices such as 3,6,9, got '{text}'")
    return layers


def add_sweep_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--sweep R [R ...]`` (runs the sweep) and its ``--sweep-*`` options to ``parser``.

    The weights come from ``--ckpt_file`` (needed for ``--sweep-data``)."""
    group = parser.add_argument_group("sweep (accuracy / MACs / throughput trade-off)")
    group.add_argument("--sweep", type=int, nargs="+", metavar="R",
                       help="sweep these r values (plus the baseline) and write CSV, JSON and PNG")
    group.add_argument("--sweep-layers", "--sweep_layers", dest="sweep_layers", type=_layer_set, nargs="+",
                       metavar="L,L,...", help="PP layer sets to try, e.g. 3,6,9 2,5,8 (default: ppt.layers)")
    group.add_argument("--sweep-thresholds", "--sweep_thresholds", dest="sweep_thresholds", type=float, nargs="+",
                       metavar="T", help="score-variance thresholds to try (default: ppt.threshold)")
    group.add_argument("--sweep-data", "--sweep_data", dest="sweep_data", metavar="PATH|demo",
                       help="also measure top-1 on this dataset (needs --ckpt_file); default: no accuracy")
    group.add_argument("--sweep-split", "--sweep_split", dest="sweep_split", default="val",
                       help="split folder of --sweep-data (default: val)")
    group.add_argument("--sweep-max-images", "--sweep_max_images", dest="sweep_max_images", type=int, metavar="N",
                       help="evaluate on a fixed random subset of about N images (whole batches)")
    group.add_argument("--sweep-batch-size", "--sweep_batch_size", dest="sweep_batch_size", type=int, metavar="B",
                       help="timing and evaluation batch (default: data.batch_size)")
    group.add_argument("--sweep-runs", "--sweep_runs", dest="sweep_runs", type=int, default=5,
                       help="timed calls per setting, the median counts (default: 5)")
    group.add_argument("--sweep-out", "--sweep_out", dest="sweep_out", metavar="PREFIX",
                       help="output prefix (default: outputs/sweep_<config name>)")


def run_sweep_from_args(args: argparse.Namespace) -> list[dict]:
    """Run the sweep described by the ``--sweep*`` flags in graph mode; print the table and where the files
    went; return its rows."""
    if args.mode != "graph":
        raise UsageError("--sweep times the graph-mode model: drop --mode pynative")
    for flag, value in (("--sweep-max-images", args.sweep_max_images), ("--sweep-batch-size", args.sweep_batch_size),
                        ("--sweep-runs", args.sweep_runs)):
        if value is not None and value < 1:
            raise UsageError(f"{flag}: expected an int >= 1, got {value}")
    setup_context(args.device_target, "graph")
    cfg = load_args_config(args)
    out_prefix = args.sweep_out or str(Path("outputs") / f"sweep_{Path(args.config_path).stem}")
    rows = run_sweep(cfg, args.ckpt_file, args.sweep, layer_sets=args.sweep_layers,
                     thresholds=args.sweep_thresholds, data=args.sweep_data, batch_size=args.sweep_batch_size,
                     max_images=args.sweep_max_images, timing_runs=args.sweep_runs, out_prefix=out_prefix,
                     split=args.sweep_split)
    print(format_sweep(rows))
    if args.sweep_data is None:
        print("top-1 not measured (no --sweep-data)")
    print(f"wrote {out_prefix}.csv, {out_prefix}.json, {out_prefix}.png")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)  # --ckpt_file: the weights for --sweep-data (timing needs none)
    parser.add_argument("--batch-size", "--batch_size", dest="batch_sizes", type=int, nargs="+", default=[32, 1],
                        help="batch sizes to time (default: 32 1)")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="mindspore",
                        help="time the Cells in MindSpore, their ONNX exports (same weights) in onnxruntime, or "
                             "both interleaved in one run (default: mindspore)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of MindSpore's CPU kernels and of onnxruntime (default: the usable "
                             "cores); recorded in the JSON with the other settings")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls per model and batch size, the first compiles (default: 2)")
    parser.add_argument("--runs", type=int, default=5,
                        help="timed rounds, every model once per round; medians and per-round ratios are reported "
                             "(default: 5)")
    parser.add_argument("--latency-runs", "--latency_runs", dest="latency_runs", type=int, default=20,
                        help="timed runs at batch 1, for the p50/p90 latency (default: 20)")
    parser.add_argument("--policies", nargs="+", default=[], metavar="POLICY",
                        help="also time the PPT setting with these token-reduction policies, e.g. prune pool")
    parser.add_argument("--out", "--output", dest="out", default=None,
                        help="JSON results file (default: outputs/bench_<config name>.json)")
    add_sweep_args(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.sweep:
        run_sweep_from_args(args)
        return
    if args.ckpt_file:
        parser.error("--ckpt_file is only used with --sweep --sweep-data (timing uses random weights)")

    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: expected an int >= 1, got {args.threads}")
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    setup_context(args.device_target, args.mode)
    cfg = load_args_config(args)
    kwargs = model_kwargs(cfg)
    report = benchmark(kwargs, args.batch_sizes, warmup=args.warmup, runs=args.runs, latency_runs=args.latency_runs,
                       seed=cfg["seed"], policies=args.policies, backends=backends, threads=args.threads)
    report["model"] = dict(kwargs, ppt=kwargs["ppt"].to_dict() if kwargs["ppt"] else None)
    write_report(args, report, format_benchmark(report), "bench")


if __name__ == "__main__":
    run(main)
