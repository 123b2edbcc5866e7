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
    mapping = layer_map(len(student_attentions) + 1, len(teacher_attentions) + 1)[1:]
    total = student_attentions[0].new_zeros(())
    for i, a_s in enumerate(student_attentions):
        a_t = teacher_attentions[mapping[i] - 1].to(a_s.dtype)
        batch, heads, q_len, k_len = a_s.shape
        key_mask = None if mask is None else mask[:, None, None, :].to(a_s.dtype)
        row_mask = None if mask is None else mask[:, None, :].expand(batch, heads, q_len).reshape(-1)
        if kind == "mse":
            sq = (a_s - a_t).pow(2)
            if key_mask is not None:
                per_row = (sq * key_mask).sum(-1) / key_mask.sum(-1).clamp_min(1)
            else:
                per_row = sq.mean(-1)
        else:
            per_row = (a_t * (torch.log(a_t.clamp_min(1e-12)) - torch.log(a_s.clamp_min(1e-12)))).sum(-1)
        total = total + _masked_mean(per_row.reshape(-1), row_mask)
    return total / len(student_attentions)
