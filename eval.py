"""Evaluate a (PPT-)DeiT checkpoint on an ImageNet-layout folder: accuracy, loss, MACs, speed, PPT statistics.

    python eval.py --config config/deit_small_patch16_224.yaml --ckpt deit_small.pth --data /data/imagenet
    python eval.py --config config/demo.yaml --ckpt outputs/demo/best.ckpt --compare-baseline
    python eval.py --config config/demo.yaml --model demo_ppt.onnx      # the deployed file, in onnxruntime
    python eval.py --config config/demo.yaml --model demo_ppt.mindir    # or in MindSpore

Results are printed and written as JSON to --out (default: outputs/eval_<config name>.json). --per-class adds
top-1 per named class and the confusion matrix; --plot also draws the matrix as <out stem>_confusion.png.
--model evaluates an exported file (.onnx, .mindir; --onnx is an alias) instead of a checkpoint, in the runtime of
its suffix (its stored preprocessing, the config's data).
"""
from pathlib import Path

from src.cli import (
    ArgumentParser,
    UsageError,
    add_common_args,
    load_args_config,
    report_path,
    run,
    setup_context,
    write_report,
)
from src.deploy import runtime_for
from src.evaluation import evaluate_checkpoint, evaluate_exported, format_report, plot_confusion


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, ckpt="optional")
    parser.add_argument("--data", "--data_path", dest="data", default=None,
                        help="dataset root with <split>/<class>/<image>, or 'demo' (default: data.path)")
    parser.add_argument("--model", "--onnx", dest="model", default=None, metavar="FILE",
                        help="evaluate this exported file (.onnx in onnxruntime, .mindir in MindSpore) instead of a "
                             "checkpoint")
    parser.add_argument("--split", default="val", help="split folder under the dataset root (default: val)")
    parser.add_argument("--compare-baseline", "--compare_baseline", dest="compare_baseline", action="store_true",
                        help="also evaluate the same weights without PPT and print a side-by-side table")
    parser.add_argument("--strict", action="store_true",
                        help="fail on the first unreadable image instead of reporting it and leaving it out")
    parser.add_argument("--out", "--output", dest="out", default=None,
                        help="JSON results file (default: outputs/eval_<config name>.json)")
    parser.add_argument("--per-class", "--per_class", dest="per_class", action="store_true",
                        help="also top-1 per class with its name, and the confusion matrix in the JSON")
    parser.add_argument("--plot", action="store_true",
                        help="also draw the confusion matrix as <out stem>_confusion.png (implies --per-class)")
    parser.add_argument("--class_names", default=None, metavar="FILE",
                        help="one class name per line (default: those stored in the checkpoint, else the split's "
                             "class folders)")
    args = parser.parse_args()
    # Checked here rather than by argparse so the error can say why a checkpoint is needed.
    if args.model is not None:
        if args.ckpt_file is not None or args.compare_baseline:
            raise UsageError(f"--model {args.model}: the file holds the weights; drop "
                             f"{'--ckpt' if args.ckpt_file is not None else '--compare-baseline'}")
        if not Path(args.model).is_file():
            raise UsageError(f"--model {args.model}: no such file")
        runtime = runtime_for(args.model)
        if runtime.needs_config:
            raise UsageError(f"--model {args.model}: weights are evaluated with --ckpt")
        runtime.check_available(args.device_target)
    elif args.ckpt_file is None:
        raise UsageError("--ckpt is required: evaluating randomly initialised weights would be meaningless")
    if args.class_names and not Path(args.class_names).is_file():
        raise UsageError(f"--class_names {args.class_names}: no such file")

    setup_context(args.device_target, args.mode)
    cfg = load_args_config(args)
    if args.compare_baseline and not cfg["ppt"]["enabled"]:
        raise UsageError("--compare-baseline: the config has ppt.enabled: false, so the model already is the "
                         "baseline; enable PPT to compare")
    if args.data is not None:
        cfg["data"]["path"] = args.data
    per_class = args.per_class or args.plot
    if args.model is not None:
        report = evaluate_exported(cfg, args.model, split=args.split, strict=args.strict, per_class=per_class,
                                   class_names_file=args.class_names)
    else:
        report = evaluate_checkpoint(cfg, args.ckpt_file, split=args.split, strict=args.strict,
                                     compare_baseline=args.compare_baseline, per_class=per_class,
                                     class_names_file=args.class_names)
    write_report(args, report, format_report(report), "eval")
    if args.plot:
        out = Path(report_path(args, "eval"))
        png = out.with_name(f"{out.stem}_confusion.png")
        plot_confusion(report, png)
        print(f"confusion matrix written to {png}")


if __name__ == "__main__":
    run(main)
