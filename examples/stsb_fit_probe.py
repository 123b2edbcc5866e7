"""Does a saved STS-B student fit its own training pairs? (issue 16: the W1A1 student stays near the mean)

For a saved student and its teacher: Pearson of the student's scores with the gold scores and with the teacher's,
the MSE against the teacher (the prediction loss distillation minimises) and the spread (std) of both models'
scores — on the first N pairs of the training split and on the first N held-out pairs. A student that is as far
from the teacher on the pairs it was trained on as on held-out pairs underfits: more data (augmentation) cannot
help it at the same number of steps, a longer or easier optimisation might. Eval mode, 1 thread, 128 tokens.

    python examples/stsb_fit_probe.py --teacher TEACHER --data-dir DATA_DIR [--n 575] NAME=STUDENT [NAME=STUDENT ...]
    (DATA_DIR: the folder written by data.write_holdout_split, with train.tsv and dev.tsv)
"""
import argparse

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_binary_bert  # noqa: F401  (registers binary_bert with the Auto classes)
from hf_binary_bert.metrics import glue_metrics
from hf_binary_bert.recipes import load_task_data

torch.set_num_threads(1)
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--teacher", required=True)
parser.add_argument("--data-dir", required=True)
parser.add_argument("--n", type=int, default=575, help="pairs of each split to score")
parser.add_argument("students", nargs="+", metavar="NAME=STUDENT")
args = parser.parse_args()
students = [spec.partition("=") for spec in args.students]
for spec, (_, sep, _) in zip(args.students, students):
    if not sep:
        parser.error(f"{spec!r}: expected NAME=STUDENT")
tok = AutoTokenizer.from_pretrained(args.teacher)
data = load_task_data("stsb", tok, data_dir=args.data_dir, max_seq_length=128)
teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()


@torch.inference_mode()
def scores(model, rows):
    out = []
    for i in range(0, len(rows), 64):
        batch = data.collator([{k: r[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                               for r in rows[i:i + 64]])
        out.append(model(**batch).logits[:, 0].float())
    return torch.cat(out).numpy()


def pearson(predictions, references):
    return float(glue_metrics("stsb", predictions, references)["pearson"])  # as `distill` scores STS-B


splits = {}
for name, split in (("training", data.train), ("held-out", data.eval)):
    rows = [split[i] for i in range(min(args.n, len(split)))]
    splits[name] = rows, np.array([r["labels"] for r in rows], dtype=np.float64), scores(teacher, rows)
print("| student | pairs | n | student ~ gold | teacher ~ gold | student ~ teacher | MSE(student, teacher) "
      "| std student | std teacher |")
print("|---" * 9 + "|")
for label, _, path in students:
    student = AutoModelForSequenceClassification.from_pretrained(path).eval()
    for name, (rows, gold, t) in splits.items():
        s = scores(student, rows)
        print(f"| {label} | {name} | {len(rows)} | {pearson(s, gold):.4f} | {pearson(t, gold):.4f} "
              f"| {pearson(s, t):.4f} | {float(((s - t) ** 2).mean()):.3f} | {s.std():.3f} | {t.std():.3f} |")
