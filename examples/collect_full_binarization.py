"""Collect examples/run_full_binarization.sh runs into the results table of docs/results.md.

usage: python examples/collect_full_binarization.py OUT_DIR [OUT_DIR ...]

One row per method, one column per activation width: accuracy (mean ± std over the seeds that ran), and per column
the packed size (MB = 10⁶ bytes, measured on the saved checkpoint) and the FLOPs at sequence length 128
(`hf_binary_bert.flops.count_operations`: a binary op counts 1/64 FLOP, as BiBERT).
"""

import json
import statistics
import sys
from pathlib import Path

from transformers import BertConfig

from hf_binary_bert import BinaryBertConfig
from hf_binary_bert.flops import count_operations
from hf_binary_bert.recipes import markdown_table

ROWS = {
    "plain": "plain sign (XNOR α per tensor)",
    "plain_ag": "plain sign + learned α/γ (per head)",
    "bibert": "BiBERT (Bi-Attention + DMD, XNOR α per row)",
    "bibert_ag": "BiBERT + learned α/γ",
    "bit": "BiT (elastic + multi-step, XNOR α per row)",
    "bit_ag": "BiT + learned α/γ",
}
COLUMNS = ("32", "8", "4", "2", "1")


def _cell(values):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


def collect(out: Path):
    metric, teacher_scores, table, sizes, flops = None, [], {}, {}, {}
    for run in sorted(out.glob("*/W1A*/seed*/comparison.json")):
        row, column = run.parts[-4], run.parts[-3].removeprefix("W1A")
        teacher, student = json.loads(run.read_text())
        metric = metric or next(k for k in student if k not in ("model", "size_mb") and not k.endswith("_mb"))
        teacher_scores.append(teacher[metric])
        sizes["teacher"] = {teacher["size_mb"]}
        table.setdefault(row, {}).setdefault(column, []).append(student[metric])
        sizes.setdefault(column, set()).add(round(student["size_mb"], 2))
        config = BinaryBertConfig.from_pretrained(run.parent)
        flops.setdefault(column, count_operations(config, seq_len=128)["flops"])
        flops.setdefault("teacher", count_operations(BertConfig(**{k: v for k, v in config.to_dict().items() if k in BertConfig().to_dict()}), seq_len=128)["flops"])
    return metric, teacher_scores, table, sizes, flops


def main(paths):
    for path in paths:
        metric, teacher_scores, table, sizes, flops = collect(Path(path))
        if metric is None:
            print(f"{path}: no finished runs")
            continue
        teacher = statistics.mean(teacher_scores)
        rows = []
        for key, label in ROWS.items():
            if key in table:
                cells = {f"W1A{c}": _cell(table[key].get(c, [])) for c in COLUMNS}
                rows.append({"method": label, **cells})
        rows.append({"method": "packed size (MB)", **{f"W1A{c}": "–".join(dict.fromkeys(f"{v:.2f}" for v in (min(sizes[c]), max(sizes[c])))) if c in sizes else "–" for c in COLUMNS}})
        rows.append({"method": "FLOPs at seq 128 (G)", **{f"W1A{c}": f"{flops[c] / 1e9:.3f}" if c in flops else "–" for c in COLUMNS}})
        print(f"### {path}: {metric}, teacher {teacher:.4f} ({max(sizes['teacher']):.2f} MB, {flops['teacher'] / 1e9:.3f} GFLOPs at seq 128)\n")
        print(markdown_table(rows))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
