"""Full binarization (1-1-1): activation quantizers, quantized / Bi-Attention, 1-bit embeddings, their packed
checkpoints and multi-step `from_teacher`. Every number is compared with a formula written out here."""

import json
import math
import os

import pytest
import torch
from conftest import straddle_shift, tiny_bert_config, tiny_config
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertForSequenceClassification
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import BertSelfAttention

import hf_binary_bert  # noqa: F401  (registers binary_bert with the Auto classes)
from hf_binary_bert import BinaryBertConfig, BinaryBertForMaskedLM, BinaryBertForSequenceClassification, BinaryLinear
from hf_binary_bert.attention import bi_attention, binary_softmax_attention, heaviside_ste
from hf_binary_bert.binarization import BinaryEmbedding, PackedBinaryEmbedding, binarized_target
from hf_binary_bert.binarization.activation import ActivationQuantizer, make_activation_quantizer, quantization_range
from hf_binary_bert.format import read_safetensors_header

NEG = torch.finfo(torch.float32).min


def sgn(x):
    """sign with sign(0) = +1."""
    return torch.where(x >= 0, 1.0, -1.0)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------------------------
# 1. Config


@pytest.mark.parametrize(
    "field, value",
    [("activation_bits", 3), ("activation_bits", 16), ("activation_quantizer", "foo"), ("attention_type", "foo"),
     ("embedding_bits", 8), ("binarized_embeddings", ["foo"]), ("binarized_embeddings", ["word", "pooler"])],
)
def test_config_rejects_unknown_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"BinaryBertConfig\.{field} must be one of \[") as err:
        tiny_config(**{field: value})
    assert repr(value[-1] if isinstance(value, list) else value) in str(err.value)


def test_config_bi_attention_needs_quantized_activations():
    with pytest.raises(ValueError, match=r"attention_type='bi_attention'.*activation_bits < 32"):
        tiny_config(attention_type="bi_attention")
    with pytest.raises(ValueError, match=r"attention_type='bi_attention'"):
        tiny_config(attention_type="bi_attention", activation_bits=32)
    assert tiny_config(attention_type="bi_attention", activation_bits=8).attention_type == "bi_attention"


def test_config_defaults_and_quantized_attention():
    config = tiny_config()
    assert (config.activation_bits, config.activation_quantizer, config.attention_type, config.embedding_bits) == (
        32, "sign", "softmax", 32)
    assert config.binarized_embeddings == ["word"]
    assert config.quantized_attention is None
    assert tiny_config(activation_bits=8).quantized_attention == "binary_bert_softmax"
    assert tiny_config(activation_bits=1, attention_type="bi_attention").quantized_attention == "bi_attention"
    assert tiny_config(binarized_embeddings=["position", "word", "position"]).binarized_embeddings == ["position", "word"]


def test_config_round_trip_keeps_the_new_fields(tmp_path):
    config = tiny_config(activation_bits=2, activation_quantizer="elastic", attention_type="bi_attention",
                         embedding_bits=1, binarized_embeddings=["token_type", "word"], tie_word_embeddings=False)
    new = {"activation_bits": 2, "activation_quantizer": "elastic", "attention_type": "bi_attention",
           "embedding_bits": 1, "binarized_embeddings": ["token_type", "word"]}
    assert {k: config.binarization[k] for k in new} == new
    from_dict = BinaryBertConfig.from_dict(config.to_dict())
    assert {k: getattr(from_dict, k) for k in new} == new
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, BinaryBertConfig)
    assert {k: getattr(loaded, k) for k in new} == new
    assert loaded.binarization == config.binarization
    assert loaded.quantized_attention == "bi_attention"
    # and a config with other values is told apart (the comparison above can fail)
    assert BinaryBertConfig.from_dict(tiny_config(embedding_bits=16).to_dict()).embedding_bits == 16


# ------------------------------------------------------------------------------------------------------------------
# 2. ActivationQuantizer


def test_quantization_range():
    assert quantization_range(1, True) == (-1, 1)
    assert quantization_range(1, False) == (0, 1)
    assert quantization_range(2, True) == (-2, 1)
    assert quantization_range(4, True) == (-8, 7)
    assert quantization_range(2, False) == (0, 3)
    assert quantization_range(8, False) == (0, 255)


@pytest.mark.parametrize("ste", ["clipped_identity", "approx_sign"])
def test_sign_1bit_signed_forward_and_ste(ste):
    x = torch.cat([torch.randn(40, generator=_gen(0)) * 1.5, torch.tensor([0.0, 1.0, -1.0, 0.25])]).requires_grad_()
    grad_out = torch.randn(x.shape, generator=_gen(1))
    q = ActivationQuantizer(1, scheme="sign", ste=ste)
    assert list(q.parameters()) == [] and not hasattr(q, "calibrated")
    y = q(x)
    assert torch.equal(y, sgn(x.detach()))
    y.backward(grad_out)
    xd = x.detach()
    if ste == "clipped_identity":
        expected = grad_out * (xd.abs() <= 1).float()
    else:
        expected = grad_out * (2 - 2 * xd.abs()).clamp_min(0)
    assert torch.allclose(x.grad, expected, atol=1e-6)
    assert (x.grad == 0).any() and (x.grad != 0).any()


def test_sign_1bit_unsigned_is_threshold_at_half():
    x = torch.cat([torch.rand(50, generator=_gen(2)), torch.tensor([0.5, 0.4999, 0.0, 1.0])])
    y = ActivationQuantizer(1, signed=False, scheme="sign")(x)
    assert torch.equal(y, (x >= 0.5).float())
    assert y[-4:].tolist() == [1.0, 0.0, 0.0, 1.0]


def _lsq_reference(x, s, q_n, q_p):
    return s * torch.round(torch.clamp(x / s, q_n, q_p))


