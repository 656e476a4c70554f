"""Convert DeiT / ViT weights (PyTorch .pth/.pt/.bin, timm .safetensors, mindcv or MindSpore .ckpt) to a .ckpt.

    python convert.py deit_small_patch16_224-cd65a155.pth deit_small.ckpt
    python convert.py weights.safetensors out.ckpt --model deit_tiny_patch16_224 --img_size 112 --patch_size 8

Without --model the architecture is inferred from the weight shapes (a timm ViT and a DeiT of the same shapes are
told apart by the file name, or --model is needed). The weights are loaded strictly into
the model before the output is written (atomically), so a mismatching file never produces a .ckpt. The output
carries a CRC32 and the class names: --class_names FILE, else those stored in the input, else ImageNet-1k's
for 1000 classes. Errors are one line with exit code 1 (PPT_DEBUG=1 shows the traceback).
"""
from collections.abc import Sequence

from src.cli import ArgumentParser, run
from src.io.checkpoint import convert_checkpoint

_ARCH_FLAGS = {"img_size": int, "patch_size": int, "embed_dim": int, "depth": int, "num_heads": int,
               "mlp_ratio": float}


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="input weights: .pth/.pt/.bin, .safetensors or .ckpt")
    parser.add_argument("dst", help="output MindSpore checkpoint (.ckpt)")
    parser.add_argument("--model", "--model_name", dest="model", default=None,
                        help="registered model name (default: inferred from the weights)")
    parser.add_argument("--num_classes", type=int, default=None, help="default: the size of the file's head")
    parser.add_argument("--class_names", default=None, metavar="FILE",
                        help="one class name per line, stored in the output (default: the input's, or ImageNet-1k's "
                             "for 1000 classes)")
    for flag, kind in _ARCH_FLAGS.items():
        parser.add_argument(f"--{flag}", type=kind, default=None, help=f"override the model's {flag} (needs --model)")
    args = parser.parse_args(argv)
    overrides = {flag: getattr(args, flag) for flag in _ARCH_FLAGS if getattr(args, flag) is not None}
    if overrides and args.model is None:
        parser.error(f"--{' --'.join(overrides)}: needs --model")
    print(convert_checkpoint(args.src, args.dst, model_name=args.model, num_classes=args.num_classes,
                             class_names_file=args.class_names, **overrides))


if __name__ == "__main__":
    run(main)
