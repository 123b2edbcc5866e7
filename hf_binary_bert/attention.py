"""Quantized attention for transformers' own `BertSelfAttention`, through the attention interface.

BERT's attention module computes Q, K, V with its (binarized) Linears and calls
`ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`; this module registers two functions there, which quantize the
matmul operands with the quantizers `binarize_` attached to the attention module (`query_quantizer`,
`key_quantizer`, `value_quantizer`, `probs_quantizer`):

- `"binary_bert_softmax"`: A = softmax(Q̂·K̂ᵀ/√D + M), Â = quantize_unsigned(A), O = Â·V̂. With the elastic quantizer this
  is BiT's binarized softmax (Liu et al., NeurIPS 2022: Â ∈ {0, α}).
- `"bi_attention"`: BiBERT's Bi-Attention (Qin et al., ICLR 2022, eq. 9–10): A = bool(B_Q·B_Kᵀ/√D + M) ∈ {0, 1},
  no softmax, O = A·B_V. bool(x) = 1[x > 0] with the clipped-identity STE. In eval mode without autograd and with
  1-bit Q/K/V it runs bitwise (`torch.ops.hf_binary_bert.bi_attention`) on exact integer dot products.

Both need the full attention matrix, i.e. the eager path (no SDPA / flash / flex kernels); their masks are transformers'
eager masks (additive, −inf-like on padding, so padding keys get weight 0). Shapes: query/key/value [B, H, T, d],
mask [B, 1, T, T] or None → output [B, T, H, d] and weights [B, H, T, T].
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from .binarization.activation import ActivationQuantizer, quantized_rebuild
from .binarization.dropout import dropout_kept, mask_dropout
from .kernels.linear import plan_of
from .kernels.ops import training_kernels

SOFTMAX_ATTENTION = "binary_bert_softmax"
BI_ATTENTION = "bi_attention"


def _quantize(module: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    quantizer = getattr(module, name, None)
    return x if quantizer is None else quantizer(x)


def heaviside_ste(x: torch.Tensor) -> torch.Tensor:
    """bool(x) = 1[x > 0] ∈ {0, 1} (same shape and dtype); gradient 1 where |x| ≤ 1 (BiBERT's ZMeanBinaryQuantizer)."""
    hard = (x > 0).to(x.dtype)
    soft = x.clamp(-1, 1)
    return hard + (soft - soft.detach())


def _rebuild_of(t: torch.Tensor) -> tuple | None:
    """(function, the tensor it computes again) for `t`: a quantizer's output (`activation.quantized_rebuild`), or
    the factored training output of a Linear with an LSQ input (`linear._factored_rebuild`, set as `_rebuild` on
    the tensor holding the output's memory: `t` may be a view of it, such as the [B, H, T, d] heads of Q, K, V);
    else None."""
    fn = quantized_rebuild(t)
    if fn is not None:
        return fn, t
    root = t if t._base is None else t._base
    fn = getattr(root, "_rebuild", None)
    return None if fn is None else (fn, root)


def _other_saved_tensor_hooks() -> bool:
    """Whether saved-tensor hooks are open (activation checkpointing's, a profiler's); True where this PyTorch does
    not say (`torch._C._autograd._top_saved_tensors_default_hooks` is private), so that nothing is changed there."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is None or top(False) is not None


@contextlib.contextmanager
def _saved_as_rebuilt(*tensors: torch.Tensor):
    """While open, autograd keeps, instead of any of `tensors` that a quantizer or a binarized Linear's factored
    training forward made (or a view of one, such as the reshaped operands a matmul keeps), the means to compute it
    again (`_rebuild_of`: the codes or the input that quantizer keeps anyway; the Linear's input, which the Linear
    keeps anyway), and computes it again in the backward pass — bit for bit, with its strides, so the gradients are
    those computed before. For the attention's products of quantized Q̂, K̂ and V̂, and for the LSQ quantizers of
    Q, K, V (which keep their input, the Linears' outputs): at batch 32 × 128 tokens × 12 heads of 32 (MiniLM),
    6 MiB less kept per tensor and layer. A no-op where another saved-tensor hook is open (activation checkpointing
    keeps its own) or under `torch.compile`."""
    # no reference to the tensors themselves: autograd keeps the pack hook as long as what it packed
    rebuilds = {}
    for found in map(_rebuild_of, tensors):
        if found is not None:
            fn, t = found
            rebuilds[t.untyped_storage().data_ptr()] = (fn, t.dtype, tuple(t.shape), t.stride(), t.storage_offset())
    if (not rebuilds or not torch.is_grad_enabled() or torch.compiler.is_compiling() or _other_saved_tensor_hooks()):
        yield
        return

    def pack(t: torch.Tensor):
        entry = rebuilds.get(t.untyped_storage().data_ptr())
        if entry is None or t.dtype != entry[1]:
            return t
        fn, _, shape, stride, offset = entry
        return fn, shape, stride, offset, tuple(t.shape), t.stride(), t.storage_offset()

    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        fn, shape, stride, offset, view_shape, view_stride, view_offset = packed
        rebuilt = fn()
        if tuple(rebuilt.shape) != shape or rebuilt.stride() != stride or rebuilt.storage_offset() != offset:
            raise RuntimeError("an attention operand was computed again with another layout than the forward's")
        return rebuilt.as_strided(view_shape, view_stride, view_offset)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


def _scores(module, query, key, value, attention_mask, scaling):
    """Q̂·K̂ᵀ·scaling + M [B, H, T, T] and V̂, with Q, K, V quantized by the module's quantizers."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    with _saved_as_rebuilt(query, key, value):  # an LSQ quantizer keeps its input: the Linear's output
        query, key, value = (_quantize(module, f"{n}_quantizer", t)
                             for n, t in (("query", query), ("key", key), ("value", value)))
    with _saved_as_rebuilt(query, key):
        scores = torch.matmul(query, key.transpose(2, 3))
    scores.mul_(scaling)  # in place: no second [B, H, T, T] tensor
    if attention_mask is not None:
        in_place = torch.broadcast_shapes(attention_mask.shape, scores.shape) == scores.shape
        if in_place and attention_mask.dtype == scores.dtype:
            scores.add_(attention_mask)
        else:
            scores = scores + attention_mask
    return scores, value


def _softmax(module: nn.Module, scores: torch.Tensor) -> torch.Tensor:
    """softmax(scores) over the keys, appended to the list of an open `record_softmax` context."""
    probs = nn.functional.softmax(scores, dim=-1)
    record = getattr(module, "_softmax_record", None)
    if record is not None:
        record.append(probs)
    return probs


def _factored_softmax_attention(module, query, key, value, attention_mask, scaling):
    """The no-grad forward of `binary_softmax_attention` in factored form: integer levels multiplied exactly, each
    product scaled once — scores = (q_Q·q_Kᵀ)·(s_Q·s_K·scaling) + M, out = (q_A·q_V)·(s_A·s_V) — the order the
    native runtime (kernels/csrc/encoder.h) uses. Equal in exact arithmetic to quantizing the values first; in
    float32 it avoids the rounding of sums of s_A·s_V products, whose sign decides the next binarization where the
    exact sum is 0."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    (q_q, s_q), (q_k, s_k), (q_v, s_v) = (getattr(module, f"{n}_quantizer").levels(t) for n, t in
                                          (("query", query), ("key", key), ("value", value)))
    scores = torch.matmul(q_q, q_k.transpose(2, 3)) * (s_q * s_k * scaling)
    if attention_mask is not None:
        scores = scores + attention_mask
    q_p, s_p = module.probs_quantizer.levels(_softmax(module, scores))
    output = (torch.matmul(q_p, q_v) * (s_p * s_v)).transpose(1, 2).contiguous()
    return output, q_p * s_p


class _QuantizedProbsValue(torch.autograd.Function):
    """Â = LSQ(A) (unsigned levels 0 … Q_p, no shift), its dropout, and Â·V̂ as one function (training forward of
    `binary_softmax_attention`): the same values and random draws as the quantizer (`_LSQRound`), `mask_dropout` and
    `torch.matmul` one after the other, and their gradients; returns (Â·V̂, the dropped-out Â).

    The elementwise work runs as one pass each way (`kernels.ops.quantized_probs_forward` / `_backward`, compiled
    for float32 CPU tensors, else their PyTorch twins: `kernels.ops.training_kernels`): the plain composition makes eight to ten passes and as many
    [B, H, T, T] temporaries. The matmul's left operand is level·α·(1/(1 − p) or 0) — a float [B, H, T, T] that the
    plain composition keeps for the backward pass (4 bytes an element). This keeps its levels instead (uint8, 0
    where dropped) and the kept mask (bool), and rebuilds it exactly in the backward pass; A itself is the softmax
    output, which autograd keeps anyway. At batch 32 × 128 tokens × 12 heads: 12 MiB kept per layer instead of
    30 MiB."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, step: torch.Tensor, value: torch.Tensor, q_p: int, p: float,
                target: torch.Tensor | None = None):
        alpha = step.detach()
        kernels = training_kernels(probs, alpha)
        kept, keep_scale = dropout_kept(probs.shape, p, probs.dtype) if p > 0 else (None, None)  # _MaskDropout's draws
        codes, weights = kernels.quantized_probs_forward(probs.contiguous(), kept, alpha, q_p, keep_scale)
        ctx.save_for_backward(probs, alpha, codes, kept, value, target)
        ctx.q_p, ctx.keep_scale, ctx.kernels = q_p, keep_scale, kernels
        # an output no loss reads gets None in the backward, not a materialized [B, H, T, T] of zeros (the weights,
        # unless an attention loss reads them)
        if not torch.compiler.is_compiling():  # (Dynamo does not trace this call; the backward handles zeros too)
            ctx.set_materialize_grads(False)
        output = torch.matmul(weights, value)
        if target is None:
            return output, weights
        from .distillation.losses import attention_kl_rows  # (the distillation package imports this module)

        return output, attention_kl_rows(weights, target)  # the weights end here: rebuilt from the codes if needed

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, grad_weights: torch.Tensor | None):
        probs, alpha, codes, kept, value, target = ctx.saved_tensors
        need_probs, need_step, need_value = ctx.needs_input_grad[:3]
        if target is not None and grad_weights is not None:  # ∂/∂(KL per row) → ∂/∂Â, on the forward's Â
            from .distillation.losses import attention_kl_rows_backward

            weights = ctx.kernels.quantized_probs_weights(codes, alpha, ctx.keep_scale)
            grad_weights = attention_kl_rows_backward(grad_weights, weights, target)
            del weights
        if grad_out is None:  # only the weights are read: ∂(output) is zero
            grad_out = torch.zeros(probs.shape[:-1] + value.shape[-1:], dtype=value.dtype)
        kernels = ctx.kernels
        grad_value = None
        if need_value:
            weights = kernels.quantized_probs_weights(codes, alpha, ctx.keep_scale)  # the forward's Â
            grad_value = torch.matmul(weights.transpose(-2, -1), grad_out)
            del weights
        grad_probs = grad_step = None
        if need_probs or need_step:
            grad = torch.matmul(grad_out, value.transpose(-2, -1)).contiguous()
            if grad_weights is not None:
                grad_weights = grad_weights.to(grad.dtype).contiguous()
            grad_probs, grad_step = kernels.quantized_probs_backward(grad, grad_weights, probs.contiguous(), kept,
                                                                     alpha, ctx.q_p, ctx.keep_scale, out=grad)
        return grad_probs, grad_step, grad_value, None, None, None


