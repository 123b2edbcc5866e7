"""Training memory (issue 16 §5): the quantizers' autograd functions and the binarized embedding keep less for the
backward pass, with the values and gradients of the plain autograd expressions they replace."""

import contextlib
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hf_binary_bert.binarization import BinaryEmbedding, sign_ste
from hf_binary_bert.binarization.activation import ActivationQuantizer, _grad_scale


def _saved_bytes(fn, *args):
    """Bytes of the distinct storages autograd keeps for the backward pass while `fn(*args)` runs (scalars included;
    a tensor saved by two nodes, or a view of one already saved, counts once), leaves (the inputs, parameters) not
    counted: the memory a training step holds beyond its inputs and weights."""
    storages = {}
    leaves = {t.untyped_storage().data_ptr() for t in args if isinstance(t, torch.Tensor)}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in leaves and not (t.requires_grad and t.is_leaf):
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return out, sum(storages.values())


def _reference(quantizer, x):
    """The quantizer's training forward as a plain composition of autograd ops (the form before the custom
    functions): x − β, then sign_STE(u)·α (BiT's 1-bit elastic) or LSQ's α·round(clip(u)) with a straight-through
    round, u = (x − β)/α."""
    if hasattr(quantizer, "shift"):
        x = x - quantizer.shift
    step = _grad_scale(quantizer.step.clamp_min(1e-5), 1.0 / math.sqrt(x.numel() * max(quantizer.q_p, 1)))
    if quantizer.bits == 1 and quantizer.signed:
        return sign_ste(x / step.detach(), "clipped_identity") * step
    u = (x / step).clamp(quantizer.q_n, quantizer.q_p)
    return ((u.round() - u).detach() + u) * step


CASES = [(1, True, "elastic", (4, 16, 24), (24,)), (1, True, "elastic", (2, 3, 16, 8), (3, 1, 8)),
         (1, False, "elastic", (4, 16, 24), None), (2, True, "elastic", (4, 16, 24), (24,)),
         (4, True, "sign", (4, 16, 24), None), (2, False, "sign", (4, 16, 24), None),
         (8, True, "elastic", (4, 16, 24), (24,))]


def _quantizer(bits, signed, scheme, shape, shift_shape, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(shape) if signed else torch.rand(shape)
    q = ActivationQuantizer(bits, signed=signed, scheme=scheme, shift_shape=shift_shape)
    q.train()
    q(x)  # calibrate on the first batch
    with torch.no_grad():
        if hasattr(q, "shift"):
            q.shift.normal_(0, 0.3)
        q.step.mul_(1.3)  # off the calibrated value, so that the window / clip bounds cut through the data
    if not signed:  # attention probabilities: exact ties at ½·α and values above the clip bound
        x = torch.cat([x.flatten()[:-3], q.step.detach() * torch.tensor([0.5, 1.0, 2.5])]).reshape(shape)
    return q, x


@pytest.mark.parametrize(("bits", "signed", "scheme", "shape", "shift_shape"), CASES)
def test_quantizer_values_and_gradients_equal_the_plain_autograd_composition(bits, signed, scheme, shape, shift_shape):
    q, x = _quantizer(bits, signed, scheme, shape, shift_shape)
    grad = torch.randn(shape)
    results = []
    for fn in (q, lambda t: _reference(q, t)):
        q.zero_grad()
        xi = x.clone().requires_grad_(True)
        fn(xi).backward(grad)  # warm: a first training forward would calibrate
        q.zero_grad()
        xi.grad = None
        out = fn(xi)
        out.backward(grad)
        results.append((out.detach(), xi.grad, q.step.grad.clone(), q.shift.grad.clone() if shift_shape else None))
    (out, gx, gs, gb), (ref_out, ref_gx, ref_gs, ref_gb) = results
    assert torch.equal(out, ref_out)  # forward values: bit for bit
    # ∂/∂x: the reference computes (g·α)·1[window]/α, which can differ from g·1[window] by an ulp
    torch.testing.assert_close(gx, ref_gx, rtol=2**-23, atol=0)
    assert torch.equal(gx == 0, ref_gx == 0)  # the same window
    torch.testing.assert_close(gs, ref_gs, rtol=1e-5, atol=1e-7)  # a sum over every element, in another order
    if gb is not None:
        torch.testing.assert_close(gb, ref_gb, rtol=1e-5, atol=1e-6)
    assert gs.abs() > 1e-4 and gx.abs().sum() > 0


@pytest.mark.parametrize(("bits", "signed", "scheme", "shape", "shift_shape"), CASES[:4])
def test_quantizer_before_a_matmul_keeps_less_for_the_backward(bits, signed, scheme, shape, shift_shape):
    """Quantizer → matmul, as in a Linear or attention: the matmul keeps the quantized x̂ anyway. The functions add
    one bool per element (1-bit signed: the window; x̂ is shared) or nothing beyond x (LSQ: only x), where the plain
    composition keeps two or three float tensors more."""
    q, x = _quantizer(bits, signed, scheme, shape, shift_shape)
    weight = torch.randn(shape[-1], 5, requires_grad=True)
    n, bytes_x = x.numel(), x.numel() * x.element_size()
    _, saved = _saved_bytes(lambda t: q(t) @ weight, x.requires_grad_(True))
    _, ref_saved = _saved_bytes(lambda t: _reference(q, t) @ weight, x)
    if bits == 1 and signed:
        assert saved <= bytes_x + n + 64  # x̂ (the matmul's) + the bool window (+ scalars)
    else:
        assert saved <= 2 * bytes_x + 64  # x̂ (the matmul's) + x
    assert ref_saved >= saved + bytes_x


def _mutated_backward(monkeypatch, function, index, factor):
    original = function.backward

    def wrong(ctx, grad):
        grads = list(original(ctx, grad))
        grads[index] = grads[index] * factor
        return tuple(grads)

    monkeypatch.setattr(function, "backward", staticmethod(wrong))


@pytest.mark.parametrize(("case", "function", "index"), [(0, "_ScaledSignSTE", 1), (0, "_ScaledSignSTE", 2),
                                                          (2, "_LSQRound", 0), (3, "_LSQRound", 2)])
def test_the_comparison_catches_a_wrong_backward(monkeypatch, case, function, index):
    """The test above fails when one gradient of the functions is off (here by 1 %)."""
    from hf_binary_bert.binarization import activation

    _mutated_backward(monkeypatch, getattr(activation, function), index, 1.01)
    with pytest.raises(AssertionError):
        test_quantizer_values_and_gradients_equal_the_plain_autograd_composition(*CASES[case])


@pytest.mark.parametrize("scheme", ["mean_abs", "learned", "learned_offset"])
def test_binary_embedding_binarizes_only_the_rows_looked_up(scheme):
    torch.manual_seed(0)
    emb = BinaryEmbedding(50, 16, padding_idx=0, weight_scale=scheme)
    if scheme != "mean_abs":
        with torch.no_grad():
            emb.weight_scale.uniform_(0.5, 1.5)
    ids = torch.tensor([[0, 3, 7, 3], [49, 0, 1, 2]])
    grad = torch.randn(2, 4, 16)
    out, saved = _saved_bytes(emb, ids)
    out.backward(grad)
    grads = {name: p.grad.clone() for name, p in emb.named_parameters()}
    emb.zero_grad()
    ref, ref_saved = _saved_bytes(lambda i: F.embedding(i, emb.quantized_weight(), emb.padding_idx), ids)
    ref.backward(grad)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for name, p in emb.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6)  # sums of repeated ids in another order
    if scheme != "mean_abs":
        assert grads["weight_scale"][0] == 0 and grads["weight_scale"][[5, 10]].abs().sum() == 0  # padding, unused
    assert saved < ref_saved / 4  # 8 rows instead of the 50-row table


