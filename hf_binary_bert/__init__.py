"""hf_binary_bert: 1-bit BERT for transformers — binarize, distill with the Trainer, save packed, load with AutoModel.

Importing the package registers `binary_bert` with `AutoConfig`, `AutoModel`, `AutoModelForMaskedLM`,
`AutoModelForSequenceClassification`, `AutoModelForQuestionAnswering`, `AutoModelForTokenClassification` and
`AutoModelForMultipleChoice`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .binarization import (
    ActivationQuantizer,
    BinaryEmbedding,
    BinaryLinear,
    PackedBinaryEmbedding,
    PackedBinaryLinear,
    binarize_,
    freeze_,
    unfreeze_,
)
from .calibration import Calibration, NotCalibratedError, calibrate
from .flops import count_operations, estimate_packed_size
from .configuration_binary_bert import BinaryBertConfig
from .modeling_binary_bert import (
    BinaryBertForMaskedLM,
    BinaryBertForMultipleChoice,
    BinaryBertForQuestionAnswering,
    BinaryBertForSequenceClassification,
    BinaryBertForTokenClassification,
    BinaryBertModel,
    BinaryBertPreTrainedModel,
    load_teacher,
)
from .distributed import end_distributed
from .format import checkpoint_size_report

__version__ = "0.1.0"

AutoConfig.register("binary_bert", BinaryBertConfig, exist_ok=True)
AutoModel.register(BinaryBertConfig, BinaryBertModel, exist_ok=True)
AutoModelForMaskedLM.register(BinaryBertConfig, BinaryBertForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(BinaryBertConfig, BinaryBertForSequenceClassification, exist_ok=True)
AutoModelForQuestionAnswering.register(BinaryBertConfig, BinaryBertForQuestionAnswering, exist_ok=True)
AutoModelForTokenClassification.register(BinaryBertConfig, BinaryBertForTokenClassification, exist_ok=True)
AutoModelForMultipleChoice.register(BinaryBertConfig, BinaryBertForMultipleChoice, exist_ok=True)


def __getattr__(name):
    # The distillation trainer imports the Trainer stack (accelerate, datasets); load it on first use only.
    if name in ("DistillationTrainer", "DistillationTrainingArguments"):
        from . import distillation

        return getattr(distillation, name)
    if name == "BinaryBertFillMaskPipeline":  # transformers' pipelines stack, likewise on first use
        from .fill_mask import BinaryBertFillMaskPipeline

        return BinaryBertFillMaskPipeline
    raise AttributeError(f"module 'hf_binary_bert' has no attribute {name!r}")


__all__ = [
    "ActivationQuantizer",
    "BinaryBertFillMaskPipeline",
    "BinaryEmbedding",
    "Calibration",
    "NotCalibratedError",
    "PackedBinaryEmbedding",
    "count_operations",
    "end_distributed",
    "estimate_packed_size",
    "BinaryBertConfig",
    "BinaryBertForMaskedLM",
    "BinaryBertForMultipleChoice",
    "BinaryBertForQuestionAnswering",
    "BinaryBertForSequenceClassification",
    "BinaryBertForTokenClassification",
    "BinaryBertModel",
    "BinaryBertPreTrainedModel",
    "BinaryLinear",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "PackedBinaryLinear",
    "binarize_",
    "calibrate",
    "checkpoint_size_report",
    "freeze_",
    "load_teacher",
    "unfreeze_",
]
