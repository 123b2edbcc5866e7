"""Thresholding at ε and physical removal of the structures that are then zero: FFN neurons, attention heads and
query/key dimensions of a head.

After the threshold, a structure whose weights are all zero computes a constant, which is folded into the next
bias, and it is removed from the matrices (transformers 5 dropped `prune_heads`; this is its replacement, generalised
to FFN neurons and per-layer sizes):

- FFN neuron p of layer i: row p of `intermediate.dense` zero → the neuron outputs act(b_p), a constant:
  `output.dense.bias += W_out[:, p]·act(b_p)`; or column p of `output.dense` zero → it contributes nothing.
  Removed: row p of `intermediate.dense` (and its bias), column p of `output.dense`.
- head h: its rows of `value` zero → its output is Σ_j a_ij·b_V = b_V (attention weights sum to 1), folded as
  `attention.output.dense.bias += W_O[:, head h]·b_V[head h]`; or its columns of `attention.output.dense` zero.
  Removed: the head's rows of query/key/value, its columns of the attention output.
- dimension k of a kept head: its row of `key` zero → k_k = b_K,k is the same for every key, so q_k·b_K,k shifts
  every score of a query row by one constant, which softmax ignores; or its row of `query` and its query bias zero →
  q_k = 0. Removed: that row of query and of key. Heads lose different dimensions, while Q and K are viewed as
  [B, h, T, d_qk] with one d_qk per layer: d_qk is the largest number of live dimensions over the layer's heads
  (at least 1), each head keeps its live rows and, up to d_qk, some of its dead ones (which still add 0 or a
  constant). The layer's attention becomes `layer_sizes.QueryKeyPrunedSelfAttention` (scaling d^−½ kept).

Zero rows/columns on the hidden (residual) axis cannot shrink a dense matrix: they stay zero. The folding is exact
for full-precision Linears with full-precision activations; on a binarized student the removed latent weights were
not zero in the binarized forward (α·sign(θ − γ) + γ ≠ 0), so the removal there changes the function (see
docs/pruning.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ..binarization.linear import BinaryLinear
from ..layer_sizes import encoder_layers, head_size, pruned_class, query_key_head_size_of, set_query_key_head_size
from .config import BlockPruningConfig
from .gates import _key as _gate_key
from .penalty import check_model, group_mask, group_norms

# ----------------------------------------------------------------------------------------------------------------
# Threshold


@torch.no_grad()
def threshold_masks(model: nn.Module, config: BlockPruningConfig, gates=None) -> dict[str, torch.Tensor]:
    """`{Linear name: keep mask [out, in] (0/1)}`: 0 on every group whose L2 norm (gated: g·‖θ_group‖) is ≤ ε,
    for each direction of `config.direction` (a weight stays when no group containing it is under ε)."""
    masks = {}
    for name, module in check_model(model, config).items():
        weight = module.weight.detach()
        keep = torch.ones_like(weight)
        for direction in config.directions:
            norms = group_norms(weight, config.num_blocks, direction)
            if gates is not None:
                norms = norms * gates.gate(name, direction).detach()
            keep *= group_mask((norms > config.epsilon).to(weight.dtype), weight.shape, direction)
        masks[name] = keep
    if config.ffn_keep_share is not None or config.heads_keep_share is not None:
        _target_masks_(model, config, masks, gates)
    return masks


def _top_k_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 [n]: 1 on the k largest scores (ties: the lower index), all ones when n ≤ k."""
    keep = torch.zeros_like(scores)
    if len(scores) <= k:
        return keep + 1
    keep[torch.sort(-scores, stable=True).indices[:k]] = 1
    return keep


