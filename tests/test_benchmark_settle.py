"""benchmarks/latency.py's `settle` (the wait before each timed forward lasts until the process's threads are idle) and
the OpenMP settings its reports name."""

import threading
import time

import pytest
from conftest import benchmark_module

pytest.importorskip("transformers")


def _latency_module():
    return benchmark_module("latency")


def test_settle_returns_soon_when_idle_and_waits_for_a_spinning_thread():
    settle = _latency_module().settle
    assert settle() < 0.5  # nothing else runs in this process: the minimum and one or a few windows

    stop = time.perf_counter() + 0.4

    def spin():  # a worker that keeps a core busy after "its run", as ONNX Runtime's threads do
        while time.perf_counter() < stop:
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        waited = settle()
    finally:
        worker.join()
    assert waited >= 0.3  # it waited for the spinning thread (0.4 s from the start) ...
    assert waited < 1.2  # ... and not past its limit of 1 s (plus one window)


def test_isa_option_names_a_path_this_cpu_lacks(capsys):
    """`--isa` forces the kernels' instruction-set path (kernels.set_isa) and refuses one the CPU cannot run, by name,
    before anything is built or timed; the path in use is left as it was."""
    from hf_binary_bert import kernels

    before = kernels.get_isa()
    with pytest.raises(SystemExit) as exit_info:
        _latency_module().main(["--isa", "no-such-isa", "--heads", "encoder", "--variants", "ours-W1A1"])
    assert exit_info.value.code == 2
    assert "--isa" in capsys.readouterr().err
    assert kernels.get_isa() == before


def test_reports_name_the_openmp_settings_they_ran_under(monkeypatch):
    latency = benchmark_module("latency")
    for name in latency.OPENMP_ENV:
        monkeypatch.delenv(name, raising=False)
    assert latency.openmp_env() == "none set"
    monkeypatch.setenv("OMP_PROC_BIND", "true")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    monkeypatch.setenv("OMP_UNRELATED", "x")  # only the listed variables
    assert latency.openmp_env() == "OMP_PROC_BIND=true GOMP_SPINCOUNT=1000"
    assert latency.environment(2)["openmp_env"] == "OMP_PROC_BIND=true GOMP_SPINCOUNT=1000"
    assert "OpenMP environment: OMP_PROC_BIND=true GOMP_SPINCOUNT=1000" in latency.environment_header(2)
