"""The C-level kernel test (tests/native/test_kernels_main.cpp): the kernel core, compiled without Python, must
reproduce the reference twins' outputs stored in tests/native/vectors.bin bit for bit on every instruction set —
on this machine (host g++, without OpenMP: the single-threaded build) and on aarch64 NEON (cross-compiled, run under
qemu-user by tests/native/run_aarch64.sh). The stored vectors must be what reference.py computes today."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "tests" / "native"
CSRC = ROOT / "hf_binary_bert" / "kernels" / "csrc"


def test_stored_vectors_are_the_reference_outputs(tmp_path):
    """make_vectors.py run again (reference.py of this checkout) writes the committed file byte for byte."""
    subprocess.run([sys.executable, str(NATIVE / "make_vectors.py"), str(tmp_path / "vectors.bin")], check=True,
                   capture_output=True)
    assert (tmp_path / "vectors.bin").read_bytes() == (NATIVE / "vectors.bin").read_bytes()


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ on PATH")
def test_kernel_core_on_this_machine_without_openmp(tmp_path):
    binary = tmp_path / "test_kernels"
    subprocess.run(["g++", "-std=c++17", "-O1", "-ffp-contract=off", "-Wno-unknown-pragmas", "-I", str(CSRC),
                    str(NATIVE / "test_kernels_main.cpp"), "-o", str(binary)], check=True, capture_output=True)
    run = subprocess.run([str(binary), str(NATIVE / "vectors.bin")], capture_output=True, text=True)
    assert run.returncode == 0 and "PASSED" in run.stdout, run.stdout + run.stderr


_CROSS = [tool for tool in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(tool) is None]


@pytest.mark.skipif(bool(_CROSS), reason=f"{' and '.join(_CROSS)} not on PATH (Debian: apt-get install "
                    "g++-aarch64-linux-gnu qemu-user)")
def test_kernel_core_on_aarch64_neon_under_qemu():
    run = subprocess.run(["bash", str(NATIVE / "run_aarch64.sh")], capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert out.count("PASSED") == 2 and "isas: portable neon" in out, out
