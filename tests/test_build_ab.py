"""benchmarks/build_ab.py: the paired A/B of kernel builds (a quick run on the small geometry, and bad input)."""

from pathlib import Path

import pytest
from conftest import benchmark_module

from hf_binary_bert import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")

ROOT = str(Path(kernels.__file__).resolve().parents[2])  # this checkout (its kernels built in place)


def _build_ab():
    return benchmark_module("build_ab")


def test_one_tree_twice_times_side_by_side_with_equal_outputs(tmp_path):
    """This checkout as both trees, one worker process each: the same outputs on every row and the first tree's
    ratio 1."""
    out = tmp_path / "ab.md"
    _build_ab().main(["--small", "--trees", f"{ROOT},{ROOT}", "--labels", "first,second", "--processes", "1",
                      "--variants", "ours-W1A8,ours-W1A1", "--shapes", "1x16,2x8m", "--rounds", "2",
                      "--markdown", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ours-")]
    assert len(rows) == 2 * 2 * 2  # variants × shapes × trees
    assert all(row.endswith("| yes |") for row in rows)
    assert all("| 1.000 |" in row for row in rows if "| first |" in row)


def test_idle_sleeps_before_each_timed_forward_and_does_not_time_it(tmp_path):
    """`--idle`: every worker sleeps before each forward (2 rounds, the warm-up included, × 2 workers × a burst of 3:
    12 sleeps of 0.2 s), the report says so, and the times are the forwards' alone (a small model's: well under the
    sleep, even on a loaded machine, where one took 42 ms)."""
    import time

    out = tmp_path / "ab.md"
    start = time.perf_counter()
    _build_ab().main(["--small", "--trees", f"{ROOT},{ROOT}", "--processes", "1", "--variants", "ours-W1A1",
                      "--shapes", "1x16", "--rounds", "1", "--burst", "3", "--idle", "0.2", "--markdown", str(out)])
    assert time.perf_counter() - start >= 12 * 0.2
    text = out.read_text()
    assert "(each after 0.2 s of sleep)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ours-")]
    assert len(rows) == 2 and all(row.endswith("| yes |") for row in rows)
    assert all(float(row.split("|")[4]) < 150 for row in rows)  # median ms, under the 200 ms sleep


def test_bad_trees_are_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _build_ab().main(["--trees", f"{ROOT},{tmp_path}"])
    assert str(tmp_path) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _build_ab().main(["--trees", ROOT])
    assert "at least two" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _build_ab().main(["--trees", f"{ROOT},{ROOT}", "--labels", "one"])
    assert "--labels" in capsys.readouterr().err
    (tmp_path / "hf_binary_bert").mkdir()  # an empty package folder: the worker's import fails
    with pytest.raises(SystemExit, match=f"worker on {tmp_path} exited"):
        _build_ab().main(["--small", "--trees", f"{ROOT},{tmp_path}", "--processes", "1", "--variants", "ours-W1A1",
                          "--shapes", "1x8", "--rounds", "1"])


@pytest.mark.skipif("avx2" not in kernels.supported_isas() or len(kernels.supported_isas()) < 3,
                    reason="needs the AVX2 path below a better one")
def test_isa_runs_every_worker_on_that_path(tmp_path):
    """`--isa avx2` on a CPU whose best path is another: the workers report avx2 (Worker refuses a worker on any other
    path) and the report names it; the outputs still match between the trees."""
    out = tmp_path / "ab.md"
    _build_ab().main(["--small", "--trees", f"{ROOT},{ROOT}", "--processes", "1", "--variants", "ours-W1A1",
                      "--shapes", "1x16", "--rounds", "1", "--isa", "avx2", "--markdown", str(out)])
    text = out.read_text()
    assert "instruction-set path: avx2" in text
    rows = [line for line in text.splitlines() if line.startswith("| ours-")]
    assert len(rows) == 2 and all(row.endswith("| yes |") for row in rows)


def test_unsupported_isa_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        _build_ab().main(["--trees", f"{ROOT},{ROOT}", "--isa", "no_such_path"])
    assert "--isa: no_such_path" in capsys.readouterr().err
