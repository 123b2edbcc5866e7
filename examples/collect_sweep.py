"""Collect the W1 sweep (examples/run_w1_sweep.sh) into a Markdown table: python examples/collect_sweep.py OUT_DIR"""

import json
import sys
from pathlib import Path

from hf_binary_bert.recipes import markdown_table

out = Path(sys.argv[1])
rows = []
for scheme in ("mean_abs", "learned", "learned_offset"):
    for granularity in ("tensor", "head", "row"):
        run = out / f"{scheme}-{granularity}"
        if not (run / "comparison.json").exists():
            continue
        teacher, student = json.loads((run / "comparison.json").read_text())
        distill = json.loads((run / "distill_results.json").read_text())
        steps = max(h.get("step", 0) for h in distill["log_history"])
        rows.append({
            "weight_scale": scheme, "scale_granularity": granularity, "student_acc": student["accuracy"],
            "teacher_acc": teacher["accuracy"], "gap_points": 100 * (teacher["accuracy"] - student["accuracy"]),
            "student_MB": student["size_mb"], "teacher_MB": teacher["size_mb"], "steps": steps,
            "train_min": distill["train_seconds"] / 60,
        })
print(markdown_table(rows))
