"""Training memory (issue 16 §5): the quantizers' autograd functions and the binarized embedding keep less for the
backward pass, with the values and gradients of the plain autograd expressions they replace."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_binary_bert.binarization import BinaryEmbedding, sign_ste
from hf_binary_bert.binarization.activation import ActivationQuantizer, _grad_scale


def _saved_bytes(fn, *args):
    """Bytes of the tensors autograd saves for the backward pass while `fn(*args)` runs (scalars included)."""
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return out, sum(total)


def _reference(quantizer, x):
    """The quantizer's training forward as plain autograd expressions (the form before the custom functions)."""
    if hasattr(quantizer, "shift"):
        x = x - quantizer.shift
    step = _grad_scale(quantizer.step.clamp_min(1e-5), 1.0 / math.sqrt(x.numel() * max(quantizer.q_p, 1)))
    if quantizer.bits == 1 and quantizer.signed:
        return sign_ste(x / step.detach(), "clipped_identity") * step
    u = (x / step).clamp(quantizer.q_n, quantizer.q_p)
    return ((u.round() - u).detach() + u) * step


@pytest.mark.parametrize(("bits", "signed", "scheme"), [(1, True, "elastic"), (1, False, "elastic"),
                                                       (4, True, "sign"), (2, False, "sign"), (8, True, "elastic")])
def test_quantizer_gradients_match_autograd_reference_with_less_saved(bits, signed, scheme):
    torch.manual_seed(0)
    shape = (4, 16, 24)
    x = torch.randn(shape) if signed else torch.rand(shape)
    q = ActivationQuantizer(bits, signed=signed, scheme=scheme, shift_shape=(24,) if signed and scheme == "elastic" else None)
    q.train()
    q(x)  # calibrate on the first batch
    if hasattr(q, "shift"):
        with torch.no_grad():
            q.shift.normal_(0, 0.1)
    grad = torch.randn(shape)
    results = []
    for fn in (q, lambda t: _reference(q, t)):
        q.zero_grad()
        xi = x.clone().requires_grad_(True)
        out, saved = _saved_bytes(fn, xi)
        out.backward(grad)
        results.append((out.detach(), xi.grad, q.step.grad.clone(), saved,
                        q.shift.grad.clone() if hasattr(q, "shift") else None))
    (out, gx, gs, saved, gb), (ref_out, ref_gx, ref_gs, ref_saved, ref_gb) = results
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-6)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gs, ref_gs, rtol=1e-4, atol=1e-6)
    if gb is not None:
        torch.testing.assert_close(gb, ref_gb, rtol=1e-5, atol=1e-6)
    n = x.numel()
    assert saved <= (2 if bits == 1 and signed else 4) * n + 64 < ref_saved  # bools / one float vs 2–3 floats


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
