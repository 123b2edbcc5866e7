"""The `--markdown` output of the benchmark scripts: the docs include these files verbatim (docs/measurements/)."""

from __future__ import annotations

import os
import sys


def write_markdown(path: str, script: str, argv: list[str] | None, body: str) -> None:
    """Write `body` to `path`, after the command line that produced it (`python benchmarks/<script> <argv>`; argv
    defaults to `sys.argv[1:]`)."""
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", f"benchmarks/{os.path.basename(script)}", *args])
    with open(path, "w") as out:
        out.write(f"`{command}`\n\n{body}")
