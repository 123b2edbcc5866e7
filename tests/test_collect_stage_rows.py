"""examples/collect_stage_rows.py: stage rows of multi-step runs, per run and mean ± std."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "collect_stage_rows.py"


@pytest.fixture()
def script():
    spec = importlib.util.spec_from_file_location("collect_stage_rows", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, values, stages=("1: W1A4", "2: W1A1")):
    folder.mkdir(parents=True)
    rows = [{"stage": "teacher", "metrics": {"accuracy": 0.9}}]
    rows += [{"stage": s, "metrics": {"accuracy": v, "f1": 0.0}} for s, v in zip(stages, values)]
    (folder / "stages.json").write_text(json.dumps(rows))
    return folder


def test_stage_rows_per_run_and_mean_std(script, tmp_path, capsys):
    a = [_run(tmp_path / f"a{i}", v) for i, v in enumerate([(0.8, 0.7), (0.9, 0.8)])]
    b = [_run(tmp_path / "b0", (0.5, 0.25))]
    out = tmp_path / "t.md"
    script.main(["--recipe", "A", *map(str, a), "--recipe", "B", str(b[0]), "--markdown", str(out)])
    text = out.read_text()
    assert text == capsys.readouterr().out
    assert "| A | 1: W1A4 | 0.8000 | 0.9000 | 0.8500 ± 0.0707 |" in text  # stdev of (0.8, 0.9)
    assert "| A | 2: W1A1 | 0.7000 | 0.8000 | 0.7500 ± 0.0707 |" in text
    assert "| B | 2: W1A1 | 0.2500 |  | 0.2500 |" in text  # one run: an empty cell, no spread
    assert "mean ± std (accuracy)" in text and "teacher" not in text.split("\n\n")[0]


def test_recipes_with_other_stages_or_unfinished_runs_are_refused(script, tmp_path):
    a = _run(tmp_path / "a", (0.8, 0.7))
    other = _run(tmp_path / "o", (0.8, 0.7), stages=("1: W1A8", "2: W1A1"))
    with pytest.raises(SystemExit, match="differ"):
        script.main(["--recipe", "A", str(a), "--recipe", "O", str(other)])
    with pytest.raises(SystemExit, match="no stages.json"):
        script.main(["--recipe", "A", str(tmp_path / "missing")])
