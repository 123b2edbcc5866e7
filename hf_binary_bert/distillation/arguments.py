"""The argument schema of binarization and distillation, as dataclasses that `HfArgumentParser` reads: one
definition for the command line (`hf-binary-bert distill` / `prune` / `demo`, `cli.py`), the example scripts
(`examples/run_glue_distill.py`) and `DistillationTrainingArguments`.

- `BinarizationArguments`: how the student is binarized (the `BinaryBertConfig` fields, with the command line's
  defaults) and the BiT multi-step schedule;
- `DistillationArguments`: the weight of each distillation loss and its schedule;
- `DistillationTrainingArguments`: `TrainingArguments` plus `DistillationArguments`.

`HfArgumentParser` gives every field both spellings (`--weight_scale` and `--weight-scale`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..configuration_binary_bert import (
    ACTIVATION_BITS,
    ACTIVATION_QUANTIZERS,
    ACTIVATION_STEP_INITS,
    ATTENTION_TYPES,
    BINARIZABLE_EMBEDDINGS,
    BINARIZABLE_MODULES,
    CLASSIFIER_POOLINGS,
    EMBEDDING_BITS,
    ENCODER_MODULES,
    FP_DTYPES,
    SCALE_GRANULARITIES,
    STES,
    WEIGHT_SCALES,
    binarization_kwargs,
)

INTERMEDIATE_LOSSES = ("hidden", "cosine", "attention", "dmd", "pooled")
PREDICTION_LOSSES = ("prediction", "task")
QKV = ("query", "key", "value")
# The student dropout fields of `BinarizationArguments` (None: the teacher's), each checked to lie in [0, 1)
DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


@dataclass
class BinarizationArguments:
    """How the student is binarized: the `BinaryBertConfig` fields (defaults: the command line's, BiBERT / the blog
    series' learned offset per head, fp16 on disk) and BiT's multi-step schedule.

    Raises:
        ValueError: naming the field, for a `multi_step` stage that is not `W1A<bits>` or a combination
            `BinaryBertConfig` refuses (for any stage's activation bits), or a dropout probability outside [0, 1).
    """

    weight_scale: str = field(
        default="learned_offset", metadata={"help": "α (and γ) scheme of the binarized weights.", "choices": WEIGHT_SCALES}
    )
    scale_granularity: str = field(
        default="head", metadata={"help": "One α per tensor, attention head or row.", "choices": SCALE_GRANULARITIES}
    )
    binarized_modules: list[str] = field(
        default_factory=lambda: list(ENCODER_MODULES),
        metadata={"help": f"Linear layers to binarize (default: the six encoder Linears); any of "
                          f"{list(BINARIZABLE_MODULES)}.", "choices": BINARIZABLE_MODULES, "aliases": ["--binarize"],
                  "metavar": "MODULE"},
    )
    ste: str = field(default="clipped_identity", metadata={"help": "Straight-through estimator of sign().", "choices": STES})
    fp_dtype: str = field(
        default="float16", metadata={"help": "dtype of the full-precision parts on disk.", "choices": FP_DTYPES}
    )
    activation_bits: int = field(
        default=32,
        metadata={"help": "Bits of the activations entering binarized Linears and attention matmuls (1 = W1A1).",
                  "choices": ACTIVATION_BITS},
    )
    activation_quantizer: str = field(
        default="sign",
        metadata={"help": "'sign' (BiBERT sign / LSQ) or 'elastic' (BiT: learned scale and shift).",
                  "choices": ACTIVATION_QUANTIZERS},
    )
    attention_type: str = field(
        default="softmax",
        metadata={"help": "'softmax' (quantized probabilities) or 'bi_attention' (BiBERT).", "choices": ATTENTION_TYPES},
    )
    embedding_bits: int = field(
        default=32, metadata={"help": "Bits of the embedding tables: 32, 16 or 1.", "choices": EMBEDDING_BITS}
    )
    binarized_embeddings: list[str] = field(
        default_factory=lambda: ["word"],
        metadata={"help": "Tables binarized with embedding_bits 1.", "choices": BINARIZABLE_EMBEDDINGS,
                  "metavar": "TABLE"},
    )
    embedding_weight_scale: str | None = field(
        default=None,
        metadata={"help": "weight_scale scheme of the 1-bit embedding tables (default: weight_scale); 'learned' or "
                          "'mean_abs': a per-row scale only, no offset (BiT).", "choices": WEIGHT_SCALES},
    )
    embedding_scale_dtype: str = field(
        default="float32",
        metadata={"help": "dtype of the per-row scales of 1-bit embedding tables on disk.", "choices": FP_DTYPES},
    )
    activation_shift_dtype: str = field(
        default="float32",
        metadata={"help": "dtype the elastic activation shifts are rounded to in every forward and stored in.",
                  "choices": FP_DTYPES},
    )
    activation_step_init: str = field(
        default="lsq",
        metadata={"help": "How a 1-bit signed elastic quantizer's step starts: 'lsq' (2·mean|x − β|, BiT's) or "
                          "'least_squares' (mean|x − β|: attention scores of 1-bit Q·K at the teacher's scale).",
                  "choices": ACTIVATION_STEP_INITS},
    )
    hidden_act: str | None = field(
        default=None,
        metadata={"help": "FFN activation of the student (default: the teacher's; BiT uses relu).",
                  "choices": ("gelu", "relu")},
    )
    classifier_pooling: str | None = field(
        default=None,
        metadata={"help": "What a sequence classifier's pooler reads: 'cls' (the first token, BERT's) or 'mean' "
                          "(the mean over the real tokens). Default: 'cls', or a binarized teacher's (a later "
                          "multi-step stage keeps the previous stage's); docs/results.md#stsb-w1a1-mean-pooling.",
                  "choices": CLASSIFIER_POOLINGS},
    )
    hidden_dropout_prob: float | None = field(
        default=None,
        metadata={"help": "Dropout probability of the student's embeddings and hidden states (BertConfig's "
                          "hidden_dropout_prob; default: the teacher's). Below one epoch every example is seen once, "
                          "so dropout only adds noise (docs/distillation.md)."},
    )
    attention_probs_dropout_prob: float | None = field(
        default=None,
        metadata={"help": "Dropout probability of the student's attention probabilities (BertConfig's "
                          "attention_probs_dropout_prob; default: the teacher's). The attention KL on quantized maps "
                          "compares the maps after dropout, where each dropped entry adds a floor to the KL that no "
                          "weight removes; measured on STS-B W1A8 in docs/results.md#stsb-w1a8-no-dropout."},
    )
    multi_step: str | None = field(
        default=None,
        metadata={"help": "BiT multi-step distillation, e.g. W1A4,W1A2,W1A1: one stage per entry (overrides "
                          "activation_bits), each stage's student taught by the previous one; max_steps / epochs is the total of all "
                          "stages (distill's stage_budget / steps_per_stage).", "metavar": "SCHEDULE"},
    )

    def binarization(self, activation_bits: int | None = None) -> dict:
        """The `BinaryBertConfig` keyword arguments of the student (of one multi-step stage)."""
        fields = binarization_kwargs(self)
        if activation_bits is not None:
            fields["activation_bits"] = activation_bits
        for name in ("hidden_act", "classifier_pooling", *DROPOUT_FIELDS):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return fields

    def stage_bits(self) -> list[int]:
        """Activation bits per stage: the `multi_step` schedule, or `[activation_bits]`."""
        try:
            return parse_schedule(self.multi_step) or [self.activation_bits]
        except ValueError as err:
            raise ValueError(f"multi_step: {err}") from None

    def __post_init__(self):
        from ..configuration_binary_bert import BinaryBertConfig

        for name in DROPOUT_FIELDS:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        for bits in self.stage_bits():  # ValueError, naming the field, for an invalid combination
            BinaryBertConfig(**self.binarization(bits))


def parse_schedule(schedule: str | list | tuple | None) -> list[int]:
    """A multi-step schedule → activation bits per stage: `"W1A4,W1A2,W1A1"` (or `[4, 2, 1]`) → `[4, 2, 1]`.

    Raises:
        ValueError: for a stage that is not `W1A<bits>` with bits in {32, 8, 4, 2, 1}.
    """
    if schedule is None or schedule == "":
        return []
    items = schedule.split(",") if isinstance(schedule, str) else list(schedule)
    bits = []
    for item in items:
        text = str(item).strip().upper()
        value = text.removeprefix("W1A") if text.startswith("W1A") else text
        if not value.isdigit() or int(value) not in (32, 8, 4, 2, 1):
            raise ValueError(f"multi-step stage {item!r} is not one of W1A32, W1A8, W1A4, W1A2, W1A1")
        bits.append(int(value))
    return bits


@dataclass
class DistillationArguments:
    """The distillation settings of `DistillationTrainer`: the weight of each loss and their schedule.

    The training loss is
        ℓ = w_task·ℓ_task + w_pred·ℓ_pred(τ) + w_hid·Σ_i λ_i ℓ_hid^i + w_att·ℓ_att + w_cos·Σ_i λ_i ℓ_cos^i
            + w_dmd·Σ_{X ∈ dmd_targets} ℓ_DMD(X) + w_pool·MSE(pooled_s, pooled_t)
    (losses in `hf_binary_bert.distillation.losses`); a weight of 0 skips that term (and its teacher outputs).
    BiBERT's recipe is ℓ = ℓ_DMD + ℓ_hid + ℓ_pred: `dmd_loss_weight=1, hidden_loss_weight=1,
    prediction_loss_weight=1`.

    `attention_loss_weight=None` (the default) is decided by `DistillationTrainer` from the student
    (`trainer.default_attention_loss_weight`): 1 (with the default `attention_loss="kl"`) for a regression student —
    one output, transformers' `problem_type="regression"` — whose attention probabilities are not 1-bit, else 0.
    Measured on STS-B (issue 16, docs/distillation.md): a W1A4 regression student taught by the prediction MSE and
    the hidden states alone stays near the mean of the scores for hundreds of steps; with the attention KL it leaves
    the mean within 300 steps.

    With `binarization_ramp_ratio` r > 0 (progressive binarization, as in progressive quantization: Zhuang et al.,
    "Towards Effective Low-bitwidth Convolutional Neural Networks", CVPR 2018) each training forward of optimizer
    step t of T uses W_λ = λ·W_q + (1 − λ)·W with λ = min(1, t / (r·T)) for every binarized weight and 1-bit
    embedding table (`BinarizedWeightMixin.binarization_mix`): the student starts as the teacher whose latent
    weights it copied instead of at the binarized model's output, which on STS-B has lost the input dependence
    (docs/distillation.md). The kernels' factored forward needs λ = 1, so steps with λ < 1 run `F.linear`.
    `activation_ramp_ratio` does the same for the activations: every `ActivationQuantizer` returns
    λ·x̂ + (1 − λ)·(x − β) (`quantization_mix`), so a W1A1 stage can start from full-precision activations.

    With `two_stage=True` (TinyBERT / TernaryBERT / BinaryBERT's two-stage distillation) the first
    `intermediate_stage_ratio` of the optimizer steps use only the intermediate-layer terms (hidden, cosine,
    attention, DMD) and the rest only the prediction-layer terms (prediction, task).

    Raises:
        ValueError: for a negative weight, a non-positive temperature, `head_learning_rate`,
            `quantizer_learning_rate` or `original_teacher_every`, an unknown `attention_loss`,
            `attention_distribution` or `dmd_targets` entry, an `intermediate_stage_ratio` outside (0, 1), a
            `binarization_ramp_ratio` or `activation_ramp_ratio` outside [0, 1), or a two-stage setting without
            terms for one of its stages.
    """

    task_loss_weight: float = field(default=0.0, metadata={"help": "Weight of the hard-label task loss of the student."})
    prediction_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of prediction-layer KD (soft cross-entropy on logits; MSE for "
                                       "regression; question answering: on the start and end distributions)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature τ of prediction-layer KD."})
    hidden_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the per-layer hidden-state MSE."})
    hidden_layer_weights: list[float] | None = field(
        default=None,
        metadata={"help": "λ_i for each student hidden state (embedding output first); default 1 for all."},
    )
    attention_loss_weight: float | None = field(
        default=None,
        metadata={"help": "Weight of the attention-probability loss (needs eager attention; switched on where needed). "
                          "Default: 1 for a regression student (one output) without 1-bit attention probabilities, else 0 "
                          "(docs/distillation.md)."},
    )
    attention_loss: str = field(
        default="kl", metadata={"help": "Attention loss: 'kl' (MiniLM's KL of the attention distributions) or 'mse'.",
                                "choices": ("mse", "kl")}
    )
    attention_distribution: str | None = field(
        default=None,
        metadata={"help": "Which attention maps the attention loss compares: 'quantized' (the weights each layer "
                          "multiplies V with) or 'softmax' (the softmax before the probability quantizer of binarized "
                          "softmax attention, in the student and in a binarized teacher; the same maps for a float "
                          "model). Default: 'softmax' for a student with 1-bit probabilities, else 'quantized'.",
                  "choices": ("quantized", "softmax")}
    )
    cosine_loss_weight: float = field(default=0.0, metadata={"help": "Weight of the hidden-state cosine loss."})
    dmd_loss_weight: float = field(
        default=0.0, metadata={"help": "Weight of BiBERT's direction-matching distillation on Q/K/V similarity patterns."}
    )
    dmd_targets: list[str] = field(
        default_factory=lambda: list(QKV), metadata={"help": "Which of query/key/value DMD matches.", "choices": QKV}
    )
    pooled_loss_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the MSE between the student's and the teacher's pooled [CLS] states (the pooler "
                          "output the sequence-classification head reads)."},
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the task head (pooler and classifier / QA / MLM transform), on the same "
                          "schedule as the rest; default: the learning rate."},
    )
    quantizer_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the activation quantizers' parameters (step / scale α and elastic shift "
                          "β), on the same schedule as the rest (BiT's separate `clip_lr`, 1e-4 in its scripts); "
                          "default: the learning rate."},
    )
    two_stage: bool = field(
        default=False, metadata={"help": "Intermediate-layer losses first, prediction-layer losses second."}
    )
    intermediate_stage_ratio: float = field(
        default=0.5, metadata={"help": "Fraction of the optimizer steps spent in the first (intermediate) stage."}
    )
    original_teacher_every: int = field(
        default=10,
        metadata={"help": "Multi-step stages taught by an earlier student: run the original full-precision teacher for "
                          "the logged loss_prediction_original on every N-th optimizer step only (1: every step). "
                          "It is logged, not trained on, and costs a full-precision forward each time it runs."},
    )
    binarization_ramp_ratio: float = field(
        default=0.0,
        metadata={"help": "Progressive binarization: over this share of each stage's optimizer steps every binarized "
                          "weight moves from its latent float value to the binarized one, λ·W_q + (1 − λ)·W with λ "
                          "rising linearly from 0 (the teacher's weights) to 1; 0: binarized from the first step. "
                          "Training forwards only: evaluation and the saved student are binarized."},
    )
    activation_ramp_ratio: float = field(
        default=0.0,
        metadata={"help": "Progressive quantization of the activations: over this share of each stage's optimizer "
                          "steps every activation quantizer's output moves from its input (x − β) to the quantized "
                          "value, λ·x̂ + (1 − λ)·(x − β) with λ rising linearly from 0 to 1; 0: quantized from the "
                          "first step. Training forwards only."},
    )
    teacher_bf16: bool = field(default=False, metadata={"help": "Run the teacher forward under bf16 autocast."})
    train_in_fp_dtype: bool = field(
        default=False,
        metadata={"help": "Round the student's full-precision parts to the dtype they are saved in (its fp_dtype) in "
                          "every forward, with a straight-through gradient, so the model trained is the model saved "
                          "(off by default: no accuracy gain measured, docs/distillation.md)."},
    )

    def __post_init__(self):
        self.check_distillation()

    def check_distillation(self) -> None:
        """The checks of the class docstring (`ValueError` naming the field)."""
        for name in ("task_loss_weight", "prediction_loss_weight", "hidden_loss_weight", "attention_loss_weight",
                     "cosine_loss_weight", "dmd_loss_weight", "pooled_loss_weight"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("head_learning_rate", "quantizer_learning_rate"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.original_teacher_every < 1:
            raise ValueError(f"original_teacher_every must be >= 1, got {self.original_teacher_every}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.attention_loss not in ("mse", "kl"):
            raise ValueError(f"attention_loss must be one of ['mse', 'kl'], got {self.attention_loss!r}")
        if self.attention_distribution not in (None, "quantized", "softmax"):
            raise ValueError("attention_distribution must be one of ['quantized', 'softmax'], got "
                             f"{self.attention_distribution!r}")
        if self.hidden_layer_weights is not None and any(w < 0 for w in self.hidden_layer_weights):
            raise ValueError(f"hidden_layer_weights must be >= 0, got {self.hidden_layer_weights}")
        bad = [t for t in self.dmd_targets if t not in ("query", "key", "value")]
        if bad or not self.dmd_targets:
            raise ValueError(f"dmd_targets must be a non-empty list from ['query', 'key', 'value'], got {self.dmd_targets!r}")
        for name in ("binarization_ramp_ratio", "activation_ramp_ratio"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.intermediate_stage_ratio < 1:
            raise ValueError(f"intermediate_stage_ratio must be in (0, 1), got {self.intermediate_stage_ratio}")
        if self.two_stage:
            weights = self.loss_weights()
            for stage, names in (("first", INTERMEDIATE_LOSSES), ("second", PREDICTION_LOSSES)):
                if not any(n in weights for n in names):
                    raise ValueError(f"two_stage=True but the {stage} stage has no loss: give one of {list(names)} a weight > 0")

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
            "pooled": self.pooled_loss_weight,
        }
        weights = {k: v for k, v in weights.items() if v}  # an unresolved attention weight (None) counts as 0
        if self.two_stage and step is not None and max_steps:
            stage = INTERMEDIATE_LOSSES if step < self.intermediate_stage_ratio * max_steps else PREDICTION_LOSSES
            weights = {k: v for k, v in weights.items() if k in stage}
        return weights


@dataclass
class DistillationTrainingArguments(DistillationArguments, TrainingArguments):
    """`transformers.TrainingArguments` with the distillation settings of `DistillationTrainer`
    (`DistillationArguments`; the loss formula and the checks are there).

    Raises:
        ValueError: as `DistillationArguments`, and as `TrainingArguments`.
    """

    def __post_init__(self):
        self.check_distillation()
        TrainingArguments.__post_init__(self)
