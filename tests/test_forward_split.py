"""benchmarks/forward_split.py: the parts of a native-runtime forward are timed, add up, and the timers are removed."""

import pytest
import torch
from conftest import benchmark_module, tiny_config

from hf_binary_bert import BinaryBertModel, kernels
from hf_binary_bert.kernels import ops

pytestmark = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")


def _split_module():
    return benchmark_module("forward_split")


def test_split_times_the_native_calls_and_removes_its_timers():
    split = _split_module().split
    torch.manual_seed(0)
    model = BinaryBertModel(tiny_config(weight_scale="learned_offset", scale_granularity="head", num_hidden_layers=2,
                                        activation_bits=1, activation_quantizer="elastic"))
    model.train()(input_ids=torch.randint(1, 99, (4, 13)))  # calibrates the activation quantizers
    model.eval().freeze()
    builtins = {name: getattr(ops._bitgemm, name) for name in ("encoder_forward", "unchanged")}
    ms = split(model, "2x16", forwards=3, rounds=2)
    # the runtime ran (its native encoder call and plan check were timed) inside the encoder runtime's time, and the
    # parts' times lie inside the whole forward's
    assert ms["encoder_forward"] > 0 and ms["unchanged"] > 0
    assert ms["encoder_forward"] + ms["unchanged"] <= ms["encoder runtime"]
    assert ms["encoder runtime"] + ms["embeddings module"] + ms["pooler module"] <= ms["whole forward"]
    # the wrappers are gone: the extension's functions and the class methods are back
    assert all(getattr(ops._bitgemm, name) is function for name, function in builtins.items())
    assert not any("forward" in m.__dict__ for m in (model.embeddings, model.encoder, model.pooler))
    assert not any(name in model.encoder.runtime().__dict__ for name in ("plan", "_run_rows"))


def test_idle_sleeps_before_each_forward_and_is_not_timed(monkeypatch):
    module = _split_module()
    torch.manual_seed(0)
    model = BinaryBertModel(tiny_config(weight_scale="learned_offset", scale_granularity="head", num_hidden_layers=1,
                                        activation_bits=1, activation_quantizer="elastic"))
    model.train()(input_ids=torch.randint(1, 99, (2, 9)))
    model.eval().freeze()
    slept, sleep = [], module.time.sleep
    monkeypatch.setattr(module.time, "sleep", lambda seconds: (slept.append(seconds), sleep(seconds)))
    ms = module.split(model, "1x8", forwards=3, rounds=2, idle=0.06)
    assert slept == [0.06] * 6  # one sleep before each of the 2 × 3 timed forwards (the 3 warm-up forwards: none)
    # 60 ms of sleep per forward are not in the forward's time (a tiny model's forward takes a few ms)
    assert 0 < ms["whole forward"] < 40
    assert ms["encoder runtime"] <= ms["whole forward"]
