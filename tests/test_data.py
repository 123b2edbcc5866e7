"""Tests of hf_binary_bert.data on the GLUE files and text shipped in data/ (no network)."""

import dataclasses
import csv
import os

import datasets
import pytest
import torch
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, DataCollatorWithPadding

from hf_binary_bert import data as data_module
from hf_binary_bert.data import (
    GLUE_TASKS,
    GlueTask,
    get_glue_task,
    load_glue,
    load_text_blocks,
    mlm_collator,
    tokenize_glue,
    tsv_quoting,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SST2 = os.path.join(REPO, "data", "glue", "SST-2")
RTE = os.path.join(REPO, "data", "glue", "RTE")
WIKITEXT_VALID = os.path.join(REPO, "data", "text", "wikitext-2", "valid.txt")
TOKENIZER = os.path.join(REPO, "data", "tokenizer", "bert-base-uncased")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def read_tsv(path, quoting=csv.QUOTE_NONE):
    """Reference reader: the TSV as a list of dicts (python's csv module)."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=quoting))


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


# ------------------------------------------------------------------------------------------------------ GLUE tasks


def test_glue_tasks_table():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    fields = {name: task.text_fields for name, task in GLUE_TASKS.items()}
    assert fields == {  # transformers examples/pytorch/text-classification/run_glue.py task_to_keys
        "cola": ("sentence", None),
        "mnli": ("premise", "hypothesis"),
        "mrpc": ("sentence1", "sentence2"),
        "qnli": ("question", "sentence"),
        "qqp": ("question1", "question2"),
        "rte": ("sentence1", "sentence2"),
        "sst2": ("sentence", None),
        "stsb": ("sentence1", "sentence2"),
        "wnli": ("sentence1", "sentence2"),
    }
    assert GLUE_TASKS["cola"].metrics == ("matthews_correlation",)
    assert GLUE_TASKS["mrpc"].metrics == GLUE_TASKS["qqp"].metrics == ("accuracy", "f1")
    assert GLUE_TASKS["stsb"].metrics == ("pearson", "spearmanr")
    for name in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert GLUE_TASKS[name].metrics == ("accuracy",)
    assert all(isinstance(t, GlueTask) for t in GLUE_TASKS.values())
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].num_labels == 3 and not GLUE_TASKS["mnli"].is_regression
    assert GLUE_TASKS["mnli"].validation_file == "dev_matched.tsv"
    assert GLUE_TASKS["rte"].validation_file == "dev.tsv" and GLUE_TASKS["rte"].train_file == "train.tsv"
    assert all(t.hub_config == t.name and t.main_metric == t.metrics[0] for t in GLUE_TASKS.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        GLUE_TASKS["rte"].num_labels = 3


@pytest.mark.parametrize(
    "alias, name",
    [("SST-2", "sst2"), ("sst-2", "sst2"), ("sst2", "sst2"), ("STS-B", "stsb"), ("MNLI", "mnli"), ("CoLA", "cola")],
)
def test_get_glue_task_aliases(alias, name):
    assert get_glue_task(alias) is GLUE_TASKS[name]


def test_get_glue_task_unknown():
    with pytest.raises(ValueError, match="'squad'") as info:
        get_glue_task("squad")
    for name in GLUE_TASKS:
        assert name in str(info.value)
    task = GLUE_TASKS["rte"]
    assert get_glue_task(task) is task


# ------------------------------------------------------------------------------------------------------ load_glue


def test_load_sst2_real_files():
    sst2 = load_glue("SST-2", SST2)
    assert set(sst2) == {"train", "validation"}
    assert sst2["train"].num_rows == 60_614
    assert sst2["validation"].num_rows == 872
    assert sst2["train"].column_names == ["sentence", "label"]
    assert sst2["train"].features["label"] == datasets.Value("int64")
    assert set(sst2["validation"].unique("label")) == {0, 1}
    # Text kept verbatim: compare with a plain split of the file.
    reference = read_tsv(os.path.join(SST2, "dev.tsv"))
    assert sst2["validation"]["sentence"] == [row["sentence"] for row in reference]
    assert sst2["validation"]["label"] == [int(row["label"]) for row in reference]

    heldout = load_glue("sst2", train_file=os.path.join(SST2, "train_heldout.tsv"))
    assert list(heldout) == ["train"] and heldout["train"].num_rows == 6_735


def test_load_rte_pairs():
    rte = load_glue("rte", RTE)
    assert rte["train"].num_rows == 2_490 and rte["validation"].num_rows == 277
    assert rte["validation"].column_names == ["sentence1", "sentence2", "label"]  # idx dropped
    # The shipped RTE files are CSV-quoted ("found ""extensive"" damage"): read as csv.reader does by default.
    for split, file_name in (("validation", "dev.tsv"), ("train", "train.tsv")):
        reference = read_tsv(os.path.join(RTE, file_name), quoting=csv.QUOTE_MINIMAL)
        assert rte[split]["sentence1"] == [r["sentence1"] for r in reference]
        assert rte[split]["sentence2"] == [r["sentence2"] for r in reference]
        assert rte[split]["label"] == [int(r["label"]) for r in reference]
    assert rte["train"][12]["sentence1"].startswith('Valero Energy Corp., on Monday, said it found "extensive" ')
    assert set(rte["train"].unique("label")) == {0, 1}


def test_tsv_quoting(tmp_path):
    assert tsv_quoting(os.path.join(RTE, "train.tsv")) == csv.QUOTE_MINIMAL
    assert tsv_quoting(os.path.join(SST2, "dev.tsv")) == csv.QUOTE_NONE  # no quotes at all
    raw = write(tmp_path / "raw.tsv", 'sentence\tlabel\n"yes , " he said .\t1\nit \'s "fine" .\t0\n')
    assert tsv_quoting(raw) == csv.QUOTE_NONE
    sst2 = load_glue("sst2", validation_file=raw)["validation"]
    assert sst2["sentence"] == ['"yes , " he said .', 'it \'s "fine" .']  # GLUE release text, kept raw
    forced = load_glue("sst2", validation_file=raw, quoting=csv.QUOTE_NONE)["validation"]
    assert forced["sentence"] == sst2["sentence"]


def test_load_glue_errors(tmp_path):
    missing = os.path.join(tmp_path, "nope", "dev.tsv")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_glue("rte", validation_file=missing)
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        load_glue("rte", tmp_path)
    bad = write(tmp_path / "bad.tsv", "sentence1\tlabel\nA man.\t0\n")
    with pytest.raises(ValueError, match="sentence2") as info:
        load_glue("rte", validation_file=bad)
    assert "bad.tsv" in str(info.value)
    no_label = write(tmp_path / "nolabel.tsv", "sentence\tidx\nfine .\t0\n")
    with pytest.raises(ValueError, match="'label'.*nolabel.tsv|nolabel.tsv.*'label'"):
        load_glue("sst2", validation_file=no_label)


def test_load_glue_label_words_csv_and_regression(tmp_path):
    words = write(tmp_path / "dev.tsv", 'sentence1\tsentence2\tlabel\nA "b\tc\tnot_entailment\nd\te\tentailment\n')
    rte = load_glue("rte", validation_file=words)["validation"]
    assert rte["label"] == [1, 0] and rte["sentence1"] == ['A "b', "d"]
    quoted = write(tmp_path / "q.tsv", 'sentence1\tsentence2\tlabel\n"say ""hi"""\tb\t0\n')
    assert load_glue("rte", validation_file=quoted)["validation"]["sentence1"] == ['say "hi"']

    as_csv = write(tmp_path / "dev.csv", 'sentence,label\n"a, quoted ""one""",1\nnull,0\n')
    sst2 = load_glue("sst2", validation_file=as_csv)["validation"]
    assert sst2["sentence"] == ['a, quoted "one"', "null"] and sst2["label"] == [1, 0]

    stsb = write(tmp_path / "stsb.tsv", "sentence1\tsentence2\tlabel\na\tb\t3.8\nc\td\t0\n")
    dev = load_glue("STS-B", validation_file=stsb)["validation"]
    assert dev.features["label"] == datasets.Value("float32")
    assert dev["label"] == pytest.approx([3.8, 0.0])

    with pytest.raises(ValueError, match="maybe"):
        load_glue("rte", validation_file=write(tmp_path / "x.tsv", "sentence1\tsentence2\tlabel\na\tb\tmaybe\n"))


def test_load_glue_from_hub_uses_nyu_glue(monkeypatch):
    calls = []
    split = {"premise": ["p"], "hypothesis": ["h"], "label": [2], "idx": [0]}
    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
            "idx": datasets.Value("int32"),
        }
    )

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return datasets.DatasetDict(
            {
                s: datasets.Dataset.from_dict(split, features=features)
                for s in ("train", "validation_matched", "validation_mismatched", "test_matched")
            }
        )

    monkeypatch.setattr(data_module.datasets, "load_dataset", fake_load_dataset)
    mnli = load_glue("MNLI")
    assert calls == [("nyu-mll/glue", "mnli")]
    assert set(mnli) == {"train", "validation", "validation_mismatched"}  # matched and mismatched dev sets
    assert mnli["validation"].column_names == ["premise", "hypothesis", "label"]
    load_glue("mnli", dataset_name="my/glue-copy")
    assert calls[-1] == ("my/glue-copy", "mnli")


