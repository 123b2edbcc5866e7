"""One trained student, scored as saved with each `fp_dtype`: how much the rounding of its full-precision parts
costs (issue 16).

A binarized student's LayerNorms, biases, position / token-type tables, pooler and classifier are full precision;
`fp_dtype` (`--fp-dtype` of `hf-binary-bert distill`, default float16) is the dtype they are written in. A student
saved in float32 is written again with every dtype here, each copy loaded back and scored on the task's evaluation
split as `hf-binary-bert evaluate` scores it (`recipes.evaluate_model`, the native runtime where it applies), so
the rows differ only in that rounding: same training run, same weights before saving.

    python examples/fp_dtype_rounding.py runs/sst2-fp32/W1A1-seed42 --task sst2 \
        --data-dir ../shared/data/glue/SST-2 --max-seq-length 64 --json out.json

Prints a Markdown table: the metric, the size on disk (MB = 10⁶ bytes) and, against the float32 copy, how many
evaluation examples change their predicted class (classification) or the largest change of a score (regression).

Exits with a usage error (status 2) when STUDENT was not saved with `fp_dtype="float32"`: a rounded student cannot
be unrounded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from hf_binary_bert import recipes
from hf_binary_bert.distillation.stages import prediction_logits


def rewrite(student: str, fp_dtype: str, folder: Path) -> Path:
    """`student` saved again with its full-precision parts in `fp_dtype`, with its tokenizer, in `folder`."""
    model = AutoModelForSequenceClassification.from_pretrained(student, dtype=torch.float32)
    model.config.fp_dtype = fp_dtype
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(student).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("student", help="a binarized sequence-classification student saved with fp_dtype float32")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"])
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    config = AutoConfig.from_pretrained(args.student)
    if getattr(config, "fp_dtype", None) != "float32":
        parser.error(f"{args.student}: fp_dtype is {getattr(config, 'fp_dtype', None)!r}; this comparison needs a "
                     "student saved with fp_dtype='float32' (hf-binary-bert distill --fp-dtype float32)")
    tokenizer = AutoTokenizer.from_pretrained(args.student)
    data = recipes.load_task_data(args.task, tokenizer, data_dir=args.data_dir, max_seq_length=args.max_seq_length,
                                  train=False)
    rows, reference = [], None
    work = Path(tempfile.mkdtemp(prefix="fp_dtype_rounding_"))
    try:
        for dtype in args.dtypes:
            folder = rewrite(args.student, dtype, work / dtype)
            result = recipes.evaluate_model(str(folder), args.task, data_dir=args.data_dir,
                                            max_seq_length=args.max_seq_length, latency=False, progress=False)
            model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
            with torch.inference_mode():
                logits, _ = prediction_logits(model, data.eval, data.collator)
            reference = logits if reference is None else reference
            row = {"fp_dtype": dtype, **result["metrics"], "size_mb": result["size"]["total"]}
            if logits.shape[-1] == 1:
                row["max_score_change_vs_first"] = float((logits - reference).abs().max())
            else:
                row["changed_predictions_vs_first"] = int((logits.argmax(-1) != reference.argmax(-1)).sum())
            row["examples"] = int(logits.shape[0])
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"student: {args.student} (float32 as trained; each row written in its fp_dtype and loaded back); "
          f"task {args.task}, {args.max_seq_length} tokens\n")
    print(recipes.markdown_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"student": args.student, "task": args.task, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
