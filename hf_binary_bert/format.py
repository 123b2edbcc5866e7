"""The packed checkpoint format, in one place (docs/checkpoint-format.md): bit packing, the packed form of a
binarized weight, the state-dict layout and its dtype rules, reading safetensors headers, validating a checkpoint
against a model before loading, and the size of a checkpoint by component.

Bits: a ±1 matrix B of shape [out, in] is stored as uint8 [out, ceil(in / 8)]; bit j (least significant first) of
byte k in row r holds B[r, 8k + j], 1 for +1 and 0 for −1; padding bits are 0.

Weights: a binarized weight W ≈ α·B + γ (per group of rows) is stored as `<name>.weight_packed` (B, uint8),
`<name>.weight_scale` (α, float32 [G]) and, with an offset, `<name>.weight_offset` (γ, float32 [G]).
"""

from __future__ import annotations

import functools
import json
import os
import struct

import torch
from huggingface_hub import HfApi, constants
from safetensors import SafetensorError, safe_open
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file


# The module's constant tensors are made on first use: importing the package allocates no tensor (so the CLI can
# still turn on PyTorch's huge pages, `cli.use_huge_pages`).
@functools.cache
def _bit_weights() -> torch.Tensor:
    """uint8 [8]: the value of each bit of a byte, least significant first (1, 2, 4, … 128)."""
    return torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def packed_length(n: int) -> int:
    """Bytes needed for n bits: ceil(n / 8)."""
    return (n + 7) // 8


