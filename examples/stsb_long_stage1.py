"""Long first stages on STS-B (issue 16 §2–3): does a W1A4 stage 1 leave "predict the mean" with a longer budget,
and when?

One `recipes.distill` run (the CLI's `distill`: `DistillationTrainer`, AdamW, linear warm-up over 10 % of each
stage's steps then linear decay, prediction MSE + hidden-state MSE) with the issue's binarization (learned offset per
head, elastic activation quantizers, 1-bit word embeddings), evaluated by the Trainer every `--eval-steps` steps on the
held-out pairs (`eval_strategy="steps"`). Each evaluation logs, besides Pearson and Spearman with the gold scores,
the spread of the student's scores and its skill (R² against the original teacher's scores, the collapse criterion of
`distillation.stages.stage_diagnostics`; < 0.1 counts as collapsed): the task's `compute_metrics` is wrapped here
for that, nothing else changes. Appends one JSON line per run to `--results`.

    # one W1A4 stage of 1000 steps
    python examples/stsb_long_stage1.py --teacher TEACHER --data-dir SPLIT --output-dir runs/long --name w1a4-1000 \
        --steps 1000 --results R.jsonl
    # the 3-stage schedule at one total, shared by --stage-budget
    python examples/stsb_long_stage1.py ... --name 3stage-even --schedule W1A4,W1A2,W1A1 --stage-budget even --steps 900
    python examples/collect_stsb_long_stage1.py R.jsonl TEACHER SPLIT > docs/measurements/stsb-long-stage1.md

(TEACHER: a MiniLM fine-tuned on STS-B; SPLIT: the folder written by `data.write_holdout_split`.) Set
OMP_NUM_THREADS=1 for one torch thread.
"""
import argparse
import dataclasses
import json
import os
import resource
import time

import numpy as np
import torch
from transformers import BertForSequenceClassification, EvalPrediction

from hf_binary_bert import recipes
from hf_binary_bert.distillation.stages import prediction_logits, stage_diagnostics

p = argparse.ArgumentParser()
p.add_argument("--name", required=True)
p.add_argument("--teacher", required=True)
p.add_argument("--data-dir", required=True)
p.add_argument("--output-dir", required=True, help="runs are written to OUTPUT_DIR/NAME")
p.add_argument("--results", default="results.jsonl")
p.add_argument("--schedule", default=None, help="multi-step schedule, e.g. W1A4,W1A2,W1A1 (default: one W1A4 stage)")
p.add_argument("--bits", type=int, default=4, help="activation bits of a single stage")
p.add_argument("--stage-budget", default=None)
p.add_argument("--steps", type=int, default=1000, help="optimizer steps (with --schedule: the total)")
p.add_argument("--eval-steps", type=int, default=100)
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--seq", type=int, default=64)
p.add_argument("--seed", type=int, default=42)
p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
               help="a further DistillationTrainingArguments field, e.g. attention_loss_weight=1 (JSON value)")
p.add_argument("--binarization", action="append", default=[], metavar="KEY=VALUE",
               help="a further BinaryBertConfig field of the student, e.g. hidden_act=\"relu\" (JSON value)")
a = p.parse_args()


def key_values(items, flag):
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"{flag} needs KEY=VALUE, got {item!r}")
        out[key] = json.loads(value)
    return out


options = key_values(a.option, "--option")
torch.set_num_threads(1)

teacher_logits = {}
load_task_data = recipes.load_task_data


def load_with_spread(task, tokenizer, **kwargs):
    """The task's data, its `compute_metrics` extended by the output spread and the skill against the teacher."""
    data = load_task_data(task, tokenizer, **kwargs)
    teacher = BertForSequenceClassification.from_pretrained(a.teacher).eval()
    teacher_logits["eval"], labels = prediction_logits(teacher, data.eval, data.collator)
    score = data.compute_metrics
    teacher_logits["metrics"] = {**score(EvalPrediction(teacher_logits["eval"].numpy(), labels.numpy())),
                                 "pairs": len(labels), "prediction_std": float(teacher_logits["eval"].std())}

    def compute_metrics(eval_pred):
        out = score(eval_pred)
        logits = torch.as_tensor(np.asarray(eval_pred.predictions)).float().reshape(teacher_logits["eval"].shape)
        d = stage_diagnostics(logits, teacher_logits["eval"], regression=True)
        out = {**out, "prediction_std": d["prediction_std"], "teacher_prediction_std": d["teacher_prediction_std"],
               "skill": d["skill"]}
        print(json.dumps({"evaluation": out, "seconds": round(time.time() - start)}), flush=True)  # progress
        return out

    return dataclasses.replace(data, compute_metrics=compute_metrics)


recipes.load_task_data = load_with_spread
binarization = {"weight_scale": "learned_offset", "scale_granularity": "head", "activation_quantizer": "elastic",
                "embedding_bits": 1}
if a.schedule is None:
    binarization["activation_bits"] = a.bits
binarization.update(key_values(a.binarization, "--binarization"))
start, cpu0 = time.time(), os.times()
result = recipes.distill(a.teacher, "stsb", os.path.join(a.output_dir, a.name), binarization=binarization,
                         schedule=a.schedule, stage_budget=a.stage_budget, data_dir=a.data_dir, max_steps=a.steps,
                         batch_size=a.batch, max_seq_length=a.seq, learning_rate=a.lr, seed=a.seed, logging_steps=20,
                         progress=False, eval_strategy="steps", eval_steps=a.eval_steps, **options)
cpu1 = os.times()
stages = []
for row in result["stages"]:
    hist = row.pop("log_history")
    row["evals"] = [{k.removeprefix("eval_"): v for k, v in h.items()
                     if k == "step" or k in ("eval_pearson", "eval_spearmanr", "eval_prediction_std", "eval_skill")}
                    for h in hist if "eval_pearson" in h]
    row["losses"] = [{k: v for k, v in h.items() if k == "step" or k.startswith("loss_")}
                     for h in hist if "loss_prediction" in h]
    stages.append(row)
record = {**vars(a), "teacher_metrics": teacher_logits["metrics"], "stages": stages, "collapsed": result["collapsed"],
          "wall_seconds": round(time.time() - start), "cpu_seconds": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system),
          "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
          "torch_threads": torch.get_num_threads()}
print(json.dumps({k: v for k, v in record.items() if k != "stages"}))
with open(a.results, "a") as f:
    f.write(json.dumps(record) + "\n")
