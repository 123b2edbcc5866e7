"""`DistillationTrainingArguments`: `TrainingArguments` plus the weights of each distillation loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

INTERMEDIATE_LOSSES = ("hidden", "cosine", "attention", "dmd")
PREDICTION_LOSSES = ("prediction", "task")


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` with the distillation settings of `DistillationTrainer`.

    The training loss is
        ℓ = w_task·ℓ_task + w_pred·ℓ_pred(τ) + w_hid·Σ_i λ_i ℓ_hid^i + w_att·ℓ_att + w_cos·Σ_i λ_i ℓ_cos^i
            + w_dmd·Σ_{X ∈ dmd_targets} ℓ_DMD(X)
    (losses in `hf_binary_bert.distillation.losses`); a weight of 0 skips that term (and its teacher outputs).
    BiBERT's recipe is ℓ = ℓ_DMD + ℓ_hid + ℓ_pred: `dmd_loss_weight=1, hidden_loss_weight=1,
    prediction_loss_weight=1`.

    With `two_stage=True` (TinyBERT / TernaryBERT / BinaryBERT's two-stage distillation) the first
    `intermediate_stage_ratio` of the optimizer steps use only the intermediate-layer terms (hidden, cosine,
    attention, DMD) and the rest only the prediction-layer terms (prediction, task).

    Raises:
        ValueError: for a negative weight, a non-positive temperature, an unknown `attention_loss` or
            `dmd_targets` entry, an `intermediate_stage_ratio` outside (0, 1), or a two-stage setting without
            terms for one of its stages.
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
    dmd_loss_weight: float = field(
        default=0.0, metadata={"help": "Weight of BiBERT's direction-matching distillation on Q/K/V similarity patterns."}
    )
    dmd_targets: list[str] = field(
        default_factory=lambda: ["query", "key", "value"], metadata={"help": "Which of query/key/value DMD matches."}
    )
    two_stage: bool = field(
        default=False, metadata={"help": "Intermediate-layer losses first, prediction-layer losses second."}
    )
    intermediate_stage_ratio: float = field(
        default=0.5, metadata={"help": "Fraction of the optimizer steps spent in the first (intermediate) stage."}
    )
    teacher_bf16: bool = field(default=False, metadata={"help": "Run the teacher forward under bf16 autocast."})

    def __post_init__(self):
        for name in ("task_loss_weight", "prediction_loss_weight", "hidden_loss_weight", "attention_loss_weight",
                     "cosine_loss_weight", "dmd_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.attention_loss not in ("mse", "kl"):
            raise ValueError(f"attention_loss must be one of ['mse', 'kl'], got {self.attention_loss!r}")
        if self.hidden_layer_weights is not None and any(w < 0 for w in self.hidden_layer_weights):
            raise ValueError(f"hidden_layer_weights must be >= 0, got {self.hidden_layer_weights}")
        bad = [t for t in self.dmd_targets if t not in ("query", "key", "value")]
        if bad or not self.dmd_targets:
            raise ValueError(f"dmd_targets must be a non-empty list from ['query', 'key', 'value'], got {self.dmd_targets!r}")
        if not 0 < self.intermediate_stage_ratio < 1:
            raise ValueError(f"intermediate_stage_ratio must be in (0, 1), got {self.intermediate_stage_ratio}")
        if self.two_stage:
            weights = self.loss_weights()
            for stage, names in (("first", INTERMEDIATE_LOSSES), ("second", PREDICTION_LOSSES)):
                if not any(n in weights for n in names):
                    raise ValueError(f"two_stage=True but the {stage} stage has no loss: give one of {list(names)} a weight > 0")
        super().__post_init__()

    def loss_weights(self, step: int | None = None, max_steps: int | None = None) -> dict[str, float]:
        """`{component: weight}` for the components in use (weight > 0); with `two_stage` and a `step` of
        `max_steps`, only those of the stage that step belongs to."""
        weights = {
            "task": self.task_loss_weight,
            "prediction": self.prediction_loss_weight,
            "hidden": self.hidden_loss_weight,
            "attention": self.attention_loss_weight,
            "cosine": self.cosine_loss_weight,
            "dmd": self.dmd_loss_weight,
        }
        weights = {k: v for k, v in weights.items() if v > 0}
        if self.two_stage and step is not None and max_steps:
            stage = INTERMEDIATE_LOSSES if step < self.intermediate_stage_ratio * max_steps else PREDICTION_LOSSES
            weights = {k: v for k, v in weights.items() if k in stage}
        return weights
