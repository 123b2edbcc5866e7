"""Walk a transformers BERT and swap its Linear layers for binarized ones (peft-style module replacement)."""

from __future__ import annotations

import re

from torch import nn
from transformers.activations import GELUActivation
from transformers.models.bert.modeling_bert import BertEmbeddings, BertSelfAttention

from ..layer_sizes import query_key_head_size_of
from .activation import make_activation_quantizer
from .embedding import BinaryEmbedding, PackedBinaryEmbedding
from .linear import ActivationSource, BinaryLinear, PackedBinaryLinear

# binarizable name -> pattern on the module's qualified name inside a BERT (`bert.` prefix optional)
_TARGET_PATTERNS = {
    "query": r"(^|\.)encoder\.layer\.\d+\.attention\.self\.query$",
    "key": r"(^|\.)encoder\.layer\.\d+\.attention\.self\.key$",
    "value": r"(^|\.)encoder\.layer\.\d+\.attention\.self\.value$",
    "attention_output": r"(^|\.)encoder\.layer\.\d+\.attention\.output\.dense$",
    "intermediate": r"(^|\.)encoder\.layer\.\d+\.intermediate\.dense$",
    "output": r"(^|\.)encoder\.layer\.\d+\.output\.dense$",
    "pooler": r"(^|\.)pooler\.dense$",
    "classifier": r"^classifier$",
}
_HEAD_GROUPED = ("query", "key", "value")


def binarized_target(module_name: str) -> str | None:
    """The binarizable name (`"query"`, …, `"classifier"`) of a module path in a BERT, or None."""
    for target, pattern in _TARGET_PATTERNS.items():
        if re.search(pattern, module_name):
            return target
    return None


def num_scale_groups(config, target: str, out_features: int, heads: int | None = None) -> int:
    """How many α/γ a binarized layer gets under `config.scale_granularity`: `heads` (the heads of its layer, fewer
    once pruned; default out_features / d, which holds unless the layer's query/key head size was pruned) for a
    query/key/value Linear under "head"."""
    if config.scale_granularity == "row":
        return out_features
    if config.scale_granularity == "head" and target in _HEAD_GROUPED:
        return heads if heads is not None else out_features // (config.hidden_size // config.num_attention_heads)
    return 1


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _linear_input_signed(config, target: str) -> bool:
    # BiT: the FFN output Linear sees non-negative inputs after ReLU; everything else can be negative.
    return not (config.activation_quantizer == "elastic" and target == "output" and config.hidden_act == "relu")


def binarize_(model: nn.Module, config) -> list[str]:
    """Binarize a transformers BERT in place, as `config` says:

    - every `nn.Linear` named in `config.binarized_modules` becomes a `BinaryLinear` (sharing its weight and bias)
      or, when `config.packed_weights`, an empty `PackedBinaryLinear`; below 32 activation bits each gets an
      `input_quantizer` (`activation.make_activation_quantizer`), and when the FFN's output Linear gets one, the
      FFN's GELU is wrapped in `linear.ActivationSource` (same values; the Linear's backward pass then keeps the
      GELU's input, which the GELU keeps anyway, instead of its output; not ReLU, whose backward keeps its output);
    - below 32 activation bits every `BertSelfAttention` gets `query_quantizer`, `key_quantizer`,
      `value_quantizer` (signed, shift per head channel) and, for softmax attention, `probs_quantizer` (unsigned),
      used by the attention functions of `hf_binary_bert.attention`;
    - with `embedding_bits=1` the tables named in `config.binarized_embeddings` become `BinaryEmbedding` (or empty
      `PackedBinaryEmbedding`), with the `embedding_weight_scale` scheme (default: `weight_scale`).

    Returns:
        The qualified names of the replaced Linear and embedding modules.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear:
            continue
        target = binarized_target(name)
        if target is None or target not in config.binarized_modules:
            continue
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        heads = parent.num_attention_heads if isinstance(parent, BertSelfAttention) else None
        groups = num_scale_groups(config, target, module.out_features, heads)
        if config.packed_weights:
            new = PackedBinaryLinear(
                module.in_features,
                module.out_features,
                module.bias is not None,
                num_groups=groups,
                has_offset=config.weight_scale == "learned_offset",
                device=module.weight.device,
                dtype=module.weight.dtype,
            )
        else:
            new = BinaryLinear.from_linear(module, weight_scale=config.weight_scale, num_groups=groups, ste=config.ste)
        new.input_quantizer = make_activation_quantizer(
            config, signed=_linear_input_signed(config, target), shift_shape=(module.in_features,)
        )
        _set_module(model, name, new)
        replaced.append(name)
        if target == "output" and config.activation_bits < 32:  # the FFN's GELU marks its output (h → f(h))
            intermediate = model.get_submodule(name.rpartition(".")[0].rpartition(".")[0] + ".intermediate")
            if isinstance(intermediate.intermediate_act_fn, (GELUActivation, nn.GELU)):
                intermediate.intermediate_act_fn = ActivationSource(intermediate.intermediate_act_fn)
    for name, module in list(model.named_modules()):
        if isinstance(module, BertSelfAttention) and config.activation_bits < 32:
            heads, d = module.num_attention_heads, module.attention_head_size
            d_qk = query_key_head_size_of(module)  # smaller in a pruned layer (layer_sizes.py)
            for part, size in (("query", d_qk), ("key", d_qk), ("value", d)):
                setattr(module, f"{part}_quantizer", make_activation_quantizer(config, shift_shape=(heads, 1, size)))
            if config.attention_type == "softmax":
                module.probs_quantizer = make_activation_quantizer(config, signed=False)
        if isinstance(module, BertEmbeddings) and config.embedding_bits == 1:
            for table in config.binarized_embeddings:
                embedding = getattr(module, f"{table}_embeddings")
                if config.packed_weights:
                    new = PackedBinaryEmbedding(embedding.num_embeddings, embedding.embedding_dim,
                                                has_offset=_embedding_scheme(config) == "learned_offset",
                                                device=embedding.weight.device)
                else:
                    new = BinaryEmbedding.from_embedding(embedding, weight_scale=_embedding_scheme(config),
                                                         ste=config.ste)
                setattr(module, f"{table}_embeddings", new)
                replaced.append(f"{name}.{table}_embeddings" if name else f"{table}_embeddings")
    return replaced


def _embedding_scheme(config) -> str:
    """The `weight_scale` scheme of the 1-bit embedding tables (`BinaryBertConfig.embedding_weight_scale`, else
    `weight_scale`; configs written before the field: `weight_scale`)."""
    return getattr(config, "embedding_weight_scale", None) or config.weight_scale


def freeze_(model: nn.Module) -> int:
    """Replace every `BinaryLinear` / `BinaryEmbedding` by its packed inference form (`PackedBinaryLinear` /
    `PackedBinaryEmbedding`). Returns how many."""
    frozen = [(n, m) for n, m in model.named_modules() if isinstance(m, (BinaryLinear, BinaryEmbedding))]
    for name, module in frozen:
        _set_module(model, name, module.freeze())
    return len(frozen)


def unfreeze_(model: nn.Module, config) -> int:
    """Replace every `PackedBinaryLinear` / `PackedBinaryEmbedding` by its trainable form with latent weight
    α·B + γ. Returns how many."""
    packed = [(n, m) for n, m in model.named_modules() if isinstance(m, (PackedBinaryLinear, PackedBinaryEmbedding))]
    for name, module in packed:
        scheme = _embedding_scheme(config) if isinstance(module, PackedBinaryEmbedding) else config.weight_scale
        _set_module(model, name, module.unfreeze(scheme, config.ste))
    return len(packed)
