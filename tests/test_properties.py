"""Property tests (hypothesis) over random shapes, scales, schemes and instruction sets, 1000 cases per property
(derandomized: the same cases on every run, so CI is reproducible; no example database is written):

- pack / unpack round trip (padding bits 0);
- every compiled kernel ≡ its pure-PyTorch reference, bit for bit, on every ISA this CPU runs;
- dequantize(pack(W)) = α·sign(W − γ) + γ (sign(0) = +1), for every scheme and group count;
- saved → loaded → equal outputs: a packed layer through safetensors bytes (1000 cases), and whole models through
  save_pretrained / from_pretrained (fewer cases: a folder each).
"""

import pytest
import torch
from conftest import tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from hf_binary_bert import BinaryBertForSequenceClassification, BinaryLinear, PackedBinaryLinear, calibrate, kernels
from hf_binary_bert.format import dequantize, pack_weight
from hf_binary_bert.kernels import ops, reference
from hf_binary_bert.kernels.reference import SIGNED, UNSIGNED_GE, UNSIGNED_GT
from hf_binary_bert.format import pack_bits, unpack_bits, unpack_signs

CASES = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
ISAS = kernels.supported_isas() + (["avx512_vpopcnt_emulated"] if "avx512" in kernels.supported_isas() else [])
seeds = st.integers(0, 2**31 - 1)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@CASES
@given(rows=st.integers(1, 9), n=st.integers(1, 80), seed=seeds)
def test_pack_unpack_round_trip(rows, n, seed):
    bits = torch.rand(rows, n, generator=_gen(seed)) < 0.5
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, (n + 7) // 8)
    assert torch.equal(unpack_bits(packed, n), bits)
    assert torch.equal(unpack_signs(packed, n), torch.where(bits, 1.0, -1.0))
    if n % 8:  # padding bits are 0
        assert int((packed[:, -1] >> (n % 8)).max()) == 0


@CASES
@given(rows=st.integers(1, 12), cols=st.integers(1, 40), groups=st.sampled_from([1, 2, 3, 4, 6, 12]),
       offset=st.booleans(), ties=st.booleans(), seed=seeds)
