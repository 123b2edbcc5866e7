"""The packed inference kernels: every instruction-set path against the pure-PyTorch reference (bit for bit), the
integer part against an exact integer matmul, the custom ops under opcheck / torch.compile / torch.export, and the
models' kernel path against their reference path. The fallback without the extension and the memory safety of the
glue are in test_kernel_glue.py (which runs without the extension too)."""

import pytest
import torch
from conftest import tiny_config
from torch import nn

from hf_binary_bert import BinaryBertForMaskedLM, BinaryBertModel, PackedBinaryLinear, kernels
from hf_binary_bert.binarization.kernel_dispatch import kernel_forward
from hf_binary_bert.format import pack_bits, unpack_signs
from hf_binary_bert.kernels import ops, reference
from hf_binary_bert.kernels.reference import SIGNED, UNSIGNED_GE, UNSIGNED_GT

ISAS = kernels.supported_isas()
# the VPOPCNTDQ path's tiling with an emulated vpopcntq, so it is tested on CPUs without VPOPCNTDQ too
TESTED_ISAS = ISAS + (["avx512_vpopcnt_emulated"] if "avx512" in ISAS else [])
SHAPES = [(1, 768, 64), (7, 100, 13), (70, 300, 37), (5, 2100, 40), (3, 8, 1), (130, 64, 130)]  # (M, K, N)
# w1a1 also at the AVX2 nibble-table path's edges (M ≥ 16): M not a multiple of its 4-row tile, N not of its 64-column
# chunk, K exactly 256 and 3072 bits, ragged K, a BERT-base shape; and one row chunk (M ≤ 64) whose column chunks the
# driver narrows so that they divide among 2 threads (768 → 6 of 128; 600 → 10 of 64, the last ragged)
W1A1_SHAPES = SHAPES + [(16, 256, 64), (33, 3072, 100), (17, 100, 13), (66, 256, 96), (128, 768, 768), (32, 768, 768),
                        (20, 256, 600)]
# w1a8 also at the AVX2 lookup-table path's edges (M ≥ 4): M around its 4-row items, N not a multiple of its
# 32-row blocks / 128-column tiles, K over several 64-step chunks (ragged and exact)
# (AVX-512 tables: 12-k steps, 16-step chunks, 4 × 4 tiles of 4 rows × 128 columns), and a BERT-base shape
W1A8_SHAPES = SHAPES + [(4, 256, 128), (6, 1028, 161), (9, 3072, 100), (64, 768, 96), (130, 768, 768)]

pytestmark = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")


@pytest.fixture(params=TESTED_ISAS)
def isa(request):
    previous = kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa(previous)


