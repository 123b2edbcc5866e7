"""The standalone code a checkpoint carries so that it loads with `trust_remote_code=True` where this package is not
installed.

transformers' dynamic-module loader (`transformers.dynamic_module_utils`) imports the files named in the config's
`auto_map` from the checkpoint folder (or Hub repo) and fetches the files they import relatively, but only flat ones:
`from .name import ...` → `name.py` next to it. This package spans subpackages (`binarization/`, `kernels/`), so
`save_pretrained` writes a flat copy of the modules the models need: `binarization/linear.py` becomes
`binarization_linear.py`, a subpackage's `__init__.py` becomes `binarization.py`, and every relative import is
rewritten to the flat names. The sources are the package's own files, so the copy cannot drift from them.

A module imported as a module object (`from . import reference`) is rewritten to `from . import kernels_reference as
reference`, preceded by `from .kernels_reference import __name__ as ...` on the same line, because the loader only
follows imports of the form `from .name import`. The compiled kernels (`kernels/_bitgemm`) are not copied: without
the package, the ops run their pure-PyTorch reference twins (same results, slower; see docs/inference.md).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

PACKAGE = "hf_binary_bert"
# Modules whose classes `auto_map` names; the copy holds them and everything they import relatively.
ENTRY_MODULES = ("configuration_binary_bert", "modeling_binary_bert")
AUTO_MAP = {
    "AutoConfig": "configuration_binary_bert.BinaryBertConfig",
    "AutoModel": "modeling_binary_bert.BinaryBertModel",
    "AutoModelForMaskedLM": "modeling_binary_bert.BinaryBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_binary_bert.BinaryBertForSequenceClassification",
}
# Tooling the models only import inside `push_to_hub`, left out of the copy (it needs `datasets` and the card
# template); in the copy those imports raise an ImportError that says to install the package.
NOT_COPIED = ("hub", "model_card")
_NOT_COPIED_ERROR = 'raise ImportError("{module} is part of the hf_binary_bert package: pip install hf-binary-bert")'
_HEADER = (
    "# Standalone copy of hf_binary_bert/{source} for `from_pretrained(..., trust_remote_code=True)` without the\n"
    "# hf_binary_bert package (written by hf_binary_bert.remote_code; edit the package, not this file).\n"
)


class _SourceTree:
    """The modules of a package under `root` (module name relative to the package → file)."""

    def __init__(self, root: Path):
        self.root = root

    def file(self, module: str) -> Path | None:
        """`a.b` → `root/a/b.py` or `root/a/b/__init__.py`; None when there is no such source file (e.g. the
        compiled extension)."""
        if not module:
            return None
        base = self.root.joinpath(*module.split("."))
        return next((c for c in (base.with_suffix(".py"), base / "__init__.py") if c.is_file()), None)

    def is_extension(self, module: str) -> bool:
        """Whether `module` is a compiled extension (`name.<abi tag>.so` / `.pyd`), which the copy leaves out."""
        base = self.root.joinpath(*module.split("."))
        return any(p.suffix in (".so", ".pyd") for p in base.parent.glob(f"{base.name}.*"))

    def is_package(self, module: str) -> bool:
        return (self.root.joinpath(*module.split(".")) / "__init__.py").is_file()


def _flat_name(module: str) -> str:
    return module.replace(".", "_")


def _resolve(node: ast.ImportFrom, module: str, tree: _SourceTree) -> str:
    """Package-relative name of the module a relative `from ... import` refers to ('' for the package itself)."""
    parts = module.split(".") if module else []
    package = parts if tree.is_package(module) else parts[:-1]
    if node.level - 1 > len(package):
        raise ValueError(f"{module}: relative import beyond the package top level")
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def _rewrite(source: str, module: str, tree: _SourceTree) -> tuple[str, set[str]]:
    """The source with its relative imports made flat, and the package modules it imports."""
    lines = source.splitlines(keepends=True)
    edits, needed = [], set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        target = _resolve(node, module, tree)
        if target in NOT_COPIED:
            edits.append((node.lineno, node.end_lineno,
                          " " * node.col_offset + _NOT_COPIED_ERROR.format(module=f"{PACKAGE}.{target}") + "\n"))
            continue
        statements = []
        kept = []  # names imported from the target module itself
        for alias in node.names:
            submodule = f"{target}.{alias.name}" if target else alias.name
            if tree.file(submodule) is not None and alias.name != "*":  # a module object
                needed.add(submodule)
                flat = _flat_name(submodule)
                statements.append(f"from .{flat} import __name__ as _{flat}_module_name")
                statements.append(f"from . import {flat} as {alias.asname or alias.name}")
            elif tree.is_extension(submodule) or tree.file(target) is None:  # left as it is (fails without the package)
                kept = None
                break
            else:
                kept.append(alias.name if alias.asname is None else f"{alias.name} as {alias.asname}")
        if kept is None:
            continue
        if kept:
            needed.add(target)
            statements.insert(0, f"from .{_flat_name(target)} import {', '.join(kept)}")
        indent = " " * node.col_offset
        edits.append((node.lineno, node.end_lineno, f"{indent}{'; '.join(statements)}\n"))
    for first, last, text in sorted(edits, reverse=True):
        lines[first - 1 : last] = [text]
    return "".join(lines), needed


def remote_code_files() -> dict[str, str]:
    """`{file name: source}` of the flat copy of the modules `ENTRY_MODULES` need.

    When this module itself runs from such a copy (a model loaded with `trust_remote_code=True`), the copy's own
    files are returned unchanged, so a re-saved checkpoint carries the same code.
    """
    here = Path(__file__).resolve().parent
    tree = _SourceTree(here)
    if __package__ != PACKAGE:  # already flat: copy the files the loader fetched
        return {f"{m}.py": tree.file(m).read_text(encoding="utf-8") for m in _closure(tree)}
    files = {}
    pending, seen = list(ENTRY_MODULES), set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = tree.file(module)
        rewritten, needed = _rewrite(path.read_text(encoding="utf-8"), module, tree)
        header = _HEADER.format(source=path.relative_to(here).as_posix())
        files[f"{_flat_name(module)}.py"] = header + rewritten
        pending.extend(needed - seen)
    return dict(sorted(files.items()))


def _closure(tree: _SourceTree) -> list[str]:
    """Modules of a flat copy reachable from `ENTRY_MODULES` through `from .name import`."""
    pending, seen = list(ENTRY_MODULES), []
    while pending:
        module = pending.pop()
        if module in seen or tree.file(module) is None:
            continue
        seen.append(module)
        for node in ast.walk(ast.parse(tree.file(module).read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                pending.append(node.module)
    return sorted(seen)


def write_remote_code(save_directory: str | os.PathLike) -> dict[str, str]:
    """Write the flat copy (`remote_code_files`) into `save_directory`.

    Returns:
        `AUTO_MAP`, the `auto_map` entries of the saved config (one per Auto class this package registers).
    """
    for name, source in remote_code_files().items():
        Path(save_directory, name).write_text(source, encoding="utf-8")
    return dict(AUTO_MAP)


__all__ = ["AUTO_MAP", "remote_code_files", "write_remote_code"]
