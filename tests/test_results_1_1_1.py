"""examples/results_1_1_1.py's archive: finished runs copied to a committed folder, and a table completed from it
on another machine (nothing run again, no teacher fine-tuned again)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "results_1_1_1.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("_results_1_1_1", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finished_run(folder: Path, teacher: float, student: float, collapsed=False):
    folder.mkdir(parents=True)
    rows = [{"model": "teacher", "accuracy": teacher, "size_mb": 90.87},
            {"model": "student", "accuracy": student, "size_mb": 3.94}]
    (folder / "comparison.json").write_text(json.dumps(rows))
    (folder / "distill_results.json").write_text(json.dumps({"collapsed": collapsed}))
    (folder / "stages.json").write_text("[]")


def test_a_table_is_written_from_the_archive_without_running_anything(script, tmp_path, monkeypatch):
    archive = tmp_path / "archive"
    for task in ("sst2", "rte"):
        _finished_run(archive / task / "W1A1-seed42", 0.9, 0.81)
        _finished_run(archive / task / "W1A1-seed43", 0.9, 0.83, collapsed=True)
    ran = []
    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: ran.append(a) or pytest.fail("ran a command"))
    # RTE's teacher is not given: with every student run archived it is not fine-tuned again either
    script.main(["--out", str(tmp_path / "out"), "--tasks", "sst2", "rte", "--students", "W1A1", "--seeds", "42",
                 "43", "--teacher", "sst2=/nowhere/teacher", "--archive", str(archive)])
    assert not ran
    table = (tmp_path / "out" / "results.md").read_text()
    for task in ("sst2", "rte"):
        section = table.split(f"### {task}")[1].split("###")[0]
        assert "| W1A1 | 0.8200 ± 0.0141 | 2 | 91.1 | 3.94 | 1 of 2 |" in section
    commands = (tmp_path / "out" / "commands.txt").read_text()
    assert commands.count("distill") == 4 and commands.count("finetune") == 1  # recorded, as done


def test_a_finished_run_is_archived_with_its_command_and_commit(script, tmp_path):
    run = tmp_path / "runs" / "W1A8-seed44"
    _finished_run(run, 0.9, 0.85)
    (run / "model.safetensors").write_bytes(b"not archived")
    script._archive(run, tmp_path / "archive" / "sst2" / run.name, "python -m hf_binary_bert.cli distill --seed 44")
    kept = tmp_path / "archive" / "sst2" / run.name
    assert sorted(p.name for p in kept.iterdir()) == ["comparison.json", "distill_results.json", "run.json",
                                                      "stages.json"]
    assert (kept / "comparison.json").read_text() == (run / "comparison.json").read_text()
    info = json.loads((kept / "run.json").read_text())
    assert info["command"].endswith("--seed 44")
    assert info["commit"] is None or len(info["commit"]) == 40
    if Path("/proc/cpuinfo").exists() and "cpu family" in Path("/proc/cpuinfo").read_text():  # x86 Linux
        assert "(family " in info["cpu"] and ", model " in info["cpu"]  # the generation, not only the name


def test_table_only_writes_what_is_finished_and_lists_the_rest(script, tmp_path, monkeypatch):
    archive = tmp_path / "archive"
    _finished_run(archive / "sst2" / "W1A8-seed42", 0.9, 0.85)
    _finished_run(archive / "sst2" / "W1A8-seed43", 0.9, 0.86)
    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    script.main(["--out", str(tmp_path / "out"), "--tasks", "sst2", "rte", "--students", "W1A1", "W1A8", "--seeds",
                 "42", "43", "--teacher", "sst2=/nowhere/teacher", "--archive", str(archive), "--table-only"])
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| W1A8 | 0.8550 ± 0.0071 | 2 | 95.0 | 3.94 | 0 of 2 |" in table and "| W1A1 |" not in table
    assert "### rte" not in table  # nothing of it finished
    assert ("Not finished yet (not in the tables): sst2 W1A1 seed 42, sst2 W1A1 seed 43, rte W1A1 seed 42, "
            "rte W1A1 seed 43, rte W1A8 seed 42, rte W1A8 seed 43.") in table
    assert not (tmp_path / "out" / "data").exists()  # STS-B's split is not written either (not asked here)


def test_each_student_is_compared_with_its_own_runs_teacher(script, tmp_path, monkeypatch):
    """Runs whose teacher was fine-tuned again (another machine) and scored differently: the teacher row lists both
    scores, and each student's % is against its own runs' teacher."""
    archive = tmp_path / "archive"
    _finished_run(archive / "rte" / "W1A8-seed42", 0.55, 0.539)
    _finished_run(archive / "rte" / "W1A1-seed42", 0.5668, 0.5271)
    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    script.main(["--out", str(tmp_path / "out"), "--tasks", "rte", "--students", "W1A1", "W1A8", "--seeds", "42",
                 "--archive", str(archive), "--table-only"])
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| teacher | 0.5668 / 0.5500 (teachers of different runs;" in table
    assert "| W1A1 | 0.5271 (one seed: no std) | 1 | 93.0 | 3.94 | 0 of 1 |" in table
    assert "| W1A8 | 0.5390 (one seed: no std) | 1 | 98.0 | 3.94 | 0 of 1 |" in table


def test_the_float32_w1a1_student_runs_on_sst2_only(script, tmp_path, capsys):
    script.main(["--out", str(tmp_path / "out"), "--tasks", "sst2", "rte", "--students", "W1A1-fp32", "--seeds", "42",
                 "--teacher", "sst2=/nowhere/teacher", "--dry-run"])
    commands = (tmp_path / "out" / "commands.txt").read_text().splitlines()
    assert len(commands) == 1  # no RTE teacher or student
    assert "--task sst2" in commands[0] and "--multi-step W1A4,W1A2,W1A1" in commands[0]
    assert commands[0].endswith("--fp-dtype float32 --max-steps 1000 --max-seq-length 64 --save-steps 50 "
                                "--save-total-limit 1")
    assert "W1A1-fp32-seed42" in commands[0]


def test_the_w1a1_student_with_the_16_bit_table_runs_on_sst2_and_stsb(script, tmp_path):
    """`W1A1-E16-fp32`: the `W1A1-fp32` command with `--embedding-bits 16` after BIT's 1 (argparse keeps the last);
    on STS-B with that task's budget (3 epochs, 128 tokens), not on RTE."""
    script.main(["--out", str(tmp_path / "out"), "--tasks", "sst2", "rte", "stsb", "--students", "W1A1-E16-fp32",
                 "--seeds", "44", "--teacher", "sst2=/nowhere/teacher", "--teacher", "stsb=/nowhere/stsb-teacher",
                 "--dry-run"])
    commands = (tmp_path / "out" / "commands.txt").read_text().splitlines()
    assert len(commands) == 2  # no RTE teacher or student
    sst2, stsb = commands
    assert "--task sst2" in sst2 and "W1A1-E16-fp32-seed44" in sst2
    assert sst2.index("--embedding-bits 1 ") < sst2.index("--embedding-bits 16 ")
    assert ("--activation-bits 1 --multi-step W1A4,W1A2,W1A1 --embedding-bits 16 --fp-dtype float32 --max-steps 1000 "
            "--max-seq-length 64") in sst2
    assert "--task stsb" in stsb and "--teacher /nowhere/stsb-teacher" in stsb and "W1A1-E16-fp32-seed44" in stsb
    assert ("--activation-bits 1 --multi-step W1A4,W1A2,W1A1 --embedding-bits 16 --fp-dtype float32 --epochs 3 "
            "--max-seq-length 128") in stsb