def test_sign_4bit_signed_lsq_calibration_forward_and_gradients():
    x = torch.randn(6, 10, generator=_gen(3))
    x[0, 0], x[0, 1] = 50.0, -50.0  # outside the clip range
    x.requires_grad_()
    grad_out = torch.randn(x.shape, generator=_gen(4))
    q = ActivationQuantizer(4, scheme="sign")
    assert q.calibrated.dtype == torch.uint8 and q.calibrated.item() == 0 and not hasattr(q, "shift")
    y = q(x)
    xd = x.detach()
    s = 2 * xd.abs().mean() / math.sqrt(7)
    assert q.calibrated.item() == 1
    assert torch.allclose(q.step.detach(), s, rtol=1e-6)
    s = q.step.detach()
    assert torch.allclose(y.detach(), _lsq_reference(xd, s, -8, 7), atol=1e-6)
    levels = torch.round(y.detach() / s)
    assert torch.allclose(y.detach() / s, levels, atol=1e-4)
    assert levels.min() == -8 and levels.max() == 7 and levels.unique().numel() <= 16
    y.backward(grad_out)
    u = xd / s
    inside = (u >= -8) & (u <= 7)
    assert not inside.all()
    assert torch.allclose(x.grad, grad_out * inside.float(), atol=1e-6)
    d_step = torch.where(inside, torch.round(u) - u, torch.where(u < -8, torch.tensor(-8.0), torch.tensor(7.0)))
    expected_step_grad = (grad_out * d_step).sum() / math.sqrt(x.numel() * 7)
    assert torch.allclose(q.step.grad, expected_step_grad, rtol=1e-4, atol=1e-6)


