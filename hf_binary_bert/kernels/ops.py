"""The kernels as PyTorch custom operators (`torch.library`), so `torch.compile` and `torch.export` see one op per
Linear: `torch.ops.hf_binary_bert.w1a1_linear`, `w1a8_linear` and `w8a8_linear` (the int8 masked-LM head).

Each op runs the compiled kernel (`_bitgemm`, built by the package's setup.py) when it is importable, else its
pure-PyTorch twin in `reference.py` after a one-time warning. Arguments and formulas: `reference.w1a1_linear`,
`reference.w1a8_linear`, `reference.w8a8_linear`. Inputs: x float32 [..., K] on the CPU; outputs float32 [..., N].
`bind_w1a1` / `bind_w1a8` fix every argument but the input once (what `PackedBinaryLinear` calls in eager mode); the
function they return holds references to the tensors it reads, so they stay alive as long as it does.

Memory: the C code reads and writes raw addresses, so every tensor is checked before an address is taken (dtype,
shape, CPU device, contiguity), and every output is allocated here as float32 (what the C code writes), whatever
`torch.get_default_dtype()` is. The kernel tests also run under AddressSanitizer (`.ci/asan-kernels`).

Raises (every op): `ValueError` naming the tensor for a wrong dtype, shape, device or a non-contiguous vector.
"""

from __future__ import annotations

import hashlib
import math
import sys
import warnings

import torch

from . import reference

try:
    from . import _bitgemm
except ImportError as err:  # no compiler at install time (or MSVC), or neither x86-64 nor aarch64
    _bitgemm = None
    _IMPORT_ERROR = err
else:
    _IMPORT_ERROR = None

_warned = False
# Namespace of the ops: `torch.ops.hf_binary_bert`. The standalone copy of this file that a checkpoint carries for
# `trust_remote_code` loading (`hf_binary_bert.remote_code`) registers under a namespace of its own, so that it can
# be imported next to the package, or twice from two checkpoints, without a clash.
NAMESPACE = ("hf_binary_bert" if __name__ == "hf_binary_bert.kernels.ops"
             else "hf_binary_bert_" + hashlib.sha1(__name__.encode()).hexdigest()[:16])


def available() -> bool:
    """Whether the compiled kernels are importable (otherwise the ops run `reference.py`)."""
    return _bitgemm is not None


def _use_reference() -> bool:
    global _warned
    if _bitgemm is not None:
        return False
    if not _warned:
        warnings.warn(
            f"hf_binary_bert: compiled kernels unavailable ({_IMPORT_ERROR}); using the pure-PyTorch reference "
            "kernels (correct, slow). Install hf-binary-bert with a C++ compiler (GCC or Clang) on x86-64 or aarch64 "
            "to build them.",
            RuntimeWarning,
            stacklevel=3,
        )
        _warned = True
    return True


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _is_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")


def _check_cpu(name: str, t: torch.Tensor) -> None:
    _is_tensor(name, t)
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got {t.device}")


def _check_step(name: str, step) -> None:
    """A step is read once as a Python float: a one-element tensor on the CPU (any float dtype)."""
    _check_cpu(name, step)
    if step.numel() != 1 or not step.is_floating_point():
        raise ValueError(f"{name} must be a one-element float tensor, got {step.dtype} {list(step.shape)}")


def _check(x: torch.Tensor, weight_packed: torch.Tensor, k: int, n: int, **vectors: torch.Tensor | None) -> None:
    _check_cpu("input", x)
    if x.dtype != torch.float32:
        raise ValueError(f"input must be a float32 CPU tensor, got {x.dtype} on {x.device}")
    _check_cpu("weight_packed", weight_packed)
    if weight_packed.dtype != torch.uint8 or weight_packed.shape != (n, (k + 7) // 8):
        raise ValueError(f"weight_packed must be uint8 [N, ceil(K / 8)] for an input [..., K = {k}], got "
                         f"{weight_packed.dtype} {list(weight_packed.shape)}")
    for name, t in vectors.items():
        if t is None:
            continue
        _check_cpu(name, t)
        size = k if name == "shift" else n
        if t.dtype != torch.float32 or t.shape != (size,) or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous float32 [{size}] tensor, got {t.dtype} {list(t.shape)}"
                             f"{'' if t.is_contiguous() else ' (not contiguous)'}")


