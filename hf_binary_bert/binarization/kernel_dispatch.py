"""`PackedBinaryLinear`'s kernel path: which custom op (and which arguments) computes its forward, given its input
quantizer. Used in eval mode on the CPU when no gradient is needed (`kernel_applies`).

| input quantizer (config)                          | op            | input binarization / quantization          |
|---------------------------------------------------|---------------|--------------------------------------------|
| 1-bit `sign`, signed (BiBERT)                      | `w1a1_linear` | q = sign(x) ∈ {±1}, s = 1                   |
| 1-bit `sign`, unsigned                             | `w1a1_linear` | q = 1[x ≥ ½] ∈ {0, 1}, s = 1                |
| 1-bit `elastic`, signed (BiT)                      | `w1a1_linear` | q = sign(x − β), s = α                      |
| 1-bit `elastic`, unsigned                          | `w1a1_linear` | q = round(clip((x − β)/α, 0, 1)), s = α     |
| 2–8-bit `sign` (LSQ) / `elastic`                   | `w1a8_linear` | q = round(clip((x − β)/s, Q_n, Q_p))        |
| none (W1A32), `float_activations="int8"`           | `w1a8_linear` | dynamic per-row int8 (s_m = max|x_m|/127)   |
| none (W1A32), `float_activations="float32"`        | —             | reference (dequantize, `F.linear`): exact   |

In eager mode the call is bound once per layer (`ops.bind_w1a1` / `bind_w1a8`) instead of going through the
dispatcher (whose overhead is more than the whole kernel at batch 1; `benchmarks/linear_kernels.py` measures both).
Under `torch.compile` / `torch.export` the module calls `torch.ops.hf_binary_bert.*`, so the graph holds one op per
binarized Linear. The masked-LM decoder's int8 path is `Int8HeadLinear`.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..kernels import ops
from ..kernels.linear import cached, plan_of
from ..kernels.reference import SIGNED, UNSIGNED_GE, UNSIGNED_GT
from .activation import ActivationQuantizer


def kernel_applies(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether `module` (a `PackedBinaryLinear`) runs its forward on the kernels for input `x`: kernel `"auto"` or `"eager"`,
    eval mode, float32 CPU input, no gradient needed, and a kernel for its input quantizer (not while it calibrates:
    the bound kernel call does not read the input's statistics)."""
    if plan_of(module).kernel == "reference" or module.training or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or (module.bias is not None and module.bias.requires_grad)):
        return False
    quantizer = module.input_quantizer
    if isinstance(quantizer, ActivationQuantizer):  # calibrating (`hf_binary_bert.Calibration`): the reference path
        return quantizer._calibration_batches is None
    return isinstance(quantizer, nn.Identity) and plan_of(module).float_activations == "int8"


def _per_row(module: nn.Module, name: str) -> torch.Tensor | None:
    values = getattr(module, name, None)  # weight_offset exists only with the offset scheme
    if values is None:
        return None
    rows = module.out_features
    return cached(module, name, (values,),
                   lambda: values.detach().float().repeat_interleave(rows // values.shape[0]).contiguous())


@functools.cache
def _one() -> torch.Tensor:
    """float32 [] 1: the step of a quantizer without one (made on first use: importing allocates no tensor)."""
    return torch.ones(())


def _plan_key(module: nn.Module) -> tuple:
    """What a bound kernel call depends on: the identity and version of every tensor it reads."""
    quantizer = module.input_quantizer
    tensors = [module.weight_packed, module.weight_scale, getattr(module, "weight_offset", None), module.bias,
               getattr(quantizer, "shift", None), getattr(quantizer, "step", None)]
    return (id(quantizer), plan_of(module).float_activations, getattr(quantizer, "shift_dtype", None),
            *((t.data_ptr(), t._version) for t in tensors if t is not None))


def _kernel_args(module: nn.Module, x: torch.Tensor) -> tuple[str, tuple]:
    """The op (`"w1a1"` or `"w1a8"`) and its arguments after x for `module` (input x calibrates a fresh quantizer)."""
    quantizer = module.input_quantizer
    k = module.in_features
    packed = module.weight_packed
    alpha, gamma = _per_row(module, "weight_scale"), _per_row(module, "weight_offset")
    bias = None if module.bias is None else module.bias.detach()
    if isinstance(quantizer, ActivationQuantizer):
        shift = quantizer.effective_shift().detach().reshape(-1) if hasattr(quantizer, "shift") else None
        step = quantizer.kernel_step(x) if quantizer.has_step else _one()
        if quantizer.bits == 1:
            if not quantizer.has_step:  # sign scheme: ±1, or 1[x ≥ ½]
                mode, threshold = (SIGNED, 0.0) if quantizer.signed else (UNSIGNED_GE, 0.5)
            else:  # elastic: α·sign(x − β), or α·round(clip((x − β)/α, 0, 1)) (round half to even: > ½)
                mode, threshold = (SIGNED, 0.0) if quantizer.signed else (UNSIGNED_GT, 0.5)
            weight = cached(module, "bits", (packed,), lambda: ops.repack_weight(packed, k, "bits"))
            return "w1a1", (packed, weight, alpha, gamma, bias, shift, step, threshold, mode, quantizer.has_step)
        q_min, q_max, dynamic = quantizer.q_n, quantizer.q_p, False
    else:  # full-precision activations, dynamic int8
        shift, step, q_min, q_max, dynamic = None, _one(), -127, 127, True
    weight = cached(module, "nib", (packed,), lambda: ops.repack_weight(packed, k, "nib"))
    sums = cached(module, "sums", (packed,), lambda: ops.row_sums(packed, k))
    return "w1a8", (packed, weight, sums, alpha, gamma, bias, shift, step, q_min, q_max, dynamic)


def kernel_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The forward of a `PackedBinaryLinear` on the kernels (see the module docstring), x [..., in] → [..., out].

    Eager mode: the call is bound once (`ops.bind_w1a1` / `bind_w1a8`) and bound again only when one of the tensors
    it reads changes (a load, a calibration, an edit). Compiling: `torch.ops.hf_binary_bert.*` with the arguments
    traced."""
    if torch.compiler.is_compiling():
        op, args = _kernel_args(module, x)
        return getattr(ops, f"{op}_linear")(x, *args)
    cache = plan_of(module).cache_of(module)  # the model's inference plan holds the bound call
    plan = cache.get("bound")
    key = _plan_key(module)
    if plan is None or plan[0] != key:
        op, args = _kernel_args(module, x)
        bind = ops.bind_w1a1 if op == "w1a1" else ops.bind_w1a8
        plan = (_plan_key(module), bind(module.in_features, *args))  # key again: calibration may have changed it
        cache["bound"] = plan
    return plan[1](x)


__all__ = ["kernel_applies", "kernel_forward"]
