"""Export a (PPT-)DeiT to a static-shape MindIR, AIR or ONNX file and verify it against the model.

    python export.py --config_path config/deit_small_patch16_224.yaml --ckpt_file deit_small.ckpt \\
        --file_format MINDIR --batch_size 1 --file_name deit_small_ppt

The model is built as configured (PPT on or off), the checkpoint is loaded strictly, and the lean inference
path (images [N, 3, img, img] float32 -> logits) is written. The file is loaded back and run on a random
batch; a maximum logit difference above the tolerance removes it. AIR needs Ascend; ONNX needs the optional
packages onnx and onnxruntime (see src/export.py for what the ONNX export changes). MindIR and ONNX files
store the preprocessing settings and the class names (--class_names FILE, else those stored in the checkpoint,
else the class folders of data.path if it is here, else ImageNet-1k's for 1000 classes).
"""
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from src.cli import ArgumentParser, UsageError, add_common_args, load_args_config, run, setup_context
from src.export import DEFAULT_TOLERANCE, FORMATS, check_format_device, export_model
from src.factory import build_model
from src.inference import find_class_names, label_splits, preprocess_from_config


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, ckpt="required")
    parser.add_argument("--file_format", "--format", dest="file_format", type=str.upper, choices=tuple(FORMATS),
                        default="MINDIR", help="output format (default: MINDIR)")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=1,
                        help="fixed batch size of the exported graph (default: 1)")
    parser.add_argument("--file_name", "--out", dest="file_name", required=True,
                        help="output file; the format's extension is added if missing")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest accepted max abs logit difference, file vs model "
                             f"(default: {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--class_names", default=None, metavar="FILE",
                        help="one class name per line, stored in the file (default: those stored in the checkpoint, "
                             "else the class folders of data.path, else ImageNet-1k's for 1000 classes)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size: expected an int >= 1, got {args.batch_size}")
    # Format/device limits first: an impossible export should not cost a model build.
    check_format_device(args.file_format, args.device_target)
    if args.class_names and not Path(args.class_names).is_file():
        raise UsageError(f"--class_names {args.class_names}: no such file")
    cfg = load_args_config(args)
    setup_context(args.device_target, args.mode)
    model = build_model(cfg, args.ckpt_file)
    pre = preprocess_from_config(cfg, args.ckpt_file)
    names = find_class_names(model.num_classes, pre, args.class_names, model=args.ckpt_file, splits=label_splits(cfg))
    result = export_model(model, args.file_name, args.file_format, args.batch_size,
                          data_info=replace(pre, class_names=names.names if names else None).to_dict(),
                          tolerance=args.tolerance, seed=cfg["seed"])
    print(result.summary())
    print(f"class names: {len(names.names)} from {names.source}" if names else
          "class names: none found, none stored (infer.py will need --class_names FILE)")


if __name__ == "__main__":
    run(main)