def _problem(m, k, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    packed = pack_bits(torch.randn(n, k, generator=g) >= 0)
    alpha = torch.rand(n, generator=g) + 0.5
    gamma = 0.1 * torch.randn(n, generator=g)
    bias = torch.randn(n, generator=g)
    shift = 0.1 * torch.randn(k, generator=g)
    return x, packed, alpha, gamma, bias, shift


W1A1_MODES = [(SIGNED, 0.0, 0.3), (UNSIGNED_GE, 0.5, 0.3), (UNSIGNED_GT, 0.5, 0.7)]


def t(value):
    return torch.tensor(value, dtype=torch.float32)


@pytest.mark.parametrize("m,k,n", W1A1_SHAPES)
@pytest.mark.parametrize("mode,threshold,step", W1A1_MODES)
@pytest.mark.parametrize("with_extras", [False, True])
def test_w1a1_equals_reference_bit_for_bit(isa, m, k, n, mode, threshold, step, with_extras):
    x, packed, alpha, gamma, bias, shift = _problem(m, k, n)
    if not with_extras:
        gamma = bias = shift = None
    weight = kernels.repack_weight(packed, k, "bits")
    for scale_by_step in (False, True):
        args = (x, packed, alpha, gamma, bias, shift, t(step), threshold, mode, scale_by_step)
        out = kernels.w1a1_linear(x, packed, weight, *args[2:])
        assert out.shape == (m, n)
        assert torch.equal(out, reference.w1a1_linear(*args))


@pytest.mark.parametrize("m,k,n", W1A8_SHAPES)
@pytest.mark.parametrize("q_min,q_max,dynamic", [(-128, 127, False), (0, 255, False), (-2, 1, False), (0, 15, False),
                                                 (-63, 63, True),
                                                 (-127, 127, True)])
@pytest.mark.parametrize("with_extras", [False, True])
def test_w1a8_equals_reference_bit_for_bit(isa, m, k, n, q_min, q_max, dynamic, with_extras):
    x, packed, alpha, gamma, bias, shift = _problem(m, k, n, seed=1)
    if not with_extras:  # absent γ / bias / shift (the lookup-table paths once read past their zero stand-ins)
        gamma = bias = shift = None
    weight = kernels.repack_weight(packed, k, "nib")
    sums = kernels.row_sums(packed, k)
    assert torch.equal(sums, reference.row_sums(packed, k))
    out = kernels.w1a8_linear(x, packed, weight, sums, alpha, gamma, bias, shift, t(0.05), q_min, q_max, dynamic)
    assert torch.equal(out, reference.w1a8_linear(x, packed, alpha, gamma, bias, shift, t(0.05), q_min, q_max, dynamic))


def test_w1a8_largest_sums_are_exact(isa):
    """Every input at the top level (u = 255) against all-(+1) and all-(−1) rows, K = 3072: the largest partial sums
    the kernels hold (the lookup-table paths' 16-bit sums reach 64 · 1020 = 65280 per chunk on AVX2 and
    16 · 2 · 1530 = 48960 on AVX-512)."""
    m, k = 5, 3072
    packed = pack_bits(torch.tensor([[True] * k, [False] * k] * 20))
    x = torch.full((m, k), 300.0)  # clipped to the top level 255
    out = kernels.w1a8_linear(x, packed, kernels.repack_weight(packed, k, "nib"), kernels.row_sums(packed, k),
                              torch.ones(40), None, None, None, t(1.0), 0, 255, False)
    assert torch.equal(out, torch.tensor([255.0 * k, -255.0 * k] * 20).expand(m, 40))


@pytest.mark.parametrize("n,k", [(1, 8), (13, 100), (40, 2100), (37, 300)])
def test_compiled_repack_equals_the_tensor_op_repack(n, k):
    packed = pack_bits(torch.randn(n, k, generator=torch.Generator().manual_seed(n)) >= 0)
    for layout in ("bits", "nib"):
        assert torch.equal(kernels.repack_weight(packed, k, layout), reference.repack_weight(packed, k, layout))


def test_integer_part_is_the_exact_popcount_dot_product(isa):
    """α = 1, no γ / bias / shift, scale 1: the output is the integer ±1·±1 (and {0,1}·±1) dot product itself."""
    m, k, n = 9, 1000, 21
    x, packed, *_ = _problem(m, k, n, seed=2)
    signs = unpack_signs(packed, k, torch.float64).long()
    weight = kernels.repack_weight(packed, k, "bits")
    ones = torch.ones(n)
    q = torch.where(x >= 0, 1, -1)
    out = kernels.w1a1_linear(x, packed, weight, ones, None, None, None, t(1.0), 0.0, SIGNED, False)
    assert torch.equal(out.long(), q @ signs.T)
    q01 = (x >= 0.5).long()
    out = kernels.w1a1_linear(x, packed, weight, ones, None, None, None, t(1.0), 0.5, UNSIGNED_GE, False)
    assert torch.equal(out.long(), q01 @ signs.T)
    levels = torch.round(torch.clamp(x / 0.05, -128, 127)).long()
    out = kernels.w1a8_linear(x, packed, kernels.repack_weight(packed, k, "nib"), kernels.row_sums(packed, k), ones,
                              None, None, None, t(0.05), -128, 127, False)
    assert torch.equal(out, (0.05 * (levels @ signs.T).float()))


# rows: one row chunk; 200 rows (4 chunks of 12–13 four-row blocks); 544 rows (a mixed batch's real tokens: 10 chunks,
# so that 2 threads get 272 rows each) and 545 (a one-row tail block)
@pytest.mark.parametrize("rows", [64, 200, 544, 545])
def test_results_do_not_depend_on_the_thread_count(rows):
    x, packed, alpha, gamma, bias, shift = _problem(rows, 768, 96)
    weight = kernels.repack_weight(packed, 768, "bits")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.w1a1_linear(x, packed, weight, alpha, gamma, bias, shift, t(0.3), 0.0, SIGNED, True)
        torch.set_num_threads(2)
        two = kernels.w1a1_linear(x, packed, weight, alpha, gamma, bias, shift, t(0.3), 0.0, SIGNED, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert torch.equal(two, reference.w1a1_linear(x, packed, alpha, gamma, bias, shift, t(0.3), 0.0, SIGNED, True))


def test_batched_inputs_keep_their_leading_dims():
    x, packed, alpha, *_ = _problem(6, 40, 10)
    weight = kernels.repack_weight(packed, 40, "bits")
    out = kernels.w1a1_linear(x.reshape(2, 3, 40), packed, weight, alpha, None, None, None, t(1.0), 0.0, SIGNED, False)
    assert out.shape == (2, 3, 10)
    flat = kernels.w1a1_linear(x, packed, weight, alpha, None, None, None, t(1.0), 0.0, SIGNED, False)
    assert torch.equal(out.reshape(6, 10), flat)


def test_bad_arguments_raise_naming_the_tensor():
    x, packed, alpha, _, _, shift = _problem(4, 40, 10)
    weight = kernels.repack_weight(packed, 40, "bits")
    with pytest.raises(ValueError, match="weight_kernel"):
        kernels.w1a1_linear(x, packed, weight[:-1], alpha, None, None, None, t(1.0), 0.0, SIGNED, False)
    with pytest.raises(ValueError, match="alpha"):
        kernels.w1a1_linear(x, packed, weight, alpha[:3], None, None, None, t(1.0), 0.0, SIGNED, False)
    with pytest.raises(ValueError, match="bias must be a contiguous"):
        ops.bind_w1a1(40, packed, weight, alpha, None, torch.randn(20)[::2], None, t(1.0), 0.0, SIGNED, False)
    with pytest.raises(ValueError, match="float32 CPU tensor"):
        ops.bind_w1a1(40, packed, weight, alpha, None, None, None, t(1.0), 0.0, SIGNED, False)(x[:, :39])
    with pytest.raises(ValueError, match="shift"):
        kernels.w1a1_linear(x, packed, weight, alpha, None, None, shift[:5], t(1.0), 0.0, SIGNED, False)
    with pytest.raises(ValueError, match="weight_packed"):
        kernels.w1a1_linear(x[:, :32], packed, weight, alpha, None, None, None, t(1.0), 0.0, SIGNED, False)
    with pytest.raises(ValueError, match="float32"):
        kernels.w1a1_linear(x.double(), packed, weight, alpha, None, None, None, t(1.0), 0.0, SIGNED, False)
    with pytest.raises(ValueError, match="8 bits"):
        kernels.w1a8_linear(x, packed, kernels.repack_weight(packed, 40, "nib"), kernels.row_sums(packed, 40), alpha,
                            None, None, None, t(1.0), -300, 300, False)
    with pytest.raises(ValueError, match="layout"):
        kernels.repack_weight(packed, 40, "columns")
    with pytest.raises(ValueError, match="weight_packed"):
        kernels.repack_weight(packed, 41 + 8, "bits")
    with pytest.raises(ValueError, match="not supported|unknown"):
        kernels.set_isa("sse9")


def test_cpu_features_and_isa_selection():
    features = kernels.cpu_features()
    assert set(features) >= {"avx2", "avx512bw", "avx512_vpopcntdq", "avx512_vnni"}
    assert ISAS[0] == "portable" and kernels.get_isa() == ISAS[-1]  # the fastest supported path by default
    assert ("avx512" in ISAS) == features["avx512bw"]
    assert ("avx512_amx" in ISAS) == features["amx_int8"]



def test_popcount_rate_kinds_and_errors():
    """Every floor measures something positive; the table bound exists on the AVX2 paths only, the AMX tile rate on
    avx512_amx only (more than the XOR + popcount rate there: 1,024 u8 MACs per cycle and core at peak), and a bad
    kind, or `kind="table"` / `kind="amx"` on the portable path, raises ValueError naming the kind."""
    assert kernels.popcount_rate(1, 0.02) > 0
    if "avx2" in ISAS:
        previous = kernels.set_isa("avx2")
        try:
            assert kernels.popcount_rate(1, 0.02, kind="table") > 0
        finally:
            kernels.set_isa(previous)
    if "avx512_amx" in ISAS:
        previous = kernels.set_isa("avx512_amx")
        try:
            assert kernels.popcount_rate(1, 0.05, kind="amx") > kernels.popcount_rate(1, 0.05)
        finally:
            kernels.set_isa(previous)
    with pytest.raises(ValueError, match="kind"):
        kernels.popcount_rate(1, 0.02, kind="lookup")
    previous = kernels.set_isa("portable")
    try:
        with pytest.raises(ValueError, match="kind 1 is not measured on instruction set portable"):
            kernels.popcount_rate(1, 0.02, kind="table")
        with pytest.raises(ValueError, match="kind 2 is not measured on instruction set portable"):
            kernels.popcount_rate(1, 0.02, kind="amx")
    finally:
        kernels.set_isa(previous)

def test_opcheck_both_ops():
    x, packed, alpha, gamma, bias, shift = _problem(5, 100, 13)
    torch.library.opcheck(torch.ops.hf_binary_bert.w1a1_linear.default,
                          (x, packed, kernels.repack_weight(packed, 100, "bits"), alpha, gamma, bias, shift, t(0.3),
                           0.0, SIGNED, True))
    torch.library.opcheck(torch.ops.hf_binary_bert.w1a8_linear.default,
                          (x, packed, kernels.repack_weight(packed, 100, "nib"), kernels.row_sums(packed, 100), alpha,
                           gamma, bias, shift, t(0.05), -128, 127, False))


def _packed_layer(config_kwargs, in_features=48, out_features=40):
    """A PackedBinaryLinear (offset scheme, random bits and scales) with the input quantizer of a tiny config."""
    from hf_binary_bert.binarization.activation import make_activation_quantizer

    layer = PackedBinaryLinear(in_features, out_features, num_groups=4, has_offset=True)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        layer.weight_packed.copy_(pack_bits(torch.randn(out_features, in_features, generator=g) >= 0))
        layer.weight_scale.copy_(torch.rand(4, generator=g) + 0.5)
        layer.weight_offset.copy_(0.1 * torch.randn(4, generator=g))
        layer.bias.copy_(torch.randn(out_features, generator=g))
    layer.input_quantizer = make_activation_quantizer(tiny_config(**config_kwargs), shift_shape=(in_features,))
    layer(torch.randn(8, in_features, generator=g))  # calibrates the quantizer (training mode)
    if hasattr(layer.input_quantizer, "shift"):
        with torch.no_grad():
            layer.input_quantizer.shift.copy_(0.05 * torch.randn(in_features, generator=g))
    return layer.eval()


QUANTIZERS = {
    "A1-sign": dict(activation_bits=1),
    "A1-elastic": dict(activation_bits=1, activation_quantizer="elastic"),
    "A8-sign": dict(activation_bits=8),
    "A2-elastic": dict(activation_bits=2, activation_quantizer="elastic"),
}


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_packed_linear_kernel_path_matches_its_reference_path(name):
    layer = _packed_layer(QUANTIZERS[name])
    x = torch.randn(2, 9, 48, generator=torch.Generator().manual_seed(4))
    calls = []
    original = ops.bind_w1a1, ops.bind_w1a8
    with torch.inference_mode():
        expected = layer.train()(x)  # training-mode forward: the reference (dequantize + F.linear)
        layer.eval()
        try:
            ops.bind_w1a1 = lambda *a: calls.append(1) or original[0](*a)
            ops.bind_w1a8 = lambda *a: calls.append(8) or original[1](*a)
            out = layer(x)
            again = layer(x)  # bound once, reused
        finally:
            ops.bind_w1a1, ops.bind_w1a8 = original
    assert torch.equal(out, again)
    assert calls == [1 if QUANTIZERS[name]["activation_bits"] == 1 else 8]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_bound_kernel_call_follows_changed_tensors():
    layer = _packed_layer(QUANTIZERS["A1-elastic"])
    x = torch.randn(4, 48)
    with torch.inference_mode():
        before = layer(x)
        with torch.no_grad():
            layer.weight_scale.mul_(2)  # an in-place edit (as load_state_dict does)
        after = layer(x)
        layer.inference_kernel = "reference"
        expected = layer(x)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)


def test_kernel_path_only_without_autograd_in_eval_mode(monkeypatch):
    """A spy on the kernel forward shows which path ran: the reference with autograd (so a gradient reaches the
    bias), the kernels under no_grad / inference_mode."""
    import hf_binary_bert.binarization.linear as binary_linear

    layer = _packed_layer(QUANTIZERS["A1-sign"])
    x = torch.randn(3, 48)
    calls = []
    monkeypatch.setattr(binary_linear, "kernel_forward", lambda *a: calls.append(1) or kernel_forward(*a))
    y = layer(x)  # grad mode with a trainable bias: the reference path, which autograd can differentiate
    assert calls == []
    y.sum().backward()
    assert torch.equal(layer.bias.grad, torch.full((40,), 3.0))
    with torch.no_grad():
        fast = layer(x)
    assert calls == [1]
    with torch.inference_mode():
        layer(x)
    assert calls == [1, 1]
    torch.testing.assert_close(fast, y.detach(), rtol=1e-5, atol=1e-5)


def test_torch_compile_and_export_see_one_op_per_layer():
    layer = _packed_layer(QUANTIZERS["A1-elastic"]).requires_grad_(False)
    x = torch.randn(4, 48)
    with torch.no_grad():
        eager = layer(x)
        compiled = torch.compile(layer, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    with torch.no_grad():
        exported = torch.export.export(layer, (x,))
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert targets.count("hf_binary_bert.w1a1_linear.default") == 1, targets
    torch.testing.assert_close(exported.module()(x), eager, rtol=0, atol=0)


MODEL_COMBOS = {
    "W1A1-sign-softmax": dict(activation_bits=1),
    "W1A1-bi_attention": dict(activation_bits=1, attention_type="bi_attention"),
    "W1A1-elastic-relu-E1": dict(activation_bits=1, activation_quantizer="elastic", hidden_act="relu", embedding_bits=1,
                                 binarized_embeddings=["word", "position", "token_type"]),
    "W1A4-elastic": dict(activation_bits=4, activation_quantizer="elastic"),
    "W1A8-sign": dict(activation_bits=8),
}


def _calibrated_packed(combo):
    torch.manual_seed(0)
    model = BinaryBertModel(tiny_config(weight_scale="learned_offset", scale_granularity="head", **combo))
    ids = torch.randint(1, 99, (3, 11))
    model.train()(input_ids=ids)  # calibrates the activation quantizers
    return model.eval().freeze(), ids


@pytest.mark.parametrize("combo", list(MODEL_COMBOS))
def test_every_binarized_linear_of_a_model_matches_its_reference(combo):
    """Layer by layer (on the same inputs): with 1-bit activations, whole-model outputs may differ where rounding
    flips the sign of a pre-activation that is within rounding of its threshold (ties are common in binarized
    attention), so the equivalence is checked per Linear."""
    model, ids = _calibrated_packed(MODEL_COMBOS[combo])
    model.set_inference_kernel("eager")  # Linear by Linear from PyTorch (not the native runtime, which runs them all)
    checked = []

    def hook(module, inputs, output):
        module.inference_kernel = "reference"
        expected = module.forward(inputs[0])
        module.inference_kernel = "auto"
        torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
        checked.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, PackedBinaryLinear)]
    with torch.inference_mode():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    assert len(checked) == 12  # 2 layers × (Q, K, V, attention output, intermediate, output)