@torch.no_grad()
def _target_masks_(model: nn.Module, config: BlockPruningConfig, masks: dict, gates=None) -> None:
    """Add the target-width masks (`ffn_keep_share`, `heads_keep_share`) to `masks`, in place: per layer, the
    intermediate rows of the FFN neurons and the value rows of the heads outside the top k get 0 (scores on the
    weights as the ε masks and gates leave them)."""
    names = {id(m): n for n, m in model.named_modules()}

    def weight(module):
        name = names[id(module)]
        w = module.weight.detach()
        if gates is not None and _key_exists(gates, name):
            w = w * gates.mask(name, w.shape).detach()
        return w * masks[name] if name in masks else w

    def restrict(module, row_keep):
        name = names[id(module)]
        mask = row_keep[:, None].expand_as(module.weight).to(module.weight.dtype)
        masks[name] = mask if name not in masks else masks[name] * mask

    for layer in encoder_layers(model):
        if config.ffn_keep_share is not None:
            inter, out = layer.intermediate.dense, layer.output.dense
            k = round(config.ffn_keep_share * model.config.intermediate_size)  # ≥ 1: check_model
            scores = torch.linalg.vector_norm(weight(inter), dim=1) * torch.linalg.vector_norm(weight(out), dim=0)
            restrict(inter, _top_k_rows(scores, k))
        if config.heads_keep_share is not None:
            attention = layer.attention.self
            out = layer.attention.output.dense
            d = attention.attention_head_size
            k = round(config.heads_keep_share * model.config.num_attention_heads)
            heads = attention.value.out_features // d
            by_value = torch.linalg.vector_norm(weight(attention.value).reshape(heads, -1), dim=1)
            by_output = torch.linalg.vector_norm(weight(out).reshape(out.out_features, heads, d), dim=(0, 2))
            restrict(attention.value, _top_k_rows(by_value * by_output, k).repeat_interleave(d))


def _key_exists(gates, name: str) -> bool:
    return any(_gate_key(name, direction) in gates.gates for direction in gates.config.directions)


@torch.no_grad()
def threshold_(model: nn.Module, config: BlockPruningConfig, gates=None) -> int:
    """Zero every group whose L2 norm is ≤ ε, in place (the seed's thresholding step; blocks stay in place, so
    "concatenating them back" is a no-op). Returns the number of weights zeroed."""
    zeroed = 0
    modules = dict(model.named_modules())
    for name, mask in threshold_masks(model, config, gates).items():
        weight = modules[name].weight
        zeroed += int(((mask == 0) & (weight != 0)).sum())
        weight.mul_(mask)
    return zeroed


# ----------------------------------------------------------------------------------------------------------------
# Which structures are dead