def pack_bits(positive: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor [..., n] (True = +1) along its last dim into uint8 [..., ceil(n / 8)]."""
    if positive.dtype != torch.bool:
        raise TypeError(f"pack_bits expects a bool tensor, got {positive.dtype}")
    n = positive.shape[-1]
    pad = packed_length(n) * 8 - n
    bits = torch.nn.functional.pad(positive.to(torch.uint8), (0, pad))
    bits = bits.reshape(*positive.shape[:-1], -1, 8)
    return (bits * _bit_weights().to(bits.device)).sum(dim=-1, dtype=torch.uint8)


def _check_packed(packed: torch.Tensor, n: int) -> None:
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed bits must be uint8, got {packed.dtype}")
    if packed.shape[-1] != packed_length(n):
        raise ValueError(f"packed bits have last dim {packed.shape[-1]}, expected ceil({n} / 8) = {packed_length(n)}")


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `pack_bits`: uint8 [..., ceil(n / 8)] → bool [..., n].

    Raises:
        ValueError: if `packed` is not uint8 or its last dim is not ceil(n / 8).
    """
    _check_packed(packed, n)
    bits = (packed.unsqueeze(-1) & _bit_weights().to(packed.device)) != 0
    return bits.reshape(*packed.shape[:-1], -1)[..., :n]


@functools.cache
def _sign_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[256, 8] in `dtype` on `device`: row b holds the 8 signs (±1, least significant bit first) that byte value b
    encodes."""
    table = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).float() * 2 - 1
    return table.to(device=device, dtype=dtype)


def unpack_signs(packed: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [rows, ceil(n / 8)] → ±1 tensor [rows, n] in `dtype`.

    One table lookup per byte (`F.embedding` into the 256 × 8 sign table), about 9× faster than unpacking bit by bit.

    Raises:
        ValueError: if `packed` is not uint8 or its last dim is not ceil(n / 8).
    """
    _check_packed(packed, n)
    signs = torch.nn.functional.embedding(packed.long(), _sign_table(packed.device, dtype))
    return signs.reshape(*packed.shape[:-1], -1)[..., :n]



# ----------------------------------------------------------------------------------------------------------------
# The packed form of one binarized weight


def per_row(values: torch.Tensor, rows: int) -> torch.Tensor:
    """[G] per-group values → [rows, 1], group g covering rows g·rows/G … (g+1)·rows/G − 1."""
    return values.repeat_interleave(rows // values.shape[0]).unsqueeze(1)


@torch.no_grad()
def pack_weight(weight: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Packed form of a binarized weight: `weight_packed` uint8 [out, ceil(in / 8)] holding B = sign(W − γ),
    `weight_scale` float32 [G] (α) and, when `gamma` is given, `weight_offset` float32 [G] (γ).

    Args:
        weight: latent weight W [out, in].
        alpha: α [G], G dividing `out`.
        gamma: γ [G] or None.
    """
    shifted = weight if gamma is None else weight - per_row(gamma, weight.shape[0])
    tensors = {"weight_packed": pack_bits(shifted >= 0), "weight_scale": alpha.detach().float().clone()}
    if gamma is not None:
        tensors["weight_offset"] = gamma.detach().float().clone()
    return tensors


def dequantize(packed: torch.Tensor, n: int, alpha: torch.Tensor, gamma: torch.Tensor | None, dtype=torch.float32):
    """W = α·B + γ [rows, n] from packed signs uint8 [rows, ceil(n / 8)] and α, γ [G] (G dividing rows)."""
    rows = packed.shape[0]
    weight = per_row(alpha.to(dtype), rows) * unpack_signs(packed, n, dtype)
    if gamma is not None:
        weight = weight + per_row(gamma.to(dtype), rows)
    return weight


# ----------------------------------------------------------------------------------------------------------------
# The state-dict layout of a packed checkpoint and its dtype rules

# Tensors that are always stored in float32, whatever `fp_dtype`: weight scales α / offsets γ and the parameters of
# the activation quantizers (steps, shifts). They are tiny and the forward is sensitive to them. The exception: the
# per-row α / γ of 1-bit embedding tables (one per token, not tiny) are stored in `config.embedding_scale_dtype`
# (float32 unless set otherwise; `EMBEDDING_SCALE_SUFFIXES`), and the elastic shifts β, stored in
# `config.activation_shift_dtype` (the dtype every forward rounds them to; `SHIFT_SUFFIX`).
FLOAT32_SUFFIXES = (".weight_scale", ".weight_offset", "_quantizer.step", "_quantizer.shift")
EMBEDDING_SCALE_SUFFIXES = ("_embeddings.weight_scale", "_embeddings.weight_offset")
SHIFT_SUFFIX = "_quantizer.shift"
# Student tensors a teacher never has: scales and quantizer state, initialised by the student itself.
STUDENT_ONLY_SUFFIXES = (*FLOAT32_SUFFIXES, "_quantizer.calibrated")
# Heads and pooler may be absent from a checkpoint of another head type (as in transformers, they are then newly
# initialised with a warning); everything else must be there.
HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "pooler.", "bert.pooler.")
_FLOAT_DTYPES = {"F32", "F16", "BF16"}


def scale_dtype(key: str, config) -> torch.dtype:
    """The dtype a packed checkpoint stores the scale / offset / quantizer tensor `key` (`FLOAT32_SUFFIXES`) in:
    `config.embedding_scale_dtype` for the per-row α / γ of a 1-bit embedding table, `config.activation_shift_dtype`
    for an elastic shift β (each float32 for configs written before the field existed), float32 for every other
    one."""
    if key.endswith(EMBEDDING_SCALE_SUFFIXES):
        return getattr(torch, getattr(config, "embedding_scale_dtype", "float32"))
    if key.endswith(SHIFT_SUFFIX):
        return getattr(torch, getattr(config, "activation_shift_dtype", "float32"))
    return torch.float32


def packed_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the packed checkpoint of a binarized model (format: docs/checkpoint-format.md).

    Each binarized Linear (embedding) in training form contributes `<name>.weight_packed` (uint8
    [rows, ceil(cols/8)]), `<name>.weight_scale` (float32 [G]), `<name>.weight_offset` (float32 [G], offset scheme)
    — from its `packed_tensors`, the one packing path, which `freeze` uses too — and, for a Linear, `<name>.bias` in
    `fp_dtype`. Activation-quantizer steps stay float32, the elastic shifts β are written in
    `config.activation_shift_dtype`; the α / γ of 1-bit embedding tables are written in
    `config.embedding_scale_dtype`; embedding tables are float16 with `embedding_bits=16`; every other floating
    tensor is cast to `config.fp_dtype`. Layers already packed are written as they are (their embedding scales in
    `embedding_scale_dtype` too).

    Args:
        model: a binarized model (its `config` gives `fp_dtype` and `embedding_bits`).
        state_dict: the training-form tensors to pack (default: `model.state_dict()`), e.g. the one a Trainer
            gathered.
    """
    source = model.state_dict() if state_dict is None else state_dict
    trainable = {n: m for n, m in model.named_modules() if hasattr(m, "packed_tensors")}
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})  # written once, under the tied-to name
    packed: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        if key in tied:
            continue
        module_name, _, leaf = key.rpartition(".")
        module = trainable.get(module_name)
        if module is not None and leaf in ("weight", "weight_scale", "weight_offset"):
            if leaf == "weight":
                own = {name: source.get(f"{module_name}.{name}") for name in ("weight", "weight_scale", "weight_offset")}
                for name, value in module.packed_tensors(own).items():
                    packed[f"{module_name}.{name}"] = value.cpu()
            continue
        if tensor.is_floating_point():
            tensor = tensor.to(stored_float_dtype(key, model.config))
        packed[key] = tensor.detach().cpu()
    for key in [k for k in packed if k.endswith(EMBEDDING_SCALE_SUFFIXES)]:
        packed[key] = packed[key].to(scale_dtype(key, model.config))  # the packed per-row α / γ of 1-bit tables
    return packed


def stored_float_dtype(key: str, config) -> torch.dtype:
    """The dtype `packed_state_dict` writes the floating tensor `key` of a model with `config` in (binarized
    weights aside, which it packs): `scale_dtype` for the scales / offsets / quantizer tensors
    (`FLOAT32_SUFFIXES`), float16 for an embedding table with `embedding_bits=16`, `config.fp_dtype` for every
    other one (LayerNorm, biases, full-precision Linears and embedding tables, heads)."""
    if key.endswith(FLOAT32_SUFFIXES):
        return scale_dtype(key, config)
    if config.embedding_bits == 16 and key.endswith("_embeddings.weight"):
        return torch.float16
    return getattr(torch, config.fp_dtype)


def stored_dtypes(model: torch.nn.Module) -> dict[str, torch.dtype]:
    """`{parameter name: dtype}` for each floating parameter of a binarized model (training form) that
    `packed_state_dict` writes in another dtype than the parameter's own (`stored_float_dtype`): with
    `fp_dtype="float16"` the LayerNorms, biases, position / token-type tables, pooler and heads; the 16-bit
    embedding tables; the per-row α / γ of 1-bit tables with `embedding_scale_dtype`; elastic shifts β with
    `activation_shift_dtype`. Binarized weights (packed, 1 bit) are not in it. Empty with `fp_dtype="float32"`
    and the other dtypes at their float32 defaults, and for a model whose config has no `fp_dtype` (not a
    binarized model). Tied parameters appear once, under the name `named_parameters` gives them.

    `DistillationTrainer` rounds these parameters to their dtype in every forward of the student and of a
    binarized teacher (`round_ste`, with `DistillationArguments.train_in_fp_dtype`), so the model it trains and
    scores is the model it saves, and a multi-step stage is taught by the previous stage as saved.
    """
    if getattr(model.config, "fp_dtype", None) is None:  # not a binarized model (e.g. a full-precision teacher)
        return {}
    binarized = {f"{name}.weight" for name, module in model.named_modules() if hasattr(module, "packed_tensors")}
    dtypes = {}
    for name, parameter in model.named_parameters():
        if name in binarized or not parameter.is_floating_point():
            continue
        dtype = stored_float_dtype(name, model.config)
        if dtype != parameter.dtype:
            dtypes[name] = dtype
    return dtypes


# ----------------------------------------------------------------------------------------------------------------
# Reading safetensors headers (safetensors.safe_open; huggingface_hub for Hub repos without downloading)

_SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.uint8: "U8",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.bool: "BOOL",
}
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def safetensors_dtype_name(dtype: torch.dtype) -> str:
    return _SAFETENSORS_DTYPES.get(dtype, str(dtype))


