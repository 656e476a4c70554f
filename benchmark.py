"""Inference speed of the baseline DeiT against PPT on random input, and the cost of the token reduction.

    python benchmark.py --config config/deit_small_patch16_224.yaml --batch-size 32 64 --runs 5

No weights are needed (random initialisation; PPT's cost does not depend on the weights). Results are
printed and written as JSON to --out (default: outputs/bench_<config name>.json).

    python benchmark.py --config config/demo.yaml --sweep 4 8 16 --sweep-data demo --ckpt_file best.ckpt

With --sweep, it measures the accuracy / MACs / throughput trade-off over r values (and optionally PP layer
sets and thresholds) instead, writing CSV, JSON and a PNG plot (see src/sweep.py).
"""
from src.benchmark import benchmark, format_benchmark
from src.cli import ArgumentParser, add_common_args, load_args_config, run, setup_context, write_report
from src.config import model_kwargs
from src.sweep import add_sweep_args, sweep_from_args


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)  # --ckpt_file: the weights for --sweep-data (timing needs none)
    parser.add_argument("--batch-size", "--batch_size", dest="batch_sizes", type=int, nargs="+", default=[32],
                        help="batch sizes to time (default: 32)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls per model and batch size, the first compiles (default: 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported (default: 5)")
    parser.add_argument("--out", "--output", dest="out", default=None,
                        help="JSON results file (default: outputs/bench_<config name>.json)")
    add_sweep_args(parser)
    args = parser.parse_args()
    if args.sweep:
        sweep_from_args(args)
        return
    if args.ckpt_file:
        parser.error("--ckpt_file is only used with --sweep --sweep-data (timing uses random weights)")

    setup_context(args.device_target, args.mode)
    cfg = load_args_config(args)
    kwargs = model_kwargs(cfg)
    report = benchmark(kwargs, args.batch_sizes, warmup=args.warmup, runs=args.runs, seed=cfg["seed"])
    report["model"] = kwargs
    write_report(args, report, format_benchmark(report), "bench")


if __name__ == "__main__":
    run(main)