def _zero(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Bool per row (dim=1 reduced) / per column (dim=0 reduced): all entries zero."""
    return weight.detach().eq(0).all(dim=dim)


@torch.no_grad()
def dead_structures(model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Per encoder layer: `{"heads": bool [H] (removable), "heads_by_value": bool [H] (its V rows are zero: fold
    b_V), "query_key_dims": bool [H, d_qk] (removable query/key dimensions: the key row zero, or the query row
    and its bias zero), "neurons": bool [I], "neurons_by_input": bool [I] (its intermediate row is zero: fold
    act(b))}` for the weights as they are, or as they would be after applying `masks` (from
    `threshold_masks`)."""
    masks = masks or {}
    names = {id(m): n for n, m in model.named_modules()}

    def weight(module):
        mask = masks.get(names[id(module)])
        return module.weight if mask is None else module.weight * mask

    result = []
    for layer in encoder_layers(model):
        attention = layer.attention.self
        d = attention.attention_head_size
        output = layer.attention.output.dense
        for module in (attention.query, attention.key, attention.value, output, layer.intermediate.dense,
                       layer.output.dense):
            if not isinstance(module, nn.Linear):
                raise ValueError(f"pruning needs the training form (latent weights), found {type(module).__name__}: "
                                 "call model.unfreeze() first")
        by_value = _zero(weight(attention.value).reshape(-1, d * attention.value.in_features), 1)  # [H]
        by_output = _zero(weight(output).reshape(output.out_features, -1, d).transpose(0, 1).flatten(1), 1)  # [H]
        by_input = _zero(weight(layer.intermediate.dense), 1)
        by_out = _zero(weight(layer.output.dense), 0)
        query_bias = attention.query.bias
        zero_query = _zero(weight(attention.query), 1) & (True if query_bias is None else query_bias.detach().eq(0))
        dims = (_zero(weight(attention.key), 1) | zero_query).reshape(len(by_value), -1)  # [H, d_qk]
        result.append({"heads": by_value | by_output, "heads_by_value": by_value & ~by_output, "query_key_dims": dims,
                       "neurons": by_input | by_out, "neurons_by_input": by_input & ~by_out})
    return result


# ----------------------------------------------------------------------------------------------------------------
# Removal


def _effective_weight(module: nn.Module) -> torch.Tensor:
    return module.quantized_weight().detach() if isinstance(module, BinaryLinear) else module.weight.detach()


@torch.no_grad()
def _select_(module: nn.Module, index: torch.Tensor, dim: int) -> None:
    """Keep rows (dim=0) or columns (dim=1) `index` of a Linear (full precision or `BinaryLinear`) in place, with
    its bias, per-row / per-head scales and the elastic input shift."""
    old_out = module.weight.shape[0]
    module.weight = nn.Parameter(module.weight.index_select(dim, index).clone(),
                                 requires_grad=module.weight.requires_grad)
    if dim == 0:
        module.out_features = len(index)
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias[index].clone(), requires_grad=module.bias.requires_grad)
        groups = getattr(module, "num_groups", 1)
        if groups > 1:  # (index ascending) the same number of rows from each group kept: heads, or each head's dims
            per_group = old_out // groups
            kept_groups, counts = torch.unique(index // per_group, return_counts=True)
            if not bool((counts == counts[0]).all()):
                raise ValueError("rows to keep must be the same number from every kept scale group (head)")
            for name in ("weight_scale", "weight_offset"):
                if hasattr(module, name):
                    p = getattr(module, name)
                    setattr(module, name, nn.Parameter(p[kept_groups].clone(), requires_grad=p.requires_grad))
            module.num_groups = len(kept_groups)
    else:
        module.in_features = len(index)
        quantizer = getattr(module, "input_quantizer", None)
        shift = getattr(quantizer, "shift", None)
        if shift is not None and shift.dim() == 1:  # elastic per-input-channel shift β [in]
            quantizer.shift = nn.Parameter(shift[index].clone(), requires_grad=shift.requires_grad)


@torch.no_grad()
def _remove_heads_(layer: nn.Module, keep: torch.Tensor, fold_value: torch.Tensor) -> None:
    attention = layer.attention.self
    out = layer.attention.output.dense
    d = attention.attention_head_size
    if fold_value.any() and attention.value.bias is not None:
        rows = (fold_value.repeat_interleave(d)).nonzero().flatten()
        out.bias += _effective_weight(out)[:, rows] @ attention.value.bias[rows]
    index = torch.arange(attention.num_attention_heads * d, device=keep.device).reshape(-1, d)[keep].flatten()
    d_qk = query_key_head_size_of(attention)
    qk_index = torch.arange(attention.num_attention_heads * d_qk, device=keep.device).reshape(-1, d_qk)[keep].flatten()
    for part in ("query", "key", "value"):
        _select_(getattr(attention, part), qk_index if part != "value" else index, 0)
        quantizer = getattr(attention, f"{part}_quantizer", None)
        shift = getattr(quantizer, "shift", None)
        if shift is not None:
            quantizer.shift = nn.Parameter(shift[keep.nonzero().flatten()].clone(), requires_grad=shift.requires_grad)
    _select_(out, index, 1)
    attention.num_attention_heads = int(keep.sum())
    attention.all_head_size = len(index)


@torch.no_grad()
def _remove_query_key_dims_(layer: nn.Module, dead: torch.Tensor) -> None:
    """Remove the dead query/key dimensions `dead` (bool [h, d_qk]) of a layer's kept heads (module docstring)."""
    attention = layer.attention.self
    heads, d_old = dead.shape
    live = ~dead
    d_new = max(1, int(live.sum(1).max()))
    if d_new == d_old:
        return
    orders = []  # per head: its live dimensions first, then dead ones, the first d_new of them in index order
    for head in range(heads):
        order = torch.cat([live[head].nonzero().flatten(), dead[head].nonzero().flatten()])[:d_new]
        orders.append(order.sort().values)
    order = torch.stack(orders)  # [h, d_new]
    index = (order + torch.arange(heads, device=order.device)[:, None] * d_old).flatten()
    for part in ("query", "key"):
        _select_(getattr(attention, part), index, 0)
        quantizer = getattr(attention, f"{part}_quantizer", None)
        shift = getattr(quantizer, "shift", None)
        if shift is not None:  # [h, 1, d_qk]: the kept dimensions of each head
            kept = shift.gather(2, order[:, None, :].expand(heads, shift.shape[1], d_new))
            quantizer.shift = nn.Parameter(kept.clone(), requires_grad=shift.requires_grad)
    set_query_key_head_size(attention, d_new)


@torch.no_grad()
def _remove_neurons_(layer: nn.Module, keep: torch.Tensor, fold_input: torch.Tensor) -> None:
    inter, out = layer.intermediate.dense, layer.output.dense
    if fold_input.any() and inter.bias is not None and out.bias is not None:
        rows = fold_input.nonzero().flatten()
        out.bias += _effective_weight(out)[:, rows] @ layer.intermediate.intermediate_act_fn(inter.bias[rows])
    index = keep.nonzero().flatten()
    _select_(inter, index, 0)
    _select_(out, index, 1)


def kept_sizes(model: nn.Module) -> dict[str, list[int]]:
    """`{"layer_num_attention_heads": [...], "layer_intermediate_sizes": [...], "layer_query_key_head_sizes":
    [...]}` read from the modules' shapes."""
    heads, widths, qk = [], [], []
    for layer in encoder_layers(model):
        attention = layer.attention.self
        heads.append(attention.value.out_features // attention.attention_head_size)
        qk.append(attention.query.out_features // heads[-1])
        widths.append(layer.intermediate.dense.out_features)
    return {"layer_num_attention_heads": heads, "layer_intermediate_sizes": widths, "layer_query_key_head_sizes": qk}


@torch.no_grad()
def prune_(model: nn.Module, config: BlockPruningConfig | None = None, gates=None) -> dict[str, list[int]]:
    """Threshold (when `config` is given: zero every group ≤ ε; with `gates`, fold them first) and physically
    remove every FFN neuron, attention head and query/key dimension of a head that is then zero, folding their
    constant outputs into the next bias; write the kept sizes into `model.config` (`layer_num_attention_heads`,
    `layer_query_key_head_sizes`, `layer_intermediate_sizes`) so that `save_pretrained` / `from_pretrained` (or
    `load_pruned_bert` for a plain BERT) rebuild the shapes.

    Works on a full-precision BERT and on a binarized one in training form (latent weights).

    Returns:
        The kept sizes, as written into the config.

    Raises:
        ValueError: before anything changes, when the threshold would remove every head or every FFN neuron of a
            layer (naming `BlockPruningConfig.epsilon` and the layer), or for a packed model.
    """
    if gates is not None:
        gates.fold_(model)
    masks = threshold_masks(model, config) if config is not None else {}
    dead = dead_structures(model, masks)
    for i, layer in enumerate(dead):
        for key, what in (("heads", "attention head"), ("neurons", "FFN neuron")):
            if bool(layer[key].all()):
                cause = (f"BlockPruningConfig.epsilon={config.epsilon} would remove" if config is not None
                         else "pruning would remove")
                raise ValueError(f"{cause} every {what} of layer {i} ({len(layer[key])} of {len(layer[key])}); "
                                 "lower epsilon or the group-lasso weight")
    if config is not None:
        threshold_(model, config)
    for layer, plan in zip(encoder_layers(model), dead):
        if plan["heads"].any():
            _remove_heads_(layer, ~plan["heads"], plan["heads_by_value"])
        _remove_query_key_dims_(layer, plan["query_key_dims"][~plan["heads"]])
        if plan["neurons"].any():
            _remove_neurons_(layer, ~plan["neurons"], plan["neurons_by_input"])
    sizes = kept_sizes(model)
    full = {"layer_num_attention_heads": model.config.num_attention_heads,
            "layer_intermediate_sizes": model.config.intermediate_size,
            "layer_query_key_head_sizes": head_size(model.config)}
    for name, values in sizes.items():
        setattr(model.config, name, None if all(v == full[name] for v in values) else values)
    return sizes


# ----------------------------------------------------------------------------------------------------------------
# Plain transformers BERT with per-layer sizes


def load_pruned_bert(path, model_class: type | None = None, **kwargs) -> nn.Module:
    """Load a (pruned or not) full-precision BERT checkpoint, in float32.

    Args:
        path: folder or Hub id.
        model_class: a transformers BERT class; default: the config's first `architectures` entry.
        **kwargs: passed to `from_pretrained`.
    """
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if model_class is None:
        model_class = getattr(transformers, (config.architectures or ["BertModel"])[0])
    kwargs.setdefault("dtype", torch.float32)
    return pruned_class(model_class).from_pretrained(path, **kwargs)


__all__ = ["dead_structures", "kept_sizes", "load_pruned_bert", "prune_", "pruned_class", "threshold_",
           "threshold_masks"]