def repack_weight(weight_packed: torch.Tensor, in_features: int, layout: str) -> torch.Tensor:
    """Kernel layout (int64 words) of packed weight bits uint8 [N, ceil(in_features / 8)]: `"bits"` (interleaved
    groups of 8 rows, for `w1a1_linear`) or `"nib"` (4 reduction steps × 16 rows per word, then the AVX-512
    lookup-table GEMM's index, for `w1a8_linear`); see `reference.repack_weight` and csrc/bitgemm.cpp. Made once
    per Linear, by the C++ code (or by `reference.repack_weight`, the same layout with tensor ops, when compiling /
    without the extension).

    Raises:
        ValueError: for another layout name or a `weight_packed` that is not uint8 [N, ceil(in_features / 8)].
    """
    if layout not in ("bits", "nib"):
        raise ValueError(f"layout must be 'bits' or 'nib', got {layout!r}")
    _is_tensor("weight_packed", weight_packed)
    if weight_packed.dtype != torch.uint8 or weight_packed.dim() != 2 or weight_packed.shape[1] != (in_features + 7) // 8:
        raise ValueError(f"weight_packed must be uint8 [N, ceil({in_features} / 8)], got {weight_packed.dtype} "
                         f"{list(weight_packed.shape)}")
    if _bitgemm is None or torch.compiler.is_compiling():
        return reference.repack_weight(weight_packed, in_features, layout)
    packed = weight_packed.detach().cpu().contiguous()
    n = packed.shape[0]
    out = torch.empty(_bitgemm.layout_words(layout, n, in_features), dtype=torch.int64)
    _bitgemm.repack(layout, packed.data_ptr(), n, in_features, out.data_ptr())
    return out


def _check_sums(weight_sums: torch.Tensor, n: int) -> None:
    _check_cpu("weight_sums", weight_sums)
    if weight_sums.dtype != torch.int32 or weight_sums.shape != (n,) or not weight_sums.is_contiguous():
        raise ValueError(f"weight_sums must be contiguous int32 [{n}] (the weight rows' sums), got "
                         f"{weight_sums.dtype} {list(weight_sums.shape)}")


def _check_kernel_weight(weight_kernel: torch.Tensor, layout: str, n: int, k: int) -> None:
    _check_cpu("weight_kernel", weight_kernel)
    words = _bitgemm.layout_words(layout, n, k)
    if weight_kernel.dtype != torch.int64 or weight_kernel.shape != (words,) or not weight_kernel.is_contiguous():
        raise ValueError(f"weight_kernel must be the {layout!r} layout of weight_packed (int64 [{words}], "
                         f"repack_weight), got {weight_kernel.dtype} {list(weight_kernel.shape)}")


def w1a1_linear_impl(x: torch.Tensor, weight_packed: torch.Tensor, weight_kernel: torch.Tensor, alpha: torch.Tensor,
                     gamma: torch.Tensor | None, bias: torch.Tensor | None, shift: torch.Tensor | None,
                     step: torch.Tensor, threshold: float, mode: int, scale_by_step: bool) -> torch.Tensor:
    """Binary-input, binary-weight Linear: fused input binarization + XNOR/AND-popcount GEMM + epilogue
    (`reference.w1a1_linear` gives the arguments and the formula). `weight_kernel` is
    `repack_weight(weight_packed, K, "bits")`."""
    return bind_w1a1(x.shape[-1], weight_packed, weight_kernel, alpha, gamma, bias, shift, step, threshold, mode,
                     scale_by_step)(x)


w1a1_linear = torch.library.custom_op(f"{NAMESPACE}::w1a1_linear", w1a1_linear_impl, mutates_args=(),
                                      device_types="cpu")


@w1a1_linear.register_fake
def _(x, weight_packed, weight_kernel, alpha, gamma, bias, shift, step, threshold, mode, scale_by_step):
    return x.new_empty(*x.shape[:-1], weight_packed.shape[0])


def w1a8_linear_impl(x: torch.Tensor, weight_packed: torch.Tensor, weight_kernel: torch.Tensor,
                     weight_sums: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor | None,
                     bias: torch.Tensor | None, shift: torch.Tensor | None, step: torch.Tensor, q_min: int, q_max: int,
                     dynamic: bool) -> torch.Tensor:
    """Binary-weight Linear with 2–8-bit inputs: fused input quantization to u8 + W1×u8 GEMM (VNNI where the CPU has
    it) + epilogue (`reference.w1a8_linear`). `weight_kernel` is `repack_weight(weight_packed, K, "nib")`,
    `weight_sums` int32 [N], Σ_k B[n, k] (`row_sums`)."""
    return bind_w1a8(x.shape[-1], weight_packed, weight_kernel, weight_sums, alpha, gamma, bias, shift, step, q_min,
                     q_max, dynamic)(x)


w1a8_linear = torch.library.custom_op(f"{NAMESPACE}::w1a8_linear", w1a8_linear_impl, mutates_args=(),
                                      device_types="cpu")


@w1a8_linear.register_fake
def _(x, weight_packed, weight_kernel, weight_sums, alpha, gamma, bias, shift, step, q_min, q_max, dynamic):
    return x.new_empty(*x.shape[:-1], weight_packed.shape[0])


