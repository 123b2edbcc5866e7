"""Packed inference kernels: bitwise CPU GEMMs for binarized Linears, exposed as PyTorch custom ops.

- `ops`: `torch.ops.hf_binary_bert.w1a1_linear` (binary inputs: XNOR / AND-popcount) and `w1a8_linear` (2–8-bit
  or dynamic int8 inputs: W1 × u8, VNNI), compiled from `csrc/bitgemm.cpp` by the package's own build.
- `ops.w8a8_linear`: int8 weights × 7-bit dynamic activations on the same driver, for the masked-LM head.
- `reference`: their pure-PyTorch twins (used when the extension is missing; the tests compare against them).

`PackedBinaryLinear` calls them in eval mode on the CPU (`BinaryBertPreTrainedModel.set_inference_kernel`).
"""

from . import reference
from .ops import (
    available,
    cpu_features,
    get_isa,
    popcount_rate,
    repack_weight,
    row_sums,
    set_isa,
    supported_isas,
    w1a1_linear,
    w1a8_linear,
    w8a8_linear,
)

__all__ = ["available", "cpu_features", "get_isa", "popcount_rate", "reference", "repack_weight", "row_sums", "set_isa", "supported_isas",
           "w1a1_linear", "w1a8_linear", "w8a8_linear"]
