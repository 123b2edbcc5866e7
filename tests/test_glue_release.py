"""The nine GLUE tasks from the GLUE release's own files (columns as transformers' legacy GLUE processors,
`transformers/data/processors/glue.py`), from CSV / JSON lines, and the task label names a model's config gets.

Each release format is written here as a few lines in that format; STS-B is also read from the real release file
`../shared/data/glue/STS-B/train.tsv` when it is there."""

import json
import os

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from hf_binary_bert.data import get_glue_task, load_glue
from hf_binary_bert.metrics import glue_metrics

T = "\t"

# (task, {file name: lines}, expected validation rows as (text1, text2 or None, label))
RELEASE = {
    "cola": (
        {
            "train.tsv": ["gj04\t1\t\tOur friends won't buy this analysis.", "gj04\t0\t*\tThey drank the pub."],
            "dev.tsv": ["clc95\t1\t\tThe sailors rode the breeze clear of the rocks.", "clc95\t0\t*\tOne more pseudo."],
        },
        [("The sailors rode the breeze clear of the rocks.", None, 1), ("One more pseudo.", None, 0)],
    ),
    "sst2": (
        {"train.tsv": ["sentence\tlabel", "hide new secretions \t0"], "dev.tsv": ["sentence\tlabel", "it 's a charming journey . \t1"]},
        [("it 's a charming journey . ", None, 1)],
    ),
    "mrpc": (
        {
            "train.tsv": [
                "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                "1\t702876\t702977\tAmrozi accused his brother .\tReferring to him , Amrozi accused his brother .",
            ],
            "dev.tsv": [
                "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                "1\t1355540\t1355592\tHe said the \"foodservice\" pie business fits.\tThe pie business fits , he said .",
                "0\t2029631\t2029565\tMagnarelli said Racicot hated the Iraqi regime.\tHis wife said he was \"100 percent\".",
            ],
        },
        [
            ("He said the \"foodservice\" pie business fits.", "The pie business fits , he said .", 1),
            ("Magnarelli said Racicot hated the Iraqi regime.", "His wife said he was \"100 percent\".", 0),
        ],
    ),
    "stsb": (
        {
            name: [
                "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t5.000",
                "1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA young child is riding a horse.\tA child is riding a horse.\t4.750",
            ]
            for name in ("train.tsv", "dev.tsv")
        },
        [
            ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0),
            ("A young child is riding a horse.", "A child is riding a horse.", 4.75),
        ],
    ),
    "qqp": (
        {
            name: [
                "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0",
                "263843\t69383\t380476\tI want to pursue PhD in CS. How?\tHow do I prepare for a PhD in CS?\t1",
            ]
            for name in ("train.tsv", "dev.tsv")
        },
        [
            ("Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", 0),
            ("I want to pursue PhD in CS. How?", "How do I prepare for a PhD in CS?", 1),
        ],
    ),
    "mnli": (
        {
            name: [
                ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
                "\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"),
                (f"0\t31193\t31193n\tgovernment\t( ( x ) )\t( ( y ) )\t(ROOT x)\t(ROOT y)\tConceptually cream {name}."
                "\tProduct and geography are what make cream skimming work. \tneutral\tneutral"),
                (f"1\t101457\t101457e\ttelephone\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tyou know {name}\tYou lose the things.\t"
                "entailment\tentailment"),
                (f"2\t134793\t134793c\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tOne of {name}\tA member of my team.\t"
                "contradiction\tcontradiction"),
            ]
            for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv")
        },
        [
            ("Conceptually cream dev_matched.tsv.", "Product and geography are what make cream skimming work. ", 1),
            ("you know dev_matched.tsv", "You lose the things.", 0),
            ("One of dev_matched.tsv", "A member of my team.", 2),
        ],
    ),
    "qnli": (
        {
            name: [
                "index\tquestion\tsentence\tlabel",
                "0\tWhat came into force after the new constitution?\tThe Treaty of Lisbon came into force.\tentailment",
                "1\tWhat is the first major city in the stream?\tThe most important tributaries are here.\tnot_entailment",
            ]
            for name in ("train.tsv", "dev.tsv")
        },
        [
            ("What came into force after the new constitution?", "The Treaty of Lisbon came into force.", 0),
            ("What is the first major city in the stream?", "The most important tributaries are here.", 1),
        ],
    ),
    "rte": (
        {
            name: [
                "index\tsentence1\tsentence2\tlabel",
                "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons found in Iraq.\tnot_entailment",
                "1\tA place of sorrow, after Pope John Paul II died.\tPope Benedict XVI is the new leader.\tentailment",
            ]
            for name in ("train.tsv", "dev.tsv")
        },
        [
            ("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons found in Iraq.", 1),
            ("A place of sorrow, after Pope John Paul II died.", "Pope Benedict XVI is the new leader.", 0),
        ],
    ),
    "wnli": (
        {
            name: [
                "index\tsentence1\tsentence2\tlabel",
                "0\tI stuck a pin through a carrot. When I pulled the pin out, it had a hole.\tThe carrot had a hole.\t1",
                "1\tJohn couldn't see the stage with Billy in front of him.\tJohn is so short.\t0",
            ]
            for name in ("train.tsv", "dev.tsv")
        },
        [
            ("I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The carrot had a hole.", 1),
            ("John couldn't see the stage with Billy in front of him.", "John is so short.", 0),
        ],
    ),
}


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _rows(split, task):
    first, second = task.text_fields
    return [(r[first], r[second] if second else None, r["label"]) for r in split]