@pytest.mark.parametrize("student, seed, options, absent", [
    # the `W1A1-fp32` command with `--min-train-tokens 11`
    ("W1A1-fp32-min11", "43", "--multi-step W1A4,W1A2,W1A1 --fp-dtype float32", None),
    # W1A4 -> W1A1 over the 1000 steps (no W1A2 stage), float32 parts, examples of at least 11 tokens
    ("W1A1-2step-fp32-min11", "42", "--multi-step W1A4,W1A1 --fp-dtype float32", "W1A2"),
])
def test_the_w1a1_students_on_long_examples_run_on_sst2_only(script, tmp_path, student, seed, options, absent):
    script.main(["--out", str(tmp_path / "out"), "--tasks", "sst2", "rte", "stsb", "--students", student,
                 "--seeds", seed, "--teacher", "sst2=/nowhere/teacher", "--teacher", "stsb=/nowhere/stsb-teacher",
                 "--dry-run"])
    commands = (tmp_path / "out" / "commands.txt").read_text().splitlines()
    assert len(commands) == 1 and "--task sst2" in commands[0] and f"{student}-seed{seed}" in commands[0]
    assert (f"--activation-bits 1 {options} --min-train-tokens 11 --max-steps 1000 --max-seq-length 64"
            in commands[0])
    assert absent is None or absent not in commands[0]


