"""Checks of a checkpoint's tensors against the model its config describes, before any weight is loaded.

`from_pretrained` on a `BinaryBertPreTrainedModel` calls `validate_checkpoint`, so a malformed packed checkpoint (a
missing scale, a wrong packed length or dtype, a truncated file, a config that does not match the tensors) raises a
`ValueError` naming the tensor instead of loading with re-initialised weights.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from .packing import read_safetensors_header, safetensors_dtype_name

_FLOAT_DTYPES = {"F32", "F16", "BF16"}
# Tensors that are always stored in float32, whatever `fp_dtype`: weight scales α / offsets γ and the parameters of
# the activation quantizers (steps, shifts). They are tiny and the forward is sensitive to them.
FLOAT32_SUFFIXES = (".weight_scale", ".weight_offset", "_quantizer.step", "_quantizer.shift")
# Heads and pooler may be absent from a checkpoint of another head type (as in transformers, they are then newly
# initialised with a warning); everything else must be there.
_HEAD_PREFIXES = ("cls.", "classifier.", "pooler.", "bert.pooler.")
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def resolve_safetensors_files(path: str | os.PathLike, **hub_kwargs) -> list[str]:
    """Local paths of the safetensors file(s) of a checkpoint (a folder or a Hub id; sharded or not).

    Raises:
        ValueError: if the checkpoint has no safetensors weights (pickle checkpoints are never loaded).
    """
    kwargs = {k: v for k, v in hub_kwargs.items() if k in _HUB_KWARGS and v is not None}
    single = cached_file(path, SAFE_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False, **kwargs)
    if single is not None:
        return [single]
    index = cached_file(path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False, **kwargs)
    if index is None:
        raise ValueError(f"{path}: no {SAFE_WEIGHTS_NAME} (or sharded index) found; only safetensors checkpoints load")
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    return [cached_file(path, shard, **kwargs) for shard in shards]


def read_checkpoint_header(files: list[str]) -> dict:
    """Merged safetensors headers of all files: `{name: {"dtype", "shape", "data_offsets"}}`."""
    header: dict = {}
    for file in files:
        header.update(read_safetensors_header(file))
    return header


def expected_layout(model: torch.nn.Module) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """`{name: (dtype, shape)}` of every tensor a checkpoint of `model` must hold (tied copies left out)."""
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    return {k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items() if k not in tied}


def _locate(key: str, header: dict, prefix: str) -> str | None:
    """The name under which `key` (a model key) is stored: as is, or with/without the base-model prefix."""
    for candidate in (key, f"{prefix}.{key}", key.removeprefix(f"{prefix}.")):
        if candidate in header:
            return candidate
    return None


def validate_checkpoint(model: torch.nn.Module, files: list[str], prefix: str = "bert") -> None:
    """Check that the safetensors `files` hold exactly the tensors `model` (built from the checkpoint's config,
    e.g. on the meta device) needs, with the right dtypes and shapes.

    Rules: a packed sign tensor (`*.weight_packed`) must be uint8; scales, offsets and quantizer parameters
    (`FLOAT32_SUFFIXES`) float32; other floating tensors any float dtype; shapes must match exactly. Tensors of the
    base model must all be present, and the base model must not have extra tensors (that means the config does not
    describe the file); task-head tensors may be absent (newly initialised, as in transformers). When the layout is
    right, the values are checked too (`value_problems`: no NaN / inf, no negative `mean_abs` α, 0/1 flags).

    Raises:
        ValueError: naming the first offending tensor (and the file when it is truncated or its header's data
            offsets overlap).
    """
    header = read_checkpoint_header(files)
    problems = []
    used = set()
    for key, (dtype, shape) in expected_layout(model).items():
        stored = _locate(key, header, prefix)
        if stored is None:
            if not key.startswith(_HEAD_PREFIXES):
                problems.append(f"missing tensor {key!r} ({safetensors_dtype_name(dtype)} {list(shape)})")
            continue
        used.add(stored)
        info = header[stored]
        want = safetensors_dtype_name(dtype)
        if key.endswith((".weight_packed", *FLOAT32_SUFFIXES)) or not dtype.is_floating_point:
            dtype_ok = info["dtype"] == want
        else:
            dtype_ok = info["dtype"] in _FLOAT_DTYPES
        if not dtype_ok:
            problems.append(f"tensor {stored!r} has dtype {info['dtype']}, expected {want}")
        if tuple(info["shape"]) != shape:
            problems.append(f"tensor {stored!r} has shape {info['shape']}, expected {list(shape)} from the config")
    base_keys = {k for k in header if k not in used and not k.startswith(_HEAD_PREFIXES)}
    if base_keys:
        problems.append(f"unexpected tensor {sorted(base_keys)[0]!r} (and {len(base_keys) - 1} more) not described by the config")
    if not problems:
        problems = value_problems(files, getattr(getattr(model, "config", None), "weight_scale", None))
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ValueError(f"Malformed checkpoint {os.path.dirname(files[0]) or files[0]}: {problems[0]}{more}")


def value_problems(files: list[str], weight_scale: str | None = None) -> list[str]:
    """What is wrong with the values (not the layout) of a checkpoint's tensors, one message per tensor:

    - any floating tensor with a NaN or ±inf (scales α, offsets γ, quantizer steps and shifts, but also biases,
      embeddings, LayerNorm: each would make every output NaN);
    - a negative α (`*.weight_scale`) under `weight_scale="mean_abs"`, where α = mean|W − γ| cannot be negative
      (the learned schemes may hold any finite α: a learned scale is free to change sign; a quantizer step ≤ 0 is
      used as max(s, 1e-5), as in training, so it is not refused either);
    - a `calibrated` flag other than 0 or 1.

    Call it after the layout checks of `validate_checkpoint` (which it assumes: known dtypes, matching shapes).
    """
    problems = []
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                if tensor.is_floating_point():
                    bad = ~torch.isfinite(tensor)
                    if bad.any():
                        value = tensor.reshape(-1)[bad.reshape(-1)][0].item()
                        problems.append(f"tensor {name!r} has {int(bad.sum())} non-finite value(s) (e.g. {value})")
                        continue
                if name.endswith(".weight_scale") and weight_scale == "mean_abs" and (tensor < 0).any():
                    problems.append(f"tensor {name!r} has a negative scale α ({tensor.min().item()}); "
                                    "weight_scale='mean_abs' stores α = mean|W| ≥ 0")
                elif name.endswith("_quantizer.calibrated") and (tensor.numel() != 1 or tensor.item() not in (0, 1)):
                    problems.append(f"tensor {name!r} (a flag) must be 0 or 1, got {tensor.tolist()}")
    return problems
