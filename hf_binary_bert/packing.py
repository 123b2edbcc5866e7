"""Bit packing of ±1 tensors (8 per byte) and the safetensors-header checks for packed checkpoints.

Layout (see docs/checkpoint-format.md): a ±1 matrix B of shape [out, in] is stored as uint8 [out, ceil(in / 8)];
bit j (least significant first) of byte k in row r holds B[r, 8k + j], 1 for +1 and 0 for −1; padding bits are 0.
"""

from __future__ import annotations

import json
import os
import struct

import torch

_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


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
    return (bits * _BIT_WEIGHTS.to(bits.device)).sum(dim=-1, dtype=torch.uint8)


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
    bits = (packed.unsqueeze(-1) & _BIT_WEIGHTS.to(packed.device)) != 0
    return bits.reshape(*packed.shape[:-1], -1)[..., :n]


# Row b holds the 8 signs (±1, least significant bit first) that byte value b encodes.
_SIGN_TABLE = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).float() * 2 - 1
_sign_tables: dict[tuple, torch.Tensor] = {}


def unpack_signs(packed: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [rows, ceil(n / 8)] → ±1 tensor [rows, n] in `dtype`.

    One table lookup per byte (`F.embedding` into the 256 × 8 sign table), about 9× faster than unpacking bit by bit.

    Raises:
        ValueError: if `packed` is not uint8 or its last dim is not ceil(n / 8).
    """
    _check_packed(packed, n)
    key = (packed.device, dtype)
    if key not in _sign_tables:
        _sign_tables[key] = _SIGN_TABLE.to(device=packed.device, dtype=dtype)
    signs = torch.nn.functional.embedding(packed.long(), _sign_tables[key])
    return signs.reshape(*packed.shape[:-1], -1)[..., :n]


# ----------------------------------------------------------------------------------------------------------------
# safetensors header checks (the format: 8-byte little-endian header length N, N bytes of JSON, then the data)

_SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.uint8: "U8",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.bool: "BOOL",
}


def safetensors_dtype_name(dtype: torch.dtype) -> str:
    return _SAFETENSORS_DTYPES.get(dtype, str(dtype))


_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _check_layout(path, header: dict) -> None:
    """Each entry has a dtype, a shape and [begin, end] data offsets whose length is numel × item size, and the
    entries tile the data section without gap or overlap (what the safetensors format requires).

    Raises:
        ValueError: naming the file and the first offending tensor.
    """
    spans = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            numel = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError
                numel *= d
            if not (isinstance(begin, int) and isinstance(end, int)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: malformed safetensors header entry for tensor {name!r}: {info!r}") from None
        size = _ITEM_BYTES.get(dtype)
        if size is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if begin < 0 or end - begin != numel * size:
            raise ValueError(f"{path}: tensor {name!r} has data offsets [{begin}, {end}], which do not hold "
                             f"{numel} {dtype} values ({numel * size} bytes)")
        spans.append((begin, end, name))
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin != position:
            where = "overlaps" if begin < position else "leaves a gap after"
            other = f"tensor {previous!r}" if previous is not None else "the start of the data"
            raise ValueError(f"{path}: tensor {name!r} (data offsets [{begin}, {end}]) {where} {other}")
        position, previous = end, name


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """Read and check the header of a safetensors file without loading its tensors.

    Returns:
        `{tensor_name: {"dtype": str, "shape": list[int], "data_offsets": [begin, end]}}` (the `__metadata__` entry
        is dropped).

    Raises:
        ValueError: naming the file if the header is unreadable, an entry's data offsets do not match its dtype
            and shape or overlap another's (naming the tensor), or the file is shorter than its header says (a
            truncated download or copy).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"{path}: truncated safetensors file (header says {n} bytes, file has {size - 8})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: unreadable safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    _check_layout(path, header)
    data_end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + n + data_end > size:
        last = max(header, key=lambda k: header[k]["data_offsets"][1])
        raise ValueError(
            f"{path}: truncated safetensors file: tensor {last!r} ends at byte {8 + n + data_end}, "
            f"the file has {size} bytes"
        )
    return header
