"""The standalone code a checkpoint carries so that it loads with `trust_remote_code=True` where this package is not
installed: two files, as transformers' convention, `configuration_binary_bert.py` and `modeling_binary_bert.py`.

transformers' dynamic-module loader (`transformers.dynamic_module_utils`) imports the files named in the config's
`auto_map` from the checkpoint folder (or Hub repo), with the flat files they import as `from .name import`. This
package spans subpackages (`binarization/`, `kernels/`), so each file is generated from the package's own sources
(they cannot drift from them):

- `configuration_binary_bert.py` holds the sources of `configuration_binary_bert` and the modules it imports;
- `modeling_binary_bert.py` imports `BinaryBertConfig` from it and holds the sources of every other module the
  models import (relatively, found by walking the imports from `modeling_binary_bert`, lazy ones included).

Each source is kept verbatim, one quoted line per line (so that the loader's import scan reads only the file's own
imports), and `install_sources` makes them importable, on first use, as the package `<folder module>.hf_binary_bert`
with its subpackages: relative imports, module objects (`from . import reference`) and registration by module name
work as in the package. A module of the package that is not copied (`hub`, `model_card`, the compiled kernels
`kernels/_bitgemm`) raises `ModuleNotFoundError` saying to install the package; without the compiled kernels the
ops run their pure-PyTorch reference twins (same results, slower; see docs/inference.md). The modeling file exports
every class of `modeling_binary_bert.__all__`, so each head class the package has when saving is in the copy.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
from pathlib import Path

PACKAGE = "hf_binary_bert"
CONFIGURATION, MODELING = "configuration_binary_bert", "modeling_binary_bert"
AUTO_MAP = {
    "AutoConfig": "configuration_binary_bert.BinaryBertConfig",
    "AutoModel": "modeling_binary_bert.BinaryBertModel",
    "AutoModelForMaskedLM": "modeling_binary_bert.BinaryBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_binary_bert.BinaryBertForSequenceClassification",
    "AutoModelForQuestionAnswering": "modeling_binary_bert.BinaryBertForQuestionAnswering",
    "AutoModelForTokenClassification": "modeling_binary_bert.BinaryBertForTokenClassification",
    "AutoModelForMultipleChoice": "modeling_binary_bert.BinaryBertForMultipleChoice",
}
# Tooling the models only import inside `push_to_hub` / `save_for_hub`, left out of the copy (it needs `datasets`
# and the card template); in the copy those imports raise a ModuleNotFoundError that says to install the package.
NOT_COPIED = ("hub", "model_card")
_HEADER = '''\
"""{what} of hf_binary_bert, for `from_pretrained(..., trust_remote_code=True)` without the package.