def test_limit_heap_growth_sets_the_mmap_threshold_unless_the_environment_does(monkeypatch):
    from hf_binary_bert.cli import limit_heap_growth

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert limit_heap_growth() is False  # the user's setting wins
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    import platform

    if platform.libc_ver()[0] == "glibc":
        assert limit_heap_growth() is True


def test_use_huge_pages_sets_pytorchs_switch_unless_the_environment_does(monkeypatch):
    from hf_binary_bert.cli import transparent_huge_pages_available, use_huge_pages

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    assert use_huge_pages() is False and os.environ["THP_MEM_ALLOC_ENABLE"] == "0"  # the user's setting wins
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    if transparent_huge_pages_available():
        assert use_huge_pages() is True and os.environ["THP_MEM_ALLOC_ENABLE"] == "1"


# A fresh Python: import the package and the command line's modules under a dispatch mode that counts every tensor
# operation (a module-level tensor would be one), then call use_huge_pages as the training commands do and touch
# 20 fresh 64 MiB tensors under the training commands' mmap threshold; prints both counts.
_FRESH_PROCESS = """
import resource, torch
from torch.utils._python_dispatch import TorchDispatchMode

ops = []
class Count(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        ops.append(str(func))
        return func(*args, **(kwargs or {}))

with Count():
    import hf_binary_bert, hf_binary_bert.cli, hf_binary_bert.recipes, hf_binary_bert.distillation
print("ops at import", ops)
hf_binary_bert.cli.limit_heap_growth()
print("huge pages set", hf_binary_bert.cli.use_huge_pages())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    x = torch.ones(16 << 20)
    del x
print("faults", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_import_makes_no_tensor_so_the_command_line_gets_huge_pages():
    """PyTorch reads THP_MEM_ALLOC_ENABLE at its first CPU allocation: importing hf_binary_bert (and what the CLI
    imports) must make no tensor, or `use_huge_pages` comes too late. Where the kernel has transparent huge pages, 20
    fresh 64 MiB tensors then fault in far fewer than their 327,680 pages of 4 KiB."""
    from hf_binary_bert.cli import transparent_huge_pages_available

    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "MALLOC_MMAP_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], capture_output=True, text=True, env=env, check=False,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ops at import []" in out.stdout, out.stdout
    faults = int(re.search(r"faults (\d+)", out.stdout).group(1))
    if not transparent_huge_pages_available():
        assert "huge pages set False" in out.stdout
        pytest.skip("the kernel's transparent huge pages are off")
    assert "huge pages set True" in out.stdout
    assert faults < 327_680 // 4, faults


def _run_layer(layer, x, grad, fn):
    """fn(x) with autograd, backward with `grad`: (output, ∂x, ∂ of every parameter of `layer`, bytes autograd kept)."""
    layer.zero_grad()
    xi = x.clone().requires_grad_(True)
    out, saved = _saved_bytes(fn, xi)
    out.backward(grad)
    return out.detach(), xi.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}, saved


@pytest.mark.parametrize("factored", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_with_a_1bit_elastic_input_keeps_codes_and_gives_the_plain_gradients(bias, factored, monkeypatch):
    """`BinaryLinear` with BiT's 1-bit elastic input quantizer runs quantizer and matmul as one function in training
    (`linear._ScaledSignLinear`) and keeps one uint8 code per input element instead of the float x̂. Its forward is
    the packed model's factored XNOR-popcount form (`reference.w1a1_linear`, bit for bit) where the compiled kernel
    applies, within float rounding of the quantizer followed by `F.linear`, and `F.linear`'s values exactly where it
    does not (`factored=False`: no extension); the gradients are those of quantizer + `F.linear`, exactly."""
    from hf_binary_bert.binarization import BinaryLinear
    from hf_binary_bert.format import pack_weight, per_row
    from hf_binary_bert.kernels import ops, reference

    if factored and not ops.available():
        pytest.skip("the compiled kernels are not built")
    if not factored:
        monkeypatch.setattr(ops, "available", lambda: False)
    torch.manual_seed(0)
    layer = BinaryLinear(24, 36, bias, weight_scale="learned_offset", num_groups=3)
    layer.input_quantizer = ActivationQuantizer(1, scheme="elastic", shift_shape=(24,))
    layer.train()
    x = torch.randn(4, 16, 24)
    layer(x)  # calibrates the step
    with torch.no_grad():
        layer.input_quantizer.shift.normal_(0, 0.3)
    grad = torch.randn(4, 16, 36)

    out, gx, grads, saved = _run_layer(layer, x, grad, layer)
    ref_out, ref_gx, ref_grads, ref_saved = _run_layer(
        layer, x, grad, lambda t: F.linear(layer.input_quantizer(t), layer.quantized_weight(), layer.bias))
    if factored:
        with torch.no_grad():
            alpha, gamma = layer.scales()
            shift, step = layer.input_quantizer.training_operands(x)
            packed = pack_weight(layer.weight, alpha, gamma)["weight_packed"]
            want = reference.w1a1_linear(x, packed, per_row(alpha, 36).reshape(-1), per_row(gamma, 36).reshape(-1),
                                         layer.bias, shift, step, 0.0, reference.SIGNED, True)
        assert torch.equal(out, want)
        assert not torch.equal(out, ref_out)  # the order of the sum differs: this test can tell the two forms apart
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(out, ref_out)
    assert torch.equal(gx, ref_gx)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name
    assert ref_saved - saved >= x.numel() * 3  # a float x̂ (4 bytes an element) → one uint8 code (1 byte)


@pytest.mark.parametrize("factored", [True, False])
@pytest.mark.parametrize("bits, signed, scheme, bias", [(2, True, "elastic", True), (4, True, "elastic", False),
                                                       (8, True, "elastic", True), (4, False, "elastic", True),
                                                       (1, False, "elastic", True), (4, True, "sign", True)])
def test_linear_with_an_lsq_input_keeps_only_x_and_gives_the_plain_gradients(bits, signed, scheme, bias, factored,
                                                                              monkeypatch):
    """`BinaryLinear` with an LSQ / elastic 2–8-bit input quantizer runs quantizer and matmul as one function in
    training (`linear._LSQLinear`) that keeps x, not also the float x̂. Its forward is the packed model's W1 × u8 form
    (`reference.w1a8_linear`, bit for bit) where the compiled kernel applies, within float rounding of the quantizer
    followed by `F.linear`, and `F.linear`'s values exactly where it does not; the gradients are those of the
    quantizer's function followed by `F.linear`, exactly."""
    from hf_binary_bert.binarization import BinaryLinear
    from hf_binary_bert.format import pack_weight, per_row
    from hf_binary_bert.kernels import ops, reference

    if factored and not ops.available():
        pytest.skip("the compiled kernels are not built")
    if not factored:
        monkeypatch.setattr(ops, "available", lambda: False)
    torch.manual_seed(1)
    layer = BinaryLinear(24, 36, bias, weight_scale="learned_offset", num_groups=3)
    quantizer = ActivationQuantizer(bits, scheme=scheme, signed=signed,
                                    shift_shape=(24,) if scheme == "elastic" else None)
    assert quantizer.has_step and not quantizer.is_scaled_sign
    layer.input_quantizer = quantizer
    layer.train()
    x = torch.randn(16, 4, 24).transpose(0, 1)  # [4, 16, 24], not contiguous
    layer(x)  # calibrates the step
    if scheme == "elastic":
        with torch.no_grad():
            quantizer.shift.normal_(0, 0.3)
    grad = torch.randn(4, 16, 36)

    out, gx, grads, saved = _run_layer(layer, x, grad, layer)
    ref_out, ref_gx, ref_grads, ref_saved = _run_layer(
        layer, x, grad, lambda t: F.linear(quantizer(t), layer.quantized_weight(), layer.bias))
    if factored:
        with torch.no_grad():
            alpha, gamma = layer.scales()
            shift, step = quantizer.training_operands(x)
            packed = pack_weight(layer.weight, alpha, gamma)["weight_packed"]
            want = reference.w1a8_linear(x, packed, per_row(alpha, 36).reshape(-1), per_row(gamma, 36).reshape(-1),
                                         layer.bias, None if shift is None else shift.reshape(-1), step,
                                         quantizer.q_n, quantizer.q_p, False)
        assert torch.equal(out, want)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(out, ref_out)
    assert torch.equal(gx, ref_gx)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name
    assert ref_saved - saved >= x.numel() * 4  # the float x̂ (4 bytes an element) is not kept


