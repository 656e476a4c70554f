"""Choose the PPT threshold (and, with --target, the r schedule) from unlabelled images.

    python calibrate.py --config config/demo.yaml --ckpt W.ckpt --data demo --split val
    python calibrate.py --config config/deit_small_patch16_224.yaml --ckpt deit_s.ckpt --data my_photos/ \
        --target 0.64
    python calibrate.py --config C --ckpt W --data DIR --thresholds 0 5e-5 1e-4 1e9

--data is an ImageNet-layout dataset (its --split folder is used), a split folder, or any folder of images
(searched recursively; labels are not needed: class folders matching the model's classes add top-1). Every
candidate threshold is scored by its agreement with the same weights without token reduction (top-1
agreement, then KL; see src/analysis/calibrate.py). Prints the table, the chosen threshold and the `ppt:` block ready
to paste; writes every row as JSON to --out (default: outputs/calibrate_<config name>.json).
"""
from src.analysis.calibrate import calibrate, format_calibration
from src.cli import ArgumentParser, UsageError, add_common_args, load_args_config, run, setup_context, write_report


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, ckpt="required")
    parser.add_argument("--data", "--data_path", dest="data", required=True, metavar="PATH|demo",
                        help="a dataset root, a split folder or any folder of images (searched recursively)")
    parser.add_argument("--split", default="val", help="split folder of --data when it has one (default: val)")
    parser.add_argument("--max-images", "--max_images", dest="max_images", type=int, default=512,
                        help="use a seeded random subset of at most N images (default: 512)")
    parser.add_argument("--target", help="MACs budget for the r schedule (budget.py's search): a fraction of the "
                                         "baseline's (0.64) or per image with a G/M suffix (3.0G); default: the "
                                         "config's r")
    parser.add_argument("--thresholds", type=float, nargs="+", metavar="T",
                        help="candidate thresholds (default: prune only, quantiles of the first PP block's score "
                             "variances, pool only, and the config's)")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int,
                        help="batch (default: data.batch_size)")
    parser.add_argument("--out", "--output", dest="out", default=None,
                        help="JSON results file (default: outputs/calibrate_<config name>.json)")
    args = parser.parse_args()
    for flag, value in (("--max-images", args.max_images), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag}: expected an int >= 1, got {value}")
    negative = [t for t in args.thresholds or () if not t >= 0]
    if negative:
        raise UsageError(f"--thresholds: expected score variances >= 0, got {negative[0]:g}")
    cfg = load_args_config(args)
    setup_context(args.device_target, args.mode)
    report = calibrate(cfg, args.ckpt_file, args.data, split=args.split, max_images=args.max_images,
                       target=args.target, thresholds=args.thresholds, batch_size=args.batch_size)
    write_report(args, report, format_calibration(report), "calibrate")


if __name__ == "__main__":
    run(main)
