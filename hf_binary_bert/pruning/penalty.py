"""The block-structured pruning penalty: group norms of the K blocks of each weight matrix, the group lasso and the
θ(1 − θ) term, as loss components.

Groups (Li et al., Findings of EMNLP 2020, "hardware-friendly block structured pruning"; group lasso: Yuan & Lin,
JRSS-B 2006; structured sparsity in deep nets: Wen et al., NeurIPS 2016). For a weight θ [out, in] and K blocks:

- rows: the input axis is cut into K blocks of in/K columns, θ = [θ_1 … θ_K]; group (j, p) is the row p of block j,
  [θ_j]_{p,:} (in/K weights). All K groups of a row zero = the output unit p is dead.
- columns: the output axis is cut into K blocks of out/K rows; group (j, q) is the column q of block j,
  [θ_j]_{:,q} (out/K weights). All K groups of a column zero = the input unit q is unused.
"""

from __future__ import annotations

import torch
from torch import nn

from ..binarization.swap import binarized_target
from .config import BlockPruningConfig


def group_norms(weight: torch.Tensor, num_blocks: int, direction: str) -> torch.Tensor:
    """L2 norms of the groups of `weight` [out, in]: [K, out] for `"row"` (‖[θ_j]_{p,:}‖₂), [K, in] for
    `"column"` (‖[θ_j]_{:,q}‖₂). Differentiable.

    Raises:
        ValueError: when K does not divide the split axis (in for rows, out for columns), naming `num_blocks`.
    """
    out_features, in_features = weight.shape
    if direction == "row":
        if in_features % num_blocks:
            raise ValueError(f"BlockPruningConfig.num_blocks={num_blocks} must divide in_features ({in_features}) "
                             "for row groups")
        return torch.linalg.vector_norm(weight.reshape(out_features, num_blocks, -1), dim=2).t()
    if direction == "column":
        if out_features % num_blocks:
            raise ValueError(f"BlockPruningConfig.num_blocks={num_blocks} must divide out_features ({out_features}) "
                             "for column groups")
        return torch.linalg.vector_norm(weight.reshape(num_blocks, -1, in_features), dim=1)
    raise ValueError(f"direction must be 'row' or 'column', got {direction!r}")


