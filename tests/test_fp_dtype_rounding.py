"""examples/fp_dtype_rounding.py (issue 16): one float32 student written again in each fp_dtype and scored — the
float32 copy scores exactly what the student scores, the 16-bit copies are smaller, and a student already rounded
is refused."""

import json
import os
import shutil
import subprocess
import sys

from conftest import DATA, save_tiny_sst2_teacher
from transformers import AutoTokenizer

from hf_binary_bert import BinaryBertForSequenceClassification, recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "fp_dtype_rounding.py")
SST2 = str(DATA / "glue" / "SST-2")


def _student(tmp_path, fp_dtype):
    teacher = save_tiny_sst2_teacher(tmp_path / "teacher")
    student = BinaryBertForSequenceClassification.from_teacher(str(teacher), fp_dtype=fp_dtype).eval()
    folder = tmp_path / f"student-{fp_dtype}"
    student.save_pretrained(folder)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(folder)
    return folder


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, check=False)


def test_rows_per_fp_dtype_and_the_summary(tmp_path):
    folder = _student(tmp_path, "float32")
    copy = shutil.copytree(folder, tmp_path / "copy")
    out = tmp_path / "rows.json"
    done = _run(str(folder), str(copy), "--task", "sst2", "--data-dir", SST2, "--max-seq-length", "32",
                "--teacher", str(tmp_path / "teacher"), "--json", str(out), "--markdown", str(tmp_path / "t.md"))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = result["students"][str(folder)]
    assert [r["fp_dtype"] for r in rows] == ["float32", "float16", "bfloat16"]
    assert all(r["examples"] == 872 for r in rows)  # the SST-2 dev split
    assert rows[0]["changed_predictions_vs_first"] == 0
    as_saved = recipes.evaluate_model(str(folder), "sst2", data_dir=SST2, max_seq_length=32, latency=False,
                                      progress=False)
    assert rows[0]["accuracy"] == as_saved["metrics"]["accuracy"]
    assert rows[1]["size_mb"] < 0.6 * rows[0]["size_mb"] and rows[2]["size_mb"] < 0.6 * rows[0]["size_mb"]
    # the same student twice (a copy): the mean is its score, the standard deviation 0
    summary = result["summary"]
    assert [r["fp_dtype"] for r in summary] == ["float32", "float16", "bfloat16"]
    assert all(r["students"] == 2 for r in summary)
    assert summary[0]["accuracy"] == f"{rows[0]['accuracy']:.4f} ± 0.0000"
    teacher = recipes.evaluate_model(str(tmp_path / "teacher"), "sst2", data_dir=SST2, max_seq_length=32,
                                     latency=False, progress=False)["metrics"]["accuracy"]
    assert result["teacher"] == teacher
    assert summary[1]["% of teacher"] == f"{100 * rows[1]['accuracy'] / teacher:.1f}"
    markdown = (tmp_path / "t.md").read_text()
    assert "| fp_dtype |" in markdown and markdown in done.stdout and "eval_loss" not in markdown


def test_a_rounded_student_is_refused(tmp_path):
    folder = _student(tmp_path, "float16")
    done = _run(str(folder), "--task", "sst2", "--data-dir", SST2)
    assert done.returncode == 2
    assert "fp_dtype is 'float16'" in done.stderr
