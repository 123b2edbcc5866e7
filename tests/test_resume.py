"""Issue 14 §5: a distill run killed with SIGKILL mid-training and resumed with --resume-from-checkpoint gives the
same packed student as an uninterrupted run; the output folder appears only when everything is written."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA, tiny_bert_config
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertForSequenceClassification

from hf_binary_bert.cli import main

KILL_AT = 4

# runs the CLI in a child process that SIGKILLs itself right after the Trainer wrote checkpoint-KILL_AT
CHILD = f"""
import os, signal, sys
from transformers import TrainerCallback
import hf_binary_bert.recipes as recipes
from hf_binary_bert.cli import main

class Kill(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == {KILL_AT}:
            os.kill(os.getpid(), signal.SIGKILL)

class Killed(recipes.DistillationTrainer):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.add_callback(Kill())

recipes.DistillationTrainer = Killed
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128,
                                                   num_labels=2)).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def _args(teacher, out):
    return ["distill", "--teacher", str(teacher), "--task", "sst2", "--output-dir", str(out), "--max-steps", "6",
            "--batch-size", "4", "--max-train-samples", "32", "--max-eval-samples", "8", "--max-seq-length", "16",
            "--save-steps", "2", "--no-latency", "--no-progress", "--logging-steps", "1"]


def test_killed_distill_resumes_to_the_uninterrupted_student(tmp_path, teacher, monkeypatch, capsys):
    monkeypatch.chdir(DATA.parent)  # data/glue/SST-2
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DATA.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, *_args(teacher, killed)], capture_output=True, text=True, check=False,
                          env=env, cwd=DATA.parent)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    partial = tmp_path / "killed.partial"
    assert not killed.exists()  # no half-written model where the finished one is expected
    assert sorted(p.name for p in partial.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (partial / "model.safetensors").exists()

    assert main(_args(teacher, killed) + ["--resume-from-checkpoint", "last"]) == 0
    assert not partial.exists()
    straight = tmp_path / "straight"
    assert main(_args(teacher, straight)) == 0
    resumed, reference = load_file(killed / "model.safetensors"), load_file(straight / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for name in reference:  # same seed, same batches, restored optimizer/scheduler/RNG: bit for bit
        assert torch.equal(resumed[name], reference[name]), name


def test_bad_resume_arguments_name_the_flag(tmp_path, teacher, capsys):
    out = tmp_path / "out"
    assert main(_args(teacher, out) + ["--resume-from-checkpoint", "last"]) == 2
    assert "--resume-from-checkpoint" in capsys.readouterr().err
    assert main(_args(teacher, out) + ["--resume-from-checkpoint", str(tmp_path)]) == 2
    assert "not a Trainer checkpoint" in capsys.readouterr().err
    assert main(_args(teacher, out)[:-6] + ["--save-steps", "0", "--no-latency"]) == 2
    assert "--save-steps" in capsys.readouterr().err
    assert main(_args(teacher, out) + ["--save-total-limit", "0"]) == 2
    assert "--save-total-limit" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_save_total_limit_keeps_the_newest_checkpoints(tmp_path, teacher, monkeypatch):
    monkeypatch.chdir(DATA.parent)
    out = tmp_path / "out"
    assert main(_args(teacher, out) + ["--save-total-limit", "1"]) == 0  # checkpoints at steps 2, 4 and 6
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]


def test_publish_renames_into_a_missing_or_empty_folder_and_keeps_other_files(tmp_path):
    from hf_binary_bert.recipes import _publish, partial_dir

    for existing in (None, []):
        out = tmp_path / f"out{existing is None}"
        if existing is not None:
            out.mkdir()
        work = partial_dir(out)
        os.makedirs(os.path.join(work, "checkpoint-2"))
        Path(work, "model.safetensors").write_text("new")
        _publish(work, str(out))
        assert not os.path.exists(work) and (out / "model.safetensors").read_text() == "new"
        assert (out / "checkpoint-2").is_dir()
    out = tmp_path / "mine"  # a folder with the user's own files and an older model
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "stale").write_text("old")
    (out / "notes.txt").write_text("keep")
    (out / "model.safetensors").write_text("old")
    work = partial_dir(out)
    os.makedirs(os.path.join(work, "checkpoint-2"))
    Path(work, "model.safetensors").write_text("new")
    _publish(work, str(out))
    assert (out / "notes.txt").read_text() == "keep" and (out / "model.safetensors").read_text() == "new"
    assert os.listdir(out / "checkpoint-2") == [] and not os.path.exists(work)
    assert sorted(os.listdir(tmp_path / "mine")) == ["checkpoint-2", "model.safetensors", "notes.txt"]