@pytest.mark.parametrize("combo", ["W1A4-elastic", "W1A8-sign"])
def test_multi_bit_models_match_the_reference_end_to_end(combo):
    model, ids = _calibrated_packed(MODEL_COMBOS[combo])
    with torch.inference_mode():
        fast = model(input_ids=ids).last_hidden_state
        slow = model.set_inference_kernel("reference")(input_ids=ids).last_hidden_state
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


def test_loaded_packed_checkpoint_runs_the_kernels_by_default(tmp_path):
    model, ids = _calibrated_packed(MODEL_COMBOS["W1A8-sign"])
    model.save_pretrained(tmp_path)
    loaded = BinaryBertModel.from_pretrained(tmp_path)
    assert not loaded.training
    layers = [m for m in loaded.modules() if isinstance(m, PackedBinaryLinear)]
    assert layers and all(m.inference_kernel == "auto" for m in layers)
    with torch.inference_mode():
        x = torch.randn(2, 5, 32)
        from hf_binary_bert.binarization.kernel_dispatch import kernel_applies

        assert all(kernel_applies(m, x if m.in_features == 32 else torch.randn(2, 5, m.in_features)) for m in layers)
        torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state)


def test_float_activations_int8_for_w1a32_layers():
    model, ids = _calibrated_packed({})
    layers = [m for m in model.modules() if isinstance(m, PackedBinaryLinear)]
    assert all(isinstance(m.input_quantizer, nn.Identity) for m in layers)
    with torch.inference_mode():
        exact = model(input_ids=ids).last_hidden_state  # default "float32": the exact reference forward
        approx = model.set_inference_kernel(float_activations="int8")(input_ids=ids).last_hidden_state
    assert all(m.float_activations == "int8" for m in layers)
    assert not torch.equal(approx, exact)
    assert (approx - exact).norm() / exact.norm() < 0.05  # per-row int8 activations: a small approximation


