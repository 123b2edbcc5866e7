"""What the benchmark scripts say about the machine they ran on (no torch import: the memory benchmark reads it in a
process that must stay small)."""

from __future__ import annotations

import platform


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo; elsewhere (no /proc) the platform's processor or
    machine name and no flags. On x86 the name is followed by the CPU family and model numbers, e.g.
    "AMD EPYC (family 23, model 1)": virtual machines often show a generic name, and the numbers tell the
    generation apart (AMD family 23 = Zen 1 / Zen 2, 25 = Zen 3 / Zen 4, 26 = Zen 5)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        field = {}
        for line in lines:
            if not line.strip():
                break  # the first processor's fields only
            key, _, value = line.partition(":")
            field.setdefault(key.strip(), value.strip())
        model = field["model name"]
        if "cpu family" in field and "model" in field:
            model += f" (family {field['cpu family']}, model {field['model']})"
        flags = set(field.get("flags", "").split())
        return model, flags
    except (OSError, KeyError):
        return platform.processor() or platform.machine() or "unknown", set()
