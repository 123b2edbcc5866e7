"""Metrics for GLUE fine-tuning and masked-LM distillation, in the shapes the `Trainer` hands them over.

- GLUE: [`glue_metrics`] scores class ids (or STS-B floats) with scikit-learn and scipy, by the names that
  `evaluate.load("glue", task)` uses; [`classification_compute_metrics`] wraps it as `Trainer(compute_metrics=...)`.
- Masked LM, over the masked positions only (`labels != -100`): cross-entropy (nats), top-1 accuracy, mean reciprocal
  rank of the true token and perplexity. [`mlm_position_stats`] reduces `[batch, seq, vocab]` logits to
  `[batch, seq, 3]` inside the evaluation loop, so the Trainer never accumulates vocabulary-wide logits:

```python
>>> trainer = Trainer(
...     model=model,
...     args=args,
...     eval_dataset=blocks,
...     data_collator=mlm_collator(tokenizer),
...     preprocess_logits_for_metrics=lambda logits, labels: mlm_position_stats(logits, labels),
...     compute_metrics=mlm_compute_metrics,
... )
```

- [`MRR_METRIC_PATH`]: an `evaluate` module for mean reciprocal rank over candidate lists:
  `evaluate.load(MRR_METRIC_PATH)`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from ..data import GlueTask, get_glue_task

__all__ = [
    "MRR_METRIC_PATH",
    "classification_compute_metrics",
    "glue_metrics",
    "mlm_compute_metrics",
    "mlm_metrics",
    "mlm_position_stats",
]

MRR_METRIC_PATH: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mrr")
"""Folder of the mean-reciprocal-rank `evaluate` module: `evaluate.load(MRR_METRIC_PATH)` works offline."""

IGNORE_INDEX = -100
"""Label of positions that are not scored (unmasked tokens, padding), as in transformers' collators and losses."""


# --------------------------------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------------------------------

_GLUE_METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda refs, preds: accuracy_score(refs, preds),
    "f1": lambda refs, preds: f1_score(refs, preds),  # binary, positive class 1 (MRPC "equivalent", QQP "duplicate")
    "matthews_correlation": lambda refs, preds: matthews_corrcoef(refs, preds),
    "pearson": lambda refs, preds: pearsonr(preds, refs)[0],
    "spearmanr": lambda refs, preds: spearmanr(preds, refs)[0],
}


def glue_metrics(
    task: str | GlueTask, predictions: Sequence | np.ndarray, references: Sequence | np.ndarray
) -> dict[str, float]:
    """The GLUE metrics of `task` (see [`GlueTask.metrics`]) for a set of predictions.

    Args:
        task: GLUE task name (any alias [`get_glue_task`] accepts) or [`GlueTask`].
        predictions: `[N]` predicted class ids, or predicted similarity scores (floats) for STS-B.
        references: `[N]` true class ids (STS-B: gold scores, 0–5).

    Returns:
        `{metric: value}` for the task's metrics, names as `evaluate.load("glue", ...)`: `accuracy`, `f1` (binary,
        positive class 1), `matthews_correlation`, `pearson`, `spearmanr`.

    Raises:
        ValueError: unknown task, or predictions and references of different lengths or not 1-D.
    """
    task = get_glue_task(task)
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.ndim != 1 or predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must be 1-D and of equal length, got shapes {predictions.shape} and "
            f"{references.shape} (for class logits, pass logits.argmax(-1))."
        )
    return {name: float(_GLUE_METRIC_FUNCTIONS[name](references, predictions)) for name in task.metrics}


