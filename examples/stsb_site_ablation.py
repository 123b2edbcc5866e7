"""Where a W1A1 stage loses (issue 16): the last stage of a multi-step run, rerun with some 1-bit quantizer sites
taken out.

The W1A1 stage of `--multi-step W1A4,W1A2,W1A1` starts from the saved W1A2 stage (a training checkpoint: latent
weights) and is taught by it, for the stage's share of the budget, exactly as `recipes.distill` runs it — the same
`DistillationTrainer`, arguments and data — except that before training the student loses the quantizers of one
family of sites (they become the identity, so those activations stay float32):

- `base`: none (the stage as the recipe runs it);
- `float_attention`: the attention's Q, K, V and probability quantizers (the Linears' inputs stay 1-bit);
- `float_linear_inputs`: the input quantizers of all six binarized Linears per layer (the attention stays 1-bit);
- `float_all`: both (a W1A32 student from the W1A2 stage).

The student is scored on the evaluation set in memory (`Trainer.evaluate`); it is not saved (a student without its
quantizers has no packed form). `--distill-args` takes the `distill` command's own arguments (the file
`common_args.txt` of a run, say) so that the stage is the recipe's; `--stage` names the stage rerun (default: the last).

    OMP_NUM_THREADS=1 python examples/stsb_site_ablation.py --variant float_attention --output-dir OUT/float_attention \
        --stage-checkpoint RUN/stage2-W1A2/checkpoint-162 --distill-args "$(cat RUN_ARGS.txt)"
    python examples/stsb_site_ablation.py --table OUT/base OUT/float_attention ...   # markdown of the scores
"""
import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace

VARIANTS = ("base", "float_attention", "float_linear_inputs", "float_all")

p = argparse.ArgumentParser()
p.add_argument("--variant", choices=VARIANTS)
p.add_argument("--output-dir")
p.add_argument("--stage-checkpoint", help="the training checkpoint of the stage before (latent weights)")
p.add_argument("--distill-args", help="the `hf-binary-bert distill` arguments of the run, as one string")
p.add_argument("--stage", type=int, help="the stage rerun, from 1 (default: the schedule's last)")
p.add_argument("--table", nargs="+", metavar="DIR", help="print the scores saved in these output folders")
a = p.parse_args()

if a.table:
    print("| variant | float32 sites | steps | Pearson | Spearman | train s |")
    print("|---|---|---|---:|---:|---:|")
    for folder in a.table:
        with open(os.path.join(folder, "site_ablation.json")) as f:
            r = json.load(f)
        print(f"| {r['variant']} | {r['sites_removed']} | {r['steps']} | {r['eval_pearson']:.4f} | "
              f"{r['eval_spearmanr']:.4f} | {r['train_seconds']:.0f} |")
    sys.exit(0)
if not (a.variant and a.output_dir and a.stage_checkpoint and a.distill_args):
    p.error("--variant, --output-dir, --stage-checkpoint and --distill-args (or --table)")

import torch

from hf_binary_bert import cli, recipes
from hf_binary_bert.distillation import DistillationTrainer, DistillationTrainingArguments

# the distill command's keyword arguments, as the CLI would pass them to recipes.distill
captured = {}


class Captured(Exception):
    pass


def capture(teacher, task, output_dir, **kwargs):
    captured.update(kwargs, teacher=teacher, task=task)
    raise Captured


recipes_distill, recipes.distill = recipes.distill, capture
try:
    cli.main(["distill", *shlex.split(a.distill_args), "--output-dir", os.path.join(a.output_dir, "unused")])
except Captured:
    pass
finally:
    recipes.distill = recipes_distill
if not captured:
    sys.exit("--distill-args: the distill command did not run (see its message above)")
teacher, task = captured.pop("teacher"), captured.pop("task")
binarization, schedule = captured.pop("binarization"), recipes.parse_schedule(captured.pop("schedule"))
if not schedule:
    sys.exit("--distill-args: needs a --multi-step schedule")
stage = (a.stage or len(schedule)) - 1
for key in ("evaluate", "pruning", "student_init", "stage_budget", "steps_per_stage", "on_collapse",
            "collapse_threshold", "stage_attention_loss_weights", "original_teacher_stages"):
    captured.pop(key, None)
captured.update(save_steps=None, save_total_limit=None)
options, extra = recipes._split_options(captured)
path, tokenizer, data = recipes._prepare_training(teacher, task, options)
teacher_cls, student_cls = recipes.head_classes(task)
original = teacher_cls.from_pretrained(path, dtype=torch.float32)
previous = student_cls.from_pretrained(a.stage_checkpoint, dtype=torch.float32)
student = student_cls.from_teacher(previous, **{**binarization, "activation_bits": schedule[stage]})
removed = 0
for layer in student.bert.encoder.layer:
    attention = layer.attention.self
    if a.variant in ("float_attention", "float_all"):
        for name in ("query", "key", "value", "probs"):
            delattr(attention, f"{name}_quantizer")
            removed += 1
    if a.variant in ("float_linear_inputs", "float_all"):
        for linear in (attention.query, attention.key, attention.value, layer.attention.output.dense,
                       layer.intermediate.dense, layer.output.dense):
            linear.input_quantizer = torch.nn.Identity()
            removed += 1
budget = recipes.stage_steps(len(schedule), max_steps=options.max_steps, epochs=options.epochs)[stage]
args = recipes._training_arguments(DistillationTrainingArguments, a.output_dir, replace(options, **budget), 2e-4, extra)
trainer = DistillationTrainer(teacher_model=previous, model=student, args=args, train_dataset=data.train,
                              eval_dataset=data.eval, data_collator=data.collator,
                              compute_metrics=data.compute_metrics, processing_class=tokenizer,
                              original_teacher_model=original)
start = time.time()
trainer.train()
seconds = time.time() - start
result = {"variant": a.variant, "sites_removed": removed, "steps": trainer.state.global_step,
          "train_seconds": seconds, **trainer.evaluate()}
print(json.dumps(result))
with open(os.path.join(a.output_dir, "site_ablation.json"), "w") as f:
    json.dump(result, f, indent=1)
