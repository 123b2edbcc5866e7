"""Knowledge-distillation losses between a student and a teacher BERT.

Every loss returns a scalar that is a mean over the valid (non-padding / masked) positions of one batch, so
gradient accumulation over equal-sized micro-batches gives the same update as the larger batch.
Shapes: B = batch, T = sequence length, H = heads, D = hidden size, C = classes or vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` [N, ...] over rows where `mask` [N] is true (all rows without a mask)."""
    if mask is None:
        return values.mean()
    mask = mask.to(torch.bool)
    if not mask.any():
        return values.sum() * 0.0
    return values[mask].mean()


def prediction_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    regression: bool = False,
) -> torch.Tensor:
    """Prediction-layer distillation (Hinton et al. 2015; TinyBERT's ℓ_pred, BiBERT's ℓ_pred).

    Classification / masked LM: soft cross-entropy −Σ_c softmax(z_t / τ)_c · log softmax(z_s / τ)_c, averaged over
    the rows, times τ² (so gradients keep their scale across temperatures). Regression: MSE(z_s, z_t).

    Args:
        student_logits, teacher_logits: [..., C] (e.g. [B, C] or [B, T, C]).
        temperature: τ > 0.
        mask: [...] boolean, rows to include (e.g. masked-LM positions, labels != −100); None = all.
        regression: use MSE (STS-B-style single-output heads).
    """
    teacher_logits = teacher_logits.to(student_logits.dtype)
    flat_mask = None if mask is None else mask.reshape(-1)
    if regression:
        per_row = (student_logits - teacher_logits).pow(2).reshape(-1, student_logits.shape[-1]).mean(-1)
        return _masked_mean(per_row, flat_mask)
    s = student_logits.reshape(-1, student_logits.shape[-1])
    t = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    if flat_mask is not None:  # select first: masked-LM logits are [B·T, 30k]
        s, t, flat_mask = s[flat_mask.bool()], t[flat_mask.bool()], None
    soft_ce = -(F.softmax(t / temperature, dim=-1) * F.log_softmax(s / temperature, dim=-1)).sum(-1)
    return _masked_mean(soft_ce, flat_mask) * temperature**2


