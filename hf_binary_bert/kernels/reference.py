"""Pure-PyTorch reference twins of the compiled kernels (`csrc/bitgemm.cpp`), argument for argument.

They are what the custom ops run when the compiled extension is unavailable, and what the tests compare every
instruction-set path against, for bitwise equality: the integer part (the ±1 / {0,1} / u8 dot products) is computed
in float64, exact for K < 2⁵³, and the epilogue is the same float32 operations in the same order as the kernel's
(which is compiled with -ffp-contract=off, so no fused multiply-add changes a rounding):

    y[m, n] = ((α_n · dot[m, n] + γ_n · Σ_k q[m, k]) · s_m) + bias_n

with W_q = α·B + γ (B = ±1 from the packed bits, `hf_binary_bert.format`) and the input x̂ = s·q.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..format import pack_bits, unpack_bits, unpack_signs

# Input binarization modes of `w1a1_linear` (mirrors `BitMode` in bitgemm.cpp).
SIGNED = 0  # q = sign(x − β) ∈ {−1, +1}, sign(0) = +1            (BiBERT sign, BiT elastic signed)
UNSIGNED_GE = 1  # q = 1[x − β ≥ threshold] ∈ {0, 1}                  (sign scheme on non-negative inputs, ½)
UNSIGNED_GT = 2  # q = 1[(x − β) / step > threshold] ∈ {0, 1}         (round(clip(·, 0, 1)), half to even)


def _epilogue(dot, qsum, alpha, gamma, bias, scale):
    out = alpha * dot.float()  # |dot| < 2²⁴: exact in float32
    if gamma is not None:
        out = out + gamma * qsum.float().unsqueeze(-1)
    out = out * scale
    return out if bias is None else out + bias


def w1a1_linear(x: torch.Tensor, weight_packed: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor | None,
                bias: torch.Tensor | None, shift: torch.Tensor | None, step: torch.Tensor, threshold: float, mode: int,
                scale_by_step: bool) -> torch.Tensor:
    """Binary-input Linear: q = binarize(x) (per `mode`), y = s · (α·(q·Bᵀ) + γ·Σq) + bias with s = step when
    `scale_by_step`, else 1.

    Args:
        x: float32 [..., K].
        weight_packed: uint8 [N, ceil(K / 8)], the packed signs B.
        alpha, gamma, bias: float32 [N] (per output row; gamma and bias may be None).
        shift: β float32 [K] or None.
        step: float32 0-d tensor, the divisor of the `UNSIGNED_GT` test and (`scale_by_step`) the input scale.
        threshold: the threshold of `UNSIGNED_GE` / `UNSIGNED_GT`.
        mode: `SIGNED`, `UNSIGNED_GE` or `UNSIGNED_GT`.
        scale_by_step: whether x̂ = step·q (elastic) or x̂ = q (sign).

    Returns:
        float32 [..., N].
    """
    k = x.shape[-1]
    xs = x if shift is None else x - shift
    if mode == SIGNED:
        q = torch.where(xs >= 0, 1.0, -1.0)
    elif mode == UNSIGNED_GE:
        q = (xs >= threshold).float()
    else:
        q = (xs / step > threshold).float()
    signs = unpack_signs(weight_packed, k, torch.float64)
    q = q.double()
    scale = step if scale_by_step else torch.ones((), dtype=torch.float32)
    return _epilogue(q @ signs.T, q.sum(-1), alpha, gamma, bias, scale)


def check_levels(q_min: int, q_max: int, dynamic: bool, bits: int = 8) -> None:
    """Raises ValueError unless q_min ≤ 0 < q_max and q_max − q_min < 2^bits (symmetric when `dynamic`)."""
    if q_min > 0 or q_max < 1 or q_max - q_min > 2**bits - 1 or (dynamic and q_min != -q_max):
        raise ValueError(f"w1a8_linear: levels [{q_min}, {q_max}] do not fit in {bits} bits"
                         + (" (dynamic levels must be symmetric)" if dynamic else ""))


def quantize_levels(x: torch.Tensor, shift: torch.Tensor | None, step: torch.Tensor, q_min: int, q_max: int,
                    dynamic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels q = round(clip((x − β) / s, q_min, q_max)) [..., K] (float32 holding integers) and the step
    s (a 0-d tensor, or [...] per row when `dynamic`: s_m = max|x_m − β| / q_max, levels ±q_max)."""
    xs = x if shift is None else x - shift
    if dynamic:
        amax = xs.abs().amax(-1, keepdim=True)
        s = torch.where(amax > 0, amax / float(q_max), torch.ones_like(amax))
        return torch.round(torch.clamp(xs / s, -q_max, q_max)), s.squeeze(-1)
    return torch.round(torch.clamp(xs / step, q_min, q_max)), step