def test_the_w1a8_student_with_the_16_bit_table_runs_on_sst2_and_stsb(script, tmp_path):
    """Its options follow BIT's, so its `--embedding-bits 16` is the one the command line keeps (argparse: the last);
    on STS-B with that task's budget (3 epochs, 128 tokens)."""
    script.main(["--out", str(tmp_path / "out"), "--tasks", "sst2", "rte", "stsb", "--students", "W1A8-E16-kl-fp32",
                 "--seeds", "43", "--teacher", "sst2=/nowhere/teacher", "--teacher", "stsb=/nowhere/stsb-teacher",
                 "--dry-run"])
    commands = (tmp_path / "out" / "commands.txt").read_text().splitlines()
    assert len(commands) == 2  # no RTE teacher or student
    assert "--task sst2" in commands[0] and "W1A8-E16-kl-fp32-seed43" in commands[0]
    assert commands[0].index("--embedding-bits 1 ") < commands[0].index("--embedding-bits 16 ")
    assert ("--activation-bits 8 --embedding-bits 16 --attention-loss-weight 1 --attention-loss kl --fp-dtype float32 "
            "--max-steps 1000 --max-seq-length 64") in commands[0]
    assert "--task stsb" in commands[1] and "--teacher /nowhere/stsb-teacher" in commands[1]
    assert ("--activation-bits 8 --embedding-bits 16 --attention-loss-weight 1 --attention-loss kl --fp-dtype float32 "
            "--epochs 3 --max-seq-length 128") in commands[1]


def test_the_w1a8_student_without_dropout_runs_on_stsb_only(script, tmp_path):
    """`W1A8-E16-kl-fp32-nodrop`: the STS-B W1A8 recipe with the student's dropout at 0 (docs/results.md,
    stsb-w1a8-no-dropout), on STS-B's budget; no SST-2 or RTE command."""
    script.main(["--out", str(tmp_path / "out"), "--tasks", "sst2", "rte", "stsb", "--students",
                 "W1A8-E16-kl-fp32-nodrop", "--seeds", "44", "--teacher", "sst2=/nowhere/teacher", "--teacher",
                 "stsb=/nowhere/stsb-teacher", "--dry-run"])
    commands = (tmp_path / "out" / "commands.txt").read_text().splitlines()
    assert len(commands) == 1 and "--task stsb" in commands[0]
    assert "W1A8-E16-kl-fp32-nodrop-seed44" in commands[0]
    assert ("--activation-bits 8 --embedding-bits 16 --attention-loss-weight 1 --attention-loss kl --fp-dtype float32 "
            "--hidden-dropout-prob 0 --attention-probs-dropout-prob 0 --epochs 3 --max-seq-length 128") in commands[0]
