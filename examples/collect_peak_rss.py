"""Peak resident memory of whole commands, from their `/usr/bin/time -v` reports, as a markdown table.

Each LOG is a file that ends with GNU time's verbose report (`/usr/bin/time -v COMMAND > LOG 2>&1`): the table lists,
per NAME, the peak resident set size ("Maximum resident set size", KiB → MiB = 2²⁰ bytes), against the 2 GB goal of
issue 16 (2 × 10⁹ bytes = 1,907 MiB), the wall time and the exit status.

    python examples/collect_peak_rss.py NAME=LOG [NAME=LOG ...]
"""
import argparse
import re
from pathlib import Path

GOAL_MIB = 2e9 / 2**20


def time_report(text: str) -> dict:
    """{"peak_mib", "wall", "status"} from GNU time's verbose report in `text`.

    Raises:
        ValueError: when `text` has no "Maximum resident set size" line."""
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if peak is None:
        raise ValueError("no 'Maximum resident set size' line (not a /usr/bin/time -v report)")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    status = re.search(r"Exit status: (-?\d+)", text)
    return {"peak_mib": int(peak.group(1)) / 1024, "wall": wall.group(1) if wall else "?",
            "status": int(status.group(1)) if status else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=LOG")
    args = parser.parse_args(argv)
    lines = ["| run | peak RSS (MiB) | ≤ 2 GB (1,907 MiB) | wall | exit status |", "|---|---|---|---|---|"]
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r}: expected NAME=LOG")
        try:
            report = time_report(Path(path).read_text(errors="replace"))
        except ValueError as err:
            raise SystemExit(f"{path}: {err}") from err
        ok = "yes" if report["peak_mib"] <= GOAL_MIB else "**no**"
        lines.append(f"| {name} | {report['peak_mib']:,.0f} | {ok} | {report['wall']} | {report['status']} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
