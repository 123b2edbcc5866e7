"""One logged training loss of several `distill` runs side by side, as a markdown table (rows: steps, columns: runs).

Reads each run's `distill_results.json` (a finished run; a multi-step run's stages in order, their steps counted from
the start of the run) or, for a run stopped early, a `trainer_state.json` in the folder itself (an archived copy) or in
the newest `checkpoint-*` folder in it or in its `.partial` work folder.

    python examples/collect_loss_curves.py --key loss_prediction NAME=RUN_DIR [NAME=RUN_DIR ...]
"""
import argparse
import json
from pathlib import Path


def log_history(run: Path) -> list[dict]:
    results = run / "distill_results.json"
    if results.is_file():
        data = json.loads(results.read_text())
        stages = data.get("stages") or []
        if len(stages) < 2:
            return data.get("log_history", [])
        history, offset = [], 0  # the top-level log_history is the last stage's only
        for stage in stages:
            history += [{**row, "step": row["step"] + offset} for row in stage["log_history"] if "step" in row]
            offset += stage["steps"]
        return history
    if (run / "trainer_state.json").is_file():
        return json.loads((run / "trainer_state.json").read_text())["log_history"]
    for folder in (run, run.with_name(run.name + ".partial")):
        checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        if checkpoints:
            return json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]
    raise SystemExit(f"{run}: no distill_results.json with a log history and no checkpoint-*/trainer_state.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", default="loss_prediction", help="the logged value to tabulate")
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    args = parser.parse_args(argv)
    columns = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            parser.error(f"{spec!r}: expected NAME=RUN_DIR")
        columns[name] = {row["step"]: row[args.key] for row in log_history(Path(path)) if args.key in row}
        if not columns[name]:
            parser.error(f"{path}: no logged {args.key!r}")
    steps = sorted(set().union(*columns.values()))
    print("| step | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for step in steps:
        cells = [f"{col[step]:.3f}" if step in col else "" for col in columns.values()]
        print(f"| {step} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
