"""Small shared pieces for the distillation tests and the 2-process script."""

import torch
from datasets import Dataset
from transformers import BertForSequenceClassification

from conftest import tiny_bert_config


def tiny_teacher(seed=0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(num_labels=2, attn_implementation="eager")).eval()


def toy_dataset(n=64, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 99, (n, length), generator=g)
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * length] * n, "labels": (ids[:, 1] > 50).long().tolist()}
    )