def _tensor_info(dtype: str, shape: list[int]) -> dict:
    numel = 1
    for d in shape:
        numel *= d
    return {"dtype": dtype, "shape": list(shape), "nbytes": numel * _ITEM_BYTES.get(dtype, 0)}


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """Read the header of a safetensors file with `safetensors.safe_open`, without loading its tensors.

    Returns:
        `{tensor_name: {"dtype": str ("F32", "U8", …), "shape": list[int], "nbytes": int}}`.

    Raises:
        ValueError: naming the file when safetensors refuses it: the header is unreadable, the file is shorter
            than its header says (a truncated download or copy), or an entry's data offsets do not match its dtype
            and shape or overlap another's (then naming the tensor; `_explain_refusal`).
    """
    try:
        with safe_open(path, framework="pt") as f:
            header = {}
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                view = f.get_slice(name)
                header[name] = _tensor_info(view.get_dtype(), view.get_shape())
    except SafetensorError as err:
        raise ValueError(_explain_refusal(path, err)) from None
    unknown = next((n for n, t in header.items() if t["dtype"] not in _ITEM_BYTES), None)
    if unknown is not None:
        raise ValueError(f"{path}: tensor {unknown!r} has unsupported dtype {header[unknown]['dtype']!r}")
    return header


def _explain_refusal(path, err: SafetensorError) -> str:
    """Why safetensors refused `path`, naming the tensor at fault where its message does not (safetensors' own
    message otherwise). The raw header (8-byte little-endian length N, N bytes of JSON, then the data) is read only
    here, to find the first entry whose data offsets do not hold numel × item size bytes, that overlaps or leaves a
    gap before another, or that ends past the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path}: not a safetensors file (only {size} bytes)"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"{path}: truncated safetensors file (header says {n} bytes, file has {size - 8})"
        try:
            header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise TypeError("not a JSON object")
        except (UnicodeDecodeError, ValueError, TypeError) as json_err:
            return f"{path}: unreadable safetensors header ({json_err})"
    header.pop("__metadata__", None)
    spans = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            expected = _tensor_info(dtype, shape)["nbytes"]
        except (KeyError, TypeError, ValueError):
            return f"{path}: malformed safetensors header entry for tensor {name!r}: {info!r}"
        if dtype not in _ITEM_BYTES:
            return f"{path}: tensor {name!r} has unsupported dtype {dtype!r}"
        if not (isinstance(begin, int) and isinstance(end, int)) or begin < 0 or end - begin != expected:
            return (f"{path}: tensor {name!r} has data offsets [{begin}, {end}], which do not hold "
                    f"{expected // _ITEM_BYTES[dtype]} {dtype} values ({expected} bytes)")
        spans.append((begin, end, name))
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin != position:
            where = "overlaps" if begin < position else "leaves a gap after"
            other = f"tensor {previous!r}" if previous is not None else "the start of the data"
            return f"{path}: tensor {name!r} (data offsets [{begin}, {end}]) {where} {other}"
        position, previous = end, name
    if 8 + n + position > size:
        return f"{path}: truncated safetensors file: tensor {previous!r} ends at byte {8 + n + position}, the file has {size} bytes"
    return f"{path}: not a readable safetensors file ({err})"


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
    """Merged safetensors headers of all files: `{name: {"dtype", "shape", "nbytes"}}`."""
    header: dict = {}
    for file in files:
        header.update(read_safetensors_header(file))
    return header


# ----------------------------------------------------------------------------------------------------------------
# Validation of a checkpoint against the model its config describes, before any weight is loaded


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
    e.g. on the meta device, in any dtype) needs, with the right dtypes and shapes.

    Rules: a packed sign tensor (`*.weight_packed`) must be uint8; scales, offsets and quantizer parameters
    (`FLOAT32_SUFFIXES`) float32, except the α / γ of 1-bit embedding tables (`config.embedding_scale_dtype`) and
    the elastic shifts β (`config.activation_shift_dtype`; `scale_dtype`); other floating tensors any float dtype;
    shapes must match exactly. Tensors of the base model must all be present, and the base model must not have
    extra tensors (that means the config does not describe the file); task-head tensors may be absent (newly
    initialised, as in transformers). When the layout is right, the values are checked too (`value_problems`: no
    NaN / inf, no negative `mean_abs` α, 0/1 flags).

    Raises:
        ValueError: naming the first offending tensor (and the file when it is truncated or its header's data
            offsets overlap).
    """
    pickled = [f for f in files if not str(f).endswith(".safetensors")]
    if pickled:
        raise ValueError(f"{os.path.dirname(pickled[0]) or pickled[0]}: no {SAFE_WEIGHTS_NAME} (or sharded index) "
                         "found; only safetensors checkpoints load")
    header = read_checkpoint_header(files)
    problems = []
    used = set()
    config = getattr(model, "config", None)
    for key, (dtype, shape) in expected_layout(model).items():
        stored = _locate(key, header, prefix)
        if stored is None:
            if not key.startswith(HEAD_PREFIXES):
                problems.append(f"missing tensor {key!r} ({safetensors_dtype_name(dtype)} {list(shape)})")
            continue
        used.add(stored)
        info = header[stored]
        want = "U8" if key.endswith(".weight_packed") else \
            safetensors_dtype_name(scale_dtype(key, config)) if key.endswith(FLOAT32_SUFFIXES) else \
            safetensors_dtype_name(dtype)
        if key.endswith((".weight_packed", *FLOAT32_SUFFIXES)) or not dtype.is_floating_point:
            dtype_ok = info["dtype"] == want
        else:
            dtype_ok = info["dtype"] in _FLOAT_DTYPES
        if not dtype_ok:
            problems.append(f"tensor {stored!r} has dtype {info['dtype']}, expected {want}")
        if tuple(info["shape"]) != shape:
            problems.append(f"tensor {stored!r} has shape {info['shape']}, expected {list(shape)} from the config")
    base_keys = {k for k in header if k not in used and not k.startswith(HEAD_PREFIXES)}
    if base_keys:
        problems.append(f"unexpected tensor {min(base_keys)!r} (and {len(base_keys) - 1} more) not described by the config")
    if not problems:
        problems = value_problems(files, getattr(config, "weight_scale", None),
                                  getattr(config, "embedding_weight_scale", None))
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ValueError(f"Malformed checkpoint {os.path.dirname(files[0]) or files[0]}: {problems[0]}{more}")