def test_set_inference_kernel_validates_its_arguments():
    model = BinaryBertForMaskedLM(tiny_config())
    with pytest.raises(ValueError, match="freeze"):
        model.set_inference_kernel("auto")
    model.freeze()
    with pytest.raises(ValueError, match="kernel must be one of"):
        model.set_inference_kernel("fast")
    with pytest.raises(ValueError, match="float_activations"):
        model.set_inference_kernel("auto", float_activations="bf16")
    assert model.set_inference_kernel("reference") is model


@pytest.mark.parametrize("m,k,n", [(5, 768, 100), (1, 40, 17), (70, 300, 37)])
def test_int8_head_kernel_equals_reference_bit_for_bit(isa, m, k, n):
    g = torch.Generator().manual_seed(5)
    x, weight, bias = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    w8, scale = reference.quantize_weight_int8(weight)
    assert w8.dtype == torch.int8 and int(w8.abs().max()) == 127
    out = kernels.w8a8_linear(x, w8, reference.repack_int8(w8), w8.sum(-1, dtype=torch.int32), scale, bias)
    assert torch.equal(out, reference.w8a8_linear(x, w8, scale, bias))
    exact = x @ weight.T + bias
    assert (out - exact).norm() / exact.norm() < 0.03  # 7-bit activations × per-row int8 weights