def test_dequantize_of_pack_is_alpha_sign_plus_gamma(rows, cols, groups, offset, ties, seed):
    if rows % groups:
        groups = 1
    g = _gen(seed)
    w = torch.randn(rows, cols, generator=g)
    alpha = torch.rand(groups, generator=g) * 2 + 1e-3
    gamma = 0.3 * torch.randn(groups, generator=g) if offset else None
    gamma_rows = (gamma if offset else torch.zeros(groups)).repeat_interleave(rows // groups).unsqueeze(1)
    if ties:  # entries exactly at the offset: sign(0) = +1
        w[:, ::3] = gamma_rows.expand(rows, cols)[:, ::3]
    tensors = pack_weight(w, alpha, gamma)
    out = dequantize(tensors["weight_packed"], cols, tensors["weight_scale"], tensors.get("weight_offset"))
    alpha_rows = alpha.repeat_interleave(rows // groups).unsqueeze(1)
    signs = torch.where(w - gamma_rows >= 0, 1.0, -1.0)
    expected = alpha_rows * signs + gamma_rows if offset else alpha_rows * signs
    assert torch.equal(out, expected)


@pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built (the ops are the reference)")
@CASES
@given(m=st.integers(1, 20), k=st.integers(1, 300), n=st.integers(1, 40), op=st.sampled_from(["w1a1", "w1a8"]),
       mode=st.sampled_from([SIGNED, UNSIGNED_GE, UNSIGNED_GT]), levels=st.sampled_from(
           [(-128, 127, False), (0, 255, False), (-2, 1, False), (0, 15, False), (-127, 127, True)]),
       extras=st.booleans(), isa=st.sampled_from(ISAS), step=st.floats(0.01, 2.0), seed=seeds)
def test_kernel_equals_reference(m, k, n, op, mode, levels, extras, isa, step, seed):
    g = _gen(seed)
    x = torch.randn(m, k, generator=g) * 2
    packed = pack_bits(torch.randn(n, k, generator=g) >= 0)
    alpha = torch.rand(n, generator=g) + 0.1
    gamma, bias, shift = ((0.1 * torch.randn(n, generator=g), torch.randn(n, generator=g),
                           0.1 * torch.randn(k, generator=g)) if extras else (None, None, None))
    s = torch.tensor(step, dtype=torch.float32)
    previous = kernels.set_isa(isa)
    try:
        if op == "w1a1":
            threshold = 0.0 if mode == SIGNED else 0.5
            args = (alpha, gamma, bias, shift, s, threshold, mode, mode != UNSIGNED_GE)
            out = ops.w1a1_linear_impl(x, packed, ops.repack_weight(packed, k, "bits"), *args)
            expected = reference.w1a1_linear(x, packed, *args)
        else:
            args = (alpha, gamma, bias, shift, s, *levels)
            out = ops.w1a8_linear_impl(x, packed, ops.repack_weight(packed, k, "nib"), ops.row_sums(packed, k), *args)
            expected = reference.w1a8_linear(x, packed, *args)
    finally:
        kernels.set_isa(previous)
    assert out.dtype == torch.float32 and torch.equal(out, expected)


@CASES
@given(k=st.integers(1, 70), n=st.sampled_from([4, 8, 12, 24]), scheme=st.sampled_from(["mean_abs", "learned",
       "learned_offset"]), groups=st.sampled_from([1, 2, 4]), bias=st.booleans(), seed=seeds)
def test_packed_layer_saved_and_loaded_gives_equal_outputs(k, n, scheme, groups, bias, seed):
    g = _gen(seed)
    layer = BinaryLinear(k, n, bias, weight_scale=scheme, num_groups=groups)
    with torch.no_grad():
        layer.weight.normal_(generator=g)
        layer.reset_scales()
        if scheme != "mean_abs":
            layer.weight_scale.mul_(torch.rand(groups, generator=g) + 0.5)
        if bias:
            layer.bias.normal_(generator=g)
    packed = layer.freeze().eval()
    data = save_bytes({name: t.contiguous() for name, t in packed.state_dict().items()})
    loaded = PackedBinaryLinear(k, n, bias, num_groups=groups, has_offset=scheme == "learned_offset")
    loaded.load_state_dict(load_bytes(data))
    loaded.eval()
    x = torch.randn(3, k, generator=g)
    with torch.no_grad():
        expected = layer(x)  # the training form it was frozen from
        assert torch.equal(loaded(x), packed(x))
    torch.testing.assert_close(loaded(x).detach(), expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(combo=st.sampled_from([dict(), dict(activation_bits=1), dict(activation_bits=4),
                              dict(activation_bits=1, activation_quantizer="elastic", attention_type="bi_attention"),
                              dict(activation_bits=2, activation_quantizer="elastic", embedding_bits=1,
                                   binarized_embeddings=["word"])]),
       scheme=st.sampled_from(["mean_abs", "learned", "learned_offset"]),
       granularity=st.sampled_from(["tensor", "head", "row"]), seed=seeds)
def test_model_saved_and_loaded_gives_equal_outputs(tmp_path_factory, combo, scheme, granularity, seed):
    """fp_dtype float32: bit-exact (the rounding of fp16 / bf16 parts is tested in test_modeling)."""
    torch.manual_seed(seed)
    config = tiny_config(num_labels=3, weight_scale=scheme, scale_granularity=granularity, fp_dtype="float32",
                         **combo)
    model = BinaryBertForSequenceClassification(config).eval()
    ids = torch.randint(1, 99, (2, 9), generator=_gen(seed))
    calibrate(model, [ids])
    model.freeze()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    loaded = BinaryBertForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
