"""Show which patches each PP block prunes and which it pools, per image.

    python visualize.py --config config/demo.yaml --ckpt outputs/demo/best.ckpt --demo 4 --out vis/
    python visualize.py --config config/deit_small_patch16_224.yaml --ckpt W.pth cat.jpg photos/ --out vis/

Writes ``<out>/<image>_block<i>.png`` per PP block and ``<out>/<image>_grid.png`` per image (see
``src/analysis/visualize.py``). A checkpoint is required unless ``--random-weights`` is given. The predicted class is
named as infer.py names it (--class_names FILE, the names stored in the checkpoint, data.path's class folders,
ImageNet-1k's).
"""
from pathlib import Path

from src.analysis.visualize import demo_images, describe_weights, visualize_images
from src.cli import ArgumentParser, UsageError, add_common_args, flag_fixes, load_args_config, run, setup_context
from src.data import collect_images, resolve_data_root
from src.deploy import runtime_for
from src.deploy.inference import label_splits, preprocess_from_config, resolve_class_names
from src.factory import build_model
from src.io.class_names import MissingClassNames


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, ckpt="optional")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files, or folders searched recursively")
    parser.add_argument("--demo", type=int, metavar="N",
                        help="also visualise N images of the built-in demo dataset's val split, one class after "
                             "another (generated on first use)")
    parser.add_argument("--out", "--output", dest="out", default="outputs/visualize",
                        help="output folder (default: outputs/visualize)")
    parser.add_argument("--random-weights", "--random_weights", dest="random_weights", action="store_true",
                        help="run without a checkpoint (random init; the images say so)")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8,
                        help="images per forward pass (default: 8)")
    parser.add_argument("--class_names", default=None, metavar="FILE",
                        help="one class name per line (default: those stored in the checkpoint, else the class "
                             "folders of data.path, else ImageNet-1k's for 1000 classes)")
    args = parser.parse_args()

    if args.ckpt_file is None and not args.random_weights:
        raise UsageError("a checkpoint is required: give --ckpt_file, or --random-weights to look at an "
                         "untrained model")
    if args.ckpt_file is not None and args.random_weights:
        raise UsageError("--random-weights and --ckpt_file exclude each other")
    runtime = runtime_for(args.ckpt_file) if args.ckpt_file is not None else None
    if runtime is not None and not runtime.needs_config:
        raise UsageError(f"--ckpt_file {args.ckpt_file}: an exported {runtime.label} file returns logits only; the PP "
                         f"blocks' decisions need the model's weights (.ckpt, .pth, .safetensors)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size: expected an int >= 1, got {args.batch_size}")
    if args.class_names and not Path(args.class_names).is_file():
        raise UsageError(f"--class_names {args.class_names}: no such file")
    cfg = load_args_config(args)
    if not cfg["ppt"]["enabled"]:
        raise UsageError(f"{args.config_path}: ppt.enabled is false: nothing to visualise")
    paths = collect_images(args.images)
    if args.demo is not None:
        paths += demo_images(resolve_data_root("demo"), args.demo)
    if not paths:
        raise UsageError("no images: give IMAGE files or folders, or --demo N")

    setup_context(args.device_target, args.mode)
    model = build_model(cfg, args.ckpt_file)
    pre = preprocess_from_config(cfg, args.ckpt_file)
    with flag_fixes(MissingClassNames, "--class_names FILE"):
        names = resolve_class_names(model.num_classes, pre, args.class_names, model=args.ckpt_file or "the model",
                                    splits=label_splits(cfg))
    results = visualize_images(model, paths, args.out, pre, describe_weights(args.ckpt_file), names.names,
                               batch_size=args.batch_size)
    for item in results:
        steps = ", ".join(f"block {b['layer']} {b['decision']} ({b['tokens']} tokens, {len(b['groups'])} groups, "
                          f"{b['pruned_patches']} patches pruned)" for b in item["blocks"])
        print(f"{item['image']}: {item['prediction_name']} (class {item['prediction']}): {steps} -> {item['grid']}")
    print(f"wrote {len(results) * (len(model.ppt_layers) + 1)} PNGs to {args.out}")


if __name__ == "__main__":
    run(main)