def _fused_probs_value(quantizer, scores: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether the training forward can use `_QuantizedProbsValue`: autograd recording, an unsigned LSQ / elastic
    probability quantizer without shift on the CPU (where `mask_dropout` draws its own noise), no autocast (whose
    casts the plain matmul's backward follows)."""
    return (torch.is_grad_enabled() and (scores.requires_grad or value.requires_grad)
            and isinstance(quantizer, ActivationQuantizer) and quantizer.has_step and not quantizer.signed
            and not quantizer.mixing
            and not hasattr(quantizer, "shift") and quantizer.q_n == 0 and quantizer.q_p <= 255
            and scores.device.type == "cpu" and value.device.type == "cpu" and not torch.is_autocast_enabled("cpu"))


def binary_softmax_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Softmax attention with quantized Q, K, V and quantized probabilities (see module docstring). Without
    autograd (inference) it computes in factored form (`_factored_softmax_attention`); with autograd, the
    probabilities' quantization, dropout and product with V̂ are one function (`_QuantizedProbsValue`) where it
    applies."""
    if not torch.is_grad_enabled() and all(isinstance(getattr(module, f"{n}_quantizer", None), ActivationQuantizer)
                                           for n in ("query", "key", "value", "probs")):
        return _factored_softmax_attention(module, query, key, value, attention_mask, scaling)
    scores, value = _scores(module, query, key, value, attention_mask, scaling)
    return _probs_times_value(module, scores, value, dropout)


def _probs_times_value(module, scores: torch.Tensor, value: torch.Tensor, dropout: float):
    """softmax(scores) → the probability quantizer → dropout (in training) → ·V̂: output [B, T, H, d] and the
    (dropped-out) quantized probabilities [B, H, T, T]; one function (`_QuantizedProbsValue`) where it applies."""
    quantizer = getattr(module, "probs_quantizer", None)
    p = dropout if module.training else 0.0
    probs = _softmax(module, scores)
    target = getattr(module, "_kl_target", None)
    if target is not None:
        target = target.to(probs.dtype)  # as attention_distillation_loss
    if (p == 0 or 0 < p < 1) and _fused_probs_value(quantizer, scores, value):
        _, step = quantizer.training_operands(probs)
        with _saved_as_rebuilt(value):
            output, probs = _QuantizedProbsValue.apply(probs, step, value, quantizer.q_p, float(p), target)
        if target is not None:  # `probs` is the KL per row
            module._kl_record.append(probs)
            probs = None
        return output.transpose(1, 2).contiguous(), probs
    probs = _quantize(module, "probs_quantizer", probs)
    probs = mask_dropout(probs, dropout, module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    if target is not None:
        from .distillation.losses import attention_kl_per_row

        module._kl_record.append(attention_kl_per_row(probs, target))
    return output, probs


@contextlib.contextmanager
def attention_kl_in_layers(model: nn.Module, targets: list[torch.Tensor]):
    """While open, each quantized softmax attention layer of `model` (`probs_quantizer`; in layer order, one target
    each) computes KL(A_t ‖ Â) per query row of its quantized probabilities Â (after dropout, as the model uses
    them) against its [B, H, T, T] target A_t itself, and appends the [B, H, T] result to the list the context
    yields, instead of returning Â (`output_attentions`). The KL is `losses.attention_kl_per_row`'s, values and
    gradients bit for bit; inside the attention function (`_QuantizedProbsValue`) Â is not kept: the backward
    pass computes it again from the uint8 levels that function keeps anyway, so the float maps of all layers are
    never alive together (at batch 32 × 128 tokens × 12 heads: 24 MiB a layer).

    Raises:
        ValueError: when the number of targets is not the number of such layers."""
    modules = [m for m in model.modules() if hasattr(m, "probs_quantizer")]
    if len(targets) != len(modules):
        raise ValueError(f"attention_kl_in_layers: {len(targets)} target maps for {len(modules)} quantized softmax "
                         "attention layers")
    records: list[torch.Tensor] = []
    for m, target in zip(modules, targets):
        m._kl_target, m._kl_record = target, records
    try:
        yield records
    finally:
        for m in modules:
            m.__dict__.pop("_kl_target", None)
            m.__dict__.pop("_kl_record", None)


@contextlib.contextmanager
def record_softmax(model: nn.Module):
    """Record, while the context is open, the softmax distributions of every quantized softmax attention layer of
    `model` *before* the probability quantizer: yields a list that each forward through `binary_softmax_attention`
    appends one [B, H, T, T] tensor to, in layer order (with autograd, the tensor autograd keeps for the softmax's
    backward anyway, so recording costs no memory). The native encoder runtime (`hf_binary_bert.runtime`) records
    nothing; a forward in training mode, or with `output_attentions=True` (the distillation trainer's in eval mode),
    runs the eager layers.

    The attention loss on these distributions reaches a student whose quantized probabilities are 1-bit (BiT's
    {0, α}): the KL of the quantized map clamps the log of its zeros and gives the keys the student ignores no
    gradient; the softmax before the quantizer has a gradient everywhere (docs/distillation.md)."""
    modules = [m for m in model.modules() if hasattr(m, "probs_quantizer")]
    records: list[torch.Tensor] = []
    for m in modules:
        m._softmax_record = records
    try:
        yield records
    finally:
        for m in modules:
            m.__dict__.pop("_softmax_record", None)


def _bitwise_bi_attention_applies(module, query, attention_mask) -> bool:
    """Eval mode, no gradient, float32 CPU tensors and 1-bit signed quantizers on Q, K and V: the bitwise kernel."""
    if module.training or torch.is_grad_enabled() or query.device.type != "cpu" or query.dtype != torch.float32:
        return False
    if plan_of(module).kernel == "reference":  # the model's inference plan
        return False
    if attention_mask is not None and attention_mask.dtype != torch.float32:
        return False
    quantizers = [getattr(module, f"{n}_quantizer", None) for n in ("query", "key", "value")]
    return all(isinstance(q, ActivationQuantizer) and q.bits == 1 and q.signed for q in quantizers)


def bi_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """BiBERT's Bi-Attention: boolean attention weights, no softmax (see module docstring).

    In eval mode without autograd, with 1-bit Q/K/V quantizers, it runs bitwise (`hf_binary_bert.kernels`: XNOR-popcount
    scores, AND-popcount weights × V) on exact integer dot products (when Q/K and V head sizes differ, a layer with
    pruned query/key dimensions (`layer_sizes.py`), by its exact reference twin `kernels.reference.bi_attention`:
    the bitwise kernel takes one head size); otherwise as the formula with float matmuls.
    """
    if _bitwise_bi_attention_applies(module, query, attention_mask):
        from .kernels import ops, reference

        if scaling is None:
            scaling = query.size(-1) ** -0.5
        shifts, steps = [], []
        for name, x in (("query", query), ("key", key), ("value", value)):
            quantizer = getattr(module, f"{name}_quantizer")
            shifts.append(quantizer.effective_shift().detach() if hasattr(quantizer, "shift") else None)
            steps.append(quantizer.kernel_step(x) if quantizer.has_step else torch.ones(()))
        scale = steps[0] * steps[1] * scaling
        if query.shape[-1] != value.shape[-1]:
            return reference.bi_attention(query, key, value, shifts, steps, scale, attention_mask)
        args = (query, key, value, *shifts, *steps, scale, attention_mask)
        return ops.bi_attention(*args) if torch.compiler.is_compiling() else ops.bi_attention_impl(*args)
    scores, value = _scores(module, query, key, value, attention_mask, scaling)
    weights = heaviside_ste(scores)
    weights = mask_dropout(weights, dropout, module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def register_attention_functions() -> None:
    """Register both functions (and transformers' eager mask for them) with transformers; idempotent."""
    AttentionInterface.register(SOFTMAX_ATTENTION, binary_softmax_attention)
    AttentionInterface.register(BI_ATTENTION, bi_attention)
    AttentionMaskInterface.register(SOFTMAX_ATTENTION, eager_mask)
    AttentionMaskInterface.register(BI_ATTENTION, eager_mask)


register_attention_functions()

__all__ = ["BI_ATTENTION", "SOFTMAX_ATTENTION", "bi_attention", "binary_softmax_attention", "heaviside_ste",
           "record_softmax", "register_attention_functions"]
