"""Per-layer kept sizes of a pruned BERT: how many attention heads and FFN neurons each encoder layer keeps.

A pruned BERT is a BERT whose layers have different widths. The config says which (two lists, one entry per encoder
layer, stored in `config.json` as plain attributes, for a `BinaryBertConfig` and a transformers `BertConfig` alike):

- `layer_num_attention_heads`: heads kept in layer i; query/key/value are then [h_i·d, hidden] and the attention
  output dense [hidden, h_i·d], with d = hidden_size / num_attention_heads (unchanged);
- `layer_intermediate_sizes`: FFN width of layer i; intermediate dense [I_i, hidden], output dense [hidden, I_i].

`apply_layer_sizes` shrinks the Linears of a freshly built BERT to those shapes (before any weight is loaded), so
`from_pretrained` and the checkpoint validation see the pruned shapes. transformers' `BertSelfAttention` infers the
number of heads from the projection's width (`view(..., -1, d)`), so nothing else of the model changes.
"""

from __future__ import annotations

from torch import nn

SIZE_FIELDS = ("layer_num_attention_heads", "layer_intermediate_sizes")


def check_layer_sizes(config, owner: str = "config") -> None:
    """Check the per-layer size lists of `config` (absent or None: the unpruned geometry).

    Raises:
        ValueError: naming the field, when a list's length is not `num_hidden_layers` or an entry is not an integer
            in [1, num_attention_heads] (heads) or [1, intermediate_size] (FFN width).
    """
    limits = {"layer_num_attention_heads": config.num_attention_heads,
              "layer_intermediate_sizes": config.intermediate_size}
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
    transformers' BERT builds them, before binarization) with the kept sizes of `config`; no-op when the config
    has none. The new Linears are uninitialised (to be loaded or initialised by `post_init`)."""
    if not is_pruned(config):
        return
    check_layer_sizes(config)
    heads = getattr(config, "layer_num_attention_heads", None)
    widths = getattr(config, "layer_intermediate_sizes", None)
    for i, layer in enumerate(encoder_layers(model)):
        attention = layer.attention.self
        if heads is not None and heads[i] != attention.num_attention_heads:
            width = heads[i] * attention.attention_head_size
            for part in ("query", "key", "value"):
                setattr(attention, part, _resized(getattr(attention, part), out_features=width))
            layer.attention.output.dense = _resized(layer.attention.output.dense, in_features=width)
            attention.num_attention_heads = heads[i]
            attention.all_head_size = width
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


__all__ = ["SIZE_FIELDS", "apply_layer_sizes", "check_layer_sizes", "encoder_layers", "is_pruned", "pruned_class"]