def test_int8_mlm_head_keeps_parameters_ties_and_checkpoint(tmp_path):
    model = BinaryBertForMaskedLM(tiny_config()).eval().freeze()
    ids = torch.randint(1, 99, (2, 7), generator=torch.Generator().manual_seed(6))
    decoder = model.cls.predictions.decoder
    keys = set(model.state_dict())
    with torch.inference_mode():
        exact = model(input_ids=ids).logits
        model.set_inference_kernel(mlm_head="int8")
        approx = model(input_ids=ids).logits
    head = model.cls.predictions.decoder
    assert type(head).__name__ == "Int8HeadLinear" and head.weight is decoder.weight and head.bias is decoder.bias
    assert head.weight is model.bert.embeddings.word_embeddings.weight  # still tied
    assert set(model.state_dict()) == keys
    assert not torch.equal(approx, exact) and (approx - exact).norm() / exact.norm() < 0.05
    model.save_pretrained(tmp_path)
    reloaded = BinaryBertForMaskedLM.from_pretrained(tmp_path)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, exact)
        assert torch.equal(model.set_inference_kernel(mlm_head="float32")(input_ids=ids).logits, exact)
    assert type(model.cls.predictions.decoder) is nn.Linear
    with pytest.raises(ValueError, match="masked-LM"):
        BinaryBertModel(tiny_config()).freeze().set_inference_kernel(mlm_head="int8")
    with pytest.raises(ValueError, match="mlm_head must be one of"):
        model.set_inference_kernel(mlm_head="int4")


