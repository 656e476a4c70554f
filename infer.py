"""Classify images with a checkpoint, an exported MindIR or ONNX file and print the top-k classes.

    python infer.py --model deit_small.ckpt --config_path config/deit_small_patch16_224.yaml cat.jpg dog.png
    python infer.py --model deit_small_ppt.mindir cat.jpg dog.png
    python infer.py --model deit_small_ppt.onnx cat.jpg dog.png      # onnxruntime

Images are preprocessed as in evaluation (the config's data settings; for a MindIR or ONNX file written by
export.py the settings stored in it when no config is given; an .onnx from elsewhere needs --config_path). A
checkpoint needs the config to build the model. An exported file fixes the batch size and image size: images
are run in chunks of that batch size (the last one padded).
Class names, first match wins: --class_names FILE, the names stored in the model file, the class folders of
the model's dataset (data.path) if it is here, ImageNet-1k's for 1000 classes.
"""
from collections.abc import Sequence
from pathlib import Path

from src.cli import ArgumentParser, UsageError, add_common_args, flag_fixes, load_args_config, run, setup_context
from src.deploy import runtime_for
from src.deploy.inference import MissingSettings, classify, label_splits, open_model, resolve_class_names
from src.io.class_names import MissingClassNames


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    # An empty default makes the config optional: a MindIR or ONNX file from export.py carries its data settings.
    add_common_args(parser, ckpt="none", default_config="")
    parser.add_argument("--model", required=True,
                        help="weights (.ckpt, .pth, .safetensors) or an exported file (.mindir, .onnx)")
    parser.add_argument("--class_names", default=None, metavar="FILE",
                        help="one class name per line (default: those stored in the model file, else the class "
                             "folders of its dataset, else ImageNet-1k's for 1000 classes)")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per image (default: 5)")
    parser.add_argument("images", nargs="+", help="image files (not folders)")
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error(f"--topk: expected an int >= 1, got {args.topk}")
    folders = [p for p in args.images if Path(p).is_dir()]
    if folders:
        raise UsageError(f"{folders[0]}: is a folder, not an image file (infer.py takes image files; "
                         f"visualize.py also searches folders)")
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:  # before loading anything: a typo should not cost a model load
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"{missing[0]}: no such image file{more}")
    model_path = Path(args.model)
    if not model_path.is_file():
        raise UsageError(f"--model {model_path}: no such file")
    if args.class_names and not Path(args.class_names).is_file():
        raise UsageError(f"--class_names {args.class_names}: no such file")
    exported = not runtime_for(model_path).needs_config
    if not args.config_path and (args.overrides or not exported):
        raise UsageError(f"--model {model_path}: --config_path is required "
                         f"{'with --set' if exported else 'to build the model of a checkpoint'}")
    cfg = load_args_config(args) if args.config_path else None
    setup_context(args.device_target, args.mode)
    batch_size = min(len(args.images), cfg["data"]["batch_size"]) if cfg else 1
    with flag_fixes(MissingSettings, "--config_path"):
        predictor, pre = open_model(model_path, cfg, batch_size)
    with flag_fixes(MissingClassNames, "--class_names FILE"):
        names = resolve_class_names(predictor.num_classes, pre, args.class_names, model=str(model_path),
                                    splits=label_splits(cfg))
    print(classify(args.images, predictor, pre, names.names, args.topk))


if __name__ == "__main__":
    run(main)