@pytest.mark.parametrize("name", sorted(RELEASE))
def test_release_files_load_by_column(tmp_path, name):
    files, expected = RELEASE[name]
    task = get_glue_task(name)
    data = load_glue(task, _write(tmp_path / name, files))
    got = _rows(data["validation"], task)
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in expected]
    np.testing.assert_allclose([c for *_, c in got], [c for *_, c in expected])
    assert sorted(data["train"].column_names) == sorted([f for f in task.text_fields if f] + ["label"])
    assert len(data["train"]) == len(files["train.tsv"]) - (0 if task.headerless_columns else 1)


def test_mnli_matched_and_mismatched(tmp_path):
    data = load_glue("mnli", _write(tmp_path, RELEASE["mnli"][0]))
    assert set(data) == {"train", "validation", "validation_mismatched"}
    assert data["validation_mismatched"][0]["premise"] == "Conceptually cream dev_mismatched.tsv."
    assert data["validation_mismatched"]["label"] == [1, 0, 2]


def test_real_stsb_release_train_file():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue", "STS-B", "train.tsv")
    if not os.path.isfile(path):
        pytest.skip(f"{path} not present")
    data = load_glue("stsb", train_file=path)["train"]
    with open(path, encoding="utf-8") as f:
        header, first = f.readline().rstrip("\n").split("\t"), f.readline().rstrip("\n").split("\t")
    assert data[0]["sentence1"] == first[header.index("sentence1")]
    assert data[0]["label"] == pytest.approx(float(first[header.index("score")]))
    assert len(data) == 5749  # STS-B train as released


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_csv_and_json_files(tmp_path, suffix):
    rows = [{"sentence1": "A, b \"c\".", "sentence2": "d", "label": 1}, {"sentence1": "e", "sentence2": "f", "label": 0}]
    path = tmp_path / f"dev.{suffix}"
    if suffix == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data = load_glue("mrpc", validation_file=path)["validation"]
    assert [dict(r) for r in data] == rows


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\n0\ta\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev\.tsv has no column 'label' or 'score' \(GLUE release\)"):
        load_glue("stsb", validation_file=path)
    mrpc = tmp_path / "mrpc.tsv"
    mrpc.write_text("Quality\t#1 ID\t#2 ID\t#1 String\n1\t1\t2\ta\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"mrpc\.tsv has no column 'sentence2' or '#2 String'"):
        load_glue("mrpc", validation_file=mrpc)


def test_metrics_as_glue_reports_them():
    rng = np.random.default_rng(0)
    refs, preds = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    for task in ("mrpc", "qqp"):
        assert glue_metrics(task, preds, refs) == {
            "accuracy": accuracy_score(refs, preds),
            "f1": f1_score(refs, preds),
        }
    assert glue_metrics("cola", preds, refs) == {"matthews_correlation": matthews_corrcoef(refs, preds)}
    gold, score = rng.uniform(0, 5, 50), rng.uniform(0, 5, 50)
    got = glue_metrics("stsb", score, gold)
    assert got["pearson"] == pytest.approx(pearsonr(score, gold)[0], abs=1e-12)
    assert got["spearmanr"] == pytest.approx(spearmanr(score, gold)[0], abs=1e-12)


@pytest.mark.parametrize(
    "name, names",
    [
        ("sst2", ["negative", "positive"]),
        ("rte", ["entailment", "not_entailment"]),
        ("mnli", ["entailment", "neutral", "contradiction"]),
    ],
)
def test_task_label_names(name, names):
    task = get_glue_task(name)
    assert task.id2label == dict(enumerate(names))
    assert task.label2id == {n: i for i, n in enumerate(names)}