def span_distillation_loss(
    student_start: torch.Tensor,
    student_end: torch.Tensor,
    teacher_start: torch.Tensor,
    teacher_end: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Prediction-layer distillation for extractive question answering: the mean of the soft cross-entropies of the
    start and of the end distributions over the sequence, −Σ_t softmax(z_t / τ) · log softmax(z_s / τ) per window,
    averaged over the windows, times τ² (Hinton et al. 2015; as DistilBERT / TinyBERT distil SQuAD's span logits).

    Args:
        student_start, student_end, teacher_start, teacher_end: [B, T] logits over the tokens of each window.
        temperature: τ > 0.
        mask: [B, T] attention mask; padding positions (0) are left out of both softmaxes. None = all positions.
    """
    if mask is not None:
        pad = ~mask.bool()
        fill = torch.finfo(student_start.dtype).min
        student_start, student_end = student_start.masked_fill(pad, fill), student_end.masked_fill(pad, fill)
        teacher_start, teacher_end = teacher_start.masked_fill(pad, fill), teacher_end.masked_fill(pad, fill)
    start = prediction_distillation_loss(student_start, teacher_start, temperature)
    end = prediction_distillation_loss(student_end, teacher_end, temperature)
    return (start + end) / 2


def layer_map(num_student: int, num_teacher: int) -> list[int]:
    """Teacher index for each of the student's hidden states (embedding output + layers), uniform as TinyBERT:
    student state i ↦ teacher state i · L_t / L_s."""
    if (num_teacher - 1) % max(num_student - 1, 1) != 0:
        raise ValueError(
            f"cannot map {num_student - 1} student layers uniformly onto {num_teacher - 1} teacher layers"
        )
    step = (num_teacher - 1) // max(num_student - 1, 1)
    return [i * step for i in range(num_student)]


def _layer_weights(weights, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ValueError(f"hidden_layer_weights has {len(weights)} entries, the student has {n} hidden states")
    return list(weights)


def _sum_over_layers(student_hidden, teacher_hidden, mask, layer_weights, per_token) -> torch.Tensor:
    """Σ_i λ_i · mean over real tokens of `per_token(h_s^i, h_t^{m(i)})` ([B, T, D] × 2 → [B, T])."""
    mapping = layer_map(len(student_hidden), len(teacher_hidden))
    lambdas = _layer_weights(layer_weights, len(student_hidden))
    flat_mask = None if mask is None else mask.reshape(-1)
    total = student_hidden[0].new_zeros(())
    for i, (hs, w) in enumerate(zip(student_hidden, lambdas)):
        if w == 0:
            continue
        ht = teacher_hidden[mapping[i]].to(hs.dtype)
        total = total + w * _masked_mean(per_token(hs, ht).reshape(-1), flat_mask)
    return total


def hidden_state_mse(student_hidden, teacher_hidden, mask=None, layer_weights=None) -> torch.Tensor:
    """Σ_i λ_i · MSE(h_s^i, h_t^{m(i)}) over hidden states (TinyBERT's ℓ_hidn; the blog's hidden-state distillation).

    Args:
        student_hidden, teacher_hidden: tuples of [B, T, D] (embedding output first, as `output_hidden_states`).
        mask: [B, T] attention mask (1 = real token); the MSE averages over real tokens and D.
        layer_weights: λ_i per student hidden state (default 1 each).

    Raises:
        ValueError: when `layer_weights` has the wrong length or the layers cannot be mapped uniformly.
    """
    return _sum_over_layers(
        student_hidden, teacher_hidden, mask, layer_weights, lambda hs, ht: (hs - ht).pow(2).mean(-1)
    )


def hidden_state_cosine(student_hidden, teacher_hidden, mask=None, layer_weights=None) -> torch.Tensor:
    """Σ_i λ_i · mean over real tokens of 1 − cos(h_s^i, h_t^{m(i)}) (cosine hidden-state loss, as DistilBERT's
    ℓ_cos but per layer). Shapes and errors as `hidden_state_mse`."""
    return _sum_over_layers(
        student_hidden, teacher_hidden, mask, layer_weights,
        lambda hs, ht: 1 - F.cosine_similarity(hs, ht, dim=-1, eps=1e-8),
    )


_KL_EPS = 1e-12  # the floor of both distributions under the log (a zero probability is clamped, not −∞)


def _row_chunks(x: torch.Tensor, elements: int = 1 << 20):
    """Slices of `x` along dim 0 of about `elements` entries each (so that the temporaries of a per-row
    computation stay small)."""
    step = max(1, elements // max(1, x[0].numel())) if x.dim() > 0 and x.shape[0] else 1
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


class _AttentionKL(torch.autograd.Function):
    """Per query row, KL(A_t ‖ A_s) = Σ_j A_t·(log max(A_t, ε) − log max(A_s, ε)): [N, ..., T] × 2 → [N, ...].

    The same float32 operations as that composition of torch ops, forward and backward (∂/∂A_s =
    −(g·A_t) / max(A_s, ε) where A_s ≥ ε, else 0: the derivatives of mul, sub, log and clamp_min in that order), but
    it saves only A_s and A_t for the backward — A_s is the softmax output autograd keeps for the softmax's backward
    anyway, A_t the teacher's map the composition kept too — where the composition also kept max(A_s, ε), one more
    [B, H, T, T] map per layer (25 MB at batch 32 × 128 tokens × 12 heads), and it works through slices of dim 0 of
    about 10⁶ entries, so its temporaries are a few MB instead of several whole maps. No gradient reaches A_t."""

    @staticmethod
    def forward(ctx, a_s, a_t):
        ctx.save_for_backward(a_s, a_t)
        return attention_kl_rows(a_s, a_t)

    @staticmethod
    def backward(ctx, grad):
        a_s, a_t = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return attention_kl_rows_backward(grad, a_s, a_t), None


def attention_kl_rows(a_s: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """KL(A_t ‖ A_s) per query row without autograd, in slices of dim 0 ([..., T] × 2 → [...]): the forward of
    `_AttentionKL` (and of the attention's own KL, `attention._QuantizedProbsValue`)."""
    out = a_s.new_empty(a_s.shape[:-1])
    for rows in _row_chunks(a_s):
        d = a_t[rows].clamp_min(_KL_EPS).log_()
        d.sub_(a_s[rows].clamp_min(_KL_EPS).log_())
        torch.sum(d.mul_(a_t[rows]), -1, out=out[rows])  # a_t·d = d·a_t exactly
    return out


def attention_kl_rows_backward(grad: torch.Tensor, a_s: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """∂/∂A_s of `attention_kl_rows` for ∂/∂(KL per row) `grad` [...]: −(g·A_t)/max(A_s, ε) where A_s ≥ ε, else 0."""
    grad_s = torch.empty_like(a_s)
    for rows in _row_chunks(a_s):
        step = torch.mul(grad[rows].unsqueeze(-1), a_t[rows], out=grad_s[rows]).neg_()
        step.div_(a_s[rows].clamp_min(_KL_EPS)).masked_fill_(a_s[rows].ge(_KL_EPS).logical_not_(), 0.0)
    return grad_s


def attention_kl_per_row(a_s: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """KL(A_t ‖ A_s) per query row: [..., T] student and teacher probabilities (same dtype) → [...], both floored
    at ε = 1e-12 under the log. Differentiable in `a_s` only (`a_t` is a teacher's map); saves no copy of either."""
    if a_t.requires_grad:
        return (a_t * (torch.log(a_t.clamp_min(_KL_EPS)) - torch.log(a_s.clamp_min(_KL_EPS)))).sum(-1)
    return _AttentionKL.apply(a_s, a_t)


def attention_distillation_loss(student_attentions, teacher_attentions, mask=None, kind: str = "mse") -> torch.Tensor:
    """Attention distillation averaged over layers (TinyBERT's ℓ_attn on attention probabilities).

    - `"mse"`: mean over heads, real query rows and real key columns of (A_s − A_t)².
    - `"kl"`: mean over heads and real query rows of KL(A_t ‖ A_s) = Σ_j A_t log(A_t / A_s) (MiniLM-style).

    Args:
        student_attentions, teacher_attentions: tuples of [B, H, T, T] attention probabilities (one per layer;
            needs `attn_implementation="eager"`).
        mask: [B, T] attention mask.
        kind: `"mse"` or `"kl"`.

    Raises:
        ValueError: for another `kind`, or when the models return no attentions.
    """
    if kind not in ("mse", "kl"):
        raise ValueError(f"attention loss must be 'mse' or 'kl', got {kind!r}")
    if not student_attentions or not teacher_attentions or student_attentions[0] is None:
        raise ValueError("attention distillation needs attention probabilities: load both models with attn_implementation='eager'")
    mapping = attention_layer_map(len(student_attentions), len(teacher_attentions))
    per_rows = []
    for i, a_s in enumerate(student_attentions):
        a_t = teacher_attentions[mapping[i]].to(a_s.dtype)
        if kind == "mse":
            sq = (a_s - a_t).pow(2)
            if mask is not None:
                key_mask = mask[:, None, None, :].to(a_s.dtype)
                per_row = (sq * key_mask).sum(-1) / key_mask.sum(-1).clamp_min(1)
            else:
                per_row = sq.mean(-1)
        else:
            per_row = attention_kl_per_row(a_s, a_t)
        per_rows.append(per_row)
    return mean_over_rows_and_layers(per_rows, mask)


def attention_layer_map(num_student: int, num_teacher: int) -> list[int]:
    """The teacher attention layer (0-based) each of `num_student` student attention layers is compared with
    (`layer_map` on the layers, without the embeddings)."""
    return [m - 1 for m in layer_map(num_student + 1, num_teacher + 1)[1:]]


def mean_over_rows_and_layers(per_rows: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over layers of the mean over heads and real query rows: `per_rows` one [B, H, T] tensor per layer, `mask`
    [B, T] (1 = real token) or None. The reduction of `attention_distillation_loss`."""
    total = per_rows[0].new_zeros(())
    for per_row in per_rows:
        batch, heads, q_len = per_row.shape
        row_mask = None if mask is None else mask[:, None, :].expand(batch, heads, q_len).reshape(-1)
        total = total + _masked_mean(per_row.reshape(-1), row_mask)
    return total / len(per_rows)


def similarity_pattern(x: torch.Tensor, num_heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """BiBERT's similarity pattern matrix per head: P = X·Xᵀ / ‖X·Xᵀ‖_F, with padding rows/columns zeroed.

    Args:
        x: [B, T, D] (Q, K or V before binarization, heads concatenated).
        num_heads: H, dividing D.
        mask: [B, T] attention mask (1 = real token) or None.

    Returns:
        [B, H, T, T], each [T, T] matrix of unit Frobenius norm (or 0).
    """
    batch, length, dim = x.shape
    heads = x.float().reshape(batch, length, num_heads, dim // num_heads).transpose(1, 2)  # [B, H, T, d]
    if mask is not None:
        heads = heads * mask[:, None, :, None].to(heads.dtype)
    pattern = heads @ heads.transpose(-1, -2)
    norm = pattern.flatten(2).norm(dim=-1).clamp_min(1e-12)[..., None, None]
    return pattern / norm


def direction_matching_loss(student_states, teacher_states, num_heads: int, mask=None, teacher_num_heads: int | None = None) -> torch.Tensor:
    """Direction-Matching Distillation (BiBERT, Qin et al. ICLR 2022, eq. 12–13) for one of Q, K or V:
    Σ_l mean over (batch, head) of ‖P̂_s^l − P̂_t^{m(l)}‖_F, with P̂ from `similarity_pattern`.

    Differences from the reference code, both so that the loss does not depend on batch composition: the norm is
    taken per sample and head (BiBERT divides by the norm of the whole batch tensor), and padding is masked out of
    both patterns. Layers map uniformly (student layer l ↦ teacher layer l·L_t/L_s, the last of each block).

    Args:
        student_states, teacher_states: sequences of [B, T, D_s] / [B, T, D_t], one per layer.
        num_heads / teacher_num_heads: heads of the student / teacher (same when None); when they differ, each
            model's whole Q (K, V) is compared as one head.
        mask: [B, T] attention mask.

    Raises:
        ValueError: when there are no states, or the layers cannot be mapped uniformly.
    """
    if not student_states or not teacher_states:
        raise ValueError("direction-matching distillation needs the query/key/value outputs of both models")
    teacher_num_heads = num_heads if teacher_num_heads is None else teacher_num_heads
    if teacher_num_heads != num_heads:
        num_heads = teacher_num_heads = 1
    mapping = layer_map(len(student_states) + 1, len(teacher_states) + 1)[1:]
    total = student_states[0].new_zeros((), dtype=torch.float32)
    for i, x_s in enumerate(student_states):
        p_s = similarity_pattern(x_s, num_heads, mask)
        p_t = similarity_pattern(teacher_states[mapping[i] - 1], teacher_num_heads, mask)
        total = total + (p_s - p_t).flatten(2).norm(dim=-1).mean()
    return total
