"""The inference policy of a packed model is one object (issue 15 §2): `set_inference_kernel` makes an
`InferencePlan`, shared by every packed Linear, quantized attention module and the encoder's native runtime, and the
tensors the kernels derive from the weights are cached in it, not in the modules."""

import pytest
import torch
from conftest import tiny_config

import hf_binary_bert as hb
from hf_binary_bert.kernels.linear import DEFAULT_PLAN, InferencePlan
from hf_binary_bert.runtime import BinaryBertEncoder


def _readers(model):
    return [m for m in model.modules()
            if isinstance(m, (hb.PackedBinaryLinear, BinaryBertEncoder)) or hasattr(m, "query_quantizer")]


def test_one_plan_for_the_whole_model(input_ids):
    model = hb.BinaryBertForSequenceClassification(tiny_config(activation_bits=1)).eval().freeze()
    assert model.inference_plan is DEFAULT_PLAN
    model.set_inference_kernel("eager", float_activations="int8")
    plan = model.inference_plan
    assert (plan.kernel, plan.float_activations, plan.mlm_head) == ("eager", "int8", "float32")
    readers = _readers(model)
    assert len(readers) == 2 * 6 + 2 * 1 + 1  # six Linears and one attention per layer, the encoder
    assert all(m.inference_plan is plan for m in readers)
    assert all(m.inference_kernel == "eager" for m in readers if not hasattr(m, "query_quantizer"))
    with torch.inference_mode():
        model(input_ids)
    layers = [m for m in readers if isinstance(m, hb.PackedBinaryLinear)]
    assert all(m in plan.caches and "bound" in plan.cache_of(m) for m in layers)  # the kernels' bound calls
    assert not any(k.startswith("_kernel") for m in layers for k in vars(m))
    model.set_inference_kernel("reference")  # a new plan: new caches, the same model-wide sharing
    assert model.inference_plan.float_activations == "int8" and len(model.inference_plan.caches) == 0
    assert all(m.inference_plan is model.inference_plan for m in _readers(model))


def test_refreezing_keeps_the_plan():
    model = hb.BinaryBertModel(tiny_config()).freeze().set_inference_kernel("reference")
    model.unfreeze().freeze()
    assert all(m.inference_plan is model.inference_plan for m in _readers(model))
    assert model.inference_plan.kernel == "reference"


def test_a_layer_of_its_own_and_bad_values():
    layer = hb.PackedBinaryLinear(16, 8)
    assert layer.inference_plan is DEFAULT_PLAN
    layer.inference_kernel = "reference"  # this layer only: a plan of its own
    assert layer.inference_plan.kernel == "reference" and DEFAULT_PLAN.kernel == "auto"
    for field, value in (("kernel", "fast"), ("float_activations", "int4"), ("mlm_head", "int4")):
        with pytest.raises(ValueError, match=f"{field} must be one of"):
            InferencePlan(**{field: value})