def test_sign_2bit_unsigned_lsq():
    x = torch.rand(4, 9, generator=_gen(5)) * 3
    q = ActivationQuantizer(2, signed=False, scheme="sign")
    y = q(x)
    s = 4 * x.abs().mean() / math.sqrt(3)
    assert torch.allclose(q.step.detach(), s, rtol=1e-6)
    s = q.step.detach()
    assert torch.allclose(y.detach(), _lsq_reference(x, s, 0, 3), atol=1e-6)
    levels = torch.round(y.detach() / s)
    assert set(levels.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    # once calibrated: every level, clipped at 0 and 3
    u = torch.tensor([0.0, 0.4, 0.6, 1.2, 1.6, 2.4, 2.6, 3.4, 10.0, -1.0])
    assert torch.allclose(q(s * u).detach(), s * torch.tensor([0.0, 0, 1, 1, 2, 2, 3, 3, 3, 0]), atol=1e-6)
    # negative inputs clip to 0
    assert torch.equal(q(-x).detach(), torch.zeros_like(x))


def test_elastic_1bit_signed_calibration_forward_and_gradients():
    C = 6
    x = torch.randn(3, 4, C, generator=_gen(6))
    beta = torch.tensor([0.3, -0.2, 0.0, 0.5, -0.6, 0.1])
    q = ActivationQuantizer(1, scheme="elastic", shift_shape=(C,))
    assert q.shift.shape == (C,)
    with torch.no_grad():
        q.shift.copy_(beta)
    q(x)  # first forward: α₀ = 2·mean|x − β| / √1
    assert q.calibrated.item() == 1
    assert torch.allclose(q.step.detach(), 2 * (x - beta).abs().mean(), rtol=1e-6)

    alpha = 0.7
    with torch.no_grad():
        q.step.fill_(alpha)
    xg = x.clone().requires_grad_()
    grad_out = torch.randn(x.shape, generator=_gen(7))
    y = q(xg)
    assert torch.allclose(y.detach(), alpha * sgn(x - beta), atol=1e-7)
    assert set(torch.round(y.detach() / alpha).unique().tolist()) == {-1.0, 1.0}
    y.backward(grad_out)
    window = ((x - beta).abs() <= alpha).float()
    assert 0 < window.sum() < window.numel()
    assert torch.allclose(xg.grad, grad_out * window, atol=1e-6)
    assert torch.allclose(q.step.grad, (sgn(x - beta) * grad_out).sum() / math.sqrt(x.numel()), rtol=1e-5, atol=1e-6)
    assert torch.allclose(q.shift.grad, -(grad_out * window).sum(dim=(0, 1)), atol=1e-5)


def test_least_squares_step_init_starts_1bit_signed_elastic_at_mean_abs_and_leaves_the_others_to_lsq():
    """activation_step_init="least_squares": α₀ = mean|x − β| = argmin_α ‖(x − β) − α·sign(x − β)‖² for a 1-bit
    signed elastic quantizer; 2-bit signed, 1-bit unsigned and "sign"-scheme quantizers keep LSQ's rule."""
    C = 6
    x = torch.randn(3, 4, C, generator=_gen(6))
    beta = torch.tensor([0.3, -0.2, 0.0, 0.5, -0.6, 0.1])
    q = ActivationQuantizer(1, scheme="elastic", shift_shape=(C,), step_init="least_squares")
    with torch.no_grad():
        q.shift.copy_(beta)
    q(x)
    d = x - beta
    assert torch.allclose(q.step.detach(), d.abs().mean(), rtol=1e-6)
    # it is the least-squares scale: a step 1 % either side approximates x − β worse
    def err(a):
        return ((d - a * sgn(d)) ** 2).sum().item()

    a = q.step.item()
    assert err(a) < err(1.01 * a) and err(a) < err(0.99 * a)
    two = ActivationQuantizer(2, scheme="elastic", shift_shape=(C,), step_init="least_squares")
    two(x)
    assert torch.allclose(two.step.detach(), 2 * x.abs().mean() / math.sqrt(1), rtol=1e-6)  # Q_p = 1, β = 0
    p = torch.rand(5, 8, generator=_gen(8))
    unsigned = ActivationQuantizer(1, signed=False, scheme="elastic", step_init="least_squares")
    unsigned(p)
    assert torch.allclose(unsigned.step.detach(), 4 * p.mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="step_init"):
        ActivationQuantizer(1, scheme="elastic", step_init="mean")


def test_activation_step_init_reaches_every_quantizer_and_is_saved(tmp_path):
    config = tiny_config(activation_bits=1, activation_quantizer="elastic", activation_step_init="least_squares")
    model = BinaryBertForSequenceClassification(config)
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    assert quantizers and all(q.step_init == "least_squares" for q in quantizers)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["activation_step_init"] == "least_squares"
    assert BinaryBertConfig.from_pretrained(tmp_path).activation_step_init == "least_squares"
    assert BinaryBertConfig().activation_step_init == "lsq"
    with pytest.raises(ValueError, match="activation_step_init"):
        BinaryBertConfig(activation_step_init="xnor")


def test_elastic_1bit_unsigned_values_are_zero_or_alpha():
    x = torch.rand(5, 8, generator=_gen(8))
    q = ActivationQuantizer(1, signed=False, scheme="elastic")
    assert not hasattr(q, "shift")
    y = q(x).detach()
    alpha = q.step.detach()
    assert torch.allclose(alpha, 4 * x.mean(), rtol=1e-6)
    assert torch.allclose(y, alpha * torch.round(torch.clamp(x / alpha, 0, 1)), atol=1e-7)
    assert set(torch.round(y / alpha).unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("kwargs", [dict(bits=4), dict(bits=2, scheme="elastic", shift_shape=(7,))])
def test_loaded_quantizer_does_not_recalibrate(kwargs):
    x1 = torch.randn(4, 7, generator=_gen(9))
    x2 = 10 * torch.randn(4, 7, generator=_gen(10))
    first = ActivationQuantizer(**kwargs)
    first(x1)
    if "shift_shape" in kwargs:
        with torch.no_grad():
            first.shift.normal_(generator=_gen(11))
    second = ActivationQuantizer(**kwargs)
    second.load_state_dict(first.state_dict())
    assert second.calibrated.item() == 1
    y = second(x2)
    assert torch.equal(second.step, first.step)
    assert torch.equal(y, first(x2))
    # a fresh quantizer fed x2 does calibrate to another step (so the check above can fail)
    fresh = ActivationQuantizer(**kwargs)
    fresh(x2)
    assert not torch.allclose(fresh.step, first.step)


@pytest.mark.parametrize("bits, scheme", [(3, "sign"), (32, "sign"), (0, "elastic"), (4, "foo")])
def test_quantizer_rejects_bad_bits_and_scheme(bits, scheme):
    with pytest.raises(ValueError, match="activation (bits|scheme) must be one of"):
        ActivationQuantizer(bits, scheme=scheme)


def test_make_activation_quantizer_follows_the_config():
    assert isinstance(make_activation_quantizer(tiny_config()), nn.Identity)
    q = make_activation_quantizer(tiny_config(activation_bits=4, activation_quantizer="elastic", ste="approx_sign"),
                                  signed=False, shift_shape=(3,))
    assert isinstance(q, ActivationQuantizer)
    assert (q.bits, q.signed, q.scheme, q.ste, q.q_n, q.q_p) == (4, False, "elastic", "approx_sign", 0, 15)
    assert q.shift.shape == (3,)


# ------------------------------------------------------------------------------------------------------------------
# 3. Attention functions


def _qkv(seed=12):
    g = _gen(seed)
    return (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))


def _sign_module(**extra):
    module = nn.Module()
    for part in ("query", "key", "value"):
        setattr(module, f"{part}_quantizer", ActivationQuantizer(1, scheme="sign"))
    for name, quantizer in extra.items():
        setattr(module, name, quantizer)
    return module


def _padding_mask():
    """transformers' eager mask [B, 1, T, T]: 0 to keep, float32 min on padded keys (batch 1 keeps 3 keys)."""
    mask = torch.zeros(2, 1, 5, 5)
    mask[1, :, :, 3:] = NEG
    return mask


def test_attention_functions_are_registered():
    assert ALL_ATTENTION_FUNCTIONS["bi_attention"] is bi_attention
    assert ALL_ATTENTION_FUNCTIONS["binary_bert_softmax"] is binary_softmax_attention
    assert "bi_attention" in ALL_MASK_ATTENTION_FUNCTIONS and "binary_bert_softmax" in ALL_MASK_ATTENTION_FUNCTIONS


def test_bi_attention_matches_reference():
    q, k, v = _qkv()
    out, weights = bi_attention(_sign_module(), q, k, v, None)
    ref_w = ((sgn(q) @ sgn(k).transpose(2, 3)) * 4**-0.5 > 0).float()
    assert torch.equal(weights, ref_w)
    assert torch.equal(out, (ref_w @ sgn(v)).transpose(1, 2))
    assert out.shape == (2, 5, 2, 4) and weights.shape == (2, 2, 5, 5)
    assert (ref_w == 0).any() and (ref_w == 1).any()


def test_bi_attention_with_padding_mask():
    q, k, v = _qkv()
    mask = _padding_mask()
    out, weights = bi_attention(_sign_module(), q, k, v, mask)
    assert set(weights.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(weights[1, :, :, 3:], torch.zeros(2, 5, 2))
    ref_w = ((sgn(q) @ sgn(k).transpose(2, 3)) * 0.5 > 0).float()
    ref_w[1, :, :, 3:] = 0
    assert torch.equal(weights, ref_w)
    assert torch.equal(out, (ref_w @ sgn(v)).transpose(1, 2))
    assert weights[1, :, :, :3].sum() > 0


def test_binary_softmax_attention_with_elastic_probabilities():
    q, k, v = _qkv(13)
    mask = _padding_mask()
    module = _sign_module(probs_quantizer=ActivationQuantizer(1, signed=False, scheme="elastic"))
    out, probs = binary_softmax_attention(module, q, k, v, mask, scaling=0.5)
    ref_p = torch.softmax(sgn(q) @ sgn(k).transpose(2, 3) * 0.5 + mask, dim=-1)
    alpha = module.probs_quantizer.step.detach()
    assert torch.allclose(alpha, 4 * ref_p.mean(), rtol=1e-5)
    levels = torch.round(probs.detach() / alpha)
    assert set(levels.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(probs, alpha * torch.round(torch.clamp(ref_p / alpha, 0, 1)), atol=1e-6)
    assert torch.equal(probs[1, :, :, 3:], torch.zeros(2, 5, 2))
    assert torch.allclose(out, (probs @ sgn(v)).transpose(1, 2), atol=1e-6)


def test_binary_softmax_attention_with_sign_probabilities():
    q, k, v = _qkv(14)
    module = _sign_module(probs_quantizer=ActivationQuantizer(1, signed=False, scheme="sign"))
    out, probs = binary_softmax_attention(module, q, k, v, None)
    ref_p = torch.softmax(sgn(q) @ sgn(k).transpose(2, 3) * 0.5, dim=-1)
    assert torch.equal(probs, (ref_p >= 0.5).float())
    assert torch.allclose(out, (probs @ sgn(v)).transpose(1, 2))


def test_heaviside_ste_forward_and_gradient():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.2, 1.0, 1.5, 3.0], requires_grad=True)
    y = heaviside_ste(x)
    assert y.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    grad_out = torch.arange(1.0, 9.0)
    y.backward(grad_out)
    assert torch.equal(x.grad, grad_out * (x.detach().abs() <= 1).float())


# ------------------------------------------------------------------------------------------------------------------
# 4. Models


def _self_attentions(model):
    return [m for m in model.modules() if isinstance(m, BertSelfAttention)]


def _padded_mask(ids):
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return mask


@pytest.mark.parametrize("attention_type, implementation", [("softmax", "binary_bert_softmax"), ("bi_attention", "bi_attention")])
def test_quantized_model_uses_registered_attention_and_has_quantizers(attention_type, implementation):
    model = BinaryBertForSequenceClassification(tiny_config(activation_bits=1, attention_type=attention_type))
    assert model.config._attn_implementation == implementation
    attentions = _self_attentions(model)
    assert len(attentions) == 2
    for module in attentions:
        for part in ("query", "key", "value"):
            quantizer = getattr(module, f"{part}_quantizer")
            assert isinstance(quantizer, ActivationQuantizer) and quantizer.bits == 1 and quantizer.signed
        if attention_type == "softmax":
            assert isinstance(module.probs_quantizer, ActivationQuantizer) and not module.probs_quantizer.signed
        else:
            assert not hasattr(module, "probs_quantizer")
    linears = [m for m in model.modules() if isinstance(m, BinaryLinear)]
    assert len(linears) == 12
    assert all(isinstance(m.input_quantizer, ActivationQuantizer) and m.input_quantizer.bits == 1 for m in linears)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == implementation
    with pytest.raises(ValueError, match=r"attn_implementation='sdpa' is not possible"):
        model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == implementation


def test_sdpa_is_refused_at_construction_and_loading(tmp_path):
    with pytest.raises(ValueError, match=r"attn_implementation='sdpa'.*eager path"):
        BinaryBertForSequenceClassification(tiny_config(activation_bits=1, attn_implementation="sdpa"))
    model = BinaryBertForSequenceClassification(tiny_config(activation_bits=2, attention_type="bi_attention"))
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"attn_implementation='sdpa'.*'bi_attention'"):
        BinaryBertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
    with pytest.raises(ValueError, match=r"attn_implementation='sdpa'"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
    loaded = BinaryBertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager")
    assert loaded.config._attn_implementation == "bi_attention"


def test_full_precision_activations_keep_transformers_attention(tmp_path):
    model = BinaryBertForSequenceClassification(tiny_config())
    plain = BertForSequenceClassification(tiny_bert_config())
    assert model.config._attn_implementation == plain.config._attn_implementation
    assert model.config._attn_implementation in ("sdpa", "eager")
    assert not any(hasattr(m, "query_quantizer") or hasattr(m, "probs_quantizer") for m in _self_attentions(model))
    assert all(isinstance(m.input_quantizer, nn.Identity) for m in model.modules() if isinstance(m, BinaryLinear))
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    model.save_pretrained(tmp_path)
    loaded = BinaryBertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert loaded.config._attn_implementation == "sdpa"


def test_bi_attention_model_attentions_are_binary_and_mask_padding(input_ids):
    torch.manual_seed(0)
    model = BinaryBertForSequenceClassification(tiny_config(activation_bits=1, attention_type="bi_attention")).eval()
    mask = _padded_mask(input_ids)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask, output_attentions=True)
    assert len(out.attentions) == 2
    for weights in out.attentions:
        assert weights.shape == (3, 4, 11, 11)
        assert set(weights.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(weights[1, :, :, 7:], torch.zeros(4, 11, 4))
        assert torch.equal(weights[2, :, :, 4:], torch.zeros(4, 11, 7))
        assert weights[0].sum() > 0


def test_softmax_1bit_sign_model_probabilities_are_binary(input_ids):
    torch.manual_seed(0)
    model = BinaryBertForSequenceClassification(tiny_config(activation_bits=1)).eval()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=_padded_mask(input_ids), output_attentions=True)
    for probs in out.attentions:
        assert set(probs.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(probs[2, :, :, 4:], torch.zeros(4, 11, 7))


@pytest.mark.parametrize("hidden_act", ["relu", "gelu"])
def test_elastic_relu_gives_the_ffn_output_an_unsigned_quantizer(hidden_act):
    model = BinaryBertForSequenceClassification(
        tiny_config(activation_bits=1, activation_quantizer="elastic", hidden_act=hidden_act))
    seen = {"output": 0, "other": 0}
    for name, module in model.named_modules():
        if not isinstance(module, BinaryLinear):
            continue
        quantizer = module.input_quantizer
        assert quantizer.scheme == "elastic" and quantizer.shift.shape == (module.in_features,)
        if binarized_target(name) == "output":
            assert name.endswith(".output.dense") and module.in_features == 37
            assert quantizer.signed is (hidden_act != "relu")
            seen["output"] += 1
        else:
            assert quantizer.signed
            seen["other"] += 1
    assert seen == {"output": 2, "other": 10}
    for attention in _self_attentions(model):
        assert attention.query_quantizer.shift.shape == (4, 1, 8)
        assert not hasattr(attention.probs_quantizer, "shift") and not attention.probs_quantizer.signed


# ------------------------------------------------------------------------------------------------------------------
# 5. Embeddings


def test_binary_embedding_mean_abs_forward():
    torch.manual_seed(0)
    emb = BinaryEmbedding(10, 12)
    ids = torch.tensor([[0, 3, 9], [3, 3, 1]])
    table = emb.weight.detach()
    expected = (table.abs().mean(1, keepdim=True) * sgn(table))[ids]
    assert torch.allclose(emb(ids), expected, atol=1e-7)
    assert emb(ids).shape == (2, 3, 12)


@pytest.mark.parametrize("scheme", ["mean_abs", "learned", "learned_offset"])
def test_binary_embedding_freeze_unfreeze_round_trip(scheme):
    torch.manual_seed(1)
    emb = BinaryEmbedding(10, 12, weight_scale=scheme)
    table = emb.weight.detach()
    if scheme == "learned_offset":
        gamma = table.mean(1)
        alpha = (table - gamma[:, None]).abs().mean(1)
        assert emb.weight_scale.shape == (10,) and emb.weight_offset.shape == (10,)
        assert torch.allclose(emb.weight_offset, gamma) and torch.allclose(emb.weight_scale, alpha)
    if scheme != "mean_abs":
        with torch.no_grad():  # move the learned scales off their initial values
            emb.weight_scale.mul_(torch.linspace(0.5, 1.5, 10))
    alpha, gamma = emb.scales()
    gamma = torch.zeros(10) if gamma is None else gamma.detach()
    expected = alpha.detach()[:, None] * sgn(table - gamma[:, None]) + gamma[:, None]
    ids = torch.randint(0, 10, (3, 5), generator=_gen(15))
    assert torch.allclose(emb(ids), expected[ids], atol=1e-6)

    packed = emb.freeze()
    assert isinstance(packed, PackedBinaryEmbedding)
    assert packed.weight_packed.dtype == torch.uint8 and packed.weight_packed.shape == (10, 2)
    assert packed.weight_scale.shape == (10,) and hasattr(packed, "weight_offset") == (scheme == "learned_offset")
    out = packed(ids)
    assert out.shape == (3, 5, 12)
    assert torch.equal(out, emb(ids).detach())

    back = packed.unfreeze(scheme)
    assert isinstance(back, BinaryEmbedding) and back.scale_mode == scheme
    for name, tensor in back.packed_tensors().items():
        assert torch.allclose(tensor.float(), emb.packed_tensors()[name].float(), atol=1e-6), name
    assert torch.equal(back.packed_tensors()["weight_packed"], emb.packed_tensors()["weight_packed"])
    assert torch.allclose(back(ids), out, atol=1e-6)


def test_packed_binary_embedding_gathers_rows():
    packed = PackedBinaryEmbedding(7, 10)
    signs = torch.randint(0, 2, (7, 10), generator=_gen(16)).bool()
    from hf_binary_bert.format import pack_bits

    with torch.no_grad():
        packed.weight_packed.copy_(pack_bits(signs))
        packed.weight_scale.copy_(torch.arange(1.0, 8.0))
    ids = torch.randint(0, 7, (3, 5), generator=_gen(17))
    table = torch.arange(1.0, 8.0)[:, None] * torch.where(signs, 1.0, -1.0)
    assert torch.equal(packed(ids), table[ids])
    assert packed(ids).shape == (3, 5, 10)


def test_masked_lm_with_binary_word_embeddings_needs_untied_decoder(input_ids):
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        BinaryBertForMaskedLM(tiny_config(embedding_bits=1))
    model = BinaryBertForMaskedLM(tiny_config(embedding_bits=1, tie_word_embeddings=False))
    embeddings = model.bert.embeddings
    assert isinstance(embeddings.word_embeddings, BinaryEmbedding)
    assert type(embeddings.position_embeddings) is nn.Embedding
    assert model.cls.predictions.decoder.weight is not embeddings.word_embeddings.weight
    assert model(input_ids=input_ids).logits.shape == (3, 11, 99)
    # leaving "word" out keeps the tie possible
    tied = BinaryBertForMaskedLM(tiny_config(embedding_bits=1, binarized_embeddings=["position"]))
    assert isinstance(tied.bert.embeddings.position_embeddings, BinaryEmbedding)
    assert type(tied.bert.embeddings.word_embeddings) is nn.Embedding


# ------------------------------------------------------------------------------------------------------------------
# 6. Packed checkpoints

COMBOS = {
    "A1-sign-softmax": dict(activation_bits=1),
    "A1-bi_attention": dict(activation_bits=1, attention_type="bi_attention"),
    "A4-elastic-relu": dict(activation_bits=4, activation_quantizer="elastic", hidden_act="relu"),
    "A1-elastic-E1-offset": dict(activation_bits=1, activation_quantizer="elastic", embedding_bits=1,
                                 weight_scale="learned_offset"),
    "A2-sign-E1-all": dict(activation_bits=2, embedding_bits=1, binarized_embeddings=["word", "position", "token_type"]),
    # BiT / BiBERT binarize the pooler too (their QuantizeLinear pooler); its input is quantized like the others
    "A1-elastic-E1-pooler": dict(activation_bits=1, activation_quantizer="elastic", embedding_bits=1,
                                 weight_scale="learned_offset", binarized_modules=[
                                     "query", "key", "value", "attention_output", "intermediate", "output", "pooler"]),
}


def _teacher():
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(num_labels=3)).eval()


