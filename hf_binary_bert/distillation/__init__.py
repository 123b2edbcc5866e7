"""Distillation from a full-precision teacher with the transformers Trainer."""

from .arguments import BinarizationArguments, DistillationArguments, DistillationTrainingArguments
from .losses import (
    attention_distillation_loss,
    hidden_state_cosine,
    hidden_state_mse,
    layer_map,
    prediction_distillation_loss,
    span_distillation_loss,
)
from .trainer import DistillationTrainer

__all__ = [
    "BinarizationArguments",
    "DistillationArguments",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "attention_distillation_loss",
    "hidden_state_cosine",
    "hidden_state_mse",
    "layer_map",
    "prediction_distillation_loss",
    "span_distillation_loss",
]
