"""The training loop shared by pretraining and distillation, and checkpoints."""

from capgap.train.loop import OptimConfig, TrainConfig, TrainResult, lr_at, train

__all__ = ["OptimConfig", "TrainConfig", "TrainResult", "lr_at", "train"]
