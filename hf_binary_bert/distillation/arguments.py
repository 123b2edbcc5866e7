"""`DistillationTrainingArguments`: `TrainingArguments` plus the weights of each distillation loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` with the distillation settings of `DistillationTrainer`.

    The training loss is
        ℓ = w_task·ℓ_task + w_pred·ℓ_pred(τ) + w_hid·Σ_i λ_i ℓ_hid^i + w_att·ℓ_att + w_cos·Σ_i λ_i ℓ_cos^i
    (losses in `hf_binary_bert.distillation.losses`); a weight of 0 skips that term (and its teacher outputs).

    Raises:
        ValueError: for a negative weight, a non-positive temperature or an unknown `attention_loss`.
    """

    task_loss_weight: float = field(default=0.0, metadata={"help": "Weight of the hard-label task loss of the student."})
    prediction_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of prediction-layer KD (soft cross-entropy on logits; MSE for regression)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature τ of prediction-layer KD."})
    hidden_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the per-layer hidden-state MSE."})
    hidden_layer_weights: list[float] | None = field(
        default=None,
        metadata={"help": "λ_i for each student hidden state (embedding output first); default 1 for all."},
    )
    attention_loss_weight: float = field(
        default=0.0, metadata={"help": "Weight of the attention-probability loss (needs eager attention)."}
    )
    attention_loss: str = field(default="mse", metadata={"help": "Attention loss: 'mse' or 'kl'."})
    cosine_loss_weight: float = field(default=0.0, metadata={"help": "Weight of the hidden-state cosine loss."})
    teacher_bf16: bool = field(default=False, metadata={"help": "Run the teacher forward under bf16 autocast."})

    def __post_init__(self):
        for name in ("task_loss_weight", "prediction_loss_weight", "hidden_loss_weight", "attention_loss_weight", "cosine_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.attention_loss not in ("mse", "kl"):
            raise ValueError(f"attention_loss must be one of ['mse', 'kl'], got {self.attention_loss!r}")
        if self.hidden_layer_weights is not None and any(w < 0 for w in self.hidden_layer_weights):
            raise ValueError(f"hidden_layer_weights must be >= 0, got {self.hidden_layer_weights}")
        super().__post_init__()

    def loss_weights(self) -> dict[str, float]:
        """`{component: weight}` for the components in use (weight > 0)."""
        weights = {
            "task": self.task_loss_weight,
            "prediction": self.prediction_loss_weight,
            "hidden": self.hidden_loss_weight,
            "attention": self.attention_loss_weight,
            "cosine": self.cosine_loss_weight,
        }
        return {k: v for k, v in weights.items() if v > 0}