@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh"])
@pytest.mark.parametrize("bits, signed", [(4, True), (2, True), (8, False)])
def test_an_lsq_linear_after_an_activation_source_keeps_the_activations_input_and_gives_the_same_values(bits, signed,
                                                                                                       act):
    """`ActivationSource(f)` marks f(h); the `BinaryLinear` with an LSQ input that reads it keeps h for its backward
    pass (which f's backward keeps anyway) instead of f(h), and computes f(h) again there: outputs and every
    gradient (∂h, the Linear's and the quantizer's parameters) are those of the plain f bit for bit, and autograd
    keeps one float f(h) less."""
    from transformers.activations import ACT2FN

    from hf_binary_bert.binarization import BinaryLinear
    from hf_binary_bert.binarization.linear import ActivationSource

    torch.manual_seed(2)
    layer = BinaryLinear(48, 16, True, weight_scale="learned_offset", num_groups=2)
    layer.input_quantizer = ActivationQuantizer(bits, scheme="elastic", signed=signed, shift_shape=(48,))
    layer.train()
    f = ACT2FN[act]
    h = torch.randn(3, 20, 48)
    layer(f(h))  # calibrates the step
    with torch.no_grad():
        layer.input_quantizer.shift.normal_(0, 0.2)
    grad = torch.randn(3, 20, 16)
    marked = ActivationSource(f)
    out, gh, grads, saved = _run_layer(layer, h, grad, lambda t: layer(marked(t)))
    ref_out, ref_gh, ref_grads, ref_saved = _run_layer(layer, h, grad, lambda t: layer(f(t)))
    assert torch.equal(out, ref_out)
    assert torch.equal(gh, ref_gh)
    assert grads.keys() == ref_grads.keys() and len(grads) >= 4
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name
    assert ref_saved - saved >= h.numel() * 4  # f(h) in float32 is not kept
    # the activation itself: same values, no parameters, nothing in a state dict
    assert torch.equal(marked(h), f(h)) and not list(marked.parameters()) and not marked.state_dict()


