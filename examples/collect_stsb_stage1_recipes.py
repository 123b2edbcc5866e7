"""The Markdown table of `examples/stsb_stage1_recipes.py` runs (issue 16 §2), one row per JSON line of its
results file, with the command that reproduces each row.

    python examples/collect_stsb_stage1_recipes.py RESULTS.jsonl [TEACHER SPLIT] > docs/measurements/stsb-stage1-recipes.md
"""
import json
import sys

DEFAULTS = {"bits": 4, "steps": 100, "lr": 5e-4, "head_lr": None, "pooled": 0.0, "hidden": 1.0, "pred": 1.0,
            "warmup": 0.1, "seed": 42, "batch": 16, "seq": 64, "task": "stsb", "eval_every": 0,
            "scale_lr": None, "norm_pred": False, "head": "classifier,pooler"}


def command(run: dict, teacher: str, split: str) -> str:
    flags = [f"--name {run['name']}"]
    for key, default in DEFAULTS.items():
        if run.get(key, default) != default:
            value = run[key]
            flags.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return f"python examples/stsb_stage1_recipes.py --teacher {teacher} --data-dir {split} " + " ".join(flags)


def main(path: str, teacher: str = "TEACHER", split: str = "SPLIT") -> None:
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    runs = [r for r in runs if r["task"] == "stsb" and r["steps"] >= 100]
    teacher_row = runs[0]["teacher"]
    print(f"Teacher on the same {575} held-out pairs: Pearson {teacher_row['pearson']:.4f}, output std "
          f"{teacher_row['std']:.3f}.\n")
    print("| run | act. bits | steps | lr | head lr | pooled w | Pearson | Pearson at steps 40 / 80 (/ 120 / 160) | out. std | skill "
          "(R² vs teacher) | ℓ_pred first → last 20 steps | ℓ_hid first → last | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        hist = r["history"]
        mid = " / ".join(f"{h['pearson']:.3f}" for h in hist if "pearson" in h)
        print(f"| {r['name']} | {r['bits']} | {r['steps']} | {r['lr']:g} | {r['head_lr'] or ''} | {r['pooled'] or ''} "
              f"| **{r['pearson']:.4f}** | {mid} | {r['std']:.3f} | {r['skill']:.3f} | {hist[0]['pred']:.2f} → "
              f"{hist[-1]['pred']:.2f} | {hist[0]['hidden']:.2f} → {hist[-1]['hidden']:.2f} | {r['seconds']} |")
    print("\nCommands:\n")
    for r in runs:
        print(f"- `{command(r, teacher, split)}`")


if __name__ == "__main__":
    main(*sys.argv[1:])