def _trained_student(ids, **kwargs):
    """A student from the tiny teacher after one training forward/backward (calibrating its quantizers), with its
    learned quantizer parameters moved off their initial values."""
    student = BinaryBertForSequenceClassification.from_teacher(_teacher(), **kwargs)
    student.train()
    out = student(input_ids=ids, attention_mask=_padded_mask(ids), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    g = _gen(18)
    with torch.no_grad():
        for module in student.modules():
            if isinstance(module, ActivationQuantizer) and module.has_step:
                assert module.calibrated.item() == 1
                module.step.mul_(1.1)
                if hasattr(module, "shift"):
                    module.shift.copy_(0.05 * torch.randn(module.shift.shape, generator=g))
    return student.eval()


def _eval_logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids, attention_mask=_padded_mask(ids)).logits


def _quantizer_state(model):
    return {k: v for k, v in model.state_dict().items() if "_quantizer." in k}


@pytest.mark.parametrize("combo", list(COMBOS))
def test_packed_checkpoint_round_trip_is_exact(tmp_path, input_ids, combo):
    student = _trained_student(input_ids, **COMBOS[combo])
    expected = _eval_logits(student, input_ids)
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(loaded, BinaryBertForSequenceClassification) and loaded.config.packed_weights
    assert loaded.config._attn_implementation == student.config._attn_implementation
    assert {k: loaded.config.binarization[k] for k in COMBOS[combo] if k != "hidden_act"} == {
        k: v for k, v in COMBOS[combo].items() if k != "hidden_act"}
    saved_quantizers = _quantizer_state(student)
    # 1-bit "sign" quantizers have no tensors; the others have step, calibrated (and elastic shifts)
    one_bit_sign = COMBOS[combo]["activation_bits"] == 1 and "activation_quantizer" not in COMBOS[combo]
    assert bool(saved_quantizers) is not one_bit_sign
    loaded_quantizers = _quantizer_state(loaded)
    assert loaded_quantizers.keys() == saved_quantizers.keys()
    for key, value in saved_quantizers.items():
        assert torch.equal(loaded_quantizers[key], value), key
    # the checkpoint round trip is exact on the reference forward; the bitwise kernels (the default in eval mode)
    # agree with it layer by layer up to float rounding (tests/test_kernels.py)
    assert torch.equal(_eval_logits(loaded.set_inference_kernel("reference"), input_ids), expected)
    # still equal after that first forward (no recalibration on the loaded model)
    for key, value in _quantizer_state(loaded).items():
        assert torch.equal(value, saved_quantizers[key]), key
    if COMBOS[combo].get("embedding_bits") == 1:
        assert isinstance(loaded.bert.embeddings.word_embeddings, PackedBinaryEmbedding)