def group_mask(norms: torch.Tensor, weight_shape: tuple[int, int], direction: str) -> torch.Tensor:
    """Expand per-group values [K, out] (rows) or [K, in] (columns) to the weight's shape [out, in]."""
    out_features, in_features = weight_shape
    num_blocks = norms.shape[0]
    if direction == "row":
        return norms.t().repeat_interleave(in_features // num_blocks, dim=1)
    return norms.repeat_interleave(out_features // num_blocks, dim=0)


def pruned_linears(model: nn.Module, modules) -> dict[str, nn.Module]:
    """`{qualified name: Linear}` of the encoder Linears (full-precision or binarized training form) named in
    `modules` (`query`, …, `output`), in layer order."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and binarized_target(name) in modules:
            found[name] = module
    return found


def check_model(model: nn.Module, config: BlockPruningConfig) -> dict[str, nn.Module]:
    """The Linears the penalty applies to, after checking that there are some and that K divides their axes.

    Raises:
        ValueError: naming `BlockPruningConfig.modules` when nothing matches (e.g. a packed model: unfreeze it),
            `num_blocks` when K does not divide a split axis, or a keep share that keeps no FFN neuron / head.
    """
    linears = pruned_linears(model, config.modules)
    if not linears:
        raise ValueError(f"BlockPruningConfig.modules={config.modules} matched no trainable Linear of "
                         f"{type(model).__name__} (a packed model must be unfrozen first)")
    sizes = getattr(model, "config", None)
    for field_name, full in (("ffn_keep_share", "intermediate_size"), ("heads_keep_share", "num_attention_heads")):
        share = getattr(config, field_name)
        if share is not None and sizes is not None and round(share * getattr(sizes, full)) < 1:
            what = "head" if field_name.startswith("heads") else "FFN neuron"
            raise ValueError(f"BlockPruningConfig.{field_name}={share} keeps no {what} of a layer "
                             f"(round({share} · {getattr(sizes, full)}) = 0)")
    for name, module in linears.items():
        for direction in config.directions:
            try:
                group_norms(module.weight.detach(), config.num_blocks, direction)
            except ValueError as err:
                raise ValueError(f"{err} ({name})") from None
    return linears


def block_pruning_penalty(model: nn.Module, config: BlockPruningConfig, gates=None) -> dict[str, torch.Tensor]:
    r"""The penalty's two components, each already multiplied by its λ (scalar tensors):

    - `"group_lasso"`: λ₁ Σ_i Σ_groups ‖group‖₂ over the Linears of `config.modules` and the directions of
      `config.direction`; with gates, of the gated weight g·θ (so the norm of a group is g·‖θ_group‖). With
      `config.proximal` detached (its value only: `proximal_group_lasso_` applies it after the optimizer step).
    - `"binarizing"`: λ₂ Σ_i Σ θ(1 − θ) over every weight entry (`penalty_form="weight"`, the seed's form), or
      λ₂ Σ_g g(1 − g) over the gates (`"gate"`); absent when λ₂ = 0.

    On a binarized student in training form the latent weights θ are penalised (not α·sign(θ)).

    Args:
        model: a BERT (full precision or binarized training form).
        config: the `BlockPruningConfig`.
        gates: a `gates.BlockGates` for `penalty_form="gate"`, else None.
    """
    lasso = []
    binarizing = []
    for name, module in pruned_linears(model, config.modules).items():
        weight = module.weight
        for direction in config.directions:
            norms = group_norms(weight, config.num_blocks, direction)
            if gates is not None:
                norms = norms * gates.gate(name, direction)
            lasso.append(norms.sum())
        if config.binarizing_weight > 0 and config.penalty_form == "weight":
            binarizing.append((weight * (1 - weight)).sum())
    if config.binarizing_weight > 0 and config.penalty_form == "gate" and gates is not None:
        binarizing.extend((g * (1 - g)).sum() for g in gates.parameters())
    components = {"group_lasso": config.group_lasso_weight * torch.stack(lasso).sum()}
    if config.proximal:
        components["group_lasso"] = components["group_lasso"].detach()
    if binarizing:
        components["binarizing"] = config.binarizing_weight * torch.stack(binarizing).sum()
    return components


@torch.no_grad()
def proximal_group_lasso_(model: nn.Module, config: BlockPruningConfig, step_size: float,
                          keep: dict[str, torch.Tensor] | None = None) -> None:
    r"""The proximal step of the group lasso with step size η (the optimizer's learning rate of the step), in place:
    every group θ_g of the Linears of `config.modules` (each direction of `config.direction` in turn) becomes
    θ_g · max(0, 1 − η·λ₁ / ‖θ_g‖₂): its norm shrinks by η·λ₁, and a group with ‖θ_g‖₂ ≤ η·λ₁ becomes exactly zero
    (the minimiser of ½‖θ − θ_g‖² + η·λ₁‖θ‖₂).

    Args:
        keep: `{Linear name: 0/1 mask [out, in]}`; where given, only the weights under a 0 are shrunk (a Linear
            absent from it: all of its groups).
    """
    shrink = step_size * config.group_lasso_weight
    if shrink <= 0:
        return
    keep = keep or {}
    for name, module in pruned_linears(model, config.modules).items():
        weight = module.weight
        for direction in config.directions:
            norms = group_norms(weight, config.num_blocks, direction)
            factor = group_mask((1 - shrink / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp_min(0),
                                weight.shape, direction)
            if name in keep:
                factor = torch.where(keep[name] > 0, torch.ones_like(factor), factor)
            weight.mul_(factor)


__all__ = ["block_pruning_penalty", "check_model", "group_mask", "group_norms", "proximal_group_lasso_",
           "pruned_linears"]
