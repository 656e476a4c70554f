"""Choose the PPT r schedule that meets a MACs budget while preserving accuracy best.

    python budget.py --config config/deit_small_patch16_224.yaml --target 0.7
    python budget.py --config config/deit_small_patch16_224.yaml --target 3.0G --layers 3 6 9
    python budget.py --config config/demo.yaml --target 0.6 --data demo --ckpt W.ckpt --max-images 256

--target is a fraction of the baseline DeiT's MACs (0.7) or absolute MACs per image (3.0G, 2950M). The
schedule is chosen analytically (criterion: src/analysis/budget.py); with --data the analytic choice and two ramps
meeting the same target are also evaluated on (a subset of) the dataset and the best top-1 wins. Prints the
`ppt:` block ready to paste into a config.
"""
from src.analysis.budget import choose_schedule
from src.cli import ArgumentParser, UsageError, add_common_args, load_args_config, run, setup_context
from src.token_reduction import get_policy


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, ckpt="optional")
    parser.add_argument("--target", required=True,
                        help="MACs budget: a fraction of the baseline's (0.7) or per image with a G/M suffix (3.0G)")
    parser.add_argument("--layers", type=int, nargs="+", help="0-based PP blocks (default: ppt.layers)")
    parser.add_argument("--threshold", type=float,
                        help="score-variance threshold for the printed block (default: ppt.threshold)")
    parser.add_argument("--data", "--data_path", dest="data", metavar="PATH|demo",
                        help="also evaluate the candidates' top-1 on this dataset (needs --ckpt_file)")
    parser.add_argument("--split", default="val", help="split folder of --data (default: val)")
    parser.add_argument("--max-images", "--max_images", dest="max_images", type=int, default=512,
                        help="evaluate on a fixed random subset of about N images (whole batches; default: 512)")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int,
                        help="evaluation batch (default: data.batch_size)")
    args = parser.parse_args()

    cfg = load_args_config(args)
    layers = args.layers if args.layers is not None else cfg["ppt"]["layers"]
    threshold = args.threshold if args.threshold is not None else cfg["ppt"]["threshold"]
    if layers is None:
        raise UsageError(f"{args.config_path}: ppt is disabled, so give --layers (and --threshold for ppt)")
    if threshold is None and get_policy(cfg["ppt"]["policy"]).uses_threshold:
        raise UsageError(f"{args.config_path}: the ppt policy needs a threshold: give --threshold")
    if args.data is None and args.ckpt_file is not None:
        raise UsageError("--ckpt_file is only used to evaluate candidates: give --data too")
    if args.data is not None and args.ckpt_file is None:
        raise UsageError("--data: evaluating candidates needs trained weights: give --ckpt_file")
    for flag, value in (("--max-images", args.max_images), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag}: expected an int >= 1, got {value}")
    if args.data is not None:
        setup_context(args.device_target, args.mode)
    print(choose_schedule(cfg, args.target, layers, threshold, data=args.data, ckpt_file=args.ckpt_file,
                          split=args.split, max_images=args.max_images, batch_size=args.batch_size))


if __name__ == "__main__":
    run(main)
