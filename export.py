"""Export a (PPT-)DeiT to a static-shape MindIR, AIR or ONNX file (or a .ckpt) and verify it against the model.

    python export.py --config_path config/deit_small_patch16_224.yaml --ckpt_file deit_small.ckpt \\
        --file_format MINDIR --batch_size 1 --file_name deit_small_ppt

The model is built as configured (PPT on or off), the checkpoint is loaded strictly, and the lean inference
path (images [N, 3, img, img] float32 -> logits) is written. The file is loaded back and run on a random
batch; a maximum logit difference above the tolerance removes it. AIR needs Ascend; ONNX needs the optional
packages onnx and onnxruntime (see src/deploy/onnx_runtime.py for what the ONNX export changes). MindIR and ONNX
files store the preprocessing settings and the class names: those stored in the checkpoint or given by
--class_names FILE (both: they must agree), else none (said so; no dataset is needed or read).
"""
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from src.cli import ArgumentParser, UsageError, add_common_args, load_args_config, run, setup_context
from src.deploy import DEFAULT_TOLERANCE, export_formats, export_model
from src.deploy.export import check_format_device
from src.deploy.inference import preprocess_from_config, weights_class_names
from src.factory import build_model


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, ckpt="required")
    parser.add_argument("--file_format", "--format", dest="file_format", type=str.upper,
                        choices=tuple(export_formats()), default="MINDIR", help="output format (default: MINDIR)")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=1,
                        help="fixed batch size of the exported graph (default: 1)")
    parser.add_argument("--file_name", "--out", dest="file_name", required=True,
                        help="output file; the format's extension is added if missing")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest accepted max abs logit difference, file vs model "
                             f"(default: {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--class_names", default=None, metavar="FILE",
                        help="one class name per line, stored in the file (default: those stored in the checkpoint; "
                             "with both, they must agree)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size: expected an int >= 1, got {args.batch_size}")
    # Format/device limits first: an impossible export should not cost a model build.
    check_format_device(args.file_format, args.device_target)
    if args.class_names and not Path(args.class_names).is_file():
        raise UsageError(f"--class_names {args.class_names}: no such file")
    cfg = load_args_config(args)
    names = weights_class_names(cfg["model"]["num_classes"], args.ckpt_file, args.class_names)  # before the build
    setup_context(args.device_target, args.mode)
    model = build_model(cfg, args.ckpt_file)
    pre = replace(preprocess_from_config(cfg), class_names=names.names if names else None)
    result = export_model(model, args.file_name, args.file_format, args.batch_size, data_info=pre.to_dict(),
                          tolerance=args.tolerance, seed=cfg["seed"])
    print(result.summary())
    print(f"class names: {len(names.names)} from {names.source}" if names else
          f"class names: none stored ({args.ckpt_file} stores none and no --class_names FILE was given)")


if __name__ == "__main__":
    run(main)