def test_tokenize_glue_pairs(tokenizer):
    rte = load_glue("rte", RTE)
    tokenized = tokenize_glue(rte, tokenizer, "rte", max_seq_length=64)
    valid = tokenized["validation"]
    assert set(valid.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    lengths = [len(ids) for ids in valid["input_ids"]]
    assert max(lengths) == 64 and min(lengths) < 64  # truncated, not padded
    row = rte["validation"][3]
    expected = tokenizer(row["sentence1"], row["sentence2"], truncation=True, max_length=64)
    assert valid[3]["input_ids"] == expected["input_ids"]
    assert valid[3]["token_type_ids"] == expected["token_type_ids"]
    assert valid["labels"] == rte["validation"]["label"]
    batch = DataCollatorWithPadding(tokenizer)([valid[i] for i in range(4)])
    assert batch["input_ids"].shape == (4, max(lengths[:4])) and batch["labels"].tolist() == valid["labels"][:4]


def test_tokenize_glue_single_sentence(tokenizer):
    dev = load_glue("sst2", validation_file=os.path.join(SST2, "dev.tsv"))["validation"].select(range(20))
    tokenized = tokenize_glue(dev, tokenizer, get_glue_task("sst2"))
    assert tokenized["input_ids"][0] == tokenizer(dev[0]["sentence"])["input_ids"]
    assert set(tokenized["token_type_ids"][5]) == {0}


# ------------------------------------------------------------------------------------------------------ masked LM


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """The first 400 lines of WikiText-2 valid (blank lines included)."""
    with open(WIKITEXT_VALID, encoding="utf-8") as f:
        lines = [next(f) for _ in range(400)]
    assert any(not line.strip() for line in lines)
    return write(tmp_path_factory.mktemp("text") / "wiki.txt", "".join(lines))


def token_stream(tokenizer, *paths):
    """Reference: every non-blank line tokenized with its special tokens, concatenated."""
    stream = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f.read().splitlines():
                if line.strip():
                    stream.extend(tokenizer(line)["input_ids"])
    return stream


@pytest.fixture(scope="module")
def blocks(tokenizer, text_file):
    return load_text_blocks(text_file, tokenizer, block_size=128)


def test_load_text_blocks_are_the_token_stream(tokenizer, text_file, blocks):
    stream = token_stream(tokenizer, text_file)
    assert blocks.num_rows == len(stream) // 128 >= 40
    assert all(len(ids) == 128 for ids in blocks["input_ids"])
    flat = [t for ids in blocks["input_ids"] for t in ids]
    assert flat == stream[: len(flat)]
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    for ids, mask in zip(blocks["input_ids"][:5], blocks["special_tokens_mask"][:5]):
        assert mask == [int(t in special) for t in ids]
    assert "offset_mapping" not in blocks.column_names
    assert load_text_blocks(text_file, tokenizer, block_size=100).num_rows == len(stream) // 100  # no stale cache


def test_load_text_blocks_several_files(tokenizer, text_file, tmp_path):
    other = write(tmp_path / "other.txt", "a second file .\n\n  \nwith two lines of text .\n" * 20)
    both = load_text_blocks([text_file, other], tokenizer, block_size=32)
    stream = token_stream(tokenizer, text_file, other)
    assert both.num_rows == len(stream) // 32
    assert [t for ids in both["input_ids"] for t in ids] == stream[: both.num_rows * 32]


def test_load_text_blocks_missing_file(tokenizer, text_file, tmp_path):
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_text_blocks([text_file, missing], tokenizer)


def test_mlm_collator_masks_about_15_percent(tokenizer, blocks):
    examples = [blocks[i] for i in range(40)]  # 5,120 tokens
    original = torch.tensor([e["input_ids"] for e in examples])
    special = torch.tensor([e["special_tokens_mask"] for e in examples]).bool()
    collator = mlm_collator(tokenizer)
    first, second = collator(examples), collator(examples)

    masked = first["labels"] != -100
    rate = masked[~special].float().mean().item()
    assert 0.12 < rate < 0.18, rate  # 15% ± 6 standard deviations
    assert not masked[special].any()
    assert torch.equal(first["labels"][masked], original[masked])
    assert torch.equal(first["input_ids"][~masked], original[~masked])
    replaced = (first["input_ids"][masked] == tokenizer.mask_token_id).float().mean().item()
    assert 0.7 < replaced < 0.9  # 80% [MASK], 10% random, 10% kept
    assert not torch.equal(masked, second["labels"] != -100)  # dynamic masking


def test_mlm_collator_seed_is_reproducible(tokenizer, blocks):
    examples = [blocks[i] for i in range(4)]
    a, b = mlm_collator(tokenizer, seed=0), mlm_collator(tokenizer, seed=0)
    first_a, first_b = a(examples), b(examples)
    assert torch.equal(first_a["labels"], first_b["labels"])
    assert not torch.equal(first_a["labels"], a(examples)["labels"])


def test_whole_word_mask(tokenizer, text_file):
    blocks = load_text_blocks(text_file, tokenizer, block_size=64, whole_word_mask=True)
    assert all(len(o) == 64 and all(len(pair) == 2 for pair in o) for o in blocks["offset_mapping"][:5])
    examples = [blocks[i] for i in range(60)]
    original = torch.tensor([e["input_ids"] for e in examples])
    batch = mlm_collator(tokenizer, whole_word_mask=True)(examples)
    assert "offset_mapping" not in batch
    masked = batch["labels"] != -100
    non_special = ~torch.tensor([e["special_tokens_mask"] for e in examples]).bool()
    assert 0.10 < masked[non_special].float().mean().item() < 0.20
    assert (batch["input_ids"][masked] == tokenizer.mask_token_id).all()  # no random replacement under WWM
    assert torch.equal(batch["labels"][masked], original[masked])
    # A '##' word piece is masked exactly when the piece before it is (within a block).
    continuation = torch.tensor(
        [[tok.startswith("##") for tok in tokenizer.convert_ids_to_tokens(e["input_ids"])] for e in examples]
    )
    continuation[:, 0] = False
    assert continuation.sum() > 50
    assert torch.equal(masked[:, 1:][continuation[:, 1:]], masked[:, :-1][continuation[:, 1:]])


def test_whole_word_mask_without_offsets(tokenizer, blocks):
    collator = mlm_collator(tokenizer, whole_word_mask=True)
    assert isinstance(collator, DataCollatorForLanguageModeling)
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        collator([blocks[0], blocks[1]])  # blocks loaded without whole_word_mask: no offset_mapping
