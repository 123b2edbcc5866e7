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


def print_report(path: str | None, script: str, argv: list[str] | None, header: list[str], columns: list[str],
                 rows: list[str]) -> None:
    """Print `header` as a bullet list followed by the table of `columns` and `rows` (each row a Markdown table
    line), and with `path` also write it there (`write_markdown`)."""
    table = "\n".join([f"| {' | '.join(columns)} |", "|" + "---|" * len(columns), *rows])
    body = "\n".join(f"- {line}" for line in header) + "\n\n" + table + "\n"
    print(body)
    if path:
        write_markdown(path, script, argv, body)
