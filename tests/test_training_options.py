"""`TrainingOptions` checks each value once, when it is made: a count that is not a positive integer or a fraction out
of range raises `ValueError` naming the field; `check_model(max_seq_length=)` refuses a length the position table
does not hold."""

import pytest
from conftest import tiny_bert_config
from transformers import BertForSequenceClassification

from hf_binary_bert.recipes import TrainingOptions, check_model, evaluate_model, finetune


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch_size must be a positive number of examples, got 0"),
    ("batch_size", True, "batch_size must be a positive number of examples, got True"),
    ("batch_size", 2.0, "batch_size must be a positive number of examples, got 2.0"),
    ("max_seq_length", 0, "max_seq_length must be a positive number of tokens, got 0"),
    ("max_seq_length", None, "max_seq_length must be a positive number of tokens, got None"),
    ("logging_steps", -1, "logging_steps must be a positive number of steps, got -1"),
    ("max_steps", 0, "max_steps must be a positive number of optimizer steps, got 0"),
    ("max_train_samples", 0, "max_train_samples must be a positive number of examples, got 0"),
    ("max_eval_samples", 0, "max_eval_samples must be a positive number of examples, got 0"),
    ("min_train_tokens", 0, "min_train_tokens must be a positive number of tokens, got 0"),
    ("doc_stride", 0, "doc_stride must be a positive number of tokens, got 0"),
    ("max_answer_length", 0, "max_answer_length must be a positive number of tokens, got 0"),
    ("save_steps", 0, "save_steps must be a positive number of steps, got 0"),
    ("save_total_limit", 0, "save_total_limit must be a positive number of checkpoints, got 0"),
    ("epochs", 0, "epochs must be positive, got 0"),
    ("epochs", float("nan"), "epochs must be positive, got nan"),
    ("learning_rate", -1e-4, "learning_rate must be positive, got -0.0001"),
    ("warmup_ratio", 1.0, r"warmup_ratio must be a fraction of the steps in \[0, 1\), got 1.0"),
    ("warmup_ratio", -0.1, r"warmup_ratio must be a fraction of the steps in \[0, 1\), got -0.1"),
])
def test_a_bad_value_raises_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        TrainingOptions(**{field: value})


def test_the_edges_of_each_range_are_accepted():
    TrainingOptions()  # the defaults
    options = TrainingOptions(max_steps=1, epochs=0.01, batch_size=1, learning_rate=1e-9, warmup_ratio=0.0,
                              max_seq_length=1, max_train_samples=1, max_eval_samples=1, min_train_tokens=1,
                              doc_stride=1, max_answer_length=1, save_steps=1, save_total_limit=1, logging_steps=1)
    assert options.warmup_ratio == 0.0 and options.max_steps == 1


def test_a_sequence_longer_than_the_position_table_is_refused_before_training(tmp_path):
    model = tmp_path / "bert"
    BertForSequenceClassification(tiny_bert_config(max_position_embeddings=32, num_labels=2)).save_pretrained(model)
    assert check_model(str(model), max_seq_length=32) == str(model)
    with pytest.raises(ValueError, match=r"max_seq_length=33 is longer than model .* \(max_position_embeddings=32\)"):
        check_model(str(model), max_seq_length=33)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="max_seq_length=64 is longer than model"):
        finetune(str(model), "sst2", str(out), max_seq_length=64, max_steps=1)
    assert not out.exists() and not out.with_name("out.partial").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"max_seq_length": 0}, "max_seq_length must be a positive number of tokens, got 0"),
    ({"max_eval_samples": 0}, "max_eval_samples must be a positive number of examples, got 0"),
    ({"batch_size": 0}, "batch_size must be a positive number of examples, got 0"),
    ({"latency_runs": 0}, "latency_runs must be a positive number of runs, got 0"),
    ({"doc_stride": 0}, "doc_stride must be a positive number of tokens, got 0"),
])
def test_evaluate_model_refuses_counts_below_one(kwargs, message):
    """Checked before the model is looked at: the missing folder would otherwise be the error."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        evaluate_model("/nonexistent/model", "sst2", **kwargs)
