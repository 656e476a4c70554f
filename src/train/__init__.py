"""DeiT/PPT training: AdamW + cosine schedule, AMP and loss scaling, EMA, checkpoints and resume, data parallel.

Entry point: :func:`train` (``train.py`` is its command line).
"""
from .engine import TrainingDiverged, TrainResult, epoch_seed, train
from .state import ResumeError

__all__ = ["train", "TrainResult", "TrainingDiverged", "ResumeError", "epoch_seed"]
