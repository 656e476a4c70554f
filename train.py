"""Train or fine-tune a DeiT with PPT token pruning & pooling (DeiT's recipe; see config/README.md).

    python train.py                                   # quick start: config/demo.yaml on the built-in demo data
    python train.py --config config/deit_small_patch16_224_finetune.yaml --device_target Ascend \\
        --ckpt_file deit_small_patch16_224-cd65a155.pth --set data.path=/imagenet   # the official PPT fine-tune
    python train.py --config config/demo.yaml --resume outputs/demo     # continue the newest checkpoint
    msrun --worker_num=2 --local_worker_num=2 --master_addr=127.0.0.1 --master_port=8129 --log_dir=LOGS \\
        --join=True train.py --config config/demo.yaml                 # 2-process data parallel
"""
import argparse
from pathlib import Path

from src.cli import ArgumentParser, add_common_args, load_args_config, run, setup_context
from src.train import train
from src.train.quickstart import compare_with_baseline
from src.train.state import weights_path


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, ckpt="optional", default_config="config/demo.yaml")
    parser.add_argument("--output_dir", "--output", dest="output_dir",
                        help="checkpoints, log.jsonl and config.yaml (default: outputs/<config file stem>)")
    parser.add_argument("--resume", help="continue from a training state: an output folder (its newest epoch) "
                                         "or an epoch_N.state.ckpt file")
    parser.add_argument("--stop_after_epoch", type=int, metavar="N",
                        help="end after epoch N (e.g. to fit a job time limit); continue later with --resume")
    parser.add_argument("--no_progress", action="store_true", help="no per-step progress lines")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.stop_after_epoch is not None and args.stop_after_epoch < 1:
        parser.error(f"--stop_after_epoch: expected an int >= 1, got {args.stop_after_epoch}")
    cfg = load_args_config(args)
    setup_context(args.device_target, args.mode)
    output_dir = args.output_dir or str(Path("outputs") / Path(args.config_path).stem)
    result = train(cfg, output_dir=output_dir, ckpt_file=args.ckpt_file, resume=args.resume,
                   stop_after_epoch=args.stop_after_epoch, progress=not args.no_progress)
    if result.final_val is None:
        return  # not rank 0, or nothing left to train
    print(f"best val top-1 {result.best_top1:.2f} at epoch {result.best_epoch}; checkpoints in {result.output_dir}")
    if cfg["ppt"]["enabled"]:
        last = weights_path(result.output_dir, result.history[-1]["epoch"])
        print(compare_with_baseline(cfg, last, result.final_val, progress=not args.no_progress))


if __name__ == "__main__":
    run(main)