def value_problems(files: list[str], weight_scale: str | None = None,
                   embedding_weight_scale: str | None = None) -> list[str]:
    """What is wrong with the values (not the layout) of a checkpoint's tensors, one message per tensor:

    - any floating tensor with a NaN or ±inf (scales α, offsets γ, quantizer steps and shifts, but also biases,
      embeddings, LayerNorm: each would make every output NaN);
    - a negative α (`*.weight_scale`) under `weight_scale="mean_abs"`, where α = mean|W − γ| cannot be negative
      (the learned schemes may hold any finite α: a learned scale is free to change sign; a quantizer step ≤ 0 is
      used as max(s, 1e-5), as in training, so it is not refused either);
    - a `calibrated` flag other than 0 or 1.

    Call it after the layout checks of `validate_checkpoint` (which it assumes: known dtypes, matching shapes).
    The α of 1-bit embedding tables follow `embedding_weight_scale` when given (else `weight_scale`).
    """
    problems = []
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensor = f.get_tensor(name)
                if tensor.is_floating_point():
                    bad = ~torch.isfinite(tensor)
                    if bad.any():
                        value = tensor.reshape(-1)[bad.reshape(-1)][0].item()
                        problems.append(f"tensor {name!r} has {int(bad.sum())} non-finite value(s) (e.g. {value})")
                        continue
                scheme = (embedding_weight_scale or weight_scale) if name.endswith(EMBEDDING_SCALE_SUFFIXES) \
                    else weight_scale
                if name.endswith(".weight_scale") and scheme == "mean_abs" and (tensor < 0).any():
                    problems.append(f"tensor {name!r} has a negative scale α ({tensor.min().item()}); "
                                    "weight_scale='mean_abs' stores α = mean|W| ≥ 0")
                elif name.endswith("_quantizer.calibrated") and (tensor.numel() != 1 or tensor.item() not in (0, 1)):
                    problems.append(f"tensor {name!r} (a flag) must be 0 or 1, got {tensor.tolist()}")
    return problems
