"""Weight binarization: straight-through estimators, binarized Linear layers and the BERT module swap."""

from .linear import BinaryLinear, PackedBinaryLinear, current_scales, initial_scales, pack_weight
from .ste import binary_sign, sign_ste
from .swap import binarize_, binarized_target, freeze_, unfreeze_

__all__ = [
    "BinaryLinear",
    "PackedBinaryLinear",
    "binarize_",
    "binarized_target",
    "binary_sign",
    "current_scales",
    "freeze_",
    "initial_scales",
    "pack_weight",
    "sign_ste",
    "unfreeze_",
]
