"""Launched by tests/test_distillation.py with `torchrun --nproc_per_node 2`: distil a tiny student on CPU (gloo)."""

import json
import sys

import torch
from distill_helpers import tiny_teacher, toy_dataset
from transformers import AutoModelForSequenceClassification

from hf_binary_bert import (
    BinaryBertForSequenceClassification,
    DistillationTrainer,
    DistillationTrainingArguments,
    end_distributed,
)

out = sys.argv[1]
teacher = tiny_teacher()
student = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned")
args = DistillationTrainingArguments(
    output_dir=out, per_device_train_batch_size=8, max_steps=30, learning_rate=2e-3, logging_steps=5,
    report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    hidden_loss_weight=1.0, prediction_loss_weight=1.0, temperature=2.0,
)
trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset(128))
assert type(trainer.teacher).__name__ == "BertForSequenceClassification", type(trainer.teacher)  # no DDP wrapper
trainer.train()
trainer.save_model(out + "/student")
if trainer.is_world_process_zero():
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    reloaded = AutoModelForSequenceClassification.from_pretrained(out + "/student").eval()
    student = trainer.accelerator.unwrap_model(trainer.model).eval()
    ids = torch.tensor(toy_dataset(4)["input_ids"])
    with torch.no_grad():
        equal = torch.equal(reloaded(input_ids=ids).logits, student(input_ids=ids).logits)
    hidden = [h["loss_hidden"] for h in trainer.state.log_history if "loss_hidden" in h]
    json.dump({"losses": losses, "hidden": hidden, "world_size": trainer.args.world_size, "reload_equal": equal,
               "components": sorted(k for k in trainer.state.log_history[0] if k.startswith("loss_"))}, open(out + "/result.json", "w"))
# the end of a distributed script: destroy the process group and let gloo's worker threads release their last
# collectives' tensors while Python is alive, or a process can abort at exit (hf_binary_bert.distributed)
end_distributed()
