"""What the benchmark scripts say about the machine they ran on (no torch import: the memory benchmark reads it in a
process that must stay small)."""

from __future__ import annotations

import platform


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo; elsewhere (no /proc) the platform's processor or
    machine name and no flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
        return model, set(flags)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown", set()
