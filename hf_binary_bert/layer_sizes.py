"""Per-layer kept sizes of a pruned BERT: how many attention heads, query/key dimensions per head and FFN neurons each
encoder layer keeps.

A pruned BERT is a BERT whose layers have different widths. The config says which (three lists, one entry per encoder
layer, stored in `config.json` as plain attributes, for a `BinaryBertConfig` and a transformers `BertConfig` alike):

- `layer_num_attention_heads`: heads kept in layer i; query/key/value are then [h_i·d, hidden] and the attention
  output dense [hidden, h_i·d], with d = hidden_size / num_attention_heads (unchanged);
- `layer_query_key_head_sizes`: the query/key head size d_qk,i ≤ d of layer i (dimensions of every head whose
  query or key rows were removed); query and key are then [h_i·d_qk,i, hidden], value and the attention output keep
  d. Dimension k of a head enters the attention only through its score Σ_k q_k·k_k, so Q and K may be narrower than
  V; the scores keep the trained scaling d^−½ (Vaswani et al., 2017, eq. 1, with the d the model was trained with);
- `layer_intermediate_sizes`: FFN width of layer i; intermediate dense [I_i, hidden], output dense [hidden, I_i].

`apply_layer_sizes` shrinks the Linears of a freshly built BERT to those shapes (before any weight is loaded), so
`from_pretrained` and the checkpoint validation see the pruned shapes. transformers' `BertSelfAttention` infers the
number of heads from the projection's width (`view(..., -1, d)`), so heads need nothing else; a layer with
d_qk < d gets `QueryKeyPrunedSelfAttention`, whose forward views Q and K with d_qk.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import EncoderDecoderCache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import BertSelfAttention, eager_attention_forward

SIZE_FIELDS = ("layer_num_attention_heads", "layer_intermediate_sizes", "layer_query_key_head_sizes")


def head_size(config) -> int:
    """d = hidden_size / num_attention_heads, the (value) head size of every layer."""
    return config.hidden_size // config.num_attention_heads


def layer_attention_sizes(config, layer: int) -> tuple[int, int, int]:
    """(heads h_i, query/key head size d_qk,i, value head size d) of encoder layer `layer` under the per-layer sizes
    of `config` (absent: the full geometry)."""
    heads = getattr(config, "layer_num_attention_heads", None)
    qk = getattr(config, "layer_query_key_head_sizes", None)
    d = head_size(config)
    return (heads[layer] if heads else config.num_attention_heads), (qk[layer] if qk else d), d


class QueryKeyPrunedSelfAttention(BertSelfAttention):
    """transformers' `BertSelfAttention` whose query and key heads are narrower than its value heads: Q and K are
    [B, T, h·d_qk] viewed as [B, h, T, d_qk], V [B, T, h·d] as [B, h, T, d]; the scores keep `scaling` = d^−½ (the
    trained one). The class of a layer's attention is switched to this one by `apply_layer_sizes` (no new
    parameters); attribute `query_key_head_size` = d_qk. Everything else, the attention interface included (eager,
    SDPA, the package's quantized attention functions: each takes Q/K and V head sizes apart), is the parent's."""

    query_key_head_size: int

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, cache=None, **kwargs):
        if cache is None and "past_key_values" in kwargs:  # the parent's deprecated name
            cache = kwargs.pop("past_key_values")
        input_shape = hidden_states.shape[:-1]
        query_key_shape = (*input_shape, -1, self.query_key_head_size)
        value_shape = (*input_shape, -1, self.attention_head_size)
        query_layer = self.query(hidden_states).view(*query_key_shape).transpose(1, 2)
        key_layer = self.key(hidden_states).view(*query_key_shape).transpose(1, 2)
        value_layer = self.value(hidden_states).view(*value_shape).transpose(1, 2)
        if cache is not None:
            current = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
            key_layer, value_layer = current.update(key_layer, value_layer, self.layer_idx, kwargs=kwargs)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                    eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self, query_layer, key_layer, value_layer, attention_mask,
            dropout=0.0 if not self.training else self.dropout.p, scaling=self.scaling, **kwargs)
        return attn_output.reshape(*input_shape, -1).contiguous(), attn_weights


def query_key_head_size_of(attention: BertSelfAttention) -> int:
    """The query/key head size d_qk an attention module views Q and K with (its value head size unless pruned)."""
    return getattr(attention, "query_key_head_size", attention.attention_head_size)


def set_query_key_head_size(attention: BertSelfAttention, size: int) -> None:
    """Make `attention` view Q and K with head size `size` (its class becomes `QueryKeyPrunedSelfAttention`; back
    to `BertSelfAttention` when `size` is the value head size). Its Linears are not touched."""
    if size == attention.attention_head_size:
        if type(attention) is QueryKeyPrunedSelfAttention:
            attention.__class__ = BertSelfAttention
            attention.__dict__.pop("query_key_head_size", None)
        return
    if type(attention) not in (BertSelfAttention, QueryKeyPrunedSelfAttention):
        raise ValueError(f"query/key head sizes need transformers' BertSelfAttention, found {type(attention).__name__}")
    attention.__class__ = QueryKeyPrunedSelfAttention
    attention.query_key_head_size = size


def check_layer_sizes(config, owner: str = "config") -> None:
    """Check the per-layer size lists of `config` (absent or None: the unpruned geometry).

    Raises:
        ValueError: naming the field, when a list's length is not `num_hidden_layers` or an entry is not an integer
            in [1, num_attention_heads] (heads) or [1, intermediate_size] (FFN width).
    """
    limits = {"layer_num_attention_heads": config.num_attention_heads,
              "layer_intermediate_sizes": config.intermediate_size,
              "layer_query_key_head_sizes": head_size(config)}
    for name in SIZE_FIELDS:
        sizes = getattr(config, name, None)
        if sizes is None:
            continue
        if not isinstance(sizes, (list, tuple)) or len(sizes) != config.num_hidden_layers:
            raise ValueError(f"{owner}.{name} must be a list of {config.num_hidden_layers} integers (one per encoder "
                             f"layer), got {sizes!r}")
        for i, size in enumerate(sizes):
            if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= limits[name]:
                raise ValueError(f"{owner}.{name}[{i}] must be an integer in [1, {limits[name]}], got {size!r}")


def is_pruned(config) -> bool:
    """Whether `config` gives per-layer kept sizes."""
    return any(getattr(config, name, None) is not None for name in SIZE_FIELDS)


def _resized(linear: nn.Linear, in_features: int | None = None, out_features: int | None = None) -> nn.Linear:
    return nn.Linear(in_features or linear.in_features, out_features or linear.out_features, linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype)


def encoder_layers(model: nn.Module):
    """The `BertLayer`s of a BERT (base model or a model with a head)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    return base.encoder.layer


def apply_layer_sizes(model: nn.Module, config) -> None:
    """Rebuild the attention and FFN Linears of every encoder layer of `model` (plain `nn.Linear`s, as
    transformers' BERT builds them, before binarization) with the kept sizes of `config`, and switch the attention
    of each layer with d_qk < d to `QueryKeyPrunedSelfAttention`; no-op when the config has none. The new Linears
    are uninitialised (to be loaded or initialised by `post_init`)."""
    if not is_pruned(config):
        return
    check_layer_sizes(config)
    widths = getattr(config, "layer_intermediate_sizes", None)
    for i, layer in enumerate(encoder_layers(model)):
        attention = layer.attention.self
        heads, qk, d = layer_attention_sizes(config, i)
        if heads != attention.num_attention_heads:
            width = heads * d
            for part in ("query", "key", "value"):
                setattr(attention, part, _resized(getattr(attention, part), out_features=width))
            layer.attention.output.dense = _resized(layer.attention.output.dense, in_features=width)
            attention.num_attention_heads = heads
            attention.all_head_size = width
        if attention.query.out_features != heads * qk:
            for part in ("query", "key"):
                setattr(attention, part, _resized(getattr(attention, part), out_features=heads * qk))
        set_query_key_head_size(attention, qk)
        if widths is not None and widths[i] != layer.intermediate.dense.out_features:
            layer.intermediate.dense = _resized(layer.intermediate.dense, out_features=widths[i])
            layer.output.dense = _resized(layer.output.dense, in_features=widths[i])


_PRUNED_CLASSES: dict[type, type] = {}


def pruned_class(cls: type) -> type:
    """A subclass of a transformers BERT class (same name) that builds the per-layer sizes of its config
    (`layer_sizes.apply_layer_sizes`) after `__init__`, so that `from_pretrained` loads a pruned BERT checkpoint.
    transformers 5 has no per-layer sizes (its `pruned_heads` is gone)."""
    if cls not in _PRUNED_CLASSES:
        def __init__(self, config, *args, **kwargs):
            cls.__init__(self, config, *args, **kwargs)
            apply_layer_sizes(self, config)

        _PRUNED_CLASSES[cls] = type(cls.__name__, (cls,), {
            "__init__": __init__, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": f"`{cls.__name__}` with the per-layer sizes of a pruned config."})
    return _PRUNED_CLASSES[cls]


__all__ = ["SIZE_FIELDS", "QueryKeyPrunedSelfAttention", "apply_layer_sizes", "check_layer_sizes", "encoder_layers",
           "head_size", "is_pruned", "layer_attention_sizes", "pruned_class", "query_key_head_size_of",
           "set_query_key_head_size"]
