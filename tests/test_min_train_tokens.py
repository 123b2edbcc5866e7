"""`min_train_tokens` / `--min-train-tokens`: GLUE training examples shorter than N tokens are left out of training,
the evaluation split is not touched, and bad values fail with the option's name."""

import json

import pytest
from conftest import DATA, tiny_bert_config
from transformers import AutoTokenizer, BertForSequenceClassification

from hf_binary_bert.cli import main
from hf_binary_bert.recipes import load_task_data

TRAIN = ["dull", "a fine film", "the best film of the year , by far", "an utterly tedious and overlong mess of a movie",
         "good", "not bad at all , really"]
DEV = ["ok", "a slow , sad and beautiful film"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")


@pytest.fixture()
def sst2_dir(tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    for name, rows in (("train.tsv", TRAIN), ("dev.tsv", DEV)):
        lines = ["sentence\tlabel"] + [f"{text}\t{i % 2}" for i, text in enumerate(rows)]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def _lengths(tokenizer, texts):
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def test_keeps_the_training_examples_of_at_least_n_tokens_and_every_dev_example(tokenizer, sst2_dir):
    lengths = _lengths(tokenizer, TRAIN)  # [CLS] … [SEP]
    assert lengths == [3, 5, 11, 13, 3, 8]
    data = load_task_data("sst2", tokenizer, data_dir=str(sst2_dir), min_train_tokens=8)
    assert [len(ids) for ids in data.train["input_ids"]] == [11, 13, 8]
    assert data.train["labels"] == [0, 1, 1]  # the kept rows' own labels, in file order
    assert len(data.eval) == len(DEV) and [len(ids) for ids in data.eval["input_ids"]] == _lengths(tokenizer, DEV)
    # without the option every row trains; lengths count after truncation to max_seq_length (8: none reaches 9)
    assert len(load_task_data("sst2", tokenizer, data_dir=str(sst2_dir)).train) == len(TRAIN)
    with pytest.raises(ValueError, match=r"=9 keeps none of the 6 training examples \(the longest has 8 "):
        load_task_data("sst2", tokenizer, data_dir=str(sst2_dir), min_train_tokens=9, max_seq_length=8)
    # max_train_samples samples from the kept rows
    sampled = load_task_data("sst2", tokenizer, data_dir=str(sst2_dir), min_train_tokens=8, max_train_samples=2)
    assert len(sampled.train) == 2 and all(len(ids) >= 8 for ids in sampled.train["input_ids"])


def test_bad_values_raise_naming_the_option(tokenizer, sst2_dir):
    with pytest.raises(ValueError, match="min_train_tokens must be a positive number of tokens, got 0"):
        load_task_data("sst2", tokenizer, data_dir=str(sst2_dir), min_train_tokens=0)
    with pytest.raises(ValueError, match="min_train_tokens filters GLUE training examples; task 'mlm'"):
        load_task_data("mlm", tokenizer, train_files=[str(sst2_dir / "train.tsv")], min_train_tokens=4)
    with pytest.raises(ValueError, match="keeps none of the 6 training examples"):
        load_task_data("sst2", tokenizer, data_dir=str(sst2_dir), min_train_tokens=14)


def test_cli_option_trains_on_the_long_examples_and_records_it(tmp_path, capsys, tokenizer, sst2_dir):
    teacher = tmp_path / "teacher"
    BertForSequenceClassification(tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=64,
                                                   num_labels=2)).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    base = ["distill", "--teacher", str(teacher), "--task", "sst2", "--data-dir", str(sst2_dir), "--batch-size", "2",
            "--max-steps", "1", "--max-seq-length", "32", "--no-latency", "--no-progress"]
    out = tmp_path / "bad0"
    assert main([*base, "--output-dir", str(out), "--min-train-tokens", "0"]) == 2
    assert "--min-train-tokens must be a positive number of tokens, got 0" in capsys.readouterr().err
    out = tmp_path / "bad14"  # a data error, raised as the loaders' are, before anything is written
    with pytest.raises(ValueError, match="min_train_tokens=14 keeps none of the 6 training examples"):
        main([*base, "--output-dir", str(out), "--min-train-tokens", "14"])
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    assert main(["distill", "--teacher", str(teacher), "--task", "mlm", "--train-files", str(sst2_dir / "train.tsv"),
                 "--output-dir", str(out), "--max-seq-length", "32", "--min-train-tokens", "4"]) == 2
    assert "--min-train-tokens filters GLUE training examples, not --task mlm" in capsys.readouterr().err
    out = tmp_path / "student"
    assert main([*base, "--output-dir", str(out), "--min-train-tokens", "8"]) == 0
    record = json.loads((out / "training_record.json").read_text())
    assert record["datasets"] == [f"sst2 ({sst2_dir}, training examples of >= 8 tokens)"]
    assert record["epochs"] == 0.5  # one step of 2 is half an epoch of the 3 kept examples (of all 6: a third)
    capsys.readouterr()
