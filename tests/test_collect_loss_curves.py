"""examples/collect_loss_curves.py: one logged loss of several runs as a markdown table, read from a finished run's
distill_results.json, an archived trainer_state.json or the newest checkpoint of a stopped run; clear errors."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "collect_loss_curves.py")


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def test_table_from_results_archived_state_and_newest_checkpoint(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "distill_results.json").write_text(json.dumps({"log_history": [
        {"step": 25, "loss_prediction": 2.0, "loss_hidden": 1.0}, {"step": 50, "loss_prediction": 1.5},
        {"step": 50, "eval_pearson": 0.3}]}))
    archived = tmp_path / "archived"
    archived.mkdir()
    (archived / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 25, "loss_prediction": 1.25}]}))
    stopped = tmp_path / "stopped.partial"
    for step, value in ((50, 9.0), (100, 0.5)):  # the newest checkpoint by step number, not by name order
        (stopped / f"checkpoint-{step}").mkdir(parents=True)
        history = [{"step": 25, "loss_prediction": value}, {"step": step, "loss_prediction": value / 2}]
        (stopped / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    result = _run("--key", "loss_prediction", f"a={done}", f"b={archived}", f"c={tmp_path / 'stopped'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "| step | a | b | c |", "|---|---|---|---|",
        "| 25 | 2.000 | 1.250 | 0.500 |", "| 50 | 1.500 |  |  |", "| 100 |  |  | 0.250 |"]


def test_multi_step_run_reads_every_stage_with_steps_from_the_start(tmp_path):
    run = tmp_path / "multi"
    run.mkdir()
    stages = [{"steps": 100, "log_history": [{"step": 50, "loss_prediction": 1.0}, {"step": 100, "train_loss": 1.0}]},
              {"steps": 100, "log_history": [{"step": 50, "loss_prediction": 0.5}]}]
    (run / "distill_results.json").write_text(json.dumps({"stages": stages, "log_history": stages[-1]["log_history"]}))
    result = _run(f"m={run}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == ["| 50 | 1.000 |", "| 150 | 0.500 |"]


def test_errors_name_the_run_and_the_key(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(f"x={empty}")
    assert result.returncode != 0 and str(empty) in result.stderr and "trainer_state.json" in result.stderr
    (empty / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 1.0}]}))
    result = _run("--key", "loss_hidden", f"x={empty}")
    assert result.returncode != 0 and "no logged 'loss_hidden'" in result.stderr
    result = _run(str(empty))
    assert result.returncode != 0 and "expected NAME=RUN_DIR" in result.stderr
