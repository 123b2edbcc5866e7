"""The inference kernel choices of a packed model (`set_inference_kernel`) and the masked-LM decoder's int8 path
(`Int8HeadLinear`), with the cache both kernel paths use for tensors derived from a layer's weights.

Which op computes a packed binarized Linear, and with which arguments, is `binarization/kernel_dispatch.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from . import ops, reference

# "auto": the native encoder runtime (runtime.py) where it applies, else the per-module kernels; "eager": the
# per-module kernels called from PyTorch's eager forward (no native runtime); "reference": pure PyTorch.
INFERENCE_KERNELS = ("auto", "eager", "reference")
FLOAT_ACTIVATIONS = ("float32", "int8")


def cached(module: nn.Module, name: str, sources: tuple[torch.Tensor, ...], make):
    """`make()`, recomputed only when one of `sources` changed (in place or replaced) since the last call. Not cached
    while compiling (torch.compile / torch.export trace `make` into the graph instead)."""
    if torch.compiler.is_compiling():
        return make()
    key = tuple((t._version, t.data_ptr()) for t in sources)
    cache = module.__dict__.setdefault("_kernel_cache", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = (key, make())
        cache[name] = hit
    return hit[1]


MLM_HEADS = ("float32", "int8")


class Int8HeadLinear(nn.Linear):
    """The masked-LM decoder (hidden → vocabulary) with an int8 inference path (`ops.w8a8_linear`).

    It holds the same `weight` and `bias` Parameters as the `nn.Linear` it replaces (`from_linear`), so state-dict
    keys and weight tying are unchanged; the int8 copy (per-row int8 weights, their scales and kernel layout, about
    N·K bytes) is derived from `weight` and cached, not saved. Eval mode on the CPU without autograd: int8 (7-bit
    dynamic activations × per-row int8 weights, an approximation: within 3 % of FP32 on random data, tested);
    otherwise `F.linear` as `nn.Linear`.
    """

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8HeadLinear:
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        module.weight, module.bias = linear.weight, linear.bias
        return module.train(linear.training)

    def to_linear(self) -> nn.Linear:
        """The plain `nn.Linear` with the same Parameters."""
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear.train(self.training)

    def _int8_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """int8 weights [N, K], their i8 kernel layout, row sums int32 [N] and per-row scales float32 [N]."""
        weight_int8, scale = reference.quantize_weight_int8(self.weight)
        return weight_int8, reference.repack_int8(weight_int8), weight_int8.sum(-1, dtype=torch.int32), scale

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad)
        if self.training or needs_grad or input.device.type != "cpu" or input.dtype != torch.float32:
            return super().forward(input)
        weight_int8, kernel, sums, scale = cached(self, "int8", (self.weight,), self._int8_weight)
        bias = None if self.bias is None else self.bias.detach()
        args = (input, weight_int8, kernel, sums, scale, bias)
        return ops.w8a8_linear(*args) if torch.compiler.is_compiling() else ops.w8a8_linear_impl(*args)


__all__ = ["FLOAT_ACTIVATIONS", "INFERENCE_KERNELS", "MLM_HEADS", "Int8HeadLinear", "cached"]
