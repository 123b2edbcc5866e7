"""benchmarks/isa_ab.py: the paired A/B of instruction-set paths (a quick run on the small geometry, and bad input)."""

import pytest
from conftest import benchmark_module

from hf_binary_bert import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")


def _isa_ab():
    return benchmark_module("isa_ab")


VECTOR_PATHS = [i for i in kernels.supported_isas() if i not in ("portable", "reference")]


@pytest.mark.skipif(len(VECTOR_PATHS) < 2, reason="needs two vector instruction-set paths")
def test_two_vector_paths_time_side_by_side_with_equal_outputs(tmp_path):
    """Every vector path gives the same bits (test_runtime.py), so the table says so for each row; the first path's
    ratio is 1; the path in use is restored."""
    before = kernels.get_isa()
    isas = [VECTOR_PATHS[0], VECTOR_PATHS[-1]]
    out = tmp_path / "ab.md"
    _isa_ab().main(["--small", "--variants", "ours-W1A8,ours-W1A1", "--isas", ",".join(isas), "--shapes", "1x16,2x8m",
                    "--rounds", "1", "--markdown", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ours-")]
    assert len(rows) == 2 * 2 * 2  # variants × shapes × paths
    assert all(row.endswith("| yes |") for row in rows)
    assert all("| 1.000 |" in row for row in rows if f"| {isas[0]} |" in row)
    assert kernels.get_isa() == before


def test_unsupported_or_single_path_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        _isa_ab().main(["--isas", "portable,no-such-isa"])
    assert "no-such-isa" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _isa_ab().main(["--isas", "portable"])
    assert "at least two" in capsys.readouterr().err
