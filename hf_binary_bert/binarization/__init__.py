"""Binarization of weights, embeddings and activations: straight-through estimators, binarized Linear layers and the BERT module swap."""

from ..format import dequantize, pack_weight  # re-exported: the packed form lives in hf_binary_bert.format
from .activation import ActivationQuantizer, NotCalibratedError, make_activation_quantizer
from .embedding import BinaryEmbedding, PackedBinaryEmbedding
from .linear import BinaryLinear, PackedBinaryLinear, current_scales, initial_scales
from .ste import binary_sign, sign_ste
from .swap import binarize_, binarized_target, freeze_, unfreeze_

__all__ = [
    "ActivationQuantizer",
    "NotCalibratedError",
    "BinaryEmbedding",
    "PackedBinaryEmbedding",
    "dequantize",
    "make_activation_quantizer",
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
