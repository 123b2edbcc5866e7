"""Markdown tables of `examples/stsb_long_stage1.py` runs (issue 16 §2–3): per run, the held-out scores at every
evaluation of every stage, the stage table, the cost, and the command that reproduces it. When a run has a
multi-step schedule, a summary table comes first: one row per run with each stage's steps and end figures and the
final student's Pearson as a share of the teacher's (to compare stage budgets of one total).

    python examples/collect_stsb_long_stage1.py RESULTS.jsonl [TEACHER SPLIT] > docs/measurements/stsb-long-stage1.md

"Leaves the mean" is the collapse criterion of `distillation.stages.stage_diagnostics`: skill (R² against the
original teacher's scores on the held-out pairs) ≥ 0.1; reported per stage: the evaluation from which it holds at
every later one (and whether an earlier one crossed and fell back).
"""
import json
import os
import sys

DEFAULTS = {"schedule": None, "bits": 4, "stage_budget": None, "steps": 1000, "eval_steps": 100, "lr": 5e-4,
            "batch": 16, "seq": 64, "seed": 42}
THRESHOLD = 0.1


def command(run: dict, teacher: str, split: str) -> str:
    flags = [f"--name {run['name']}"]
    for key, default in DEFAULTS.items():
        if run.get(key, default) != default:
            flags.append(f"--{key.replace('_', '-')} {run[key]}")
    flags += [f"--option '{item}'" for item in run.get("option", [])]
    flags += [f"--binarization '{item}'" for item in run.get("binarization", [])]
    if run.get("data_dir") and os.path.basename(os.path.normpath(run["data_dir"])) != os.path.basename(split):
        split = os.path.join(os.path.dirname(split), os.path.basename(os.path.normpath(run["data_dir"])))  # augmented
    return (f"OMP_NUM_THREADS=1 python examples/stsb_long_stage1.py --teacher {teacher} --data-dir {split} "
            f"--output-dir OUT --results R.jsonl " + " ".join(flags))


def mean_loss(losses: list[dict], last_step: int, key: str, window: int = 100) -> str:
    """Mean of the logged training loss `key` over the `window` steps up to `last_step`."""
    vals = [h[key] for h in losses if last_step - window < h["step"] <= last_step and key in h]
    return f"{sum(vals) / len(vals):.2f}" if vals else ""


def options(run: dict) -> str:
    """The run's extra training options (`--option KEY=VALUE`) and student settings (`--binarization KEY=VALUE`),
    or "—" (none: the defaults of when it ran)."""
    return ", ".join(run.get("option", []) + run.get("binarization", [])) or "—"


def single_stage_summary(runs: list[dict], teacher_pearson: float) -> None:
    """One row per single-stage run: Pearson / skill at every evaluation, then the end as a share of the teacher."""
    steps = sorted({e["step"] for r in runs for e in r["stages"][0]["evals"] if e["step"] > 0})
    print("| run | stage | lr | options | " + " | ".join(f"step {s}: Pearson / skill" for s in steps)
          + " | end Pearson (× teacher) |")
    print("|---|---|---|---|" + "---|" * len(steps) + "---|")
    for run in runs:
        evals = {e["step"]: e for e in run["stages"][0]["evals"]}
        cells = [f"{evals[s]['pearson']:.3f} / {evals[s]['skill']:.3f}" if s in evals else "" for s in steps]
        m = run["stages"][0]["metrics"]
        print(f"| {run['name']} | W1A{run['bits']}, {run['steps']} steps | {run['lr']:g} | {options(run)} | "
              + " | ".join(cells) + f" | **{m['pearson']:.4f}** ({m['pearson'] / teacher_pearson:.2f}) |")
    print()