Written by hf_binary_bert.remote_code from the package's sources (edit the package, not this file): {modules}.
They are kept verbatim below and imported as the package `<this folder>.hf_binary_bert` (`install_sources`).
"""

'''


def install_sources(name: str, file: str, sources: dict):
    """Make `sources` (`{module: (is_package, source)}`, module names relative to the package) importable as the
    package `<parent of name>.hf_binary_bert`, executed on first import; returns that package. Called by the
    generated files with their own `__name__` and `__file__`; a second call (the other file) adds its sources."""
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import linecache
    import types

    root = f"{name.rpartition('.')[0]}.hf_binary_bert" if "." in name else "hf_binary_bert_remote"
    package = sys.modules.get(root)
    if package is None:

        class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, fullname, path=None, target=None):
                if not fullname.startswith(f"{root}."):
                    return None
                entry = package.sources.get(fullname[len(root) + 1:])
                if entry is None:
                    raise ModuleNotFoundError(f"hf_binary_bert{fullname[len(root):]} is part of the hf_binary_bert "
                                              "package: pip install hf-binary-bert", name=fullname)
                return importlib.util.spec_from_loader(fullname, self, origin=entry[2], is_package=entry[0])

            def create_module(self, spec):
                return None

            def exec_module(self, module):
                relative = module.__name__[len(root) + 1:]
                is_package, source, origin = package.sources[relative]
                module.__file__ = origin
                filename = f"{origin} [hf_binary_bert/{relative.replace('.', '/')}{'/__init__' if is_package else ''}.py]"
                linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
                exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 (the package's own sources)

        package = types.ModuleType(root, "The hf_binary_bert modules a checkpoint carries (hf_binary_bert.remote_code).")
        package.__path__, package.__package__, package.__file__ = [], root, file
        package.__spec__ = importlib.machinery.ModuleSpec(root, None, is_package=True)
        package.sources, package.folder = {}, os.path.dirname(file)
        sys.modules[root] = package
        sys.meta_path.insert(0, Finder())
    for module, (is_package, source) in sources.items():
        package.sources.setdefault(module, (is_package, source, file))
    return package


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

    def is_package(self, module: str) -> bool:
        return (self.root.joinpath(*module.split(".")) / "__init__.py").is_file()

    def imports(self, module: str) -> set[str]:
        """Package modules (with a source file) that `module` imports relatively, anywhere in its code."""
        found = set()
        parts = module.split(".")
        package = parts if self.is_package(module) else parts[:-1]
        for node in ast.walk(ast.parse(self.file(module).read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            if node.level - 1 > len(package):
                raise ValueError(f"{module}: relative import beyond the package top level")
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for candidate in (target, *(f"{target}.{a.name}".lstrip(".") for a in node.names)):
                if self.file(candidate) is not None:
                    found.add(candidate)
            for i in range(1, len(target.split("."))):  # importing a.b runs a/__init__.py first
                found.add(".".join(target.split(".")[:i]))
        return found

    def closure(self, entry: str) -> list[str]:
        """`entry` and every module it reaches through relative imports, `NOT_COPIED` left out."""
        pending, seen = [entry], []
        while pending:
            module = pending.pop()
            if module in seen or module in NOT_COPIED or self.file(module) is None:
                continue
            seen.append(module)
            pending.extend(self.imports(module))
        return sorted(seen)


def _generated(what: str, modules: list[str], tree: _SourceTree, prelude: str, exports: str) -> str:
    third_party = set()
    blocks = []
    for module in modules:
        source = tree.file(module).read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                third_party.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                third_party.add(node.module.split(".")[0])
        lines = "".join(f"        {line!r},\n" for line in source.splitlines())
        blocks.append(f"    {module!r}: ({tree.is_package(module)}, \"\\n\".join([\n{lines}    ])),\n")
    third_party -= {*sys.stdlib_module_names, "__future__", PACKAGE}
    requirements = "".join(f"import {name}  # noqa: F401  (needed by the sources)\n" for name in sorted(third_party))
    return (
        _HEADER.format(what=what, modules=", ".join(modules))
        + "import os\nimport sys\n\n" + requirements + prelude
        + "\n\n" + inspect.getsource(install_sources)
        + "\n\nSOURCES = {\n" + "".join(blocks) + "}\n"
        + "_package = install_sources(__name__, __file__, SOURCES)\n" + exports
    )


def remote_code_files() -> dict[str, str]:
    """`{file name: source}` of the two files a checkpoint carries (see the module docstring).

    When this module itself runs from such a copy (a model loaded with `trust_remote_code=True`), the copy's own
    files are returned unchanged, so a re-saved checkpoint carries the same code.
    """
    if __package__ != PACKAGE:  # running from the copy: the two files it was installed from
        folder = sys.modules[__package__].folder
        return {f"{m}.py": Path(folder, f"{m}.py").read_text(encoding="utf-8") for m in (CONFIGURATION, MODELING)}
    tree = _SourceTree(Path(__file__).resolve().parent)
    configuration = tree.closure(CONFIGURATION)
    modeling = [m for m in tree.closure(MODELING) if m not in configuration]
    exports_config = (f"BinaryBertConfig = __import__(_package.__name__ + '.{CONFIGURATION}', "
                      "fromlist=['BinaryBertConfig']).BinaryBertConfig\n")
    exports_model = (
        f"_modeling = __import__(_package.__name__ + '.{MODELING}', fromlist=['__all__'])\n"
        "globals().update({name: getattr(_modeling, name) for name in _modeling.__all__})\n"
        "__all__ = list(_modeling.__all__)\n"
    )
    return {
        f"{CONFIGURATION}.py": _generated("The configuration", configuration, tree, "", exports_config),
        f"{MODELING}.py": _generated(
            "The models", modeling, tree,
            f"from .{CONFIGURATION} import BinaryBertConfig  # noqa: F401  (installs the configuration's modules)\n",
            exports_model),
    }


def write_remote_code(save_directory: str | os.PathLike) -> dict[str, str]:
    """Write the two files (`remote_code_files`) into `save_directory`.

    Returns:
        `AUTO_MAP`, the `auto_map` entries of the saved config (one per Auto class this package registers).
    """
    for name, source in remote_code_files().items():
        Path(save_directory, name).write_text(source, encoding="utf-8")
    return dict(AUTO_MAP)


__all__ = ["AUTO_MAP", "install_sources", "remote_code_files", "write_remote_code"]
