"""Knowledge-guided block-structured pruning: a group-lasso (+ θ(1 − θ)) penalty during training or distillation,
thresholding at ε, and physical removal of the FFN neurons and attention heads that end up zero (docs/pruning.md).

- `config.py`: `BlockPruningConfig` (λ₁, λ₂, K, rows / columns / both, modules, ε, when to threshold).
- `penalty.py`: group norms, the penalty as loss components, the group lasso's proximal step.
- `gates.py`: the gated form of the θ(1 − θ) term.
- `structure.py`: threshold, dead heads / neurons, removal, per-layer sizes, loading a pruned plain BERT.
- `trainer.py`: `BlockPruningTrainer` / `BlockPruningDistillationTrainer` (the penalty as a logged loss component).
- `report.py`: the sparsity report (table and PNG heat map).
"""

from .config import BlockPruningConfig
from .gates import BlockGates
from .penalty import block_pruning_penalty, group_norms, proximal_group_lasso_
from .report import checkpoint_sparsity_report, config_sparsity_report, sparsity_report, write_sparsity_report
from .structure import dead_structures, kept_sizes, load_pruned_bert, prune_, pruned_class, threshold_
from .trainer import BlockPruningDistillationTrainer, BlockPruningMixin, BlockPruningTrainer

__all__ = [
    "BlockGates",
    "BlockPruningConfig",
    "BlockPruningDistillationTrainer",
    "BlockPruningMixin",
    "BlockPruningTrainer",
    "block_pruning_penalty",
    "checkpoint_sparsity_report",
    "config_sparsity_report",
    "dead_structures",
    "group_norms",
    "kept_sizes",
    "load_pruned_bert",
    "proximal_group_lasso_",
    "prune_",
    "pruned_class",
    "sparsity_report",
    "threshold_",
    "write_sparsity_report",
]