def test_packed_checkpoint_dtypes_with_float16_parts(tmp_path, input_ids):
    student = _trained_student(input_ids, fp_dtype="float16", **COMBOS["A1-elastic-E1-offset"])
    student.save_pretrained(tmp_path)
    header = read_safetensors_header(tmp_path / "model.safetensors")
    steps = [k for k in header if k.endswith("_quantizer.step")]
    shifts = [k for k in header if k.endswith("_quantizer.shift")]
    calibrated = [k for k in header if k.endswith("_quantizer.calibrated")]
    # 2 layers × (q, k, v, probs + 6 Linear inputs) steps; shifts on all but probs
    assert len(steps) == 20 and len(shifts) == 18 and len(calibrated) == 20
    assert all(header[k]["dtype"] == "F32" for k in steps + shifts)
    assert all(header[k]["dtype"] == "U8" and header[k]["shape"] == [] for k in calibrated)
    assert header["bert.encoder.layer.0.attention.self.query_quantizer.shift"]["shape"] == [4, 1, 8]
    assert header["bert.encoder.layer.1.output.dense.input_quantizer.shift"]["shape"] == [37]
    word = "bert.embeddings.word_embeddings"
    assert header[f"{word}.weight_packed"]["dtype"] == "U8" and header[f"{word}.weight_packed"]["shape"] == [99, 4]
    assert header[f"{word}.weight_scale"]["dtype"] == "F32" and header[f"{word}.weight_scale"]["shape"] == [99]
    assert header[f"{word}.weight_offset"]["dtype"] == "F32" and header[f"{word}.weight_offset"]["shape"] == [99]
    assert f"{word}.weight" not in header
    assert header["bert.embeddings.position_embeddings.weight"]["dtype"] == "F16"
    assert header["bert.embeddings.LayerNorm.weight"]["dtype"] == "F16"
    assert header["bert.encoder.layer.0.attention.self.query.bias"]["dtype"] == "F16"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.dtype == torch.float32
    for key, value in _quantizer_state(student).items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("scale_dtype, stored", [("float16", "F16"), ("bfloat16", "BF16")])
