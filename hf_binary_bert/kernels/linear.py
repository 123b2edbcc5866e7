"""The inference plan of a packed model (`InferencePlan`: which kernels compute, set by `set_inference_kernel`, with
the tensors the kernels derive from each layer's weights cached in it) and the masked-LM decoder's int8 path
(`Int8HeadLinear`).

Which op computes a packed binarized Linear, and with which arguments, is `binarization/kernel_dispatch.py`.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from . import ops, reference

# "auto": the native encoder runtime (runtime.py) where it applies, else the per-module kernels; "eager": the
# per-module kernels called from PyTorch's eager forward (no native runtime); "reference": pure PyTorch.
INFERENCE_KERNELS = ("auto", "eager", "reference")
FLOAT_ACTIVATIONS = ("float32", "int8")
MLM_HEADS = ("float32", "int8")


@dataclass(frozen=True)
class InferencePlan:
    """How a packed binarized model computes in eval mode on the CPU: one object for the whole model
    (`BinaryBertPreTrainedModel.inference_plan`, made by `set_inference_kernel`), which every packed Linear
    (`binarization/kernel_dispatch.py`), the quantized attention (`attention.py`) and the native encoder runtime
    (`runtime.py`) read.

    Args:
        kernel: `"auto"` (the native runtime where it applies, else the per-module kernels), `"eager"` (the
            per-module kernels from PyTorch's eager forward) or `"reference"` (pure PyTorch).
        float_activations: W1A32 layers on the kernels: `"float32"` (the exact reference forward) or `"int8"`
            (dynamic per-row int8 activations).
        mlm_head: the masked-LM decoder in `"float32"` or `"int8"` (`Int8HeadLinear`).

    The tensors the kernels derive from a layer's weights (repacked bits, per-row scales, bound calls) are cached in
    the plan, per module (`cache_of`); a new plan starts with empty caches.

    Raises:
        ValueError: for a value outside the choices above, naming the field.
    """

    kernel: str = "auto"
    float_activations: str = "float32"
    mlm_head: str = "float32"
    caches: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, compare=False, repr=False)

    def __post_init__(self):
        for name, allowed in (("kernel", INFERENCE_KERNELS), ("float_activations", FLOAT_ACTIVATIONS),
                              ("mlm_head", MLM_HEADS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")

    def __reduce__(self):  # copies and pickles carry the choices, not the caches
        return type(self), (self.kernel, self.float_activations, self.mlm_head)

    def replace(self, **changes) -> InferencePlan:
        """A new plan with `changes` (and empty caches)."""
        return dataclasses.replace(self, **changes, caches=weakref.WeakKeyDictionary())

    def cache_of(self, module: nn.Module) -> dict:
        """The cache of `module`'s derived tensors under this plan."""
        cache = self.caches.get(module)
        if cache is None:
            cache = self.caches.setdefault(module, {})
        return cache


DEFAULT_PLAN = InferencePlan()


class InferencePlanReader:
    """For the modules that read the plan: `inference_plan` (the model's, once the model assigns it; the default plan
    until then) and `inference_kernel` / `float_activations` read from it. Assigning one of those gives this module a
    plan of its own (`plan.replace(...)`), e.g. to compare one layer against its reference."""

    inference_plan: InferencePlan = DEFAULT_PLAN

    @property
    def inference_kernel(self) -> str:
        return self.inference_plan.kernel

    @inference_kernel.setter
    def inference_kernel(self, value: str) -> None:
        self.inference_plan = self.inference_plan.replace(kernel=value)

    @property
    def float_activations(self) -> str:
        return self.inference_plan.float_activations

    @float_activations.setter
    def float_activations(self, value: str) -> None:
        self.inference_plan = self.inference_plan.replace(float_activations=value)


def plan_of(module: nn.Module) -> InferencePlan:
    """The plan `module` computes under (the default plan when none was assigned)."""
    return getattr(module, "inference_plan", DEFAULT_PLAN)


def cached(module: nn.Module, name: str, sources: tuple[torch.Tensor, ...], make):
    """`make()`, recomputed only when one of `sources` changed (in place or replaced) since the last call. Not cached
    while compiling (torch.compile / torch.export trace `make` into the graph instead)."""
    if torch.compiler.is_compiling():
        return make()
    key = tuple((t._version, t.data_ptr()) for t in sources)
    cache = plan_of(module).cache_of(module)
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = (key, make())
        cache[name] = hit
    return hit[1]



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


__all__ = ["DEFAULT_PLAN", "FLOAT_ACTIVATIONS", "INFERENCE_KERNELS", "MLM_HEADS", "InferencePlan", "InferencePlanReader",
           "Int8HeadLinear", "cached", "plan_of"]