def test_an_activation_source_changed_in_place_is_not_recomputed():
    """If f(h) or h is changed in place after `ActivationSource` marked it, the Linear keeps its input as before
    (f(h) computed again would not be what the forward read): the gradients still match the plain path's."""
    from hf_binary_bert.binarization import BinaryLinear
    from hf_binary_bert.binarization.linear import ActivationSource

    torch.manual_seed(3)
    layer = BinaryLinear(32, 8, True, weight_scale="learned", num_groups=1)
    layer.input_quantizer = ActivationQuantizer(4, scheme="elastic", signed=True, shift_shape=(32,))
    layer.train()
    h = torch.randn(4, 32)
    layer(F.gelu(h))
    grad = torch.randn(4, 8)
    marked = ActivationSource(torch.nn.GELU())
    out, gh, grads, saved = _run_layer(layer, h, grad, lambda t: layer(marked(t).mul_(2.0)))
    ref_out, ref_gh, ref_grads, ref_saved = _run_layer(layer, h, grad, lambda t: layer(F.gelu(t).mul_(2.0)))
    assert torch.equal(out, ref_out) and torch.equal(gh, ref_gh)
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name
    assert saved == ref_saved


@pytest.mark.parametrize("activation_bits, hidden_act, wrapped", [(4, "gelu", True), (1, "gelu", True),
                                                                   (32, "gelu", False), (4, "relu", False)])
def test_binarize_marks_the_ffn_activation_when_its_output_linear_quantizes_its_input(activation_bits, hidden_act,
                                                                                      wrapped):
    """The swap wraps each layer's FFN GELU in `ActivationSource` below 32 activation bits (not ReLU, whose backward
    keeps its output, the tensor the Linear keeps: nothing to save); the state dict's keys and the forward's values
    and gradients are those of the model without it."""
    from hf_binary_bert import BinaryBertConfig, BinaryBertForSequenceClassification
    from hf_binary_bert.binarization.linear import ActivationSource

    config = BinaryBertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=48, activation_bits=activation_bits, activation_quantizer="elastic",
                              hidden_act=hidden_act)
    torch.manual_seed(0)
    model = BinaryBertForSequenceClassification(config).train()
    acts = [layer.intermediate.intermediate_act_fn for layer in model.bert.encoder.layer]
    assert all(isinstance(a, ActivationSource) for a in acts) == wrapped
    assert not any(".act." in k or k.endswith(".act") for k in model.state_dict())
    ids = torch.randint(0, 60, (2, 9))
    torch.manual_seed(1)
    loss = model(input_ids=ids, labels=torch.tensor([0, 1])).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if wrapped:  # the same model with the plain activations: the same loss and gradients
        for layer, a in zip(model.bert.encoder.layer, acts):
            layer.intermediate.intermediate_act_fn = a.act
        model.zero_grad()
        torch.manual_seed(1)
        ref = model(input_ids=ids, labels=torch.tensor([0, 1])).loss
        ref.backward()
        assert torch.equal(loss, ref)
        for n, p in model.named_parameters():
            if p.grad is not None:
                assert torch.equal(p.grad, grads[n]), n


