"""examples/stsb_augment.py: the augmented STS-B folder (issue 16's data-augmentation experiment) loads as the task,
keeps every original pair and the dev split, perturbs only the sentences, and is the same for the same seed."""

import os
import subprocess
import sys

import pytest

from hf_binary_bert.data import load_glue

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "stsb_augment.py")
HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


def _task(folder):
    os.makedirs(folder)
    rows = [f"{i}\tmain\tMSRvid\t2012\t{i:04d}\tnone\tnone\tA man is playing a flute number {i}.\t"
            f"Someone plays the \"flute\" {i}.\t{i % 5}.000\n" for i in range(6)]
    for name, part in (("train.tsv", rows), ("dev.tsv", rows[:2])):
        with open(os.path.join(folder, name), "w") as f:
            f.write(HEADER + "".join(part))


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, check=False)


def test_augmented_folder_loads_keeps_the_originals_and_dev(tmp_path):
    _task(tmp_path / "task")
    for out in ("a", "b"):
        done = _run("--data-dir", str(tmp_path / "task"), "--out", str(tmp_path / out), "--copies", "3",
                    "--probability", "0.5", "--seed", "1")
        assert done.returncode == 0, done.stderr
    data = load_glue("stsb", tmp_path / "a")
    original = load_glue("stsb", tmp_path / "task")
    train, first = data["train"].to_list(), original["train"].to_list()
    assert len(train) == 6 * 4
    assert train[:6] == first  # the originals first, unchanged
    assert data["validation"].to_list() == original["validation"].to_list()
    copies = train[6:]
    assert [c["label"] for c in copies] == [o["label"] for o in first] * 3  # scores kept
    pairs = list(zip(copies, first * 3))
    assert sum(c["sentence1"] != o["sentence1"] for c, o in pairs) > 0
    assert all(len(c[k].split()) == len(o[k].split()) for c, o in pairs for k in ("sentence1", "sentence2"))
    with open(tmp_path / "a" / "train.tsv") as f, open(tmp_path / "b" / "train.tsv") as g:
        assert f.read() == g.read()  # seeded


def test_swap_adds_every_pair_with_its_sentences_exchanged(tmp_path):
    _task(tmp_path / "task")
    done = _run("--data-dir", str(tmp_path / "task"), "--out", str(tmp_path / "swap"), "--copies", "0", "--swap")
    assert done.returncode == 0, done.stderr
    train = load_glue("stsb", tmp_path / "swap")["train"].to_list()
    first = load_glue("stsb", tmp_path / "task")["train"].to_list()
    assert train[:6] == first and len(train) == 12
    assert [(c["sentence1"], c["sentence2"], c["label"]) for c in train[6:]] == [
        (o["sentence2"], o["sentence1"], o["label"]) for o in first]


@pytest.mark.parametrize("args", [["--copies", "0"], ["--probability", "0"]])
def test_bad_options_and_an_existing_folder_exit_with_a_message(tmp_path, args):
    _task(tmp_path / "task")
    done = _run("--data-dir", str(tmp_path / "task"), "--out", str(tmp_path / "out"), *args)
    assert done.returncode != 0 and "--" in done.stderr and not (tmp_path / "out").exists()
    done = _run("--data-dir", str(tmp_path / "task"), "--out", str(tmp_path / "task"))
    assert done.returncode != 0 and "exists" in done.stderr