def test_embedding_scales_in_half_precision(tmp_path, input_ids, scale_dtype, stored):
    """embedding_scale_dtype: the per-row α / γ of the 1-bit tables are written in half precision (2 bytes each
    instead of 4), the Linears' α / γ and the quantizers stay float32; the loaded model is the saved one with those
    α / γ rounded, nothing else changed."""
    combo = {**COMBOS["A1-elastic-E1-offset"], "binarized_embeddings": ["word", "position"]}
    student = _trained_student(input_ids, embedding_scale_dtype=scale_dtype, **combo)
    student.save_pretrained(tmp_path / "half")
    _trained_student(input_ids, **combo).save_pretrained(tmp_path / "full")
    header = read_safetensors_header(tmp_path / "half" / "model.safetensors")
    full = read_safetensors_header(tmp_path / "full" / "model.safetensors")
    assert header.keys() == full.keys()
    tables = [f"bert.embeddings.{t}_embeddings.{leaf}" for t in ("word", "position")
              for leaf in ("weight_scale", "weight_offset")]
    for key, info in header.items():
        if key in tables:
            assert (info["dtype"], full[key]["dtype"], info["shape"]) == (stored, "F32", full[key]["shape"]), key
        else:
            assert info == full[key], key  # Linear α / γ, quantizers, bits: unchanged
    saved = sum(full[k]["nbytes"] - header[k]["nbytes"] for k in tables)
    assert saved == 2 * 2 * (99 + 64)  # α and γ, 2 bytes less per row, word (99 rows) and position (64) tables
    assert os.path.getsize(tmp_path / "full" / "model.safetensors") - \
        os.path.getsize(tmp_path / "half" / "model.safetensors") == pytest.approx(saved, abs=16)  # header padding
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "half").set_inference_kernel("reference")
    assert loaded.config.embedding_scale_dtype == scale_dtype
    frozen = student.freeze().set_inference_kernel("reference")
    with torch.no_grad():
        for table in ("word", "position"):
            module = getattr(frozen.bert.embeddings, f"{table}_embeddings")
            for leaf in ("weight_scale", "weight_offset"):
                rounded = getattr(module, leaf).to(getattr(torch, scale_dtype)).float()
                assert torch.equal(getattr(getattr(loaded.bert.embeddings, f"{table}_embeddings"), leaf), rounded)
                getattr(module, leaf).copy_(rounded)
    assert torch.equal(_eval_logits(loaded, input_ids), _eval_logits(frozen, input_ids))
    # saving the loaded (packed) model again writes the same file
    loaded.save_pretrained(tmp_path / "again")
    assert load_file(tmp_path / "again" / "model.safetensors").keys() == header.keys()
    again = load_file(tmp_path / "again" / "model.safetensors")
    reference = load_file(tmp_path / "half" / "model.safetensors")
    assert all(torch.equal(again[k], reference[k]) and again[k].dtype == reference[k].dtype for k in reference)


