"""Multi-step (staged) distillation: how a total step budget is shared by the stages, and how each stage is measured
against the original full-precision teacher, with collapse detection.

A stage's own logged prediction loss measures agreement with *its* teacher: in BiT's schedule W1A4 → W1A2 → W1A1
the later stages are taught by the previous student, so a student that collapsed to a constant prediction in stage 1
teaches its collapse, and stages 2 and 3 look healthy (issue 16: MSE 0.02–0.09 against a collapsed stage-1 model
that predicted the mean). `stage_diagnostics` therefore scores every stage against the original teacher on the
evaluation set, and calls it collapsed when it is no better than the best constant prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .losses import prediction_distillation_loss

__all__ = [
    "COLLAPSE_THRESHOLD",
    "STAGE_BUDGETS",
    "StageCollapseError",
    "check_collapse_threshold",
    "parse_stage_budget",
    "prediction_logits",
    "split_budget",
    "stage_diagnostics",
    "stages_markdown",
]

COLLAPSE_THRESHOLD = 0.1
"""A stage whose skill against the original teacher (see `stage_diagnostics`) is below this counts as collapsed."""

STAGE_BUDGETS = {"even": None}
"""Named stage budgets for `parse_stage_budget` (`"even"`: equal shares; the default share is in `recipes`)."""


def check_collapse_threshold(threshold) -> None:
    """Raises `ValueError` unless `threshold` is a real number below 1: a skill of 1 is the teacher's own, so a
    threshold of 1 or more would call every student collapsed (any number below 1 is allowed; a very negative one
    turns the check off)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold < 1:
        raise ValueError(f"collapse_threshold must be a skill below 1 (1 = the teacher's own predictions), "
                         f"got {threshold!r}")


class StageCollapseError(RuntimeError):
    """A multi-step stage collapsed and `on_collapse="stop"` was chosen: the message names the stage and its figures."""


def parse_stage_budget(value: str | Sequence[float] | None, num_stages: int) -> list[float]:
    """Relative share of the step budget per stage: `"even"` → equal shares, `"2,1,1"` (or `[2, 1, 1]`) → 2/4, 1/4,
    1/4. None → even.

    Raises:
        ValueError: for a share that is not a positive number, or when the number of shares differs from the
            number of stages.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "even"):
        return [1.0 / num_stages] * num_stages
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        shares = [float(x) for x in items]
    except ValueError:
        raise ValueError(f"stage budget {value!r}: give 'even' or one positive number per stage, e.g. 2,1,1") from None
    if len(shares) != num_stages:
        raise ValueError(f"stage budget {value!r} has {len(shares)} shares for {num_stages} stages")
    if any(not math.isfinite(s) or s <= 0 for s in shares):
        raise ValueError(f"stage budget {value!r}: every share must be a positive number")
    total = sum(shares)
    return [s / total for s in shares]


def split_budget(total: int, shares: Sequence[float]) -> list[int]:
    """Integer steps per stage that add up to `total`: `shares` (fractions summing to 1) times `total`, rounded by
    the largest remainder, each stage at least one step.

    Raises:
        ValueError: when `total` is smaller than the number of stages.
    """
    if total < len(shares):
        raise ValueError(f"a total of {total} steps cannot give each of {len(shares)} stages a step")
    exact = [total * s for s in shares]
    steps = [max(1, math.floor(x)) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: exact[i] - math.floor(exact[i]), reverse=True)
    i = 0
    while sum(steps) < total:
        steps[order[i % len(order)]] += 1
        i += 1
    while sum(steps) > total:  # only when the at-least-one rule added steps: take them from the largest stage
        steps[max(range(len(steps)), key=lambda k: steps[k])] -= 1
    return steps


@torch.inference_mode()
def prediction_logits(model, dataset, collator, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's logits on every example of a tokenized sequence-classification `dataset`, in order.

    Returns:
        `(logits [N, C] float32, labels [N] or None)`.
    """
    was_training = model.training
    model.eval()
    logits, labels = [], []
    columns = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "label", "labels")]
    try:
        for start in range(0, len(dataset), batch_size):
            rows = dataset.select(range(start, min(start + batch_size, len(dataset))))
            batch = collator([{c: row[c] for c in columns} for row in rows])
            batch_labels = batch.pop("labels", None)
            if batch_labels is not None:
                labels.append(batch_labels.reshape(-1))
            logits.append(model(**batch).logits.float())
    finally:
        model.train(was_training)
    return torch.cat(logits), (torch.cat(labels) if labels else None)