def classification_compute_metrics(task: str | GlueTask) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `Trainer(compute_metrics=...)` function for a GLUE task.

    The returned function takes an `EvalPrediction` whose `predictions` are the logits `[N, num_labels]` (`[N, 1]`
    or `[N]` for STS-B; the first element is used when the model returned a tuple) and `label_ids` `[N]`, takes the
    arg-max class (or the regression output) and returns [`glue_metrics`].
    """
    task = get_glue_task(task)

    def compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
        logits = eval_pred.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        logits = np.asarray(logits)
        predictions = logits.reshape(-1) if task.is_regression else logits.argmax(axis=-1)
        return glue_metrics(task, predictions, np.asarray(eval_pred.label_ids).reshape(-1))

    return compute_metrics


# --------------------------------------------------------------------------------------------------------------------
# Masked language modeling
# --------------------------------------------------------------------------------------------------------------------

MLM_STATS = ("cross_entropy", "accuracy", "reciprocal_rank")
"""Order of the last axis of [`mlm_position_stats`]."""


def mlm_position_stats(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """Per-position masked-LM statistics, for `Trainer(preprocess_logits_for_metrics=...)`.

    For each scored position (`labels != -100`), with `y` the true token:
    cross-entropy `logsumexp(logits) - logits[y]` (nats), top-1 correctness `argmax(logits) == y` (0/1; ties go to
    the lowest token id, as `torch.argmax`), and reciprocal rank `1 / rank` with
    `rank = 1 + #{v : logits[v] > logits[y]}` (ties count in the true token's favour).

    Args:
        logits: `[batch, seq, vocab]` prediction scores (any float dtype; computed in float32). A tuple/list of
            model outputs is accepted, its first element being the logits.
        labels: `[batch, seq]` true token ids, -100 at positions not scored.

    Returns:
        `[batch, seq, 3]` float32 on `logits.device`: (cross-entropy, correct, reciprocal rank), NaN where
        `labels == -100`. Reduce with [`mlm_compute_metrics`]. Memory: one float32 `[n_masked, vocab]` copy.
    """
    from .mrr.mrr import reciprocal_ranks  # the rank rule of the MRR `evaluate` module (imports `evaluate`)

    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be labels {tuple(labels.shape)} + (vocab,).")
    stats = torch.full((*labels.shape, len(MLM_STATS)), float("nan"), dtype=torch.float32, device=logits.device)
    scored = labels != IGNORE_INDEX
    if scored.any():
        scores = logits[scored].float()  # [n_scored, vocab]
        targets = labels[scored].long().unsqueeze(-1)  # [n_scored, 1]
        true_score = scores.gather(-1, targets)  # [n_scored, 1]
        cross_entropy = torch.logsumexp(scores, dim=-1) - true_score.squeeze(-1)
        correct = (scores.argmax(dim=-1) == targets.squeeze(-1)).float()
        reciprocal_rank = reciprocal_ranks(scores, true_score).float()  # the MRR module's rank rule
        stats[scored] = torch.stack([cross_entropy, correct, reciprocal_rank], dim=-1)
    return stats


def _reduce_stats(stats: np.ndarray) -> dict[str, float]:
    """Means over scored positions of `[..., 3]` stats; rows that are NaN (unscored) or -100 (padding that the
    Trainer adds when it concatenates batches of different lengths) are skipped."""
    stats = np.asarray(stats, dtype=np.float64).reshape(-1, len(MLM_STATS))
    stats = stats[~np.isnan(stats[:, 0]) & (stats[:, 0] != IGNORE_INDEX)]
    if len(stats) == 0:
        return {"cross_entropy": math.nan, "accuracy": math.nan, "mrr": math.nan, "perplexity": math.nan}
    cross_entropy, accuracy, mrr = stats.mean(axis=0)
    return {
        "cross_entropy": float(cross_entropy),
        "accuracy": float(accuracy),
        "mrr": float(mrr),
        "perplexity": float(math.exp(cross_entropy)),
    }


def mlm_compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """`Trainer(compute_metrics=...)` for masked LM, on the stats of [`mlm_position_stats`].

    Args:
        eval_pred: `predictions` = `[N, seq, 3]` stats from `preprocess_logits_for_metrics=mlm_position_stats`
            (`label_ids` are not needed: unscored positions are already NaN).

    Returns:
        `{"cross_entropy"` (mean, nats), `"accuracy"` (top-1), `"mrr"` (mean reciprocal rank),
        `"perplexity"` (`exp(cross_entropy)`)`}` over all masked positions; NaN when there are none.
    """
    stats = eval_pred.predictions
    if isinstance(stats, (tuple, list)):
        stats = stats[0]
    return _reduce_stats(stats)


def mlm_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """[`mlm_compute_metrics`] directly on tensors: logits `[batch, seq, vocab]`, labels `[batch, seq]` (-100 = not
    scored). Same keys and numbers."""
    return _reduce_stats(mlm_position_stats(logits, labels).cpu().numpy())
