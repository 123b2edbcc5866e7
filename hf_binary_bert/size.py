"""Size of a checkpoint on disk, per component, read from its safetensors header(s).

Units: MB = 10⁶ bytes (the `_mib` fields give MiB = 2²⁰ bytes).
"""

from __future__ import annotations

import os

from .checkpoint import read_checkpoint_header, resolve_safetensors_files

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

    Returns:
        `{"packed_weights", "scales", "embeddings", "other"}` tensor data in MB, `"header"` (safetensors headers,
        MB), `"total"` (sum of the files, MB) and `"total_mib"` (MiB). Works for full-precision BERT checkpoints too
        (their `packed_weights` and `scales` are 0).
    """
    files = resolve_safetensors_files(path, **hub_kwargs)
    header = read_checkpoint_header(files)
    sizes = dict.fromkeys(COMPONENTS, 0)
    for name, info in header.items():
        begin, end = info["data_offsets"]
        sizes[component_of(name)] += end - begin
    total = sum(os.path.getsize(f) for f in files)
    report = {k: v / 1e6 for k, v in sizes.items()}
    report["header"] = (total - sum(sizes.values())) / 1e6
    report["total"] = total / 1e6
    report["total_mib"] = total / 2**20
    return report


def format_size_report(report: dict[str, float]) -> str:
    """One line per component, in MB."""
    rows = [f"{name:>15}: {report[name]:9.3f} MB" for name in (*COMPONENTS, "header")]
    rows.append(f"{'total':>15}: {report['total']:9.3f} MB ({report['total_mib']:.2f} MiB)")
    return "\n".join(rows)
