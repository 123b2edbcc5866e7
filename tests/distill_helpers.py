"""Small shared pieces for the distillation tests and the 2-process script."""

import torch
from conftest import tiny_bert_config
from datasets import Dataset
from transformers import BertForSequenceClassification

from hf_binary_bert import DistillationTrainingArguments


def tiny_teacher(seed=0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(num_labels=2, attn_implementation="eager")).eval()


def toy_dataset(n=64, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 99, (n, length), generator=g)
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * length] * n, "labels": (ids[:, 1] > 50).long().tolist()}
    )


def distill_args(tmp_path, **kwargs):
    """`DistillationTrainingArguments` for a few CPU steps in `tmp_path` (no saving, no reporting, seed 0, a log
    entry every step); `kwargs` override or add fields."""
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=1e-3, report_to=[],
                    use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, logging_steps=1)
    defaults.update(kwargs)
    return DistillationTrainingArguments(**defaults)