@pytest.mark.parametrize("b,h,seq,d", [(2, 3, 11, 16), (1, 4, 70, 100), (1, 2, 130, 64)])
@pytest.mark.parametrize("elastic", [False, True])
def test_bitwise_bi_attention_equals_reference_bit_for_bit(isa, b, h, seq, d, elastic):
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(b, seq, h, d, generator=g).transpose(1, 2) for _ in range(3))  # as BertSelfAttention
    shifts = tuple(0.1 * torch.randn(h, 1, d, generator=g) for _ in range(3)) if elastic else (None,) * 3
    steps = (t(0.7), t(1.3), t(0.9)) if elastic else (t(1.0),) * 3
    scale = steps[0] * steps[1] * d**-0.5
    mask = torch.zeros(b, 1, seq, seq)
    mask[0, :, :, seq - 3:] = torch.finfo(torch.float32).min  # padded keys
    for m in (mask, None):
        out, weights = ops.bi_attention_impl(q, k, v, *shifts, *steps, scale, m)
        ref_out, ref_weights = reference.bi_attention(q, k, v, shifts, steps, scale, m)
        assert out.shape == (b, seq, h, d) and weights.shape == (b, h, seq, seq)
        assert torch.equal(weights, ref_weights) and torch.equal(out, ref_out)
    assert weights[0, :, :, seq - 3:].sum() > 0  # without the mask (the last run), padded keys take part
    out, weights = ops.bi_attention_impl(q, k, v, *shifts, *steps, scale, mask)
    assert weights[0, :, :, seq - 3:].sum() == 0


