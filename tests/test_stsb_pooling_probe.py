"""examples/stsb_pooling_probe.py: the pooled features are the masked means of the last hidden states they claim
to be, and the script prints one row per model."""

import importlib.util
import os
import subprocess
import sys

import torch
from conftest import save_tiny_sst2_teacher
from test_stsb_augment import _task
from transformers import AutoTokenizer, BertForSequenceClassification

from hf_binary_bert.recipes import load_task_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "stsb_pooling_probe.py")


def _probe():
    spec = importlib.util.spec_from_file_location("stsb_pooling_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pooled_features_are_masked_means_of_the_last_hidden_states(tmp_path):
    torch.manual_seed(0)
    teacher = save_tiny_sst2_teacher(tmp_path / "teacher")
    _task(tmp_path / "task")
    data = load_task_data("stsb", AutoTokenizer.from_pretrained(teacher), data_dir=tmp_path / "task",
                          max_seq_length=128)
    model = BertForSequenceClassification.from_pretrained(teacher).eval()
    features, scores = _probe().pooled_features(model, data, data.train, 5, batch_size=2)
    assert {k: v.shape for k, v in features.items()} == {"cls": (5, 32), "mean": (5, 32), "segments": (5, 129),
                                                         "cos": (5, 1)}
    assert scores.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    row = data.train[3]
    ids, types = torch.tensor([row["input_ids"]]), torch.tensor([row["token_type_ids"]])
    with torch.no_grad():
        hidden = model.bert(input_ids=ids, token_type_ids=types).last_hidden_state[0]  # unpadded: every token real
    u, v = hidden[types[0] == 0].mean(0), hidden[types[0] == 1].mean(0)
    torch.testing.assert_close(torch.from_numpy(features["mean"][3]), hidden.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(features["cls"][3]), hidden[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(features["segments"][3][:64]), torch.cat([u, v]), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(features["cos"][3]), torch.cosine_similarity(u, v, dim=0)[None],
                               rtol=1e-5, atol=1e-6)


def test_script_prints_a_row_per_model(tmp_path):
    torch.manual_seed(0)
    teacher = save_tiny_sst2_teacher(tmp_path / "teacher")
    _task(tmp_path / "task")
    done = subprocess.run([sys.executable, SCRIPT, "--teacher", str(teacher), "--data-dir", str(tmp_path / "task"),
                           "--pairs", "6", f"again={teacher}"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| teacher") or line.startswith("| again")]
    assert len(rows) == 2 and rows[0].count("|") == 6
