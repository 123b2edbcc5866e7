"""The kernels' thread placement (bitgemm.cpp `spread_team`, `WakeAhead`): a worker found on the CPU of the thread that
opened a parallel region is moved to another CPU of its affinity mask, and no thread is left pinned (the wake-ahead's
helper included)."""

import os
import time

import pytest
import torch
from conftest import tiny_config

from hf_binary_bert import BinaryBertModel, kernels
from hf_binary_bert.kernels import ops

pytestmark = [pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built"),
              pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                                 reason="needs Linux and two CPUs in this process's affinity mask")]


def _masks() -> dict[str, str]:
    """Each thread of this process: its allowed CPUs (/proc/self/task/<tid>/status)."""
    masks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as status:
                masks[tid] = next(line.split()[1] for line in status if line.startswith("Cpus_allowed_list"))
        except (FileNotFoundError, StopIteration):  # a thread that ended meanwhile
            pass
    return masks


def test_a_worker_on_the_callers_cpu_moves_to_another_and_keeps_its_mask():
    result = ops._bitgemm.spread_check()
    if result is None:
        pytest.skip("kernels built without OpenMP")
    before, after, restored = result
    assert after != before and after in os.sched_getaffinity(0)
    assert restored


def test_runtime_forwards_leave_every_thread_with_the_process_mask():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = BinaryBertModel(tiny_config(num_hidden_layers=2, activation_bits=1, activation_quantizer="elastic"))
        model.train()(input_ids=torch.randint(1, 99, (2, 40)))  # calibrates the activation quantizers
        model.eval().freeze()  # packed: the native runtime runs it
        expected = _masks()[str(os.getpid())]
        with torch.inference_mode():
            for _ in range(20):
                model(input_ids=torch.randint(1, 99, (2, 40)))
            for _ in range(3):  # short forwards after an idle wait: the wake-ahead pins its helper, which unpins itself
                time.sleep(0.05)
                model(input_ids=torch.randint(1, 99, (1, 20)))
        time.sleep(0.2)  # the helper has run (it restores its mask first) and gone back to sleep
        assert model.encoder.runtime().plan() is not None  # the native runtime ran
        assert set(_masks().values()) == {expected}
    finally:
        torch.set_num_threads(threads)