def w8a8_linear_impl(x: torch.Tensor, weight_int8: torch.Tensor, weight_kernel: torch.Tensor,
                     weight_sums: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """int8 Linear for the masked-LM head (`reference.w8a8_linear`): dynamic 7-bit activations × per-row int8
    weights on the same VNNI driver. `weight_kernel` is `reference.repack_int8(weight_int8)`, `weight_sums` int32 [N]
    the row sums of `weight_int8`."""
    _check_cpu("weight_int8", weight_int8)
    if weight_int8.dtype != torch.int8 or weight_int8.dim() != 2:
        raise ValueError(f"weight_int8 must be int8 [N, K], got {weight_int8.dtype} {list(weight_int8.shape)}")
    n, k = weight_int8.shape
    _check_cpu("input", x)
    if x.dtype != torch.float32 or x.shape[-1] != k:
        raise ValueError(f"input must be a float32 CPU tensor [..., {k}], got {x.dtype} {list(x.shape)} on {x.device}")
    _check(x, torch.empty(n, (k + 7) // 8, dtype=torch.uint8), k, n, weight_scale=weight_scale, bias=bias)
    if _use_reference():
        return reference.w8a8_linear(x, weight_int8, weight_scale, bias)
    _check_cpu("weight_kernel", weight_kernel)
    words = (n + 15) // 16 * 16 * ((k + 3) // 4 * 4) // 8
    if weight_kernel.dtype != torch.int64 or weight_kernel.shape != (words,) or not weight_kernel.is_contiguous():
        raise ValueError(f"weight_kernel must be the i8 layout of weight_int8 (int64 [{words}], reference.repack_int8), "
                         f"got {weight_kernel.dtype} {list(weight_kernel.shape)}")
    _check_sums(weight_sums, n)
    x2 = x.reshape(-1, k).contiguous()
    out = torch.empty(x2.shape[0], n, dtype=torch.float32)
    levels = reference.INT8_HEAD_LEVELS
    _bitgemm.w1a8_linear(x2.data_ptr(), x2.shape[0], k, k, 0, 1.0, -levels, levels, True, weight_kernel.data_ptr(), n,
                         weight_sums.data_ptr(), weight_scale.data_ptr(), 0, _ptr(bias), out.data_ptr(), n,
                         torch.get_num_threads(), True)
    return out.reshape(*x.shape[:-1], n)


w8a8_linear = torch.library.custom_op(f"{NAMESPACE}::w8a8_linear", w8a8_linear_impl, mutates_args=(),
                                      device_types="cpu")


@w8a8_linear.register_fake
def _(x, weight_int8, weight_kernel, weight_sums, weight_scale, bias):
    return x.new_empty(*x.shape[:-1], weight_int8.shape[0])


def _bound(k: int, n: int, call, tensors: tuple):
    """`run(x)`: x float32 CPU [..., k] → float32 [..., n] through `call(x2d, out)` (the C kernel with every other
    argument already fixed, as raw addresses). `run.tensors` holds `tensors`, the tensors behind those addresses,
    so that they live as long as `run` does (a caller may have passed temporaries)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.device.type != "cpu" or x.shape[-1] != k:
            got = f"{x.dtype} {list(x.shape)} on {x.device}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"input must be a float32 CPU tensor [..., {k}], got {got}")
        x2 = x.reshape(-1, k)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        out = torch.empty(x2.shape[0], n, dtype=torch.float32)  # what the C code writes, whatever the default dtype
        call(x2, out)  # writes every element of out
        return out.view(*x.shape[:-1], n)

    run.tensors = tensors
    return run


def _check_bound(k, weight_packed, alpha, gamma, bias, shift, step) -> int:
    """The checks `bind_w1a1` and `bind_w1a8` make once: the packed weight [N, ceil(k/8)] and the per-row / per-input
    tensors against inputs [..., k], and the step; returns N. Raises ValueError naming the tensor."""
    _check_cpu("weight_packed", weight_packed)
    n = weight_packed.shape[0]
    _check(torch.empty(0, k, dtype=torch.float32), weight_packed, k, n, alpha=alpha, gamma=gamma, bias=bias,
           shift=shift)
    _check_step("step", step)
    return n


def bind_w1a1(k, weight_packed, weight_kernel, alpha, gamma, bias, shift, step, threshold, mode, scale_by_step):
    """`w1a1_linear` for inputs [..., k] with every other argument fixed and checked once: returns `run(x)`, x
    float32 CPU [..., k] → float32 [..., N]. `run` keeps references to the tensors it reads (`run.tensors`), so
    passing temporaries is safe; their values must not change in place while `run` is in use
    (`binarization.kernel_dispatch` binds again when one does). This saves the per-call argument checks, Python that takes longer than the kernel
    itself at batch 1. Without the compiled kernels, `run` is the reference (after the one-time warning).

    Raises:
        ValueError: naming the tensor, for a wrong dtype, shape or device (and, from `run`, a wrong input)."""
    n = _check_bound(k, weight_packed, alpha, gamma, bias, shift, step)
    if _use_reference():
        return lambda x: reference.w1a1_linear(x, weight_packed, alpha, gamma, bias, shift, step, threshold, mode,
                                               scale_by_step)
    _check_kernel_weight(weight_kernel, "bits", n, k)
    s = float(step)
    fixed = (_ptr(shift), s, threshold, mode, weight_kernel.data_ptr(), n, alpha.data_ptr(), _ptr(gamma),
             s if scale_by_step else 1.0, _ptr(bias))
    return _bound(k, n, lambda x2, out: _bitgemm.w1a1_linear(x2.data_ptr(), x2.shape[0], k, k, *fixed, out.data_ptr(),
                                                             n, torch.get_num_threads()),
                  (weight_kernel, alpha, gamma, bias, shift))


def bind_w1a8(k, weight_packed, weight_kernel, weight_sums, alpha, gamma, bias, shift, step, q_min, q_max, dynamic):
    """`w1a8_linear` for inputs [..., k] with every other argument fixed and checked once (see `bind_w1a1`: `run`
    keeps the tensors it reads alive and returns float32 [..., N]).

    Raises:
        ValueError: naming the tensor, for a wrong dtype, shape or device, or levels outside the u8 range."""
    reference.check_levels(q_min, q_max, dynamic)
    n = _check_bound(k, weight_packed, alpha, gamma, bias, shift, step)
    if _use_reference():
        return lambda x: reference.w1a8_linear(x, weight_packed, alpha, gamma, bias, shift, step, q_min, q_max,
                                               dynamic)
    _check_kernel_weight(weight_kernel, "nib", n, k)
    _check_sums(weight_sums, n)
    fixed = (_ptr(shift), float(step), q_min, q_max, dynamic, weight_kernel.data_ptr(), n, weight_sums.data_ptr(),
             alpha.data_ptr(), _ptr(gamma), _ptr(bias))
    return _bound(k, n, lambda x2, out: _bitgemm.w1a8_linear(x2.data_ptr(), x2.shape[0], k, k, *fixed, out.data_ptr(),
                                                             n, torch.get_num_threads()),
                  (weight_kernel, weight_sums, alpha, gamma, bias, shift))


def bi_attention_impl(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, q_shift: torch.Tensor | None,
                      k_shift: torch.Tensor | None, v_shift: torch.Tensor | None, q_step: torch.Tensor,
                      k_step: torch.Tensor, v_step: torch.Tensor, scale: torch.Tensor,
                      attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bitwise Bi-Attention (`reference.bi_attention` gives the formula; same arguments, shifts [H, 1, D]):
    XNOR-popcount scores, boolean weights, AND-popcount weights × V. Returns out [B, T, H, D] and weights
    [B, H, T, T], equal to the reference bit for bit."""
    shifts, steps = (q_shift, k_shift, v_shift), (q_step, k_step, v_step)
    _check_cpu("query", query)
    if query.dim() != 4:
        raise ValueError(f"query must be a float32 CPU [B, H, T, D] tensor, got {query.dtype} {list(query.shape)}")
    b, h, t, d = query.shape
    for name, x in (("query", query), ("key", key), ("value", value)):
        _check_cpu(name, x)
        if x.dtype != torch.float32 or x.shape != (b, h, t, d) or x.stride(-1) != 1:
            raise ValueError(f"{name} must be a float32 CPU [B, H, T, D] tensor with unit stride on D, like query "
                             f"{list(query.shape)}; got {x.dtype} {list(x.shape)}")
    for name, shift in zip(("q_shift", "k_shift", "v_shift"), shifts):
        if shift is not None:
            _check_cpu(name, shift)
            if shift.dtype != torch.float32 or shift.numel() != h * d:
                raise ValueError(f"{name} must be float32 [{h}, 1, {d}], got {shift.dtype} {list(shift.shape)}")
    for name, step in zip(("q_step", "k_step", "v_step", "scale"), (*steps, scale)):
        _check_step(name, step)
    if attention_mask is not None:
        _check_cpu("attention_mask", attention_mask)
        if attention_mask.dtype != torch.float32 or attention_mask.dim() != 4:
            raise ValueError(f"attention_mask must be an additive float32 [B, 1|H, T, T] mask, got "
                             f"{attention_mask.dtype} {list(attention_mask.shape)}")
        try:
            attention_mask = attention_mask.expand(b, h, t, t)
        except RuntimeError:
            raise ValueError(f"attention_mask must broadcast to [B, H, T, T] = {[b, h, t, t]}, got "
                             f"{list(attention_mask.shape)}") from None
    if _use_reference():
        return reference.bi_attention(query, key, value, shifts, steps, scale, attention_mask)
    flat = [None if shift is None else shift.reshape(-1).contiguous() for shift in shifts]
    mask_strides = (0, 0, 0, 0) if attention_mask is None else tuple(attention_mask.stride())
    out = torch.empty(b, t, h, d, dtype=torch.float32)  # what the C code writes, whatever the default dtype
    weights = torch.empty(b, h, t, t, dtype=torch.float32)
    strides = [s for x in (query, key, value) for s in x.stride()[:3]]
    _bitgemm.bi_attention(query.data_ptr(), key.data_ptr(), value.data_ptr(), b, h, t, d, *strides,
                          *(_ptr(f) for f in flat), float(q_step), float(k_step), float(v_step), float(scale),
                          float(v_step), _ptr(attention_mask), mask_strides, out.data_ptr(), weights.data_ptr(),
                          torch.get_num_threads())
    return out, weights


bi_attention = torch.library.custom_op(f"{NAMESPACE}::bi_attention", bi_attention_impl, mutates_args=(),
                                       device_types="cpu")


@bi_attention.register_fake
def _(query, key, value, q_shift, k_shift, v_shift, q_step, k_step, v_step, scale, attention_mask):
    b, h, t, d = query.shape
    return query.new_empty(b, t, h, d), query.new_empty(b, h, t, t)


def _check_map(name: str, t: torch.Tensor | None, dtype: torch.dtype, shape: torch.Size | None = None) -> None:
    """An elementwise operand of the quantized-probabilities kernels: contiguous, CPU, `dtype`, `shape`."""
    if t is None:
        return
    _check_cpu(name, t)
    if t.dtype != dtype or (shape is not None and t.shape != shape) or not t.is_contiguous():
        want = f"{list(shape)} " if shape is not None else ""
        raise ValueError(f"{name} must be a contiguous {dtype} {want}CPU tensor, got {t.dtype} {list(t.shape)}"
                         f"{'' if t.is_contiguous() else ' (not contiguous)'}")


def _check_dropout(kept: torch.Tensor | None, keep_scale: torch.Tensor | None) -> None:
    """Dropout's operands: the kept mask and 1/(1 − p) together, or neither (no dropout)."""
    if (kept is None) != (keep_scale is None):
        raise ValueError("kept and keep_scale go together: both (dropout) or neither, got "
                         f"kept {'None' if kept is None else 'a tensor'} and keep_scale "
                         f"{'None' if keep_scale is None else 'a tensor'}")
    if keep_scale is not None:
        _check_step("keep_scale", keep_scale)


def _float_or_one(t: torch.Tensor | None) -> float:
    return 1.0 if t is None else float(t)


def _check_levels(q_p: int) -> None:
    if not isinstance(q_p, int) or not 1 <= q_p <= 255:
        raise ValueError(f"q_p must be an int in 1 … 255 (the top level of uint8 codes), got {q_p!r}")


def quantized_probs_forward(probs: torch.Tensor, kept: torch.Tensor | None, step: torch.Tensor, q_p: int,
                            keep_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training forward of the attention probabilities' quantizer and dropout in one pass (csrc/quantized_probs.h);
    arguments, formula and returns: `reference.quantized_probs_forward`, equal to it bit for bit.

    Raises:
        ValueError: probs not a contiguous float32 CPU tensor, kept not bool of its shape, a step or keep_scale
            that is not one float, kept without keep_scale or the other way round, q_p outside 1 … 255.
    """
    _check_map("probs", probs, torch.float32)
    _check_map("kept", kept, torch.bool, probs.shape)
    _check_dropout(kept, keep_scale), _check_step("step", step), _check_levels(q_p)
    if _use_reference() or torch.compiler.is_compiling():
        return reference.quantized_probs_forward(probs, kept, step, q_p, keep_scale)
    codes = torch.empty(probs.shape, dtype=torch.uint8)
    weights = torch.empty(probs.shape, dtype=torch.float32)
    _bitgemm.quantized_probs_forward(probs.data_ptr(), _ptr(kept), probs.numel(), float(step), float(q_p),
                                     _float_or_one(keep_scale), codes.data_ptr(), weights.data_ptr(), torch.get_num_threads())
    return codes, weights


def quantized_probs_weights(codes: torch.Tensor, step: torch.Tensor, keep_scale: torch.Tensor | None) -> torch.Tensor:
    """The dropped-out quantized probabilities Â again from their codes, in one pass; see
    `reference.quantized_probs_weights` (equal bit for bit).

    Raises:
        ValueError: codes not a contiguous uint8 CPU tensor, a step or keep_scale that is not one float.
    """
    _check_map("codes", codes, torch.uint8)
    _check_step("step", step)
    if keep_scale is not None:  # (no kept mask here: the codes are 0 where dropped)
        _check_step("keep_scale", keep_scale)
    if _use_reference() or torch.compiler.is_compiling():
        return reference.quantized_probs_weights(codes, step, keep_scale)
    weights = torch.empty(codes.shape, dtype=torch.float32)
    _bitgemm.quantized_probs_weights(codes.data_ptr(), codes.numel(), float(step), _float_or_one(keep_scale),
                                     keep_scale is not None,
                                     weights.data_ptr(), torch.get_num_threads())
    return weights


def quantized_probs_backward(grad: torch.Tensor, grad2: torch.Tensor | None, probs: torch.Tensor,
                             kept: torch.Tensor | None, step: torch.Tensor, q_p: int, keep_scale: torch.Tensor | None,
                             out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the attention probabilities' quantizer and dropout in one pass (csrc/quantized_probs.h);
    formula and returns: `reference.quantized_probs_backward`. ∂A is equal to it bit for bit; ∂α is the same sum
    in 16-lane float blocks added in float64 (the reference: torch.dot in float32). ∂A is written into `out` when given (float32,
    A's shape; may be `grad` itself).

    Raises:
        ValueError: grad, probs or out not contiguous float32 CPU tensors of one shape (grad2 of that shape), kept
            not bool of that shape, a step or keep_scale that is not one float, kept without keep_scale or the
            other way round, q_p outside 1 … 255.
    """
    _check_map("probs", probs, torch.float32)
    for name, t in (("grad", grad), ("grad2", grad2), ("out", out)):
        _check_map(name, t, torch.float32, probs.shape)
    _check_map("kept", kept, torch.bool, probs.shape)
    _check_dropout(kept, keep_scale), _check_step("step", step), _check_levels(q_p)
    if _use_reference() or torch.compiler.is_compiling():
        return reference.quantized_probs_backward(grad, grad2, probs, kept, step, q_p, keep_scale, out)
    out = torch.empty(probs.shape, dtype=torch.float32) if out is None else out
    grad_step = _bitgemm.quantized_probs_backward(grad.data_ptr(), _ptr(grad2), probs.data_ptr(), _ptr(kept),
                                                  probs.numel(), float(step), float(q_p), _float_or_one(keep_scale),
                                                  out.data_ptr(), torch.get_num_threads())
    return out, torch.tensor(grad_step, dtype=step.dtype).reshape(step.shape)


def dropout_kept(key: int, shape: torch.Size | tuple[int, ...], keep: float) -> torch.Tensor:
    """Dropout's kept mask, bool `shape` (contiguous): each element kept with probability `keep`, from the counter-
    based generator Philox4x32-10 under the 64-bit `key` (csrc/dropout.h; `reference.dropout_kept` is the twin, bit
    for bit). The mask depends on (key, element index) only: the same for any thread count and instruction set.

    Raises:
        ValueError: `keep` outside [0, 1] or `key` outside [0, 2⁶⁴).
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be a probability in [0, 1], got {keep}")
    if not 0 <= key < 1 << 64:
        raise ValueError(f"key must be an unsigned 64-bit integer, got {key}")
    if keep == 1.0:  # every element (a 32-bit u is always < 2³²)
        return torch.ones(shape, dtype=torch.bool)
    n = math.prod(shape)
    threshold = math.floor(keep * 4294967296.0)  # < 2³² for keep < 1
    if _bitgemm is None or torch.compiler.is_compiling():  # the training path: the twin, no warning
        return reference.dropout_kept(key, n, threshold).reshape(shape)
    kept = torch.empty(shape, dtype=torch.bool)
    _bitgemm.dropout_kept(key, n, threshold, kept.data_ptr(), torch.get_num_threads())
    return kept


def dropout_apply(x: torch.Tensor, kept: torch.Tensor, keep_scale: torch.Tensor,
                  backward: bool = False) -> torch.Tensor:
    """Dropout applied with a kept mask in one pass (csrc/dropout.h): forward (x · keep_scale) · 1[kept], with
    `backward` (x the gradient) (1[kept] · keep_scale) · x; a new float32 tensor, bit for bit
    `reference.dropout_apply`. x: contiguous float32 CPU, kept: contiguous bool of x's shape, keep_scale: 1/(1 − p),
    one float.

    Raises:
        ValueError: x not a contiguous float32 CPU tensor, kept not contiguous bool of its shape, a keep_scale that
            is not one float.
    """
    _check_map("x", x, torch.float32)
    _check_map("kept", kept, torch.bool, x.shape)
    _check_step("keep_scale", keep_scale)
    if _bitgemm is None or torch.compiler.is_compiling():
        return reference.dropout_apply(x, kept, keep_scale, backward)
    out = torch.empty(x.shape, dtype=torch.float32)
    _bitgemm.dropout_apply(x.data_ptr(), kept.data_ptr(), float(keep_scale), backward, out.data_ptr(), x.numel(),
                           torch.get_num_threads())
    return out


def training_kernels(*tensors: torch.Tensor | None):
    """The module whose training kernels of the activation quantizers (`quantized_probs_*`, `scaled_sign_*`) to
    call on these tensors: this one (compiled, one pass each) for float32 CPU tensors with the extension built
    outside `torch.compile`, else `reference` (the same formulas as PyTorch ops: other dtypes and devices, no
    extension — the plain training path, no warning)."""
    if _bitgemm is None or torch.compiler.is_compiling():
        return reference
    for t in tensors:
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            return reference
    return sys.modules[__name__]


def _view4(t: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sizes and strides of a tensor of up to 4 dims as a 4-D view (leading size-1 dims of stride 0)."""
    pad = 4 - t.dim()
    return (1,) * pad + tuple(t.shape), (0,) * pad + tuple(t.stride())


def scaled_sign_forward(x: torch.Tensor, shift: torch.Tensor | None,
                        step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training forward of BiT's 1-bit elastic activation quantizer in one pass (csrc/scaled_sign.h); arguments,
    formula and returns: `reference.scaled_sign_forward`, equal to it bit for bit. x float32 on the CPU, any
    strides (a transposed Q/K/V view is read in place), up to 4 dims (more: the leading ones are flattened).

    Raises:
        ValueError: x not a float32 CPU tensor, a shift that is not float32 or does not broadcast to x, a step
            that is not one float.
    """
    _check_cpu("x", x)
    if x.dtype != torch.float32:
        raise ValueError(f"x must be a float32 CPU tensor, got {x.dtype} {list(x.shape)}")
    _check_step("step", step)
    shape = x.shape
    if shift is not None:
        _check_cpu("shift", shift)
        try:
            shift = shift.expand(shape)
        except RuntimeError:
            raise ValueError(f"shift must broadcast to x {list(shape)}, got {list(shift.shape)}") from None
        if shift.dtype != torch.float32:
            raise ValueError(f"shift must be float32, got {shift.dtype}")
    if _use_reference() or torch.compiler.is_compiling():
        return reference.scaled_sign_forward(x, shift, step)
    if x.dim() > 4:
        x = x.reshape(-1, *shape[-3:])
        shift = None if shift is None else shift.reshape(-1, *shape[-3:])
    out = torch.empty(shape, dtype=torch.float32)
    codes = torch.empty(shape, dtype=torch.uint8)
    if x.numel():
        sizes, x_strides = _view4(x)
        shift_strides = (0, 0, 0, 0) if shift is None else _view4(shift)[1]
        _bitgemm.scaled_sign_forward(x.data_ptr(), _ptr(shift), sizes, x_strides, shift_strides, float(step),
                                     out.data_ptr(), codes.data_ptr(), torch.get_num_threads())
    return out, codes


def scaled_sign_levels(codes: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """x̂ = ±α again from `scaled_sign_forward`'s codes, in one pass (float32, the codes' shape); see
    `reference.scaled_sign_levels` (equal bit for bit).

    Raises:
        ValueError: codes not a contiguous uint8 CPU tensor, a step that is not one float.
    """
    _check_map("codes", codes, torch.uint8)
    _check_step("step", step)
    if _use_reference() or torch.compiler.is_compiling():
        return reference.scaled_sign_levels(codes, step)
    out = torch.empty(codes.shape, dtype=torch.float32)
    _bitgemm.scaled_sign_levels(codes.data_ptr(), codes.numel(), float(step), out.data_ptr(), torch.get_num_threads())
    return out


def scaled_sign_backward(grad: torch.Tensor, codes: torch.Tensor, step: torch.Tensor,
                         out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of BiT's 1-bit elastic activation quantizer in one pass (csrc/scaled_sign.h); formula and returns:
    `reference.scaled_sign_backward`. ∂x is equal to it bit for bit; ∂α = Σ grad·sign(u) is summed in 16-lane float
    blocks added in float64 (the reference: (Σ grad·x̂)/α with torch.dot in float32). ∂x is written into `out` when given (may be `grad`).

    Raises:
        ValueError: grad or out not contiguous float32 CPU tensors of the codes' shape, codes not contiguous uint8,
            a step that is not one float.
    """
    _check_map("codes", codes, torch.uint8)
    for name, t in (("grad", grad), ("out", out)):
        _check_map(name, t, torch.float32, codes.shape)
    _check_step("step", step)
    if _use_reference() or torch.compiler.is_compiling():
        return reference.scaled_sign_backward(grad, codes, step, out)
    out = torch.empty(codes.shape, dtype=torch.float32) if out is None else out
    sign_sum = _bitgemm.scaled_sign_backward(grad.data_ptr(), codes.data_ptr(), codes.numel(), out.data_ptr(),
                                             torch.get_num_threads())
    return out, torch.tensor(sign_sum, dtype=step.dtype).reshape(step.shape)


def row_sums(weight_packed: torch.Tensor, k: int) -> torch.Tensor:
    """Σ_k B[n, k] of each ±1 weight row, int32 [N] (the zero-point correction of `w1a8_linear`) of packed bits
    uint8 [N, ceil(k / 8)].

    Raises:
        ValueError: for a `weight_packed` that is not a uint8 CPU tensor [N, ceil(k / 8)]."""
    _check_cpu("weight_packed", weight_packed)
    if weight_packed.dtype != torch.uint8 or weight_packed.dim() != 2 or weight_packed.shape[1] != (k + 7) // 8:
        raise ValueError(f"weight_packed must be uint8 [N, ceil({k} / 8)], got {weight_packed.dtype} "
                         f"{list(weight_packed.shape)}")
    if _bitgemm is None or torch.compiler.is_compiling():
        return reference.row_sums(weight_packed, k)
    packed = weight_packed.contiguous()
    out = torch.empty(packed.shape[0], dtype=torch.int32)
    _bitgemm.row_sums(packed.data_ptr(), packed.shape[0], k, out.data_ptr())
    return out


def popcount_rate(threads: int | None = None, seconds: float = 0.3, kind: str = "popcount") -> float:
    """The machine's binary multiply-accumulate rate in G operations per second (10⁹/s), all `threads` together
    (default `torch.get_num_threads()`), measured for `seconds` on L1- or register-resident data with the instruction
    set in use (see csrc/popcount_rate.h). The binary GEMMs' floor:

    - `kind="popcount"`: popcount(a XOR b) with the fastest popcount of the instruction set (VPOPCNTDQ, Harley–Seal
      with vpshufb on AVX2, NEON's vcnt, popcnt); one bit operation per binary multiply-accumulate.
    - `kind="table"` (AVX2 paths only): the nibble-table lookup that the AVX2 W1A1 GEMM uses instead (vpshufb byte
      lookups of the 4-bit products of two input rows at once; T-MAC's idea): the tile's arithmetic with tables and
      indices in registers (per 3,072 binary MACs 12 vpshufb, 8 vpaddb and the fold of four 4-bit counters into
      byte sums, 3 ops each), its throughput bound.
    - `kind="amx"` (`avx512_amx` only): the W1 × u8 GEMM's floor there, u8 × s8 multiply-accumulates per second of
      AMX `tdpbusd` on L1-resident tiles (32 × 32 blocks over 512 inputs, csrc/amx_gemm.h).

    Raises:
        RuntimeError: without the compiled kernels.
        ValueError: an unknown `kind`, `kind="table"` on an instruction set without AVX2, or `kind="amx"` off the
            avx512_amx path.
    """
    if _bitgemm is None:
        raise RuntimeError("popcount_rate needs the compiled kernels")
    kinds = {"popcount": 0, "table": 1, "amx": 2}
    if kind not in kinds:
        raise ValueError(f"popcount_rate: kind must be one of {sorted(kinds)}, got {kind!r}")
    return _bitgemm.popcount_rate(threads or torch.get_num_threads(), float(seconds), kinds[kind])


def cpu_features() -> dict[str, bool]:
    """The CPU features the kernels look for (all False without the compiled kernels)."""
    if _bitgemm is None:
        return dict.fromkeys(("neon", "avx2", "avx512bw", "avx512vl", "avx512_vpopcntdq", "avx512_vnni", "avx512_bf16",
                              "amx_int8"), False)
    return _bitgemm.cpu_features()


def supported_isas() -> list[str]:
    """Instruction-set paths this CPU can run, slowest first (`["reference"]` without the compiled kernels)."""
    return ["reference"] if _bitgemm is None else _bitgemm.supported_isas()


def get_isa() -> str:
    """The instruction-set path in use: `"avx512_amx"` (avx512_vpopcnt with the runtime's W1 × u8 GEMMs on Intel AMX
    tiles), `"avx512_vpopcnt"`, `"avx512"`, `"avx2"` (x86-64), `"neon"` (aarch64), `"portable"` or `"reference"`."""
    return "reference" if _bitgemm is None else _bitgemm.get_isa()


def set_isa(name: str) -> str:
    """Use another path (e.g. to test or benchmark the fallbacks); returns the previous one. Besides
    `supported_isas()`, `"avx512_vpopcnt_emulated"` (on AVX-512BW CPUs) runs the VPOPCNTDQ path's tiling with an
    emulated vpopcntq, for testing it on CPUs without VPOPCNTDQ.

    Raises:
        ValueError: for a path this CPU (or this build) cannot run.
    """
    previous = get_isa()
    if name != previous:
        if _bitgemm is None:
            raise ValueError(f"instruction set {name} is not available: the compiled kernels are not built")
        _bitgemm.set_isa(name)
    return previous


__all__ = [
    "dropout_apply",
    "dropout_kept",
    "quantized_probs_backward",
    "quantized_probs_forward",
    "quantized_probs_weights",
    "scaled_sign_backward",
    "scaled_sign_forward",
    "scaled_sign_levels",
    "training_kernels",
    "bi_attention",
    "bi_attention_impl",
    "available",
    "bind_w1a1",
    "bind_w1a8",
    "cpu_features",
    "get_isa",
    "popcount_rate",
    "repack_weight",
    "row_sums",
    "set_isa",
    "supported_isas",
    "w1a1_linear",
    "w1a1_linear_impl",
    "w1a8_linear",
    "w1a8_linear_impl",
    "w8a8_linear",
    "w8a8_linear_impl",
]
