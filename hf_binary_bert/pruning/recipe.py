"""`prune`: knowledge-guided block-structured pruning of a full-precision BERT on a task (the `hf-binary-bert prune`
command): a copy of the model is distilled from the dense model with the pruning penalty added
(`BlockPruningDistillationTrainer`), thresholded at ε, its zero heads and FFN neurons removed, and saved (float32
safetensors, per-layer sizes in `config.json`) with the sparsity report."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from transformers import BertForMaskedLM, BertForSequenceClassification

from ..distillation import DistillationTrainingArguments
from ..layer_sizes import pruned_class
from ..recipes import (
    _prepare_training,
    _split_options,
    _train_and_record,
    _training_arguments,
    check_model,
    plot_losses,
)
from .config import BlockPruningConfig
from .report import sparsity_report, write_sparsity_report
from .trainer import BlockPruningDistillationTrainer


def prune(model: str, task: str, output_dir: str, *, pruning: BlockPruningConfig | None = None,
          evaluate: bool = True, teacher: str | None = None, **kwargs) -> dict:
    """Prune a fine-tuned full-precision BERT on `task` and save it in `output_dir` (model, tokenizer, `losses.png`,
    `sparsity.md` / `.json` / `.png`, `prune_results.json`).

    Args:
        model: Hub id or folder of the fine-tuned BERT (teacher and starting point).
        pruning: the `BlockPruningConfig` (default: its defaults).
        evaluate: score the pruned model on the evaluation split.
        teacher: Hub id or folder of the full-precision BERT to distil from (default: `model` itself). E.g. a
            recovery run of an already pruned `model` taught by the dense model (λ₁ = 0, ε = 0: nothing more
            removed).
        **kwargs: `recipes.TrainingOptions` fields (default learning rate 5e-5) and `DistillationTrainingArguments`
            (loss weights; default: prediction KD and hidden-state MSE, as `distill`).

    Returns:
        `{"task", "metrics", "log_history", "train_seconds", "sizes", "sparsity"}`, also in `prune_results.json`.

    Raises:
        ValueError: as `BlockPruningConfig`, or when ε would remove every head / FFN neuron of a layer (then
            nothing is written).
    """
    pruning = BlockPruningConfig() if pruning is None else pruning
    options, extra = _split_options(kwargs)
    path, tokenizer, data = _prepare_training(model, task, options)
    cls = pruned_class(BertForMaskedLM if task == "mlm" else BertForSequenceClassification)
    start = cls.from_pretrained(path, dtype=torch.float32)
    if data.num_labels is not None and start.config.num_labels != data.num_labels:
        raise ValueError(f"model {model!r} has {start.config.num_labels} labels, task {task!r} has "
                         f"{data.num_labels}: fine-tune it first")
    student = copy.deepcopy(start).train()
    teacher_model = start
    if teacher is not None:
        teacher_model = cls.from_pretrained(check_model(teacher, allow_binary=False), dtype=torch.float32)
        if teacher_model.config.num_labels != start.config.num_labels:
            raise ValueError(f"teacher {teacher!r} has {teacher_model.config.num_labels} labels, model {model!r} "
                             f"has {start.config.num_labels}")
    args = _training_arguments(DistillationTrainingArguments, output_dir, options, 5e-5, extra)
    trainer = BlockPruningDistillationTrainer(
        teacher_model=teacher_model, model=student, args=args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=data.collator, compute_metrics=data.compute_metrics,
        preprocess_logits_for_metrics=data.preprocess_logits_for_metrics, processing_class=tokenizer,
        pruning=pruning)

    def save():
        student.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        plot_losses(trainer.state.log_history, Path(output_dir, "losses.png"))

    result = _train_and_record(trainer, output_dir, save, "prune_results.json", evaluate)
    rows = sparsity_report(student)
    write_sparsity_report(rows, output_dir)
    result = {"task": task, **result, "sizes": trainer.pruned_sizes, "sparsity": rows}
    Path(output_dir, "prune_results.json").write_text(json.dumps(result, indent=1))
    return result


__all__ = ["prune"]