def test_bi_attention_op_opcheck():
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 3, 9, 16, generator=g) for _ in range(3))
    shifts = tuple(0.1 * torch.randn(3, 1, 16, generator=g) for _ in range(3))
    torch.library.opcheck(torch.ops.hf_binary_bert.bi_attention.default,
                          (q, k, v, *shifts, t(0.7), t(1.3), t(0.9), t(0.7 * 1.3 / 4), torch.zeros(2, 1, 9, 9)))


def test_models_with_bi_attention_use_the_bitwise_kernel_in_eval():
    """In a model, each layer's bitwise Bi-Attention gives, on the Q/K/V it receives, exactly the formula's weights
    and output (attention.bi_attention's float path): at head size 8 the float matmuls of ±1 / {0, 1} values are exact
    integers, so the two must agree bit for bit. (Whole-model outputs of the two paths are not compared: the Linears'
    float rounding may flip a sign of Q/K/V that is within rounding of 0, and that changes the next layer.)"""
    from hf_binary_bert.attention import bi_attention

    model, ids = _calibrated_packed(MODEL_COMBOS["W1A1-bi_attention"])
    calls = []
    original = ops.bi_attention_impl
    try:
        ops.bi_attention_impl = lambda *a: calls.append((a, original(*a))) or calls[-1][1]
        with torch.inference_mode():
            fast = model(input_ids=ids, output_attentions=True)
            model.set_inference_kernel("reference")
            model(input_ids=ids, output_attentions=True)
    finally:
        ops.bi_attention_impl = original
    assert len(calls) == 2  # one per layer, only on the kernel path
    for layer, ((q, k, v, *_, mask), (out, weights)), returned in zip(model.encoder.layer, calls, fast.attentions):
        assert torch.equal(returned, weights)
        with torch.inference_mode():
            formula_out, formula_weights = bi_attention(layer.attention.self, q, k, v, mask)
        assert set(weights.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(weights, formula_weights) and torch.equal(out, formula_out)


# The kernels' sums of ∂α: float partial sums of at most 64 terms (16 lanes over blocks of 1024 elements) added in
# float64, rounded once to float32 — at most 64 roundings of 2⁻²⁴ of the absolute terms, plus the last rounding
_LANE_SUM_ERROR = 64 * 2**-24


def _probs_case(shape, bits, seed):
    """Softmax maps with exact ties of u = A/α at half levels (α a power of two) and maps above the top level."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(shape, generator=g) * 3, -1)
    q_p = 2**bits - 1
    alpha = torch.tensor(1 / 8 if bits < 8 else 1 / 512)
    flat = probs.view(-1)
    flat[::7] = alpha * (torch.randint(0, q_p, (flat[::7].numel(),), generator=g) + 0.5)  # ties: half to even
    flat[::11] = alpha * (q_p + 0.75)  # clipped: no gradient to A
    return probs, alpha, q_p, g


@pytest.mark.parametrize("bits", [1, 2, 8])
@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 17, 17), (4, 12, 64, 64)])  # one chunk; many chunks (several threads)
def test_quantized_probs_kernels_equal_reference_bit_for_bit(bits, dropout, shape):
    """The attention probabilities' training kernels (csrc/quantized_probs.h) against their PyTorch twins: codes,
    Â, ∂A bit for bit with 1 and 2 threads; ∂α (blocked float sums in C, float32 torch.dot in the reference)
    against the sum in float64."""
    if not ops.available():
        pytest.skip("compiled kernels not built")
    probs, alpha, q_p, g = _probs_case(shape, bits, seed=bits)
    kept = torch.rand(shape, generator=g) > 0.1 if dropout else None
    keep_scale = torch.ones(()).div_(1 - 0.1) if dropout else None
    grad, grad2 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    codes, weights = reference.quantized_probs_forward(probs, kept, alpha, q_p, keep_scale)
    ref_gp, _ = reference.quantized_probs_backward(grad, grad2, probs, kept, alpha, q_p, keep_scale)
    u = probs.double() / alpha.double()
    assert (u.frac() == 0.5).any() and (codes == q_p).any() and (codes == 0).any()
    if bits == 1:
        assert set(codes.unique().tolist()) == {0, 1}
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            c, w = ops.quantized_probs_forward(probs, kept, alpha, q_p, keep_scale)
            assert torch.equal(c, codes) and torch.equal(w, weights)
            assert torch.equal(ops.quantized_probs_weights(c, alpha, keep_scale), weights)
            out = grad.clone()
            gp, gs = ops.quantized_probs_backward(out, grad2, probs, kept, alpha, q_p, keep_scale, out=out)
            assert gp.data_ptr() == out.data_ptr() and torch.equal(gp, ref_gp)
            gp2, gs2 = ops.quantized_probs_backward(grad, grad2, probs, kept, alpha, q_p, keep_scale)  # a new ∂A
            assert torch.equal(gp2, ref_gp) and torch.equal(gs2, gs)
            g1 = grad + grad2  # g' in float32, as the kernel and the reference compute it
            g1 = (torch.where(kept, keep_scale, 0.0) * g1 if dropout else g1).double()
            clipped = u.clamp(0, q_p)
            inside = clipped == u
            products = g1 * (clipped.round() - torch.where(inside, u, 0.0))
            exact = products.sum()
            assert gs.dtype == torch.float32 and gs.shape == alpha.shape
            assert abs(gs.double() - exact) <= _LANE_SUM_ERROR * products.abs().sum() + 6e-8 * abs(exact)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize(("shape", "shift_shape", "transposed"), [
    ((300, 40), None, False),  # no shift
    ((4, 33, 24), (24,), False),  # a Linear input, β per feature
    ((4, 3, 70, 16), (3, 1, 16), True),  # Q/K/V: a transposed view [B, H, T, d] of [B, T, H, d], β per head
    ((2, 2, 3, 50, 8), (8,), False),  # more than 4 dims
    ((64, 12, 128, 32), (12, 1, 32), True),  # several threads' worth
])
def test_scaled_sign_kernels_equal_reference_bit_for_bit(shape, shift_shape, transposed):
    """BiT's 1-bit elastic quantizer's training kernels (csrc/scaled_sign.h) against their PyTorch twins: x̂, the
    codes, ∂x bit for bit with 1 and 2 threads, on strided inputs and at the edges u = 0, −0, ±1; ∂α (blocked
    float sums in C) against the sum in float64."""
    if not ops.available():
        pytest.skip("compiled kernels not built")
    g = torch.Generator().manual_seed(len(shape))
    step = torch.tensor(0.25)
    if transposed:
        b, h, t, d = shape
        x = torch.randn(b, t, h, d, generator=g).mul_(0.3).transpose(1, 2)
    else:
        x = torch.randn(shape, generator=g).mul_(0.3)
    shift = None if shift_shape is None else 0.1 * torch.randn(shift_shape, generator=g)
    beta = 0.0 if shift is None else shift.expand(shape)
    edges = [0.0, -0.0, 0.25, -0.25, 0.2500001, -0.2500001]  # u = 0, −0, ±1 and just outside the window
    flat = x.reshape(-1) if x.is_contiguous() else None
    for i, e in enumerate(edges):  # edge values written through the view, β added back
        index = tuple(int(v) for v in torch.unravel_index(torch.tensor(7 * i + 1), shape))
        x[index] = e + (0.0 if shift is None else float(beta[index]))
    del flat
    x_hat, codes = reference.scaled_sign_forward(x, shift, step)
    grad = torch.randn(shape, generator=g)
    ref_gx, _ = reference.scaled_sign_backward(grad, codes, step)
    assert set(codes.unique().tolist()) == {0, 1, 2, 3} and (ref_gx == 0).any()
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out, c = ops.scaled_sign_forward(x, shift, step)
            assert out.is_contiguous() and torch.equal(out, x_hat) and torch.equal(c, codes)
            assert torch.equal(ops.scaled_sign_levels(c, step), x_hat)
            gx, gs = ops.scaled_sign_backward(grad, c, step)
            in_place = grad.clone()
            gx2, gs2 = ops.scaled_sign_backward(in_place, c, step, out=in_place)  # as _ScaledSignLinear calls it
            assert torch.equal(gx, ref_gx) and gx2.data_ptr() == in_place.data_ptr() and torch.equal(gx2, ref_gx)
            assert torch.equal(gs2, gs)
            exact = torch.where(codes.bitwise_and(1).bool(), grad.double(), -grad.double()).sum()
            assert gs.dtype == torch.float32 and gs.shape == step.shape
            assert abs(gs.double() - exact) <= _LANE_SUM_ERROR * grad.abs().sum() + 6e-8 * abs(exact)
    finally:
        torch.set_num_threads(previous)
