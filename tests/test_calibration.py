"""Explicit calibration (hf_binary_bert/calibration.py): an uncalibrated activation quantizer never calibrates on
inference data in eval mode (it raises, saying what to call); `calibrate(model, batches)` / `Calibration` set the
steps from the given batches; training still calibrates on its first batch; the flag is saved."""

import math

import pytest
import torch
from conftest import tiny_config

import hf_binary_bert as hb
from hf_binary_bert import ActivationQuantizer, BinaryBertForSequenceClassification, BinaryBertModel, NotCalibratedError
from hf_binary_bert.kernels import ops

COMBOS = {
    "W1A1-elastic": dict(activation_bits=1, activation_quantizer="elastic"),
    "W1A4-sign": dict(activation_bits=4),
    "W1A2-elastic-bi_attention": dict(activation_bits=1, activation_quantizer="elastic", attention_type="bi_attention"),
}
FIRST = "encoder.layer.0.attention.self.query.input_quantizer"  # its input is the embeddings' output


def _ids(seed, batch=3, seq=11):
    return torch.randint(1, 99, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _model(combo, packed=True):
    torch.manual_seed(0)
    model = BinaryBertModel(tiny_config(weight_scale="learned_offset", **COMBOS[combo])).eval()
    return model.freeze() if packed else model


def _quantizers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, ActivationQuantizer) and m.has_step}


@pytest.mark.parametrize("kernel", ["auto", "eager", "reference"])
@pytest.mark.parametrize("combo", list(COMBOS))
def test_uncalibrated_eval_forward_raises_and_does_not_calibrate(combo, kernel):
    model = _model(combo).set_inference_kernel(kernel)
    with torch.no_grad(), pytest.raises(NotCalibratedError, match=r"activation quantizer 'encoder\.layer\.0\.[a-z_.]+' "
                                        r".* hf_binary_bert\.calibrate\(model, batches\)"):
        model(input_ids=_ids(0))
    assert all(q.calibrated.item() == 0 and q.step.item() == 1.0 for q in _quantizers(model).values())


def test_uncalibrated_training_form_in_eval_mode_raises_too():
    model = _model("W1A4-sign", packed=False)
    with pytest.raises(NotCalibratedError, match="calibrate"):
        model(input_ids=_ids(0))  # with autograd: the reference forward


def test_training_still_calibrates_on_its_first_batch():
    model = _model("W1A4-sign", packed=False).train()
    model(input_ids=_ids(0))
    assert all(q.calibrated.item() == 1 for q in _quantizers(model).values())
    first = {n: q.step.detach().clone() for n, q in _quantizers(model).items()}
    model(input_ids=10 * _ids(1) % 99)
    assert all(torch.equal(q.step, first[n]) for n, q in _quantizers(model).items())  # only the first batch


@pytest.mark.parametrize("combo", list(COMBOS))
def test_calibrate_sets_every_step_to_the_mean_of_the_rule_over_the_batches(combo):
    model = _model(combo)
    batches = [{"input_ids": _ids(1)}, _ids(2, batch=2, seq=7)]  # a mapping and bare input ids
    assert hb.calibrate(model, batches) is model
    assert not model.training and all(q.calibrated.item() == 1 for q in _quantizers(model).values())
    quantizer = model.get_submodule(FIRST)
    with torch.no_grad():
        rules = []
        for ids in (_ids(1), _ids(2, batch=2, seq=7)):
            x = model.embeddings(input_ids=ids) - getattr(quantizer, "shift", 0)
            rules.append(2 * x.abs().mean() / math.sqrt(max(quantizer.q_p, 1)))
    assert torch.allclose(quantizer.step, (rules[0] + rules[1]) / 2, rtol=1e-6)
    assert not torch.allclose(quantizer.step, rules[0], rtol=1e-3)  # both batches count
    # a calibrated model's outputs do not depend on what it saw first
    with torch.no_grad():
        a_then_b = (model(input_ids=_ids(3)).last_hidden_state, model(input_ids=_ids(4)).last_hidden_state)
        b = model(input_ids=_ids(4)).last_hidden_state
    assert torch.equal(a_then_b[1], b)


def test_calibration_context_manager_and_recalibrate():
    model = _model("W1A4-sign")
    with hb.Calibration(model):
        with torch.no_grad():
            model(input_ids=_ids(1))
    steps = {n: q.step.detach().clone() for n, q in _quantizers(model).items()}
    hb.calibrate(model, [_ids(5)])  # already calibrated: kept
    assert all(torch.equal(q.step, steps[n]) for n, q in _quantizers(model).items())
    hb.calibrate(model, [_ids(5)], recalibrate=True)
    assert any(not torch.equal(q.step, steps[n]) for n, q in _quantizers(model).items())
    # outside the context the quantizers are back to normal
    assert all("_calibration_batches" not in q.__dict__ for q in _quantizers(model).values())


def test_calibrate_without_batches_names_a_quantizer():
    model = _model("W1A4-sign")
    with pytest.raises(ValueError, match=r"calibrate\(\): \d+ activation quantizer\(s\) saw no data, e\.g\. 'encoder"):
        hb.calibrate(model, [])


def test_calibrated_flag_is_saved_and_an_uncalibrated_checkpoint_refuses_eval(tmp_path):
    torch.manual_seed(0)
    model = BinaryBertForSequenceClassification(tiny_config(num_labels=2, activation_bits=2)).eval()
    model.save_pretrained(tmp_path / "raw")
    hb.calibrate(model, [_ids(1)])
    model.save_pretrained(tmp_path / "calibrated")
    raw = BinaryBertForSequenceClassification.from_pretrained(tmp_path / "raw").eval()
    with torch.no_grad(), pytest.raises(NotCalibratedError, match="classifier|bert.encoder"):
        raw(input_ids=_ids(2))
    loaded = BinaryBertForSequenceClassification.from_pretrained(tmp_path / "calibrated").eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=_ids(2)).logits, model.freeze()(input_ids=_ids(2)).logits)


@pytest.mark.skipif(not ops.available(), reason="the native runtime needs the compiled extension")
def test_calibration_runs_eager_and_the_native_runtime_takes_over_afterwards():
    model = _model("W1A1-elastic")
    assert model.encoder.runtime().plan() is None and "not calibrated" in model.encoder.runtime().unsupported_reason
    calls = []
    original = model.encoder.runtime()._run_rows
    model.encoder.runtime()._run_rows = lambda *a, **k: calls.append(1) or original(*a, **k)
    hb.calibrate(model, [_ids(1), _ids(2)])
    assert calls == [] and "inference_kernel" not in model.encoder.__dict__
    assert model.encoder.runtime().plan() is not None
    with torch.no_grad():
        model(input_ids=_ids(3))
    assert calls == [1]