def test_half_precision_embedding_scales_need_the_config_field(tmp_path, input_ids):
    """A file whose 1-bit embedding scales are float16 while its config says float32 (or has no field: configs
    written before it) is refused, naming the tensor; the float32 file of such a config loads as before."""
    combo = COMBOS["A1-elastic-E1-offset"]
    _trained_student(input_ids, embedding_scale_dtype="float16", **combo).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["embedding_scale_dtype"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tensor 'bert.embeddings.word_embeddings.weight_(scale|offset)' has dtype F16, "
                                         r"expected F32"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


# The size options of issue 12's pruned 1-1-1 file: 1-bit tables with a per-row α only (BiT), elastic shifts rounded
# to half precision in every forward and stored so.
COMPACT = {**COMBOS["A1-elastic-E1-pooler"], "binarized_embeddings": ["word", "position", "token_type"],
           "embedding_weight_scale": "learned", "activation_shift_dtype": "float16"}
TABLES = [f"bert.embeddings.{t}_embeddings" for t in ("word", "position", "token_type")]


def _shift_quantizers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, ActivationQuantizer) and hasattr(m, "shift")}


@pytest.mark.parametrize("shift_dtype", ["float16", "bfloat16"])
def test_rounded_shifts_are_the_training_computation(input_ids, shift_dtype):
    """activation_shift_dtype: the training forward subtracts β rounded to the dtype, and the float32 β gets the
    gradient it would get as that rounded value: same loss and same gradients as a float32-shift model whose β are
    the rounded values (and another loss than with the unrounded β: one Linear's β straddle its input)."""
    torch.manual_seed(0)
    combo = {**COMPACT, "activation_shift_dtype": shift_dtype}
    dtype = getattr(torch, shift_dtype)
    rounded_model = _trained_student(input_ids, **combo).train()
    inputs = {"input_ids": input_ids, "attention_mask": _padded_mask(input_ids)}
    assert straddle_shift(rounded_model, "bert.pooler.dense", inputs, dtype) >= 30  # of 32
    exact_model = _trained_student(input_ids, **{**combo, "activation_shift_dtype": "float32"}).train()
    changed = 0
    with torch.no_grad():
        for name, quantizer in _shift_quantizers(exact_model).items():
            latent = _shift_quantizers(rounded_model)[name].shift
            changed += int(not torch.equal(latent, latent.to(dtype).float()))
            quantizer.shift.copy_(latent.to(dtype).float())
    assert changed == len(_shift_quantizers(exact_model))  # every latent β lies off the half-precision grid
    labels = torch.tensor([0, 1, 2])
    losses = []
    for model in (rounded_model, exact_model):
        model.zero_grad()
        loss = model(input_ids=input_ids, attention_mask=_padded_mask(input_ids), labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    for name, quantizer in _shift_quantizers(rounded_model).items():
        assert quantizer.shift.dtype == torch.float32 and quantizer.shift.grad is not None
        assert torch.equal(quantizer.shift.grad, _shift_quantizers(exact_model)[name].shift.grad), name
    for quantizer in _shift_quantizers(rounded_model).values():
        quantizer.shift_dtype = torch.float32  # the latent β unrounded: another computation
    with torch.no_grad():
        assert not torch.equal(rounded_model(**inputs, labels=labels).loss, losses[0])


def test_alpha_only_tables_and_float16_shifts_round_trip(tmp_path, input_ids):
    """embedding_weight_scale="learned" + activation_shift_dtype="float16": the file holds no offset for the 1-bit
    tables and the shifts in float16 (the Linears keep α and γ in float32); the loaded model gives the trained
    model's logits exactly, and saving it again writes the same tensors."""
    student = _trained_student(input_ids, **COMPACT)
    for table in TABLES:
        module = student.get_submodule(table)
        assert isinstance(module, BinaryEmbedding) and not module.has_offset and module.scale_mode == "learned"
    inputs = {"input_ids": input_ids, "attention_mask": _padded_mask(input_ids)}
    assert straddle_shift(student, "bert.pooler.dense", inputs) >= 30  # of 32
    expected = _eval_logits(student, input_ids)
    unrounded = student.get_submodule("bert.pooler.dense.input_quantizer")
    unrounded.shift_dtype = torch.float32
    assert not torch.equal(_eval_logits(student, input_ids), expected)  # the rounding matters for these inputs
    unrounded.shift_dtype = torch.float16
    student.save_pretrained(tmp_path / "a")
    header = read_safetensors_header(tmp_path / "a" / "model.safetensors")
    for table in TABLES:
        assert f"{table}.weight_offset" not in header and header[f"{table}.weight_scale"]["dtype"] == "F32"
    assert header["bert.encoder.layer.0.attention.self.query.weight_offset"]["dtype"] == "F32"
    shifts = [k for k in header if k.endswith("_quantizer.shift")]
    assert len(shifts) == 19 and all(header[k]["dtype"] == "F16" for k in shifts)  # 2 × 9 + the pooler's
    assert all(header[k]["dtype"] == "F32" for k in header if k.endswith("_quantizer.step"))
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a")
    assert (loaded.config.embedding_weight_scale, loaded.config.activation_shift_dtype) == ("learned", "float16")
    assert not any(loaded.bert.embeddings.get_submodule(t.rsplit(".", 1)[1]).has_offset for t in TABLES)
    for name, quantizer in _shift_quantizers(loaded).items():
        latent = _shift_quantizers(student)[name].shift
        assert not torch.equal(latent, latent.half().float()), name  # the rounding is not a no-op here
        assert torch.equal(quantizer.shift, latent.half().float()), name
    assert torch.equal(_eval_logits(loaded.set_inference_kernel("reference"), input_ids), expected)
    torch.testing.assert_close(_eval_logits(loaded.set_inference_kernel("auto"), input_ids), expected,
                               rtol=0, atol=1e-4)
    loaded.save_pretrained(tmp_path / "b")
    first, again = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) and first[k].dtype == again[k].dtype for k in first)


