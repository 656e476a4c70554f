"""Classify images with a checkpoint or an exported MindIR and print the top-k classes.

    python infer.py --model deit_small.ckpt --config_path config/deit_small_patch16_224.yaml cat.jpg dog.png
    python infer.py --model deit_small_ppt.mindir cat.jpg dog.png

Images are preprocessed as in evaluation (the config's data settings; for a MindIR written by export.py the
settings stored in it when no config is given). A checkpoint needs the config to build the model. A MindIR
fixes the batch size and image size: images are run in chunks of that batch size (the last one padded).
Class names: --class_names FILE, else ImageNet-1k's for 1000 classes, else the demo dataset's folders.
"""
from collections.abc import Sequence
from pathlib import Path

from src.cli import ArgumentParser, UsageError, add_common_args, load_args_config, run, setup_context
from src.inference import classify, open_model


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    # An empty default makes the config optional: a MindIR from export.py carries its data settings.
    add_common_args(parser, ckpt="none", default_config="")
    parser.add_argument("--model", required=True, help="weights (.ckpt, .pth, .safetensors) or a .mindir")
    parser.add_argument("--class_names", default=None, help="text file with one class name per line")
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
    is_mindir = model_path.suffix.lower() == ".mindir"
    if not args.config_path and (args.overrides or not is_mindir):
        raise UsageError(f"--model {model_path}: --config_path is required "
                         f"{'with --set' if is_mindir else 'to build the model of a checkpoint'}")
    cfg = load_args_config(args) if args.config_path else None
    setup_context(args.device_target, args.mode)
    batch_size = min(len(args.images), cfg["data"]["batch_size"]) if cfg else 1
    predictor, pre = open_model(model_path, cfg, batch_size)
    print(classify(args.images, predictor, pre, args.class_names, args.topk))


if __name__ == "__main__":
    run(main)