def test_mask_dropout_applies_its_philox_mask_as_torch_dropout_and_keeps_a_bool_mask():
    """mask_dropout = F.dropout's values for the mask `dropout_kept` draws (the same generator state gives the same
    mask), the gradient of x · noise, a keep rate of 1 − p, and only a bool mask kept for the backward pass."""
    from hf_binary_bert.binarization.dropout import MaskDropout, dropout_kept, mask_dropout

    x = torch.randn(8, 4, 32, 32)
    x[0, 0, 0, :4] = torch.tensor([0.0, -0.0, -1.5, 3.0])
    grad = torch.randn_like(x)
    torch.manual_seed(3)
    kept, keep_scale = dropout_kept(x.shape, 0.1, x.dtype)
    noise = kept.to(x.dtype) * keep_scale  # ATen's noise for this mask: 1[kept] · 1/(1 − p)
    torch.manual_seed(3)
    xi = x.clone().requires_grad_(True)
    out, saved = _saved_bytes(lambda t: mask_dropout(t, 0.1), xi)
    out.backward(grad)
    ref = x * noise
    assert torch.equal(out.detach(), ref) and torch.equal(out.detach().signbit(), ref.signbit())  # -0.0 where dropped
    assert torch.equal(xi.grad, grad * noise)
    assert abs(kept.float().mean().item() - 0.9) < 0.01 and keep_scale.item() == torch.ones(()).div_(0.9).item()
    torch.manual_seed(4)
    assert not torch.equal(mask_dropout(x.requires_grad_(True), 0.1) != 0, out != 0)  # another state, another mask
    assert saved <= x.numel() + 64  # the bool mask (F.dropout keeps a float noise tensor: 4 bytes an element)
    module = MaskDropout(0.1).eval()
    assert module(x) is x or torch.equal(module(x), x)  # eval: identity


