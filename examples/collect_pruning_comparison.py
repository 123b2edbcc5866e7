"""Collect examples/run_pruning_comparison.sh into a Markdown table: what each θ(1−θ) form did to the FFN group
norms (rows of `intermediate.dense`) and to the metric.

python examples/collect_pruning_comparison.py OUT EPSILON [TEACHER]
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

out, epsilon = Path(sys.argv[1]), float(sys.argv[2])
teacher_dir = sys.argv[3] if len(sys.argv) > 3 else "../shared/teachers/minilm-sst2"


def row_norms(folder) -> torch.Tensor:
    weights = load_file(Path(folder, "model.safetensors"))
    return torch.cat([w.float().norm(dim=1) for k, w in sorted(weights.items()) if k.endswith("intermediate.dense.weight")])


teacher = row_norms(teacher_dir)
print(f"teacher: {len(teacher)} FFN neurons, {int((teacher <= epsilon).sum())} with row norm ≤ ε = {epsilon}, "
      f"median row norm {teacher.median():.4f}\n")
print("| form | FFN neurons kept | loss_group_lasso first → last log | loss_binarizing first → last | "
      "median row norm (kept) | teacher's, as many largest rows | accuracy dense | accuracy pruned |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for form in ("weight", "gate"):
    run = out / form
    kept = row_norms(run)
    accuracy = {r["model"]: r["accuracy"] for r in json.loads((run / "comparison.json").read_text())}
    logs = [h for h in json.loads((run / "prune_results.json").read_text())["log_history"] if "loss_group_lasso" in h]
    print(f"| {form} | {len(kept)}/{len(teacher)} | {logs[0]['loss_group_lasso']:.4f} → {logs[-1]['loss_group_lasso']:.4f}"
          f" | {logs[0]['loss_binarizing']:.4f} → {logs[-1]['loss_binarizing']:.4f} | {kept.median():.4f} | "
          f"{teacher.sort().values[len(teacher) - len(kept):].median():.4f} | "
          f"{accuracy['dense']:.4f} | {accuracy['pruned']:.4f} |")