def summary(runs: list[dict], teacher_pearson: float) -> None:
    """One row per multi-step run: each stage's steps, teacher and end Pearson / skill, then the final student."""
    print("| run | options | stage budget | steps per stage | " + " | ".join(
        "stage (taught by): Pearson / skill" for _ in range(max(len(r["stages"]) for r in runs)))
          + " | final Pearson (× teacher) | final Spearman | final skill |")
    print("|---|---|---|---|" + "---|" * max(len(r["stages"]) for r in runs) + "---|---|---|")
    for run in runs:
        stages = run["stages"]
        cells = [f"{s['stage']} ({s['taught_by']}): {s['metrics']['pearson']:.4f} / {s['skill']:.3f}"
                 + (" COLLAPSED" if s["collapsed"] else "") for s in stages]
        m = stages[-1]["metrics"]
        print(f"| {run['name']} | {options(run)} | {run['stage_budget'] or 'even'} | {', '.join(str(s['steps']) for s in stages)} | "
              + " | ".join(cells) + f" | **{m['pearson']:.4f}** ({m['pearson'] / teacher_pearson:.2f}) "
              f"| {m['spearmanr']:.4f} | {stages[-1]['skill']:.3f} |")
    print()


def main(path: str, teacher: str = "TEACHER", split: str = "SPLIT") -> None:
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    t = runs[0]["teacher_metrics"]
    print(f"Teacher on the same {t['pairs']} held-out pairs: Pearson {t['pearson']:.4f}, Spearman {t['spearmanr']:.4f}, "
          f"output std {t['prediction_std']:.3f}.\n")
    multi = [run for run in runs if run["schedule"]]
    if multi:
        summary(multi, t["pearson"])
    single = [run for run in runs if not run["schedule"]]
    if single:
        single_stage_summary(single, t["pearson"])
    for run in runs:
        print(f"**{run['name']}**\n")
        print(f"{run['schedule'] or 'W1A' + str(run['bits'])}, {run['steps']} steps in all "
              f"(stage budget {run['stage_budget'] or 'even'}), batch {run['batch']}, ≤ {run['seq']} tokens, "
              f"lr {run['lr']:g}, seed {run['seed']}; {run['wall_seconds']:,} s wall, {run['cpu_seconds']:,} s CPU, "
              f"peak RSS {run['peak_rss_gb']} GB, {run['torch_threads']} torch thread(s); {options(run)}.\n")
        for stage in run["stages"]:
            evals = list({e["step"]: e for e in reversed(stage["evals"])}.values())[::-1]  # once per step
            skills = [e["skill"] for e in evals]
            above = [i for i in range(len(evals)) if all(k >= THRESHOLD for k in skills[i:])]
            leaves = (f"skill ≥ {THRESHOLD} from step {evals[above[0]]['step']} on" if above
                      else f"skill < {THRESHOLD} at the last evaluation")
            if any(k >= THRESHOLD for k in skills[:above[0] if above else len(skills)]):
                leaves += f" (earlier evaluations crossed {THRESHOLD} and fell back)"
            print(f"Stage {stage['stage']} ({stage['steps']} steps, taught by {stage['taught_by']}): {leaves}.\n")
            keys = ["loss_prediction", "loss_hidden"] + (
                ["loss_attention"] if any("loss_attention" in h for h in stage["losses"]) else [])
            names = {"loss_prediction": "ℓ_pred", "loss_hidden": "ℓ_hid", "loss_attention": "ℓ_attn"}
            print("| step | Pearson | Spearman | output std (teacher) | skill (R² vs teacher) | "
                  + " | ".join(f"{names[k]} (last 100 steps)" for k in keys) + " |")
            print("|---|---|---|---|---|" + "---|" * len(keys))
            for e in evals:
                print(f"| {e['step']} | {e['pearson']:.4f} | {e['spearmanr']:.4f} | {e['prediction_std']:.3f} "
                      f"({stage['teacher_prediction_std']:.3f}) | {e['skill']:.3f} | "
                      + " | ".join(mean_loss(stage["losses"], e["step"], k) for k in keys) + " |")
            m = stage["metrics"]
            print(f"| end ({stage['steps']}) | **{m['pearson']:.4f}** | {m['spearmanr']:.4f} "
                  f"| {stage['prediction_std']:.3f} ({stage['teacher_prediction_std']:.3f}) | {stage['skill']:.3f} | "
                  + " | ".join(mean_loss(stage["losses"], stage["steps"], k) for k in keys) + " |\n")
        print(f"Command: `{command(run, teacher, split)}`\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
