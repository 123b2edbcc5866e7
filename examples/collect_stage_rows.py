"""Each stage's dev metric of multi-step runs, per seed and as mean ± sample standard deviation, recipe by recipe,
from the runs' `stages.json` (written by `hf-binary-bert distill --multi-step`, archived by results_1_1_1.py):

    python examples/collect_stage_rows.py --recipe "without the attention KL" RUN RUN RUN \
        --recipe "with the attention KL" RUN RUN RUN [--markdown FILE]

RUN: a run folder holding `stages.json` (the table's columns are the runs in the order given, listed under it).
Every recipe must have the same stages (e.g. W1A4, W1A2, W1A1); the metric is the first one each stage row reports.

Raises:
    SystemExit: a RUN without `stages.json`, or recipes whose stages differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def stage_metrics(run: Path) -> tuple[str, dict[str, float]]:
    """(metric name, {stage: value}) of one run's student stages (the teacher row left out)."""
    path = run / "stages.json"
    if not path.exists():
        raise SystemExit(f"{run}: no stages.json (not a finished multi-step run)")
    rows = [r for r in json.loads(path.read_text()) if r["stage"] != "teacher"]
    name = next(iter(rows[0]["metrics"]))
    return name, {r["stage"]: r["metrics"][name] for r in rows}


def table(recipes: list[tuple[str, list[Path]]]) -> str:
    """The Markdown table: one row per recipe and stage; per-run values, then mean ± std over the runs."""
    stages, lines, width = None, [], max(len(runs) for _, runs in recipes)
    for label, runs in recipes:
        per_run = [stage_metrics(run) for run in runs]
        metric = per_run[0][0]
        names = list(per_run[0][1])
        if stages is None:
            stages = names
            header = [f"run {i + 1}" for i in range(width)]
            lines = [f"| recipe | stage | {' | '.join(header)} | mean ± std ({metric}) |",
                     "|---|---|" + "---|" * len(header) + "---|"]
        if names != stages or any(list(values) != stages for _, values in per_run):
            raise SystemExit(f"recipe {label!r}: stages {names} differ from {stages}")
        for stage in stages:
            values = [values[stage] for _, values in per_run]
            spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            cells = " | ".join([f"{v:.4f}" for v in values] + [""] * (width - len(values)))
            lines.append(f"| {label} | {stage} | {cells} | {statistics.mean(values):.4f}{spread} |")
    lines.append("")
    for label, runs in recipes:
        lines.append(f"- {label}: " + ", ".join(f"run {i + 1} = `{run}`" for i, run in enumerate(runs)))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", nargs="+", action="append", required=True, metavar=("LABEL", "RUN"),
                        help="a label, then its run folders")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    recipes = []
    for label, *runs in args.recipe:
        if not runs:
            parser.error(f"--recipe {label!r}: no run folders")
        recipes.append((label, [Path(r) for r in runs]))
    text = table(recipes)
    print(text, end="")
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
