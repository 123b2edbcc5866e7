"""One trained student, scored as saved with each `fp_dtype`: how much the rounding of its full-precision parts
costs (issue 16).

A binarized student's LayerNorms, biases, position / token-type tables, pooler and classifier are full precision;
`fp_dtype` (`--fp-dtype` of `hf-binary-bert distill`, default float16) is the dtype they are written in. A student
saved in float32 is written again with every dtype here, each copy loaded back and scored on the task's evaluation
split as `hf-binary-bert evaluate` scores it (the native runtime where it applies), so
the rows differ only in that rounding: same training run, same weights before saving.

    python examples/fp_dtype_rounding.py runs/sst2-fp32/W1A1-seed42 runs/sst2-fp32/W1A1-seed43 \
        --task sst2 --data-dir ../shared/data/glue/SST-2 --max-seq-length 64 \
        --teacher ../shared/teachers/minilm-sst2 --json out.json

Prints a Markdown table per student: the metric, the size on disk (MB = 10⁶ bytes) and, against the float32 copy,
how many evaluation examples change their predicted class (classification) or the largest change of a score
(regression); then, per fp_dtype, the metric's mean ± sample standard deviation over the students (e.g. seeds) and,
with `--teacher`, its share of the teacher's.

Exits with a usage error (status 2) when a student was not saved with `fp_dtype="float32"`: a rounded student cannot
be unrounded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, EvalPrediction

from hf_binary_bert import recipes
from hf_binary_bert.distillation.stages import prediction_logits
from hf_binary_bert.format import checkpoint_size_report


def rewrite(student: str, fp_dtype: str, folder: Path) -> Path:
    """`student` saved again with its full-precision parts in `fp_dtype`, with its tokenizer, in `folder`."""
    model = AutoModelForSequenceClassification.from_pretrained(student, dtype=torch.float32)
    model.config.fp_dtype = fp_dtype
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(student).save_pretrained(folder)
    return folder


def score(student: str, args, data, work: Path) -> list[dict]:
    """One row per fp_dtype of `args.dtypes` for one float32 `student` (module docstring). Each copy runs once over
    the evaluation split; its metrics come from those logits as `recipes.distill` scores its stages (equal to
    `evaluate`'s, tests/test_stages.py)."""
    rows, reference = [], None
    for dtype in args.dtypes:
        folder = rewrite(student, dtype, work / dtype)
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.inference_mode():
            logits, labels = prediction_logits(model, data.eval, data.collator)
        metrics = data.compute_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
        metrics = {k: v for k, v in metrics.items() if k in data.metric_names}  # as `evaluate` reports them
        reference = logits if reference is None else reference
        row = {"fp_dtype": dtype, **metrics, "size_mb": checkpoint_size_report(folder)["total"]}
        if logits.shape[-1] == 1:
            row["max_score_change_vs_first"] = float((logits - reference).abs().max())
        else:
            row["changed_predictions_vs_first"] = int((logits.argmax(-1) != reference.argmax(-1)).sum())
        row["examples"] = int(logits.shape[0])
        rows.append(row)
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def summary(per_student: dict[str, list[dict]], metric: str, teacher: float | None) -> list[dict]:
    """Per fp_dtype: the metric's mean ± sample standard deviation over the students (and the share of the
    teacher's metric)."""
    out = []
    for i, dtype in enumerate(next(iter(per_student.values()))):
        values = [rows[i][metric] for rows in per_student.values()]
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        row = {"fp_dtype": dtype["fp_dtype"], metric: f"{mean:.4f} ± {std:.4f}", "students": len(values)}
        if teacher is not None:
            row["% of teacher"] = f"{100 * mean / teacher:.1f}"
        row["size_mb"] = statistics.fmean(rows[i]["size_mb"] for rows in per_student.values())
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("students", nargs="+",
                        help="binarized sequence-classification students saved with fp_dtype float32 (e.g. one per "
                             "seed): a table each, then the mean ± standard deviation per fp_dtype")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"])
    parser.add_argument("--teacher", help="also score this teacher, for the share of its metric")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--markdown", help="also write the tables printed here (without the Trainer's log lines)")
    args = parser.parse_args()

    for student in args.students:
        config = AutoConfig.from_pretrained(student)
        if getattr(config, "fp_dtype", None) != "float32":
            parser.error(f"{student}: fp_dtype is {getattr(config, 'fp_dtype', None)!r}; this comparison needs a "
                         "student saved with fp_dtype='float32' (hf-binary-bert distill --fp-dtype float32)")
    tokenizer = AutoTokenizer.from_pretrained(args.students[0])
    data = recipes.load_task_data(args.task, tokenizer, data_dir=args.data_dir, max_seq_length=args.max_seq_length,
                                  train=False)
    per_student = {}
    work = Path(tempfile.mkdtemp(prefix="fp_dtype_rounding_"))
    try:
        for student in args.students:
            per_student[student] = score(student, args, data, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    metric = data.metric_names[0]
    teacher = None
    if args.teacher:
        teacher = recipes.evaluate_model(args.teacher, args.task, data_dir=args.data_dir,
                                         max_seq_length=args.max_seq_length, latency=False,
                                         progress=False)["metrics"][metric]
    text = (f"Each student as trained (float32), written again in each fp_dtype and loaded back; task {args.task}, "
            f"{args.max_seq_length} tokens; size in MB (10^6 bytes)"
            + (f"; teacher {metric} {teacher:.4f}" if teacher is not None else "") + "\n\n")
    for student, rows in per_student.items():
        text += f"{student}:\n\n{recipes.markdown_table(rows)}\n\n"
    table = summary(per_student, metric, teacher)
    text += (f"Over the {len(per_student)} students ({metric}: mean ± sample standard deviation):\n\n"
             f"{recipes.markdown_table(table)}\n")
    print(text, end="")
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"task": args.task, "teacher": teacher, "students": per_student,
                                               "summary": table}, indent=1))


if __name__ == "__main__":
    main()