def test_dropout_kept_is_philox_with_random123s_known_answers_and_the_kernel_equals_its_twin():
    """kernels.reference.philox4x32_10 against Random123's published known answers (tests/kat_vectors of its
    distribution); ops.dropout_kept (compiled) equals reference.dropout_kept bit for bit for sizes around the
    4-word blocks and the 16-counter groups, extreme keys and keep probabilities, and any thread count."""
    from hf_binary_bert.kernels import ops, reference

    def words(*values):
        return tuple(torch.tensor([v], dtype=torch.int64) for v in values)

    kats = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
            ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
            ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
             (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, want in kats:
        assert tuple(int(w) for w in reference.philox4x32_10(words(*counter), key)) == want
    for n in (1, 3, 4, 5, 63, 64, 65, 1000):
        for key in (0, 1, (1 << 64) - 1, 0x0123456789ABCDEF):
            for keep in (0.0, 0.5, 0.9, 1 - 2**-30):
                threshold = min(int(keep * 2**32), 2**32 - 1)
                assert torch.equal(ops.dropout_kept(key, (n,), keep), reference.dropout_kept(key, n, threshold))
    n = 4 * 65536 * 2 + 13  # three of the kernel's parallel chunks, the last one partial
    want = reference.dropout_kept(0x0123456789ABCDEF, n, 3865470566)
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            assert torch.equal(ops.dropout_kept(0x0123456789ABCDEF, (n,), 0.9), want), t
    finally:
        torch.set_num_threads(threads)
    assert ops.dropout_kept(5, (2, 3), 1.0).all() and not ops.dropout_kept(5, (2, 3), 0.0).any()
    with pytest.raises(ValueError, match="keep"):
        ops.dropout_kept(5, (4,), 1.5)
    with pytest.raises(ValueError, match="key"):
        ops.dropout_kept(-1, (4,), 0.5)


def test_linear_with_a_1bit_elastic_input_trains_under_cpu_autocast():
    """Under autocast the plain path runs (autocast casts its matmul to bfloat16); the backward reaches x in float32."""
    from hf_binary_bert.binarization import BinaryLinear

    torch.manual_seed(0)
    layer = BinaryLinear(24, 36, weight_scale="learned_offset", num_groups=3)
    layer.input_quantizer = ActivationQuantizer(1, scheme="elastic", shift_shape=(24,))
    layer.train()
    x = torch.randn(4, 8, 24, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and x.grad.dtype == torch.float32 and x.grad.abs().sum() > 0


def _attention_module(bits, seed=0):
    """An attention-like module holding BiT's unsigned probability quantizer (`bits` bits, elastic, no shift),
    calibrated and moved off its calibrated step."""
    from torch import nn

    torch.manual_seed(seed)
    module = nn.Module()
    module.probs_quantizer = ActivationQuantizer(bits, signed=False, scheme="elastic")
    module.train()
    module.probs_quantizer(torch.softmax(torch.randn(2, 3, 16, 16), -1))  # calibrate
    with torch.no_grad():
        module.probs_quantizer.step.mul_(0.7)
    return module


@pytest.mark.parametrize(("bits", "dropout", "weights_used"), [(1, 0.1, False), (1, 0.0, False), (2, 0.1, False),
                                                               (1, 0.1, True)])
def test_attention_probabilities_quantizer_dropout_and_value_product_as_one_function(bits, dropout, weights_used):
    """Training attention (`binary_softmax_attention`): Â = LSQ(softmax), its dropout and Â·V̂ as one function
    (`_QuantizedProbsValue`) give the values, random draws and gradients of the quantizer, `mask_dropout` and
    `torch.matmul` one after the other, bit for bit, and keep the levels (uint8) and the kept mask (bool) instead of
    the float Â; with the returned weights used by a loss (the attention-map loss) their gradient is added."""
    from hf_binary_bert import attention
    from hf_binary_bert.binarization.dropout import mask_dropout

    module = _attention_module(bits)
    shape = (4, 3, 32, 32)
    g = torch.Generator().manual_seed(1)
    scores0, value0 = torch.randn(shape, generator=g) * 3, torch.randn(4, 3, 32, 8, generator=g)
    grad = torch.randn(4, 32, 3, 8, generator=g)
    weights_grad = torch.randn(shape, generator=g)

    def fused(scores, value):
        scores, value = scores * 1.0, value * 1.0  # non-leaves, as in a layer
        return attention._probs_times_value(module, scores, value, dropout)

    quantized = []

    def plain(scores, value):
        scores, value = scores * 1.0, value * 1.0
        quantized.append(module.probs_quantizer(torch.softmax(scores, -1)))
        quantized[-1].retain_grad()
        probs = mask_dropout(quantized[-1], dropout, True)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

    results = []
    for fn in (fused, plain):
        module.zero_grad()
        scores, value = scores0.clone().requires_grad_(True), value0.clone().requires_grad_(True)
        torch.manual_seed(7)
        (out, probs), saved = _saved_bytes(fn, scores, value)
        loss = (out * grad).sum() + ((probs * weights_grad).sum() if weights_used else 0)
        loss.backward()
        results.append((out.detach(), probs.detach(), scores.grad, value.grad, module.probs_quantizer.step.grad.clone(),
                        saved))
    (out, probs, gs, gv, gstep, saved), (r_out, r_probs, r_gs, r_gv, r_gstep, r_saved) = results
    assert torch.equal(out, r_out) and torch.equal(probs, r_probs)
    assert (probs == 0).any() and (probs != 0).any() and (bits == 1 or probs.unique().numel() > 2)  # levels cut
    assert torch.equal(gv, r_gv)
    if weights_used:  # ∂/∂Â from two uses, added in another order than autograd's
        torch.testing.assert_close(gs, r_gs, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(gs, r_gs)
    # ∂α = Σ g'·(round(clip(u)) − u·1[inside]) over 49k products of both signs: the plain path sums them in float32
    # (torch.dot), the compiled kernel in blocks of 16 float lanes added in float64; both against the sum in float64
    # of the plain path's own g' and u
    step = module.probs_quantizer.step.detach()
    u = torch.softmax(scores0, -1) / step
    inside = (u >= 0) & (u <= 2**bits - 1)
    term = u.clamp(0, 2**bits - 1).round() - torch.where(inside, u, 0.0)
    grad_scale = 1 / math.sqrt(scores0.numel() * (2**bits - 1))  # LSQ's gradient scale of the step
    exact = (quantized[0].grad.double() * term.double()).sum() * grad_scale
    terms = (quantized[0].grad.double() * term.double()).abs().sum() * grad_scale
    assert abs(gstep.double() - exact) <= 3e-7 * abs(exact) + 64 * 2**-24 * terms  # blocked float sums (C), ×scale
    assert abs(r_gstep.double() - exact) <= 1e-6 * terms  # a float32 sum
    assert gstep.abs() > 0 and gs.abs().sum() > 0
    n = scores0.numel()
    assert r_saved - saved >= 3 * n - (n if dropout else 0)  # the float Â (4 B) → uint8 levels (+ the kept mask)


def test_training_kernels_run_compiled_on_float32_and_as_pytorch_twins_on_bfloat16():
    """`kernels.ops.training_kernels` picks the compiled kernels for float32 CPU tensors only; a bfloat16 model's
    attention (no autocast) runs the PyTorch twins and still equals the plain composition bit for bit."""
    from hf_binary_bert import attention
    from hf_binary_bert.binarization.dropout import mask_dropout
    from hf_binary_bert.kernels import ops, reference

    assert ops.training_kernels(torch.ones(1), None) is (ops if ops.available() else reference)
    assert ops.training_kernels(torch.ones(1), torch.ones(1, dtype=torch.bfloat16)) is reference
    module = _attention_module(1).to(torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    scores0 = (torch.randn(2, 3, 16, 16, generator=g) * 3).bfloat16()
    value0 = torch.randn(2, 3, 16, 8, generator=g).bfloat16()
    results = []
    for fused in (True, False):
        scores, value = scores0.clone().requires_grad_(True), value0.clone().requires_grad_(True)
        torch.manual_seed(7)
        if fused:
            out, probs = attention._probs_times_value(module, scores * 1.0, value * 1.0, 0.1)
        else:
            probs = mask_dropout(module.probs_quantizer(torch.softmax(scores * 1.0, -1)), 0.1, True)
            out = torch.matmul(probs, value * 1.0).transpose(1, 2).contiguous()
        out.float().sum().backward()
        results.append((out, probs, scores.grad, value.grad))
    assert results[0][0].dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(*results))


def _kl_maps(shape, seed=0):
    """Student and teacher attention rows [..., T]: a softmax with exact zeros (keys pushed to −10⁴), entries at and
    just under the floor ε = 1e-12, and a teacher zero."""
    from hf_binary_bert.distillation.losses import _KL_EPS

    torch.manual_seed(seed)
    scores = torch.randn(shape)
    scores.view(-1, shape[-1])[0, :2] = -1e4
    a_s = torch.softmax(scores, -1)
    a_s.view(-1, shape[-1])[1, 1] = _KL_EPS
    a_s.view(-1, shape[-1])[1, 2] = 0.3 * _KL_EPS
    a_t = torch.softmax(torch.randn(shape), -1)
    a_t.view(-1, shape[-1])[0, 1] = 0.0
    return a_s, a_t


@pytest.mark.parametrize("shape", [(4, 3, 9, 9), (32, 12, 64, 64), (2, 5, 7)])
def test_attention_kl_equals_the_plain_autograd_composition_and_keeps_no_copy(shape):
    """The attention KL's function (`losses._AttentionKL`): values and ∂/∂A_s bit for bit those of
    A_t·(log max(A_t, ε) − log max(A_s, ε)) summed over the keys, through slices of dim 0 where the map is large
    (the second shape: 5 slices); autograd keeps no tensor beyond A_s and A_t, where the composition kept
    max(A_s, ε)."""
    from hf_binary_bert.distillation.losses import attention_kl_per_row

    a_s, a_t = _kl_maps(shape)
    plain, fused = a_s.clone().requires_grad_(), a_s.clone().requires_grad_()

    def composition(x):
        return (a_t * (torch.log(a_t.clamp_min(1e-12)) - torch.log(x.clamp_min(1e-12)))).sum(-1)

    expected, kept_plain = _saved_bytes(composition, plain)
    got, kept_fused = _saved_bytes(lambda x: attention_kl_per_row(x, a_t), fused)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad)
    assert torch.equal(got, expected)
    assert torch.equal(fused.grad, plain.grad)
    assert (fused.grad.flatten(0, -2)[1, 2] == 0) and (fused.grad.flatten(0, -2)[1, 1] != 0)  # the clamp's window
    assert kept_fused == a_t.untyped_storage().nbytes()  # A_t only (A_s is the input)
    assert kept_plain == kept_fused + a_s.untyped_storage().nbytes()  # + max(A_s, ε)


def test_the_attention_kl_comparison_catches_a_wrong_backward(monkeypatch):
    """The test above fails when the function's gradient is off by 1 %."""
    from hf_binary_bert.distillation import losses

    _mutated_backward(monkeypatch, losses._AttentionKL, 0, 1.01)
    with pytest.raises(AssertionError):
        test_attention_kl_equals_the_plain_autograd_composition_and_keeps_no_copy((4, 3, 9, 9))


def _tiny_student(activation_bits, seed=0, **kwargs):
    from hf_binary_bert import BinaryBertConfig, BinaryBertForSequenceClassification

    config = BinaryBertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=48, activation_bits=activation_bits, activation_quantizer="elastic",
                              weight_scale="learned_offset", scale_granularity="head", **kwargs)
    torch.manual_seed(seed)
    return BinaryBertForSequenceClassification(config).train()


def _loss_and_grads(model, ids, mask):
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout draws
    loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 1])).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _calibrated_student_and_gradients(activation_bits):
    """A tiny student with calibrated quantizers, a batch and its parameters' gradients."""
    model = _tiny_student(activation_bits)
    ids = torch.randint(0, 60, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    model(input_ids=ids, attention_mask=mask)
    _, grads = _loss_and_grads(model, ids, mask)
    return model, ids, mask, grads


@pytest.mark.parametrize("activation_bits", [1, 2, 4])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_attention_keeps_quantized_operands_as_their_codes_with_the_same_gradients(activation_bits, checkpointing,
                                                                                  monkeypatch):
    """The attention's matmuls keep, instead of the float Q̂, K̂ and V̂, what their quantizers keep anyway, and
    rebuild them in the backward pass (`attention._saved_as_rebuilt`): the loss and every gradient of a student
    are those of the plain matmuls bit for bit (with activation checkpointing too, where it is a no-op), and
    autograd keeps 3 × B·T·hidden floats less per layer."""
    from hf_binary_bert import attention

    model = _tiny_student(activation_bits)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, 60, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    model(input_ids=ids, attention_mask=mask)  # calibrates the quantizers
    loss, grads = _loss_and_grads(model, ids, mask)
    calls = []
    real = attention._saved_as_rebuilt

    def counted(*tensors):
        calls.append(len(tensors))
        return real(*tensors)

    monkeypatch.setattr(attention, "_saved_as_rebuilt", counted)
    loss2, grads2 = _loss_and_grads(model, ids, mask)
    assert calls  # the attention went through it
    monkeypatch.setattr(attention, "_saved_as_rebuilt", lambda *t: contextlib.nullcontext())
    ref_loss, ref_grads = _loss_and_grads(model, ids, mask)
    assert torch.equal(loss, ref_loss) and torch.equal(loss2, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name
    if not checkpointing:  # what autograd keeps, with the hook of `_saved_bytes` nested outside
        monkeypatch.setattr(torch._C._autograd, "_top_saved_tensors_default_hooks", lambda *a: None)
        monkeypatch.setattr(attention, "_saved_as_rebuilt", real)
        _, saved = _saved_bytes(lambda i: model(input_ids=i, attention_mask=mask).logits, ids)
        monkeypatch.setattr(attention, "_saved_as_rebuilt", lambda *t: contextlib.nullcontext())
        _, ref_saved = _saved_bytes(lambda i: model(input_ids=i, attention_mask=mask).logits, ids)
        assert ref_saved - saved >= 2 * 3 * ids.numel() * 32 * 4  # layers × Q̂, K̂, V̂ × tokens × hidden × 4 bytes


def test_a_wrongly_rebuilt_attention_operand_changes_the_gradients(monkeypatch):
    """The comparison above can fail: a rebuild off by one ulp in Q̂, K̂ and V̂ changes the gradients."""
    from hf_binary_bert import attention
    from hf_binary_bert.binarization import activation

    model, ids, mask, grads = _calibrated_student_and_gradients(1)
    real = activation.quantized_rebuild

    def off(x_hat):
        fn = real(x_hat)
        return None if fn is None else (lambda: torch.nextafter(fn(), torch.tensor(float("inf"))))

    monkeypatch.setattr(attention, "quantized_rebuild", off)
    _, bad = _loss_and_grads(model, ids, mask)
    assert any(not torch.equal(grads[n], bad[n]) for n in grads)


def _kl_trainer(student_bits, teacher_bits=None):
    """A tiny regression teacher (full precision, or binarized with `teacher_bits`: a multi-step stage's teacher) and a
    binarized student with the attention KL on the quantized maps, in a `DistillationTrainer`."""
    from transformers import BertConfig, BertForSequenceClassification

    from hf_binary_bert import BinaryBertForSequenceClassification
    from hf_binary_bert.distillation import DistillationTrainer, DistillationTrainingArguments

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48, num_labels=1,
        attn_implementation="eager"))
    if teacher_bits is not None:
        teacher = BinaryBertForSequenceClassification.from_teacher(
            teacher, activation_bits=teacher_bits, activation_quantizer="elastic", weight_scale="learned_offset")
        teacher.train()(input_ids=torch.randint(0, 60, (2, 7)))  # calibrates its quantizers
    torch.manual_seed(1)
    student = BinaryBertForSequenceClassification.from_teacher(
        teacher, activation_bits=student_bits, activation_quantizer="elastic", weight_scale="learned_offset",
        scale_granularity="head").train()
    args = DistillationTrainingArguments(output_dir="/tmp/unused", use_cpu=True, report_to=[],
                                         attention_loss_weight=1.0, attention_loss="kl")
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args)
    assert args.attention_distribution == "quantized"
    ids = torch.randint(0, 60, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[2, 6:] = 0
    return trainer, student, {"input_ids": ids, "attention_mask": mask, "labels": torch.randn(3)}


def _step(trainer, student, inputs):
    student.zero_grad()
    torch.manual_seed(5)  # the same dropout draws
    loss = trainer.compute_loss(student, dict(inputs))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("student_bits, teacher_bits", [(4, None), (2, None), (8, None), (2, 4)])
def test_attention_kl_inside_the_layers_equals_the_loss_on_returned_maps(student_bits, teacher_bits, monkeypatch):
    """With the attention KL on the quantized maps, the trainer has each layer compute its KL itself
    (`attention.attention_kl_in_layers`): the maps are not returned, and the loss and every gradient equal those of
    `attention_distillation_loss` on the returned maps bit for bit (a full-precision or a binarized teacher)."""
    from hf_binary_bert.distillation import trainer as trainer_module

    trainer, student, inputs = _kl_trainer(student_bits, teacher_bits)
    calls = []
    real = trainer_module.attention_kl_in_layers

    def counted(model, targets):
        calls.append(len(targets))
        return real(model, targets)

    monkeypatch.setattr(trainer_module, "attention_kl_in_layers", counted)
    loss, grads = _step(trainer, student, inputs)
    assert calls == [4]
    monkeypatch.setattr(trainer_module, "_records_every_layer", lambda model: False)  # the returned maps
    ref_loss, ref_grads = _step(trainer, student, inputs)
    assert calls == [4]
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and len(grads) > 50
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name


def test_attention_kl_under_activation_checkpointing_uses_the_returned_maps(monkeypatch):
    """Activation checkpointing runs the layers' forward again outside the trainer's context: the trainer then keeps
    the returned maps (no in-layer KL), with the same loss and gradients as without checkpointing."""
    from hf_binary_bert.distillation import trainer as trainer_module

    trainer, student, inputs = _kl_trainer(4)
    ref_loss, ref_grads = _step(trainer, student, inputs)
    student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    calls = []
    real = trainer_module.attention_kl_in_layers
    monkeypatch.setattr(trainer_module, "attention_kl_in_layers", lambda *a: calls.append(1) or real(*a))
    loss, grads = _step(trainer, student, inputs)
    assert not calls
    assert torch.equal(loss, ref_loss)
    for name in ref_grads:
        assert torch.equal(grads[name], ref_grads[name]), name


def test_the_in_layer_attention_kl_comparison_catches_a_wrong_backward(monkeypatch):
    """The comparison above can fail: the layer's KL backward reading Â one ulp off changes the gradients."""
    from hf_binary_bert.distillation import losses

    trainer, student, inputs = _kl_trainer(4)
    _, grads = _step(trainer, student, inputs)
    real = losses.attention_kl_rows_backward
    monkeypatch.setattr(losses, "attention_kl_rows_backward", lambda grad, a_s, a_t: real(
        grad, torch.nextafter(a_s, torch.tensor(float("inf"))), a_t))
    _, bad = _step(trainer, student, inputs)
    assert any(not torch.equal(grads[n], bad[n]) for n in grads)


def test_attention_kl_in_layers_needs_one_target_per_layer():
    from hf_binary_bert.attention import attention_kl_in_layers

    model = _tiny_student(4)
    with pytest.raises(ValueError, match="1 target maps for 2 quantized softmax attention layers"):
        with attention_kl_in_layers(model, [torch.zeros(1, 2, 3, 3)]):
            pass
    assert not any(hasattr(m, "_kl_target") for m in model.modules())


def test_a_wrongly_rebuilt_linear_output_changes_the_gradients(monkeypatch):
    """The Q/K/V Linears' outputs that their LSQ quantizers would keep are computed again in the backward pass
    (`linear._factored_rebuild`): one ulp off there changes the gradients, so the bit-for-bit comparisons above see
    that path (where the compiled kernels apply)."""
    from hf_binary_bert.binarization import linear
    from hf_binary_bert.kernels import ops

    if not ops.available():
        pytest.skip("the compiled kernels are not built")
    model, ids, mask, grads = _calibrated_student_and_gradients(4)
    real = linear._factored_rebuild

    def off(*args):
        fn = real(*args)
        return lambda: torch.nextafter(fn(), torch.tensor(float("inf")))

    monkeypatch.setattr(linear, "_factored_rebuild", off)
    _, bad = _loss_and_grads(model, ids, mask)
    assert any(not torch.equal(grads[n], bad[n]) for n in grads)