def w1a8_linear(x: torch.Tensor, weight_packed: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor | None,
                bias: torch.Tensor | None, shift: torch.Tensor | None, step: torch.Tensor, q_min: int, q_max: int,
                dynamic: bool) -> torch.Tensor:
    """Multi-bit-input Linear: q = round(clip((x − β)/s, q_min, q_max)) (LSQ / BiT, s = `step`, a float32 0-d tensor;
    `dynamic`: per-row absmax int8, `step` unused), y = s · (α·(q·Bᵀ) + γ·Σq) + bias. Shapes as `w1a1_linear`; levels
    must fit 8 bits (q_max − q_min ≤ 255).

    Raises:
        ValueError: when the levels do not fit 8 bits.
    """
    check_levels(q_min, q_max, dynamic)
    q, s = quantize_levels(x, shift, step, q_min, q_max, dynamic)
    signs = unpack_signs(weight_packed, x.shape[-1], torch.float64)
    q = q.double()
    scale = s.unsqueeze(-1) if dynamic else step
    return _epilogue(q @ signs.T, q.sum(-1), alpha, gamma, bias, scale)


INT8_HEAD_LEVELS = 63  # 7-bit activations: vpmaddubsw (non-VNNI paths) cannot saturate with int8 weights


def quantize_weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 weights: s_n = max|W_n| / 127 (1 for a zero row), W8 = round(W / s_n) ∈ [−127, 127].
    weight float [N, K] → (int8 [N, K], float32 [N])."""
    weight = weight.detach().float()
    amax = weight.abs().amax(-1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    return torch.round(weight / scale).clamp_(-127, 127).to(torch.int8), scale.squeeze(-1)


def w8a8_linear(x: torch.Tensor, weight_int8: torch.Tensor, weight_scale: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """int8 Linear for the masked-LM head: per-row dynamic 7-bit activations (levels ±63, s_m = max|x_m| / 63) times
    per-row int8 weights (`quantize_weight_int8`), y = s_m · (s_n · (q·W8ᵀ)) + bias. x float32 [..., K] →
    float32 [..., N]."""
    q, s = quantize_levels(x, None, None, -INT8_HEAD_LEVELS, INT8_HEAD_LEVELS, True)
    dot = q.double() @ weight_int8.double().T
    return _epilogue(dot, q.sum(-1), weight_scale, None, bias, s.unsqueeze(-1))


def repack_int8(weight_int8: torch.Tensor) -> torch.Tensor:
    """The i8 kernel layout of int8 weights [N, K]: int64 words of [ceil(N/16)][ceil(K/4)][16 rows × 4 bytes]."""
    n, k = weight_int8.shape
    steps, groups = (k + 3) // 4, (n + 15) // 16
    padded = F.pad(weight_int8, (0, steps * 4 - k, 0, groups * 16 - n))
    return padded.reshape(groups, 16, steps, 4).permute(0, 2, 1, 3).reshape(groups, steps, 64).view(torch.int64).reshape(-1)


def repack_weight(weight_packed: torch.Tensor, k: int, layout: str) -> torch.Tensor:
    """Kernel layout of packed bits uint8 [N, ceil(k / 8)] as int64 words (see csrc/bitgemm.cpp), with tensor ops
    only (so `torch.compile` / `torch.export` can trace it):

    - `"bits"`: [ceil(N/8)][Kw][8] with Kw = ceil(k/256)·4: word w of the 8 rows of a group side by side;
    - `"nib"`: [ceil(N/16)][ceil(k/4)], bit 4r + t of word s = B[16g + r][4s + t]; then the lookup-table index of
      the AVX-512 W1 × u8 GEMM (csrc/lut_gemm.h), [ceil(N/32)][P][32] int16 with P = ceil(ceil(k/4) / 3): lane
      2q + h of block c, step p is row 32c + 16h + q, its low byte B's bits (+1 → 1) of inputs 12p … 12p+5 (bit t =
      input 12p + t), its high byte those of inputs 12p+6 … 12p+11 (zero past N and k), starting at the next multiple
      of 8 words after the nib words. About 2.33 bits per weight in all.
    """
    n, cols = weight_packed.shape
    if layout == "bits":
        kw, groups = (k + 255) // 256 * 4, (n + 7) // 8
        padded = F.pad(weight_packed, (0, kw * 8 - cols, 0, groups * 8 - n))
        return padded.view(torch.int64).reshape(groups, 8, kw).transpose(1, 2).reshape(-1)
    steps, groups = (k + 3) // 4, (n + 15) // 16
    bits = F.pad(unpack_bits(weight_packed, k).to(torch.uint8), (0, steps * 4 - k, 0, groups * 16 - n))
    nib = bits.reshape(groups, 16, steps, 4).permute(0, 2, 1, 3).reshape(groups, steps, 64)
    nib = pack_bits(nib.bool()).view(torch.int64).reshape(-1)
    blocks, p = (n + 31) // 32, (steps + 2) // 3
    six = F.pad(bits[:n], (0, p * 12 - steps * 4, 0, blocks * 32 - n)).reshape(blocks, 2, 16, p, 2, 6).to(torch.int16)
    groups6 = (six << torch.arange(6, dtype=torch.int16)).sum(-1, dtype=torch.int16)  # [blocks, h, q, p, 2]
    words = groups6[..., 0] | (groups6[..., 1] << 8)
    index = words.permute(0, 3, 2, 1).reshape(blocks, p, 32).contiguous().view(torch.int64).reshape(-1)
    return torch.cat([F.pad(nib, (0, (nib.numel() + 7) // 8 * 8 - nib.numel())), index])  # index from 64 bytes on


def bi_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, shifts: tuple, steps: tuple,
                 scale: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """BiBERT's Bi-Attention on 1-bit Q, K, V, exactly (integer dot products):

        q̂ = sign((q − β_q)/α_q) (likewise k̂, v̂), A = 1[(q̂·k̂ᵀ)·c + M > 0], out = α_v · (A·v̂)

    Args:
        query, key, value: float32 [B, H, T, D].
        shifts: β_q, β_k, β_v, each [H, 1, D] or None. steps: α_q, α_k, α_v, float32 0-d tensors (1 for the sign
            scheme).
        scale: c = α_q·α_k·scaling, a float32 0-d tensor.
        attention_mask: additive float32 mask broadcastable to [B, H, T, T], or None.

    Returns:
        out float32 [B, T, H, D] (heads after tokens, as the attention interface returns it) and the boolean
        attention weights A as float32 [B, H, T, T].
    """
    signs = []
    for x, shift, step in zip((query, key, value), shifts, steps):
        x = x if shift is None else x - shift
        signs.append(torch.where(x / step >= 0, 1.0, -1.0).double())
    scores = (signs[0] @ signs[1].transpose(-1, -2)).float() * scale
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = (scores > 0).float()
    out = steps[2] * (weights.double() @ signs[2]).float()
    return out.transpose(1, 2).contiguous(), weights


# The elementwise formulas of the activation quantizers and dropout in PyTorch ops: the twins below and the
# training functions of binarization/ (which import them from here) share them.


def _shifted_quotient(x: torch.Tensor, shift: torch.Tensor | None, step: torch.Tensor) -> torch.Tensor:
    """u = (x − β) / α (x / α without a shift) with the same two roundings as the plain expression, in a new
    contiguous tensor: Q/K/V arrive as transposed views [B, H, T, d] of [B, T, H, d], and a contiguous x̂ is what the
    attention matmuls need (the plain expression keeps x's layout, which they copy)."""
    u = torch.empty(x.shape, dtype=torch.result_type(x, step), device=x.device)
    if shift is None:
        return torch.div(x, step, out=u)
    return torch.sub(x, shift, out=u).div_(step)


def lsq_values(x: torch.Tensor, shift: torch.Tensor | None, step: torch.Tensor, q_n: int, q_p: int) -> torch.Tensor:
    """LSQ's x̂ = α·round(clip((x − β)/α, Q_n, Q_p)) in a new contiguous tensor (`_shifted_quotient`'s roundings;
    `step` detached): the forward of `activation._LSQRound`, and what `linear._LSQLinear` computes again."""
    return _shifted_quotient(x, shift, step).clamp_(q_n, q_p).round_().mul_(step)


def _signs_to_levels(positive: torch.Tensor, step: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """±α from bool signs, exactly (1·2α − α = α, 0·2α − α = −α), written into `out` (same shape) and returned."""
    return out.copy_(positive).mul_(step * 2).sub_(step)


def _scaled_sign(x: torch.Tensor, shift: torch.Tensor | None,
                 step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BiT's x̂ = α·sign(u), u = (x − β)/α (sign(0) = +1), in a new contiguous tensor, with the bool sign 1[u ≥ 0] and
    the STE window 1[|u| ≤ 1] its backward passes need. `step` detached."""
    u = _shifted_quotient(x, shift, step)
    positive = u >= 0  # = binary_sign(u) > 0 (sign(±0) = +1)
    window = torch.le(u.abs_(), 1)
    return _signs_to_levels(positive, step, u), positive, window


def _sum_of_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ a·b over all elements (0-d): one dot product, without a temporary, when both are contiguous."""
    if a.is_contiguous() and b.is_contiguous():
        return torch.dot(a.view(-1), b.view(-1))
    return (a * b).sum()


def _masked(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """grad·1[mask] (a new tensor; mask bool): the mask converted to grad's dtype first, as a float × bool product
    runs several times slower on the CPU."""
    return torch.empty_like(grad, memory_format=torch.contiguous_format).copy_(mask).mul_(grad)


def _shift_grad(grad_x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """∂/∂β of x − β broadcast over x: −Σ ∂/∂x over the broadcast dims (what autograd's subtraction gives)."""
    return grad_x.sum_to_size(shift.shape).neg_()


def lsq_backward(grad: torch.Tensor, x: torch.Tensor, shift: torch.Tensor | None, step: torch.Tensor, q_n: int,
                 q_p: int, needs: tuple[bool, bool, bool], *, overwrite: bool = False) -> tuple:
    """`_LSQRound`'s gradients (∂/∂x, ∂/∂β, ∂/∂α; None where `needs` says not needed) from the output gradient and
    the saved input, u computed again with the forward's roundings (also used by attention's fused Â·V̂).

    With `overwrite`, `grad` and `x` (both contiguous, of one shape, owned by the caller and not needed after) are
    used as work buffers: u is computed in x's memory and ∂/∂x in grad's, so that two fewer tensors of x's size are
    alive at once; the same operations on the same values, so the same results bit for bit."""
    if overwrite and not (grad.is_contiguous() and x.is_contiguous() and grad.shape == x.shape
                          and x.dtype == torch.result_type(x, step) and grad.dtype == x.dtype):
        overwrite = False
    if not overwrite:
        u = _shifted_quotient(x, shift, step)
    else:
        u = x.div_(step) if shift is None else x.sub_(shift).div_(step)  # as _shifted_quotient, in place
    clipped = u.clamp(q_n, q_p)
    window = clipped == u  # 1[Q_n ≤ u ≤ Q_p] (false for NaN, as the comparisons)
    inside = u.copy_(window)  # as 1.0 / 0.0, in u's buffer
    grad_x = None
    if (needs[0] or needs[1]) and not overwrite:
        grad_x = grad * inside
    grad_step = None
    if needs[2]:
        # round(clip(u)) − u·1[inside]: where inside, clip(u) = u
        masked_u = inside.mul_(clipped)
        term = clipped.round_().sub_(masked_u)
        grad_step = _sum_of_products(grad, term).reshape(step.shape)
        if overwrite:
            inside = term.copy_(window)  # the 1.0 / 0.0 again (its buffer was masked_u's)
    if (needs[0] or needs[1]) and overwrite:
        grad_x = grad.mul_(inside)  # grad · 1[inside], in grad's buffer (read above for ∂/∂α)
    grad_shift = _shift_grad(grad_x, shift) if needs[1] else None
    return grad_x if needs[0] else None, grad_shift, grad_step


PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # Philox4x32's round multipliers
PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # and its key schedule's increments
_M32 = 0xFFFFFFFF


def _mulhilo32(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of m · c (m < 2³², c int64 holding values < 2³²), from 16-bit halves of c so that no
    int64 product overflows."""
    a, b = m * (c & 0xFFFF), m * (c >> 16)  # m·c = a + b·2¹⁶, each < 2⁴⁸
    s = (a & _M32) + ((b & 0xFFFF) << 16)
    return ((a >> 32) + (b >> 16) + (s >> 32)) & _M32, s & _M32


def philox4x32_10(counter: tuple[torch.Tensor, ...], key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 (Salmon et al., SC 2011; Random123's `philox4x32_R(10, ...)`): the four 32-bit output words
    (int64 tensors) for four counter words (int64 tensors of values < 2³², broadcastable) and a key of two 32-bit
    words. The twin of csrc/dropout.h `philox4x32_10`."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo32(PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo32(PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + PHILOX_W[0]) & _M32, (k1 + PHILOX_W[1]) & _M32
    return c0, c1, c2, c3


def dropout_kept(key: int, n: int, threshold: int) -> torch.Tensor:
    """Dropout's kept mask, bool [n]: kept[i] = 1[u_i < threshold], u_i word i mod 4 of Philox4x32-10 for the counter
    ⌊i/4⌋ (64 bits: words 0–1; words 2–3 zero) under `key` (64 bits: low word first). `threshold` = the keep
    probability × 2³² (an int in [0, 2³²)). The twin of csrc/dropout.h `dropout_kept`."""
    counters = torch.arange((n + 3) // 4, dtype=torch.int64)
    zero = torch.zeros((), dtype=torch.int64)
    words = philox4x32_10((counters & _M32, counters >> 32, zero, zero), (key & _M32, (key >> 32) & _M32))
    return (torch.stack(words, dim=1).reshape(-1)[:n] < threshold)


def dropout_apply(x: torch.Tensor, kept: torch.Tensor, keep_scale: torch.Tensor,
                  backward: bool = False) -> torch.Tensor:
    """Dropout applied with the kept mask (bool, x's shape) and keep_scale = 1/(1 − p) (0-d): forward
    (x · keep_scale) · 1[kept], the values of x · noise for noise = 1[kept] · 1/(1 − p); with `backward`, x is the
    gradient and the result noise · x (`dropout_backward`). The twin of csrc/dropout.h `dropout_apply`."""
    if backward:
        return dropout_backward(x, kept, keep_scale)
    return torch.mul(x, keep_scale).mul_(kept)


def dropout_backward(grad: torch.Tensor, kept: torch.Tensor, keep_scale: torch.Tensor) -> torch.Tensor:
    """grad · noise with the noise rebuilt from the kept mask (1[kept] · 1/(1 − p): the forward's float values), as
    autograd multiplies the gradient of x · noise."""
    noise = torch.empty_like(grad, memory_format=torch.contiguous_format).copy_(kept)
    return noise.mul_(keep_scale.to(grad.device)).mul_(grad)


def quantized_probs_forward(probs: torch.Tensor, kept: torch.Tensor | None, step: torch.Tensor, q_p: int,
                            keep_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention probabilities' unsigned LSQ / BiT quantizer and its dropout, training forward (Esser et al.
    2020; Liu et al. 2022): c = round(clip(A / α, 0, Q_p)), Â = c·α·noise with noise = 1[kept]·keep_scale (no
    multiplication without dropout) — the operations of `ActivationQuantizer` and `mask_dropout` in their order.

    Args:
        probs: A, float32 [...] (the softmax output). kept: bool, A's shape, or None (no dropout).
        step: α, a one-element float tensor. q_p: the top level (1 … 255). keep_scale: 1/(1 − p), float32 0-d
            (None without dropout).

    Returns:
        codes uint8 (c, 0 where dropped) and weights float32 (Â), A's shape.
    """

    alpha = step.detach().reshape(())
    levels = _shifted_quotient(probs, None, alpha).clamp_(0, q_p).round_()
    codes = levels.to(torch.uint8)
    weights = levels.mul_(alpha)
    if kept is not None:
        weights.mul_(torch.empty_like(weights).copy_(kept).mul_(keep_scale))
        codes.mul_(kept)
    return codes, weights


def quantized_probs_weights(codes: torch.Tensor, step: torch.Tensor, keep_scale: torch.Tensor | None) -> torch.Tensor:
    """Â from `quantized_probs_forward`'s codes: (c·α)·keep_scale (·keep_scale only with dropout: not None),
    the codes' shape, in α's dtype — the forward's values."""
    weights = codes.to(step.dtype).mul_(step.detach().reshape(()))
    return weights if keep_scale is None else weights.mul_(keep_scale)


def quantized_probs_backward(grad: torch.Tensor, grad2: torch.Tensor | None, probs: torch.Tensor,
                             kept: torch.Tensor | None, step: torch.Tensor, q_p: int,
                             keep_scale: torch.Tensor | None,
                             out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of `quantized_probs_forward`'s Â: with g = grad (+ grad2, a second use of Â) and
    g' = g·1[kept]·keep_scale (g without dropout), u = A / α:

        ∂A = g'·1[0 ≤ u ≤ Q_p],   ∂α = Σ g'·(round(clip(u, 0, Q_p)) − u·1[0 ≤ u ≤ Q_p])   (LSQ's gradients)

    Returns ∂A (A's shape; written into `out` when given) and ∂α (step's shape)."""

    alpha = step.detach()
    if grad2 is not None:
        grad = grad + grad2
    if kept is not None:
        grad = dropout_backward(grad, kept, keep_scale)
    grad_probs, _, grad_step = lsq_backward(grad, probs, None, alpha, 0, q_p, (True, False, True))
    return (grad_probs if out is None else out.copy_(grad_probs)), grad_step


def scaled_sign_forward(x: torch.Tensor, shift: torch.Tensor | None,
                        step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BiT's 1-bit elastic activation quantizer, training forward (Liu et al. 2022, eq. 3–5): u = (x − β)/α,
    x̂ = α·sign(u) (sign(0) = +1), and its codes 1[u ≥ 0] | 1[|u| ≤ 1] << 1 (the sign and the STE window).

    Args:
        x: float [...] (any strides). shift: β broadcastable to x, or None. step: α, a one-element tensor.

    Returns:
        x̂ (contiguous, x's shape, dtype of x and α promoted) and the codes (uint8, x's shape).
    """

    x_hat, positive, window = _scaled_sign(x, shift, step.detach())
    return x_hat, positive.to(torch.uint8).bitwise_or_(window.to(torch.uint8).mul_(2))


def scaled_sign_levels(codes: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """x̂ = ±α again from `scaled_sign_forward`'s codes (the codes' shape, α's dtype): the forward's values."""

    step = step.detach()
    return _signs_to_levels(codes.bitwise_and(1).bool(), step, torch.empty(codes.shape, dtype=step.dtype,
                                                                            device=codes.device))


def scaled_sign_backward(grad: torch.Tensor, codes: torch.Tensor, step: torch.Tensor,
                         out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of `scaled_sign_forward` from ∂x̂ = grad (x's shape): ∂x = grad·1[|u| ≤ 1] (BiT's STE window)
    and ∂α = Σ grad·sign(u), here (Σ grad·x̂)/α in grad's dtype. Returns ∂x (grad's dtype and shape; written into
    `out` when given) and ∂α (step's shape)."""

    step = step.detach()
    grad_step = (_sum_of_products(grad, scaled_sign_levels(codes, step)) / step).reshape(step.shape)
    grad_x = _masked(grad, codes.bitwise_and(2).bool())
    return (grad_x if out is None else out.copy_(grad_x)), grad_step


def row_sums(weight_packed: torch.Tensor, k: int) -> torch.Tensor:
    """Σ_k B[n, k] of each ±1 weight row, int32 [N]."""
    return unpack_signs(weight_packed, k, torch.float32).sum(-1).to(torch.int32)


__all__ = [
    "dropout_kept",
    "philox4x32_10",
    "INT8_HEAD_LEVELS",
    "SIGNED",
    "UNSIGNED_GE",
    "UNSIGNED_GT",
    "check_levels",
    "quantize_levels",
    "quantize_weight_int8",
    "quantized_probs_backward",
    "quantized_probs_forward",
    "quantized_probs_weights",
    "repack_int8",
    "repack_weight",
    "row_sums",
    "scaled_sign_backward",
    "scaled_sign_forward",
    "scaled_sign_levels",
    "w1a1_linear",
    "w1a8_linear",
    "w8a8_linear",
]
