"""Checks of plain argument values shared by the data loaders, the recipes and the command line."""

from __future__ import annotations

__all__ = ["check_count"]


def check_count(name: str, value, unit: str, *, optional: bool = True) -> None:
    """Raises `ValueError` "`name` must be a positive number of `unit`, got …" unless `value` is an int >= 1 (or
    None, when `optional`); a bool is not a count. The command line turns the message into one naming the flag."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive number of {unit}, got {value!r}")
