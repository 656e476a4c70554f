"""Convert DeiT weights (PyTorch .pth/.pt/.bin, timm .safetensors or .ckpt) to a MindSpore .ckpt.

    python convert.py deit_small_patch16_224-cd65a155.pth deit_small.ckpt
    python convert.py weights.safetensors out.ckpt --model deit_tiny_patch16_224 --img_size 112 --patch_size 8

Without --model the architecture is inferred from the weight shapes. The weights are loaded strictly into
the model before the output is written (atomically), so a mismatching file never produces a .ckpt.
"""
import argparse
import sys

from src.checkpoint import convert_checkpoint

_ARCH_FLAGS = {"img_size": int, "patch_size": int, "embed_dim": int, "depth": int, "num_heads": int,
               "mlp_ratio": float}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="input weights: .pth/.pt/.bin, .safetensors or .ckpt")
    parser.add_argument("dst", help="output MindSpore checkpoint (.ckpt)")
    parser.add_argument("--model", "--model_name", dest="model", default=None,
                        help="registered model name (default: inferred from the weights)")
    parser.add_argument("--num_classes", type=int, default=None, help="default: the size of the file's head")
    for flag, kind in _ARCH_FLAGS.items():
        parser.add_argument(f"--{flag}", type=kind, default=None, help=f"override the model's {flag} (needs --model)")
    args = parser.parse_args()
    overrides = {flag: getattr(args, flag) for flag in _ARCH_FLAGS if getattr(args, flag) is not None}
    if overrides and args.model is None:
        parser.error(f"--{' --'.join(overrides)} need --model")
    try:
        summary = convert_checkpoint(args.src, args.dst, model_name=args.model, num_classes=args.num_classes,
                                     **overrides)
    except (ValueError, OSError) as e:
        print(f"convert.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(summary)


if __name__ == "__main__":
    main()
