"""Walk a transformers BERT and swap its Linear layers for binarized ones (peft-style module replacement)."""

from __future__ import annotations

import re

from torch import nn

from .linear import BinaryLinear, PackedBinaryLinear

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


def num_scale_groups(config, target: str, out_features: int) -> int:
    """How many α/γ a binarized layer gets under `config.scale_granularity`."""
    if config.scale_granularity == "row":
        return out_features
    if config.scale_granularity == "head" and target in _HEAD_GROUPED:
        return config.num_attention_heads
    return 1


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def binarize_(model: nn.Module, config) -> list[str]:
    """Replace, in place, every `nn.Linear` of `model` named in `config.binarized_modules` by a `BinaryLinear`
    (sharing its weight and bias) or, when `config.packed_weights`, by an empty `PackedBinaryLinear`.

    Returns:
        The qualified names of the replaced modules.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear:
            continue
        target = binarized_target(name)
        if target is None or target not in config.binarized_modules:
            continue
        groups = num_scale_groups(config, target, module.out_features)
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
        _set_module(model, name, new)
        replaced.append(name)
    return replaced


def freeze_(model: nn.Module) -> int:
    """Replace every `BinaryLinear` by its packed inference form (`PackedBinaryLinear`). Returns how many."""
    frozen = [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryLinear)]
    for name, module in frozen:
        _set_module(model, name, module.freeze())
    return len(frozen)


def unfreeze_(model: nn.Module, config) -> int:
    """Replace every `PackedBinaryLinear` by a trainable `BinaryLinear` with latent weight α·B + γ. Returns how many."""
    packed = [(n, m) for n, m in model.named_modules() if isinstance(m, PackedBinaryLinear)]
    for name, module in packed:
        _set_module(model, name, module.unfreeze(config.weight_scale, config.ste))
    return len(packed)