@pytest.mark.parametrize("edit, message", [
    ({"activation_shift_dtype": "float32"},
     r"tensor 'bert\.encoder\.layer\.0\..*_quantizer\.shift' has dtype F16, expected F32"),
    ({"embedding_weight_scale": None}, r"missing tensor 'bert\.embeddings\.\w+_embeddings\.weight_offset'"),
])
def test_compact_file_under_a_config_that_does_not_describe_it_is_refused(tmp_path, input_ids, edit, message):
    _trained_student(input_ids, **COMPACT).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(edit)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_offsets_in_the_file_under_an_alpha_only_config_are_refused(tmp_path, input_ids):
    _trained_student(input_ids, **{**COMPACT, "embedding_weight_scale": None}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["embedding_weight_scale"] = "learned"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected tensor 'bert\.embeddings\.\w+_embeddings\.weight_offset'"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize("fp_dtype, other", [("float32", "F32"), ("bfloat16", "BF16")])
def test_float16_embeddings(tmp_path, input_ids, fp_dtype, other):
    student = _trained_student(input_ids, activation_bits=4, embedding_bits=16, fp_dtype=fp_dtype)
    student.save_pretrained(tmp_path)
    header = read_safetensors_header(tmp_path / "model.safetensors")
    for table in ("word", "position", "token_type"):
        assert header[f"bert.embeddings.{table}_embeddings.weight"]["dtype"] == "F16"
    assert header["bert.embeddings.LayerNorm.weight"]["dtype"] == other
    assert header["classifier.weight"]["dtype"] == other
    assert header["bert.encoder.layer.0.output.dense.bias"]["dtype"] == other
    assert header["bert.encoder.layer.0.output.dense.input_quantizer.step"]["dtype"] == "F32"
    # the reference path: the same arithmetic as the training form's eval forward (dequantize, F.linear), so exact
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).set_inference_kernel("reference")
    if fp_dtype == "float32":
        # the loaded model is the saved one with its embedding tables rounded to float16
        with torch.no_grad():
            for table in ("word", "position", "token_type"):
                weight = getattr(student.bert.embeddings, f"{table}_embeddings").weight
                weight.copy_(weight.half().float())
        expected = _eval_logits(student, input_ids)
        assert torch.equal(_eval_logits(loaded, input_ids), expected)
        # the eager kernels sum the integer levels exactly, then scale: F.linear's float sums may round differently
        # (1 ulp in the first Linear's outputs on an AMD EPYC Zen 3 with AVX2, none on the Intel Xeons before)
        eager = _eval_logits(loaded.set_inference_kernel("eager"), input_ids)
        torch.testing.assert_close(eager, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tensor", ["bert.encoder.layer.1.attention.self.value_quantizer.step",
                                    "bert.encoder.layer.0.intermediate.dense.input_quantizer.shift",
                                    "bert.encoder.layer.0.attention.self.probs_quantizer.calibrated"])
def test_missing_quantizer_tensor_is_refused(tmp_path, input_ids, tensor):
    student = _trained_student(input_ids, activation_bits=1, activation_quantizer="elastic")
    student.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    assert tensor in tensors
    del tensors[tensor]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"missing tensor '{tensor}'"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_quantizer_tensor_with_wrong_dtype_is_refused(tmp_path, input_ids):
    student = _trained_student(input_ids, activation_bits=2)
    student.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    key = "bert.encoder.layer.0.attention.self.key_quantizer.step"
    tensors[key] = tensors[key].half()
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"tensor '{key}' has dtype F16, expected F32"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# 7. Multi-step from_teacher


def _binary_teacher(ids, **kwargs):
    teacher = _trained_student(ids, **kwargs)
    with torch.no_grad():
        for module in teacher.binary_modules().values():
            module.weight_scale.mul_(1.5)  # learned scales away from any re-initialisation
    return teacher


def test_from_binarized_teacher_copies_weights_and_scales_not_quantizers(input_ids):
    teacher = _binary_teacher(input_ids, activation_bits=4, activation_quantizer="elastic", weight_scale="learned",
                              embedding_bits=1)
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=1)
    assert student.config.activation_bits == 1
    assert (student.config.activation_quantizer, student.config.weight_scale, student.config.embedding_bits) == (
        "elastic", "learned", 1)
    assert student.config._attn_implementation == "binary_bert_softmax"
    teacher_modules, student_modules = teacher.binary_modules(), student.binary_modules()
    assert teacher_modules.keys() == student_modules.keys() and len(student_modules) == 13
    for name, module in student_modules.items():
        assert torch.equal(module.weight, teacher_modules[name].weight), name
        assert torch.equal(module.weight_scale, teacher_modules[name].weight_scale), name
        assert module.weight is not teacher_modules[name].weight
    quantizers = [m for m in student.modules() if isinstance(m, ActivationQuantizer)]
    assert len(quantizers) == 20
    for module in quantizers:
        assert module.bits == 1 and module.calibrated.item() == 0 and module.step.item() == 1.0
        if hasattr(module, "shift"):
            assert torch.equal(module.shift, torch.zeros_like(module.shift))
    # the teacher's quantizers did have other values (so the checks above can fail)
    assert all(m.calibrated.item() == 1 for m in teacher.modules() if isinstance(m, ActivationQuantizer))
    # the student trains: its first training forward calibrates
    student.train()(input_ids=input_ids).logits.sum().backward()
    assert all(m.calibrated.item() == 1 for m in quantizers)


def test_from_binarized_teacher_with_new_offset_scheme_initialises_from_teacher_weights(input_ids):
    teacher = _binary_teacher(input_ids, activation_bits=4, weight_scale="learned")
    with torch.no_grad():
        for module in teacher.binary_modules().values():
            module.weight.add_(0.3)  # a clearly non-zero mean
    student = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset")
    for name, module in student.binary_modules().items():
        weight = teacher.binary_modules()[name].weight.detach()
        gamma = weight.mean()
        assert torch.allclose(module.weight_offset, gamma.reshape(1), atol=1e-6), name
        assert torch.allclose(module.weight_scale, (weight - gamma).abs().mean().reshape(1), atol=1e-6), name


def test_packed_binarized_teacher_is_refused(input_ids):
    teacher = BinaryBertForSequenceClassification.from_teacher(_teacher(), activation_bits=4).freeze()
    with pytest.raises(ValueError, match="packed binary_bert teacher"):
        BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=1)
