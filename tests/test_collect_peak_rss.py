import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from collect_peak_rss import main, time_report  # noqa: E402

REPORT = """some output
\tCommand being timed: "python -m hf_binary_bert.cli distill"
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.50
\tMaximum resident set size (kbytes): 1953792
\tExit status: 0
"""


def test_time_report_reads_gnu_times_verbose_report():
    assert time_report(REPORT) == {"peak_mib": 1908.0, "wall": "1:02.50", "status": 0}
    with pytest.raises(ValueError, match="Maximum resident set size"):
        time_report("no report here")


def test_the_table_marks_runs_above_two_gigabytes(tmp_path, capsys):
    over = tmp_path / "over.log"
    over.write_text(REPORT)
    under = tmp_path / "under.log"
    under.write_text(REPORT.replace("1953792", "1952768"))  # 1,907.0 MiB ≤ 2 × 10⁹ bytes
    assert main([f"a={over}", f"b={under}"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2] == "| a | 1,908 | **no** | 1:02.50 | 0 |"
    assert rows[3] == "| b | 1,907 | yes | 1:02.50 | 0 |"
    with pytest.raises(SystemExit, match="expected NAME=LOG"):
        main([str(over)])
    (tmp_path / "bad.log").write_text("nothing")
    with pytest.raises(SystemExit, match="not a /usr/bin/time -v report"):
        main([f"c={tmp_path / 'bad.log'}"])


def test_the_script_runs_from_the_command_line(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(REPORT)
    out = subprocess.run([sys.executable, str(ROOT / "examples/collect_peak_rss.py"), f"run={log}"],
                         capture_output=True, text=True, check=True).stdout
    assert "| run | 1,908 | **no** |" in out
