"""Issue 14 §6: one model called from 4 Python threads at once gives the outputs of serial calls — on the eager
kernels (per-module bound calls and their caches), on the native runtime (one plan, per-thread work buffers; the
native call releases the GIL) and on the reference path."""

import threading

import pytest
import torch
from conftest import tiny_config

from hf_binary_bert import BinaryBertForSequenceClassification, kernels

THREADS, CALLS = 4, 6
SCHEMES = {"W1A1-elastic": {"activation_bits": 1, "activation_quantizer": "elastic"},
           "W1A8-elastic": {"activation_bits": 8, "activation_quantizer": "elastic"},
           "W1A1-bi_attention": {"activation_bits": 1, "attention_type": "bi_attention"}}


def _model(scheme):
    torch.manual_seed(0)
    model = BinaryBertForSequenceClassification(tiny_config(weight_scale="learned_offset", scale_granularity="head",
                                                            num_hidden_layers=3, num_labels=3, **SCHEMES[scheme]))
    model.train()(input_ids=torch.randint(1, 99, (4, 13), generator=torch.Generator().manual_seed(0)))  # calibrate
    return model.eval().freeze()


def _inputs(i):
    """Call i's batch: its own sizes (so the threads need work buffers of different sizes) and padding."""
    g = torch.Generator().manual_seed(100 + i)
    batch, seq = 1 + i % 4, 8 + 7 * (i % 5)
    ids = torch.randint(1, 99, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, seq // 2:] = 0
    return ids, mask


@pytest.mark.parametrize("kernel", ["auto", "eager", "reference"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_four_threads_give_the_serial_outputs(scheme, kernel):
    if kernel != "reference" and not kernels.available():
        pytest.skip("compiled kernels not built")
    model = _model(scheme)
    model.set_inference_kernel(kernel)
    if kernel == "auto":
        assert model.bert.encoder.runtime().plan() is not None, model.bert.encoder.runtime().unsupported_reason
    inputs = [_inputs(i) for i in range(THREADS * CALLS)]
    with torch.inference_mode():
        serial = [model(input_ids=ids, attention_mask=mask).logits for ids, mask in inputs]
    fresh = _model(scheme)  # concurrent calls on a model no call has run yet: plans, binds and caches built at once
    fresh.set_inference_kernel(kernel)
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(t):
        try:
            start.wait()
            for r in range(3):  # the calls of every thread interleave, in a different order each round
                for i in range(t, len(inputs), THREADS):
                    ids, mask = inputs[i if r % 2 == 0 else len(inputs) - 1 - i]
                    with torch.inference_mode():
                        out = fresh(input_ids=ids, attention_mask=mask).logits
                    key = i if r % 2 == 0 else len(inputs) - 1 - i
                    if key in results:
                        assert torch.equal(results[key], out), f"call {key} differs between rounds"
                    results[key] = out
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, expected in enumerate(serial):  # same threads count per call: bit for bit
        assert torch.equal(results[i], expected), f"call {i}: {results[i]} vs serial {expected}"