def stage_diagnostics(
    student_logits: torch.Tensor,
    original_logits: torch.Tensor,
    stage_teacher_logits: torch.Tensor | None = None,
    *,
    regression: bool,
    temperature: float = 1.0,
    threshold: float = COLLAPSE_THRESHOLD,
) -> dict:
    """How much of the original teacher's predictions a stage's student reproduces, and whether it collapsed.

    Losses are `prediction_distillation_loss` (MSE for regression, τ²·soft cross-entropy otherwise) over the
    evaluation set, against the original teacher and against the stage's own teacher. The *skill* compares the
    student with the best constant prediction:

    - regression: R² of the student against the teacher, 1 − MSE(z_s, z_t) / Var(z_t) (0 = predicting the teacher's
      mean, 1 = the teacher);
    - classification: Cohen's-kappa-like agreement of the arg-max classes, (a − a₀) / (1 − a₀), a = share of examples
      where the student's class is the teacher's, a₀ = share of the teacher's most frequent class (the agreement of
      a student that always predicts that class).

    The student counts as collapsed when its skill is below `threshold` (default `COLLAPSE_THRESHOLD` = 0.1): it is
    no better, or barely better, than one constant answer. (Soft cross-entropy is not used for the skill: a
    binarized student with sharp but mostly right predictions can have a larger soft cross-entropy than the constant
    prior.)

    Args:
        student_logits, original_logits, stage_teacher_logits: [N, C] (C = 1 for regression), same examples.
        regression: single-output regression head (STS-B).

    Returns:
        `{"loss_vs_original", "loss_vs_stage_teacher" (when given), "skill", "prediction_std",
        "teacher_prediction_std", "majority_share", "teacher_majority_share", "collapsed", "collapse_reason"}`;
        `*_std` are the standard deviations of the regression outputs (of the arg-max class's probability for
        classification); `*majority_share` the share of the most frequent predicted class (None for regression).

    Raises:
        ValueError: when the logits' shapes differ or hold no example.
    """
    if student_logits.shape != original_logits.shape or student_logits.numel() == 0:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(original_logits.shape)} must have the same, non-empty shape")
    s, t = student_logits.float(), original_logits.float()
    out = {"loss_vs_original": float(prediction_distillation_loss(s, t, temperature, regression=regression))}
    if stage_teacher_logits is not None:
        out["loss_vs_stage_teacher"] = float(
            prediction_distillation_loss(s, stage_teacher_logits.float(), temperature, regression=regression))
    if regression:
        ys, yt = s.reshape(-1), t.reshape(-1)
        variance = float(yt.var(unbiased=False))
        mse = float((ys - yt).pow(2).mean())
        skill = 1.0 - mse / variance if variance > 0 else float("nan")
        out.update(prediction_std=float(ys.std(unbiased=False)), teacher_prediction_std=math.sqrt(variance),
                   majority_share=None, teacher_majority_share=None)
        reason = (f"R² against the original teacher {skill:.3f} < {threshold}: the student predicts about the "
                  f"teacher's mean (output std {out['prediction_std']:.3g} vs the teacher's {math.sqrt(variance):.3g})")
    else:
        cs, ct = s.argmax(-1), t.argmax(-1)
        agreement = float((cs == ct).float().mean())
        base = float(np.bincount(ct.numpy(), minlength=t.shape[-1]).max()) / len(ct)
        skill = (agreement - base) / (1 - base) if base < 1 else float("nan")
        share = float(np.bincount(cs.numpy(), minlength=s.shape[-1]).max()) / len(cs)
        out.update(prediction_std=float(s.softmax(-1).max(-1).values.std(unbiased=False)),
                   teacher_prediction_std=float(t.softmax(-1).max(-1).values.std(unbiased=False)),
                   majority_share=share, teacher_majority_share=base)
        reason = (f"agreement with the original teacher's classes {agreement:.3f} is no better than always "
                  f"answering its most frequent class ({base:.3f}); the student's most frequent class has {share:.1%}")
    collapsed = not skill >= threshold  # NaN (a constant teacher) counts as collapsed: nothing was learnt to check
    out.update(skill=skill, collapsed=collapsed, collapse_reason=reason if collapsed else None)
    return out


def stages_markdown(rows: list[dict]) -> str:
    """The stage table (one row per stage, teacher first) as Markdown; collapsed stages are marked
    **COLLAPSED**."""
    if not rows:
        return ""
    metric_names = list(dict.fromkeys(k for row in rows for k in row.get("metrics", {})))
    columns = ["stage", "steps", "taught by", *metric_names, "loss vs original", "loss vs own teacher", "skill",
               "pred. std (teacher)", "collapsed"]

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        std = row.get("prediction_std")
        std_cell = "" if std is None else f"{std:.3g} ({row.get('teacher_prediction_std', float('nan')):.3g})"
        values = [row.get("stage"), row.get("steps"), row.get("taught_by"),
                  *[row.get("metrics", {}).get(m) for m in metric_names], row.get("loss_vs_original"),
                  row.get("loss_vs_stage_teacher"), row.get("skill"), std_cell,
                  {True: "**COLLAPSED**", False: "no"}.get(row.get("collapsed"), "")]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)