# ----------------------------------------------------------------------------------------------------------------
# Size of a checkpoint on disk, per component, read from its safetensors header(s).
# Units: MB = 10⁶ bytes (the `_mib` fields give MiB = 2²⁰ bytes).

COMPONENTS = ("packed_weights", "scales", "embeddings", "other")


def component_of(tensor_name: str) -> str:
    """Which size component a checkpoint tensor counts under."""
    if tensor_name.endswith(".weight_packed"):
        return "packed_weights"
    if tensor_name.endswith((".weight_scale", ".weight_offset")):
        return "scales"
    if ".embeddings." in f".{tensor_name}":
        return "embeddings"
    return "other"


def checkpoint_size_report(path: str | os.PathLike, **hub_kwargs) -> dict[str, float]:
    """Bytes of a safetensors checkpoint (folder or Hub id) by component, in MB (10⁶ bytes).

    A local folder is read with `safetensors.safe_open`; a Hub repo (a `path` that is not a folder) through
    `huggingface_hub.HfApi.get_safetensors_metadata` and `get_paths_info`, which read the headers and file sizes
    without downloading the weights (`revision`, `token` from `hub_kwargs`; offline or with `local_files_only`,
    from the local cache).

    Returns:
        `{"packed_weights", "scales", "embeddings", "other"}` tensor data in MB, `"header"` (safetensors headers,
        MB), `"total"` (sum of the files, MB) and `"total_mib"` (MiB). Works for full-precision BERT checkpoints too
        (their `packed_weights` and `scales` are 0).

    Raises:
        ValueError: no safetensors weights, or a file safetensors refuses (see `read_safetensors_header`).
    """
    if os.path.isdir(path) or constants.HF_HUB_OFFLINE or hub_kwargs.get("local_files_only"):
        files = resolve_safetensors_files(path, **hub_kwargs)
        header = read_checkpoint_header(files)
        total = sum(os.path.getsize(f) for f in files)
    else:
        header, total = _hub_header_and_total(str(path), hub_kwargs.get("revision"), hub_kwargs.get("token"))
    sizes = dict.fromkeys(COMPONENTS, 0)
    for name, info in header.items():
        sizes[component_of(name)] += info["nbytes"]
    report = {k: v / 1e6 for k, v in sizes.items()}
    report["header"] = (total - sum(sizes.values())) / 1e6
    report["total"] = total / 1e6
    report["total_mib"] = total / 2**20
    return report


def _hub_header_and_total(repo_id: str, revision: str | None, token) -> tuple[dict, int]:
    """Merged headers (as `read_checkpoint_header`) and total bytes of the safetensors files of a Hub repo."""
    api = HfApi(token=token)
    metadata = api.get_safetensors_metadata(repo_id, revision=revision)
    header = {name: {"dtype": t.dtype, "shape": list(t.shape), "nbytes": t.data_offsets[1] - t.data_offsets[0]}
              for file in metadata.files_metadata.values() for name, t in file.tensors.items()}
    paths = api.get_paths_info(repo_id, sorted(metadata.files_metadata), revision=revision)
    return header, sum(p.size for p in paths)


def format_size_report(report: dict[str, float]) -> str:
    """One line per component, in MB."""
    rows = [f"{name:>15}: {report[name]:9.3f} MB" for name in (*COMPONENTS, "header")]
    rows.append(f"{'total':>15}: {report['total']:9.3f} MB ({report['total_mib']:.2f} MiB)")
    return "\n".join(rows)
