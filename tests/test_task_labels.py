"""Labelled outputs (issue 13 §4): models fine-tuned / distilled on a GLUE task carry the task's label names, a
binarized student inherits them from its teacher, and the text-classification pipeline prints them."""

import json

import pytest
import torch
from conftest import DATA, tiny_bert_config
from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.cli import main
from hf_binary_bert.recipes import task_label_config

SST2 = {0: "negative", 1: "positive"}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")


def _teacher(tokenizer, folder, **config):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128,
                                                           **config))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_task_label_config():
    assert task_label_config("sst2") == {"id2label": SST2, "label2id": {"negative": 0, "positive": 1}}
    assert task_label_config("RTE")["id2label"] == {0: "entailment", 1: "not_entailment"}
    assert task_label_config("mnli")["id2label"] == {0: "entailment", 1: "neutral", 2: "contradiction"}
    assert task_label_config("mlm") == {}


def test_student_inherits_label_names_and_pipeline_prints_them(tmp_path, tokenizer):
    names = {0: "entailment", 1: "not_entailment"}
    teacher = _teacher(tokenizer, tmp_path / "teacher", id2label=names, label2id={v: k for k, v in names.items()})
    student = BinaryBertForSequenceClassification.from_teacher(teacher)
    assert student.config.id2label == names and student.config.label2id == {v: k for k, v in names.items()}
    student.save_pretrained(tmp_path / "student")
    loaded = BinaryBertForSequenceClassification.from_pretrained(tmp_path / "student")
    assert loaded.config.id2label == names
    out = pipeline("text-classification", model=teacher, tokenizer=tokenizer)("A man is dancing.", top_k=None)
    assert sorted(row["label"] for row in out) == sorted(names.values())


def test_cli_distill_names_the_labels_of_a_placeholder_teacher(tmp_path, tokenizer, monkeypatch):
    monkeypatch.chdir(DATA.parent)  # data/glue/SST-2 is the default data folder
    teacher = _teacher(tokenizer, tmp_path / "teacher", num_labels=2)
    assert teacher.config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(tmp_path / "teacher"), "--task", "sst2", "--output-dir", str(out),
                 "--max-steps", "1", "--batch-size", "4", "--max-train-samples", "8", "--max-eval-samples", "8",
                 "--max-seq-length", "16", "--no-latency", "--no-progress"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert {int(k): v for k, v in config["id2label"].items()} == SST2
    assert config["label2id"] == {"negative": 0, "positive": 1}


def test_cli_finetune_writes_the_task_label_names(tmp_path, tokenizer, monkeypatch):
    monkeypatch.chdir(DATA.parent)
    _teacher(tokenizer, tmp_path / "base", num_labels=2)
    out = tmp_path / "teacher"
    code = main(["finetune", "--model", str(tmp_path / "base"), "--task", "rte", "--output-dir", str(out),
                 "--max-steps", "1", "--batch-size", "4", "--max-train-samples", "8", "--max-eval-samples", "8",
                 "--max-seq-length", "16", "--no-progress"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert {int(k): v for k, v in config["id2label"].items()} == {0: "entailment", 1: "not_entailment"}
    teacher = BertForSequenceClassification.from_pretrained(out)
    pair = {"text": "It rains.", "text_pair": "The street is wet."}
    (label,) = pipeline("text-classification", model=teacher, tokenizer=tokenizer)([pair])
    assert label["label"] in ("entailment", "not_entailment")
