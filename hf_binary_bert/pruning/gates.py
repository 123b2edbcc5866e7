"""The gated form of the binarising regulariser: one gate g ∈ [0, 1] per group, multiplying that group's weights.

The seed penalises θ(1 − θ) on the weights themselves. Applied to a gate that scales a group, g(1 − g) is the usual
regulariser that drives a relaxed mask to {0, 1} (e.g. the binarising term of Srinivas et al., "Training Sparse
Neural Networks", CVPR-W 2017; a deterministic cousin of the hard-concrete L0 gates of Louizos et al., ICLR 2018):
it is ≥ 0 and 0 exactly at g ∈ {0, 1}, where θ(1 − θ) on a weight is unbounded below (θ → ±∞).

While attached, a pruned Linear computes y = x·(W ⊙ M)ᵀ + b with M [out, in] the gates expanded over their
groups (`penalty.group_mask`; both directions: the product); a binarized Linear gates its binarized weight,
W_q ⊙ M. The gates live outside the model (so checkpoints keep their layout), are optimised with it, projected
onto [0, 1] after each step, and folded into the latent weights by `fold_` at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import BlockPruningConfig
from .penalty import group_mask, pruned_linears


def _key(name: str, direction: str) -> str:
    return f"{name.replace('.', '__')}__{direction}"


class BlockGates(nn.Module):
    """Gates [K, out] (row groups) / [K, in] (column groups) for every Linear the penalty applies to, initialised
    to 1 (the model's function unchanged)."""

    def __init__(self, model: nn.Module, config: BlockPruningConfig):
        super().__init__()
        self.config = config
        self.gates = nn.ParameterDict()
        for name, module in pruned_linears(model, config.modules).items():
            out_features, in_features = module.weight.shape
            for direction in config.directions:
                size = out_features if direction == "row" else in_features
                self.gates[_key(name, direction)] = nn.Parameter(
                    torch.ones(config.num_blocks, size, device=module.weight.device))
        self._attached: list[nn.Module] = []

    def gate(self, name: str, direction: str) -> torch.Tensor:
        """The gates of Linear `name` for `direction`: [K, out] or [K, in]."""
        return self.gates[_key(name, direction)]

    def mask(self, name: str, weight_shape) -> torch.Tensor:
        """M [out, in]: the product over directions of the expanded gates of Linear `name`."""
        mask = None
        for direction in self.config.directions:
            m = group_mask(self.gate(name, direction), weight_shape, direction)
            mask = m if mask is None else mask * m
        return mask

    def attach(self, model: nn.Module) -> None:
        """Make each pruned Linear of `model` compute with its gated weight (an instance-level `forward`)."""
        for name, module in pruned_linears(model, self.config.modules).items():
            def forward(x, _m=module, _name=name):
                weight = _m.quantized_weight() if hasattr(_m, "quantized_weight") else _m.weight
                inputs = _m.input_quantizer(x) if hasattr(_m, "input_quantizer") else x
                return F.linear(inputs, weight * self.mask(_name, weight.shape), _m.bias)

            module.forward = forward
            self._attached.append(module)

    def detach(self) -> None:
        """Restore the Linears' own forward."""
        for module in self._attached:
            del module.forward
        self._attached = []

    @torch.no_grad()
    def project_(self) -> None:
        """g ← clip(g, 0, 1) (projected gradient step), after each optimizer step."""
        for g in self.gates.values():
            g.clamp_(0, 1)

    @torch.no_grad()
    def fold_(self, model: nn.Module) -> None:
        """W ← W ⊙ M in every pruned Linear (exact for a full-precision Linear: the gated forward becomes the plain
        one; for a binarized Linear the latent weight is scaled, which zeroes the groups whose gate is 0), then
        detach. The gates are then 1."""
        for name, module in pruned_linears(model, self.config.modules).items():
            module.weight.mul_(self.mask(name, module.weight.shape))
        for g in self.gates.values():
            g.fill_(1.0)
        self.detach()


__all__ = ["BlockGates"]
