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


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """Read and check the header of a safetensors file without loading its tensors.

    Returns:
        `{tensor_name: {"dtype": str, "shape": list[int], "data_offsets": [begin, end]}}` (the `__metadata__` entry
        is dropped).

    Raises:
        ValueError: naming the file if the header is unreadable or the file is shorter than its header says
            (a truncated download or copy).
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
    header.pop("__metadata__", None)
    data_end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + n + data_end > size:
        last = max(header, key=lambda k: header[k]["data_offsets"][1])
        raise ValueError(
            f"{path}: truncated safetensors file: tensor {last!r} ends at byte {8 + n + data_end}, "
            f"the file has {size} bytes"
        )
    return header
