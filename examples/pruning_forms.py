"""Issue 12, item 1: the seed's θ(1 − θ) on the weights against the gated form g(1 − g), at one budget.

Each run is goal 1's recipe (`pruning_goals.py minilm`, `MINILM`: 300 steps of distillation from the MiniLM SST-2
teacher with the group lasso through the loss on the FFN neurons and the value rows of the heads, λ₁ = 5e-3, lr
1e-4, batch 16, 64 tokens; the top-k cut to 50 % of the FFN neurons and 75 % of the heads; a 300-step recovery
distillation from the dense teacher) with the binarising term added at weight λ₂ in one of its two forms
(`BlockPruningConfig.penalty_form`), and the same recipe without it (λ₂ = 0) as the control:

    python examples/pruning_forms.py run OUT --penalty-form weight --binarizing-weight 1e-4
    python examples/pruning_forms.py run OUT --penalty-form gate --binarizing-weight 1e-4
    python examples/pruning_forms.py run OUT --penalty-form weight --binarizing-weight 0     # the control
    python examples/pruning_forms.py table OUT > docs/measurements/pruning-forms.md

Run from the repository root with ../shared (teacher, SST-2); each run trains on one thread. A run writes
OUT/forms-<form>-<λ₂>-{penalty,removed,pruned} and the record OUT/forms-<form>-<λ₂>.json; `table` reads the records
there. Both forms run the same steps, data order (seed 0), learning rate (the gates share the weights' optimizer and
learning rate) and cut, so what differs is the binarising term alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pruning_goals as goals  # (the recipe, the cut and the recovery of issue 12's goals)


def _name(form: str, binarizing_weight: float) -> str:
    return f"forms-{form}-{binarizing_weight:g}"


def run(out: Path, form: str, binarizing_weight: float) -> None:
    """The recipe with this binarising term: penalty steps and cut (`_penalty_and_cut`, measured), recovery."""
    from hf_binary_bert.pruning import load_pruned_bert, sparsity_report

    c = {**goals.MINILM, "penalty_form": form, "binarizing_weight": binarizing_weight}
    name = _name(form, binarizing_weight)
    cut = goals._penalty_and_cut(out, c, name, measure=True)
    final = out / f"{name}-pruned"
    result = goals._recover(out / f"{name}-removed", final, 2 if goals.SMOKE else c["steps_recovery"], c)
    record = {**cut, "recipe": c, "sizes": sparsity_report(load_pruned_bert(final)),
              "accuracy_after_recovery": result["metrics"].get("eval_accuracy"),
              "recovery_log_history": result["log_history"],
              "train_seconds": [cut["train_seconds"], result["train_seconds"]]}
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))


def _last_logged(history: list, key: str):
    values = [e[key] for e in history if key in e]
    return (values[0], values[-1]) if values else (None, None)


def table(out: Path) -> None:
    """The records in OUT as one Markdown table (stdout)."""
    records = sorted((json.loads(f.read_text()) for f in out.glob("forms-*.json") if not f.name.endswith("-cut.json")),
                     key=lambda r: (r["recipe"]["binarizing_weight"] > 0, r["recipe"]["penalty_form"]))
    if not records:
        raise SystemExit(f"no forms-*.json record in {out}: run `pruning_forms.py run {out} …` first")
    teacher = goals._accuracy(goals.TEACHER)
    c = records[0]["recipe"]
    print(f"MiniLM SST-2 teacher (`{goals.TEACHER}`): dev accuracy {teacher:.4f}. Recipe of every row: "
          f"{c['steps_penalty']} penalty steps (group lasso λ₁ = {c['group_lasso_weight']:g} through the loss on "
          f"{' and '.join(c['modules'])} rows, lr {c['lr_penalty']:g}, batch {c['batch_size']}, {goals.SEQ} tokens, "
          f"seed 0), the top-k cut to {c['ffn_keep_share']:.0%} of every layer's FFN neurons and "
          f"{c['heads_keep_share']:.0%} of its heads, then {c['steps_recovery']} recovery steps from the dense "
          f"teacher (lr {c['lr_recovery']:g}). SST-2 dev (872 sentences). One run per row, one seed; "
          f"{goals._cpu()}; torch {torch.__version__}.\n")
    print("| binarising term | λ₂ | loss_binarizing, first → last log | loss_group_lasso, first → last log | FFN rows "
          "≤ ε = 0.01 after the penalty | FFN row norm median after the penalty | accuracy after the penalty | "
          "after the cut | after the recovery | Δ vs teacher (points) |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in records:
        c, history = r["recipe"], r["log_history"]
        term = "none (control)" if c["binarizing_weight"] == 0 else \
            {"weight": "θ(1 − θ) on the weights (seed)", "gate": "g(1 − g) on per-group gates"}[c["penalty_form"]]
        b0, b1 = _last_logged(history, "loss_binarizing")
        g0, g1 = _last_logged(history, "loss_group_lasso")
        binarizing = f"{b0:.4f} → {b1:.4f}" if b0 is not None else "—"
        lasso = f"{g0:.2f} → {g1:.2f}" if g0 is not None else "—"
        eps = r["epsilon_alone"]
        norms = r["norms_after_penalty"]["ffn"]
        print(f"| {term} | {c['binarizing_weight']:g} | {binarizing} | {lasso} | "
              f"{eps['ffn_neurons_dead']}/{eps['ffn_neurons']} | {norms[goals.QUANTILES.index(0.5)]:.3f} | "
              f"{eps['accuracy_after_penalty']:.4f} | {r['accuracy_after_cut']:.4f} | "
              f"{r['accuracy_after_recovery']:.4f} | {100 * (r['accuracy_after_recovery'] - teacher):+.1f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["run", "table"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--penalty-form", choices=["weight", "gate"], default="weight")
    parser.add_argument("--binarizing-weight", type=float, default=1e-4, help="λ₂ (0: the control, no binarising term)")
    parser.add_argument("--smoke", action="store_true", help="2 steps on 64 sentences: check the pipeline only")
    args = parser.parse_args(argv)
    goals.SMOKE = args.smoke
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "table":
        return table(args.out)
    torch.set_num_threads(1)
    run(args.out, args.penalty_form, args.binarizing_weight)


if __name__ == "__main__":
    main()
