"""The pruning penalty as a loss component of the transformers `Trainer` (plain fine-tuning of a full-precision
BERT) and of `DistillationTrainer` (knowledge-guided: a pruned student distilled from the dense teacher).

`BlockPruningMixin` adds to the loss the components of `penalty.block_pruning_penalty` (`group_lasso`,
`binarizing`), logs each as `loss_<component>` (mean over the logging interval) like the distillation losses,
with `proximal=True` applies the group lasso as a proximal step after every optimizer step instead,
thresholds every `threshold_every` steps, and at the end of `train()` thresholds and (with `remove=True`) physically
removes the zero heads and FFN neurons (`structure.prune_`); `trainer.pruned_sizes` then holds the kept sizes.
"""

from __future__ import annotations

import dataclasses

import torch
from transformers import Trainer, TrainerCallback

from ..distillation.trainer import DistillationTrainer
from .config import BlockPruningConfig
from .gates import BlockGates
from .penalty import block_pruning_penalty, check_model, proximal_group_lasso_
from .structure import prune_, threshold_, threshold_masks


class _PruningCallback(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        if trainer.pruning.proximal:  # after optimizer.step(), before the scheduler's: the step's learning rate
            model = trainer.accelerator.unwrap_model(trainer.model)
            keep = None
            if trainer.pruning.proximal_outside_target:  # the top k of the keep shares now (ε = 0: no other mask)
                keep = threshold_masks(model, dataclasses.replace(trainer.pruning, epsilon=0.0))
            proximal_group_lasso_(model, trainer.pruning, trainer.optimizer.param_groups[0]["lr"], keep)

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        if trainer.block_gates is not None:
            trainer.block_gates.project_()
        every = trainer.pruning.threshold_every
        if every and state.global_step % every == 0 and state.global_step < state.max_steps:
            threshold_(trainer.accelerator.unwrap_model(trainer.model), trainer.pruning, trainer.block_gates)


class BlockPruningMixin:
    """Mixin for a `Trainer` subclass: the block-structured pruning penalty (see the module docstring).

    Args:
        pruning: a `BlockPruningConfig` (default: its defaults).
        *args, **kwargs: the trainer's own.

    Raises:
        ValueError: for `pruning` of another type, or (from `penalty.check_model`) modules that match no trainable
            Linear / K not dividing a matrix axis.
    """

    def __init__(self, *args, pruning: BlockPruningConfig | None = None, **kwargs):
        pruning = BlockPruningConfig() if pruning is None else pruning
        if not isinstance(pruning, BlockPruningConfig):
            raise ValueError(f"pruning must be a BlockPruningConfig, got {type(pruning).__name__}")
        super().__init__(*args, **kwargs)
        self.pruning = pruning
        model = self.accelerator.unwrap_model(self.model)
        check_model(model, pruning)
        self.block_gates = None
        if pruning.penalty_form == "gate":
            self.block_gates = BlockGates(model, pruning)
            self.block_gates.attach(model)
        self._penalty_sums: dict[str, torch.Tensor] = {}
        self._penalty_counts: dict[str, int] = {}
        self.pruned_sizes: dict[str, list[int]] | None = None
        self.add_callback(_PruningCallback(self))

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.block_gates is not None and not getattr(self, "_gates_in_optimizer", False):
            optimizer.add_param_group({"params": list(self.block_gates.parameters()), "weight_decay": 0.0})
            self._gates_in_optimizer = True
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if not model.training:
            return result
        loss, outputs = result if return_outputs else (result, None)
        components = block_pruning_penalty(self.accelerator.unwrap_model(model), self.pruning, self.block_gates)
        penalty = sum(components.values())
        scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None)
        if scaled:  # the Trainer will not divide by the accumulation steps: the penalty counts once per step
            penalty = penalty / self.current_gradient_accumulation_steps
        for k, v in components.items():
            self._penalty_sums[k] = self._penalty_sums.get(k, 0) + v.detach().float()
            self._penalty_counts[k] = self._penalty_counts.get(k, 0) + 1
        loss = loss + penalty
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._penalty_sums:
            for k in sorted(self._penalty_sums):
                logs[f"loss_{k}"] = round(float(self._penalty_sums[k] / self._penalty_counts[k]), 6)
            self._penalty_sums.clear()
            self._penalty_counts.clear()
        super().log(logs, start_time)

    def train(self, *args, **kwargs):
        """`Trainer.train`, then (gates folded) threshold at ε and, with `pruning.remove`, physical removal
        (`structure.prune_`; the kept sizes go into the model's config and `self.pruned_sizes`)."""
        output = super().train(*args, **kwargs)
        self.finish_pruning()
        return output

    def finish_pruning(self) -> dict[str, list[int]] | None:
        """Fold the gates, threshold and (with `remove`) remove; idempotent. Returns the kept sizes or None."""
        model = self.accelerator.unwrap_model(self.model)
        if self.block_gates is not None:
            self.block_gates.fold_(model)
            self.block_gates = None
        if self.pruning.remove:
            self.pruned_sizes = prune_(model, self.pruning)
        else:
            threshold_(model, self.pruning)
        return self.pruned_sizes


class BlockPruningTrainer(BlockPruningMixin, Trainer):
    """`transformers.Trainer` (task loss) + the block-structured pruning penalty; `pruning=BlockPruningConfig(...)`."""


class BlockPruningDistillationTrainer(BlockPruningMixin, DistillationTrainer):
    """`DistillationTrainer` + the block-structured pruning penalty (knowledge-guided pruning); on a binarized
    student the penalty applies to the latent weights. `pruning=BlockPruningConfig(...)`."""


__all__ = ["BlockPruningDistillationTrainer", "BlockPruningMixin", "BlockPruningTrainer"]
