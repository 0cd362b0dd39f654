"""The training loop shared by pretraining and distillation, its plain LM loss, checkpoints."""

from capgap.train.loop import OptimConfig, TrainConfig, TrainResult, lr_at, train
from capgap.train.loss import LossOutput, lm_loss, mean_lm_loss

__all__ = ["LossOutput", "OptimConfig", "TrainConfig", "TrainResult", "lm_loss", "lr_at",
           "mean_lm_loss", "train"]
