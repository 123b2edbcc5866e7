"""Memory safety of the kernel glue (hf_binary_bert/kernels/ops.py), which hands raw addresses to C code: every public
op called with freshly created temporaries and under torch.set_default_dtype(torch.float64) gives float32 outputs
equal to the reference; the bound calls keep the tensors they read alive; every bad dtype / shape / device is a
ValueError naming the tensor before any address is taken. These run with and without the compiled extension (without
it the ops are the reference, and the fallback test below is where that path is checked). `.ci/asan-kernels` runs
this file and tests/test_kernels.py once more on an AddressSanitizer build of the extension."""

import gc
import warnings
import weakref

import pytest
import torch

from hf_binary_bert.kernels import ops, reference
from hf_binary_bert.kernels.reference import SIGNED, UNSIGNED_GT
from hf_binary_bert.format import pack_bits

M, K, N = 5, 100, 13


def _arrays(seed=0, m=M, k=K, n=N):
    """Fresh tensors of one problem (each call allocates new ones)."""
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(m, k, generator=g, dtype=torch.float32),
                packed=pack_bits(torch.randn(n, k, generator=g, dtype=torch.float32) >= 0),
                alpha=torch.rand(n, generator=g, dtype=torch.float32) + 0.5,
                gamma=0.1 * torch.randn(n, generator=g, dtype=torch.float32),
                bias=torch.randn(n, generator=g, dtype=torch.float32),
                shift=0.1 * torch.randn(k, generator=g, dtype=torch.float32),
                step=torch.tensor(0.3, dtype=torch.float32))


def _w1a1_args(a):
    return (a["x"], a["packed"], ops.repack_weight(a["packed"], K, "bits"), a["alpha"], a["gamma"], a["bias"],
            a["shift"], a["step"], 0.5, UNSIGNED_GT, True)


def _w1a8_args(a):
    return (a["x"], a["packed"], ops.repack_weight(a["packed"], K, "nib"), ops.row_sums(a["packed"], K), a["alpha"],
            a["gamma"], a["bias"], a["shift"], torch.tensor(0.05, dtype=torch.float32), -8, 7, False)


def _w8a8_args(a):
    w8, scale = reference.quantize_weight_int8(torch.randn(N, K, generator=torch.Generator().manual_seed(9),
                                                        dtype=torch.float32))
    return (a["x"], w8, reference.repack_int8(w8), w8.sum(-1, dtype=torch.int32), scale, a["bias"])


def _bi_attention_args(seed=0, b=2, h=3, t=9, d=16):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, t, h, d, generator=g, dtype=torch.float32).transpose(1, 2) for _ in range(3))
    shifts = tuple(0.1 * torch.randn(h, 1, d, generator=g, dtype=torch.float32) for _ in range(3))
    steps = tuple(torch.tensor(s, dtype=torch.float32) for s in (0.7, 1.3, 0.9))
    mask = torch.zeros(b, 1, t, t, dtype=torch.float32)
    mask[0, :, :, -2:] = torch.finfo(torch.float32).min
    return (q, k, v, *shifts, *steps, steps[0] * steps[1] * d**-0.5, mask)


def _reference_w1a1(a):
    return reference.w1a1_linear(a["x"], a["packed"], a["alpha"], a["gamma"], a["bias"], a["shift"], a["step"], 0.5,
                                 UNSIGNED_GT, True)


def _reference_w1a8(a):
    return reference.w1a8_linear(a["x"], a["packed"], a["alpha"], a["gamma"], a["bias"], a["shift"],
                                 torch.tensor(0.05), -8, 7, False)


def _reference_bi_attention(args):
    q, k, v, *rest = args
    return reference.bi_attention(q, k, v, tuple(rest[0:3]), tuple(rest[3:6]), rest[6], rest[7])


def _probs_args(seed=0, shape=(2, 3, 9, 9)):
    """(probs, kept, step, q_p, keep_scale) of the attention probabilities' training kernels, with dropout."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float32), -1)
    return (probs, torch.rand(shape, generator=g, dtype=torch.float32) > 0.2, torch.tensor(0.125, dtype=torch.float32), 3,
            torch.ones((), dtype=torch.float32).div_(0.8))


def _probs_backward_args(seed=0):
    probs, kept, step, q_p, keep_scale = _probs_args(seed)
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.randn(probs.shape, generator=g, dtype=torch.float32),
            torch.randn(probs.shape, generator=g, dtype=torch.float32), probs, kept, step, q_p, keep_scale)


def _probs_codes_args(seed=0):
    probs, kept, step, q_p, keep_scale = _probs_args(seed)
    return reference.quantized_probs_forward(probs, kept, step, q_p, keep_scale)[0], step, keep_scale


def _sign_args(seed=0):
    """(x, shift, step) of BiT's 1-bit quantizer kernels: a transposed view [B, H, T, d], β per head."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 9, 3, 8, generator=g, dtype=torch.float32).transpose(1, 2)
    return x, 0.1 * torch.randn(3, 1, 8, generator=g, dtype=torch.float32), torch.tensor(0.5, dtype=torch.float32)


def _dropout_apply_args(seed=0, backward=False):
    """(x, kept, keep_scale, backward) of `dropout_apply`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 7, generator=g, dtype=torch.float32)
    kept = torch.rand(3, 5, 7, generator=g, dtype=torch.float32) < 0.7
    return x, kept, torch.ones((), dtype=torch.float32).div_(0.7), backward


def _sign_codes_args(seed=0):
    x, shift, step = _sign_args(seed)
    return reference.scaled_sign_forward(x, shift, step)[1], step


def _sign_backward_args(seed=0):
    codes, step = _sign_codes_args(seed)
    return torch.randn(codes.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float32), codes, step


# name → (call on fresh arrays, reference on fresh arrays); each returns a tensor or a tuple of tensors
OPS = {
    "w1a1_linear": (lambda: ops.w1a1_linear(*_w1a1_args(_arrays())), lambda: _reference_w1a1(_arrays())),
    "w1a1_linear_impl": (lambda: ops.w1a1_linear_impl(*_w1a1_args(_arrays())), lambda: _reference_w1a1(_arrays())),
    "w1a8_linear": (lambda: ops.w1a8_linear(*_w1a8_args(_arrays())), lambda: _reference_w1a8(_arrays())),
    "w1a8_linear_impl": (lambda: ops.w1a8_linear_impl(*_w1a8_args(_arrays())), lambda: _reference_w1a8(_arrays())),
    "w8a8_linear": (lambda: ops.w8a8_linear(*_w8a8_args(_arrays())),
                    lambda: reference.w8a8_linear(*(lambda a: (a[0], a[1], a[4], a[5]))(_w8a8_args(_arrays())))),
    "w8a8_linear_impl": (lambda: ops.w8a8_linear_impl(*_w8a8_args(_arrays())),
                         lambda: reference.w8a8_linear(*(lambda a: (a[0], a[1], a[4], a[5]))(_w8a8_args(_arrays())))),
    "bi_attention": (lambda: ops.bi_attention(*_bi_attention_args()), lambda: _reference_bi_attention(_bi_attention_args())),
    "bi_attention_impl": (lambda: ops.bi_attention_impl(*_bi_attention_args()),
                          lambda: _reference_bi_attention(_bi_attention_args())),
    "bind_w1a1": (lambda: ops.bind_w1a1(K, *_w1a1_args(_arrays())[1:])(_arrays()["x"]), lambda: _reference_w1a1(_arrays())),
    "bind_w1a8": (lambda: ops.bind_w1a8(K, *_w1a8_args(_arrays())[1:])(_arrays()["x"]), lambda: _reference_w1a8(_arrays())),
    "quantized_probs_forward": (lambda: ops.quantized_probs_forward(*_probs_args()),
                                lambda: reference.quantized_probs_forward(*_probs_args())),
    "quantized_probs_weights": (lambda: ops.quantized_probs_weights(*_probs_codes_args()),
                                lambda: reference.quantized_probs_weights(*_probs_codes_args())),
    # ∂A only: ∂α is summed in another order by the kernel (tests/test_kernels.py compares it with the exact sum)
    "quantized_probs_backward": (lambda: ops.quantized_probs_backward(*_probs_backward_args())[0],
                                 lambda: reference.quantized_probs_backward(*_probs_backward_args())[0]),
    "scaled_sign_forward": (lambda: ops.scaled_sign_forward(*_sign_args()),
                            lambda: reference.scaled_sign_forward(*_sign_args())),
    "scaled_sign_levels": (lambda: ops.scaled_sign_levels(*_sign_codes_args()),
                           lambda: reference.scaled_sign_levels(*_sign_codes_args())),
    # ∂x only: ∂α is summed in another order by the kernel (tests/test_kernels.py compares it with the exact sum)
    "scaled_sign_backward": (lambda: ops.scaled_sign_backward(*_sign_backward_args())[0],
                             lambda: reference.scaled_sign_backward(*_sign_backward_args())[0]),
    "dropout_kept": (lambda: ops.dropout_kept(0x0123456789ABCDEF, (3, 5, 7), 0.9),
                     lambda: reference.dropout_kept(0x0123456789ABCDEF, 105, 3865470566).reshape(3, 5, 7)),
    "dropout_apply": (lambda: ops.dropout_apply(*_dropout_apply_args()),
                      lambda: reference.dropout_apply(*_dropout_apply_args())),
    "row_sums": (lambda: ops.row_sums(_arrays()["packed"], K), lambda: reference.row_sums(_arrays()["packed"], K)),
    "repack_weight": (lambda: ops.repack_weight(_arrays()["packed"], K, "nib"),
                      lambda: reference.repack_weight(_arrays()["packed"], K, "nib")),
}


def test_every_public_op_is_covered():
    public = {name for name in ops.__all__ if callable(getattr(ops, name))}
    not_ops = {"available", "cpu_features", "get_isa", "set_isa", "supported_isas", "popcount_rate", "training_kernels"}
    assert public - not_ops == set(OPS)


def _flat(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.fixture(autouse=True)
def _quiet_reference_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "hf_binary_bert: compiled kernels unavailable", RuntimeWarning)
        yield


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(OPS))
def test_public_op_on_fresh_temporaries_equals_reference(name, default_dtype):
    expected = _flat(OPS[name][1]())  # computed in the usual float32 default
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        out = _flat(OPS[name][0]())
        gc.collect()
        junk = [torch.full((4096,), float("nan")) for _ in range(64)]  # reuse whatever memory was freed
        again = _flat(OPS[name][0]())
        del junk
    finally:
        torch.set_default_dtype(previous)
    for o, a, e in zip(out, again, expected):
        assert o.dtype == e.dtype and a.dtype == e.dtype, (o.dtype, e.dtype)  # float32 outputs, whatever the default
        assert torch.equal(o, e) and torch.equal(a, e)


@pytest.mark.parametrize("bind", ["w1a1", "w1a8"])
def test_bound_call_keeps_its_tensors_alive(bind):
    """The bound call holds the tensors whose addresses it passes to C: temporaries outlive the caller's references,
    the bound call computes from them after a garbage collection, and they are freed with the bound call."""
    a = _arrays(seed=3)
    expected = (_reference_w1a1 if bind == "w1a1" else _reference_w1a8)(_arrays(seed=3))
    args = (_w1a1_args if bind == "w1a1" else _w1a8_args)(a)[1:]
    refs = [weakref.ref(t) for t in args if isinstance(t, torch.Tensor)]
    run = getattr(ops, f"bind_{bind}")(K, *args)
    x = a["x"]
    del a, args
    gc.collect()
    junk = [torch.full((4096,), float("nan")) for _ in range(64)]
    kept = [r for r in refs if r() is not None]
    assert torch.equal(run(x), expected)
    del junk
    if ops.available():  # the compiled binder keeps exactly what it reads (weight_packed is read only to check it)
        assert len(kept) >= len(refs) - 2
    run_ref = weakref.ref(run)
    del run
    gc.collect()
    assert run_ref() is None


# --------------------------------------------------------------------------------------------------------------
# Bad arguments: a ValueError naming the tensor, for every tensor argument of every op


def _meta(t):
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def _other_dtype(t):
    return t.double() if t.is_floating_point() else t.float()


def _other_shape(t):
    return t.reshape(-1)[:-1].clone() if t.numel() > 1 else torch.zeros(3, dtype=t.dtype)


def _op_arguments():
    """(op name, call, args, {position: argument name}) for every op taking tensors."""
    a = _arrays()
    w1a1 = _w1a1_args(a)
    w1a8 = _w1a8_args(a)
    w8a8 = _w8a8_args(a)
    att = _bi_attention_args()
    kernel_only = {"weight_kernel", "weight_sums"}  # read only by the compiled kernels
    names_w1a1 = ["input", "weight_packed", "weight_kernel", "alpha", "gamma", "bias", "shift", "step"]
    names_w1a8 = ["input", "weight_packed", "weight_kernel", "weight_sums", "alpha", "gamma", "bias", "shift", "step"]
    names_w8a8 = ["input", "weight_int8", "weight_kernel", "weight_sums", "weight_scale", "bias"]
    names_att = ["query", "key", "value", "q_shift", "k_shift", "v_shift", "q_step", "k_step", "v_step", "scale",
                 "attention_mask"]
    cases = [
        ("w1a1_linear_impl", ops.w1a1_linear_impl, w1a1, names_w1a1),
        ("bind_w1a1", lambda *args: ops.bind_w1a1(K, *args[1:])(args[0]), w1a1, names_w1a1),
        ("w1a8_linear_impl", ops.w1a8_linear_impl, w1a8, names_w1a8),
        ("bind_w1a8", lambda *args: ops.bind_w1a8(K, *args[1:])(args[0]), w1a8, names_w1a8),
        ("w8a8_linear_impl", ops.w8a8_linear_impl, w8a8, names_w8a8),
        ("bi_attention_impl", ops.bi_attention_impl, att, names_att),
        ("quantized_probs_forward", ops.quantized_probs_forward, _probs_args(),
         ["probs", "kept", "step", "q_p", "keep_scale"]),
        ("quantized_probs_weights", ops.quantized_probs_weights, _probs_codes_args(), ["codes", "step", "keep_scale"]),
        ("quantized_probs_backward", ops.quantized_probs_backward, _probs_backward_args(),
         ["grad", "grad2", "probs", "kept", "step", "q_p", "keep_scale"]),
        ("scaled_sign_forward", ops.scaled_sign_forward, _sign_args(), ["x", "shift", "step"]),
        ("scaled_sign_levels", ops.scaled_sign_levels, _sign_codes_args(), ["codes", "step"]),
        ("scaled_sign_backward", ops.scaled_sign_backward, _sign_backward_args(), ["grad", "codes", "step"]),
        ("dropout_apply", ops.dropout_apply, _dropout_apply_args()[:3], ["x", "kept", "keep_scale"]),
        ("row_sums", lambda p: ops.row_sums(p, K), (a["packed"],), ["weight_packed"]),
        ("repack_weight", lambda p: ops.repack_weight(p, K, "bits"), (a["packed"],), ["weight_packed"]),
    ]
    for op, call, args, names in cases:
        for position, name in enumerate(names):
            if name in kernel_only and not ops.available():
                continue
            if op == "repack_weight":  # any device and a uint8 [N, ceil(K / 8)] of any layout: dtype / shape only
                mutations = {"dtype": _other_dtype, "shape": _other_shape}
            else:
                mutations = {"dtype": _other_dtype, "shape": _other_shape, "device": _meta}
            if name == "q_p":  # an int level, not a tensor
                mutations = {"range": lambda q: 256, "type": lambda q: 3.0}
            elif name in ("probs", "codes", "x"):  # any shape: the others' shapes follow it
                mutations = {k: v for k, v in mutations.items() if k != "shape"}
            for kind, mutate in mutations.items():
                if name in ("step", "q_step", "k_step", "v_step", "scale", "keep_scale") and kind == "dtype":
                    continue  # any float dtype is read as a Python float
                if name == "attention_mask" and kind == "shape":
                    mutate = lambda t: torch.zeros(2, 1, 5, 5)  # noqa: E731 - does not broadcast to [B, H, T, T]
                yield pytest.param(call, args, position, name, mutate, id=f"{op}-{name}-{kind}")


@pytest.mark.parametrize("call, args, position, name, mutate", list(_op_arguments()))
def test_bad_argument_is_a_value_error_naming_it(call, args, position, name, mutate):
    bad = list(args)
    bad[position] = mutate(args[position])
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call(*bad)


def test_missing_extension_falls_back_to_reference_with_one_warning(monkeypatch):
    """Runs wherever the tests run (also without the compiled extension, where this is the path in use)."""
    a = _arrays(seed=5)
    expected = _reference_w1a1(a)
    monkeypatch.setattr(ops, "_bitgemm", None)
    monkeypatch.setattr(ops, "_warned", False)
    empty = torch.zeros(0, dtype=torch.int64)
    args = (a["x"], a["packed"], empty, a["alpha"], a["gamma"], a["bias"], a["shift"], a["step"], 0.5, UNSIGNED_GT,
            True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ops.w1a1_linear_impl(*args)
        again = ops.w1a1_linear_impl(*args)
    assert [str(w.message).split(";")[0] for w in caught if w.category is RuntimeWarning] == [
        f"hf_binary_bert: compiled kernels unavailable ({ops._IMPORT_ERROR})"]
    assert torch.equal(out, expected) and torch.equal(again, expected)
    assert ops.supported_isas() == ["reference"] and ops.get_isa() == "reference" and not ops.available()
    with pytest.raises(ValueError, match="compiled kernels are not built"):
        ops.set_isa("avx2")
    _ = SIGNED


@pytest.mark.skipif(not ops.available(), reason="compares the compiled kernel with its twin")
@pytest.mark.parametrize("backward", [False, True])
def test_dropout_apply_is_the_composition_bit_for_bit(backward):
    """Signed zeros, infinities and NaN included (x · 0 keeps x's sign; ∞ · 0 is NaN), over a size that spans
    several of the kernel's parallel chunks."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 70001, generator=g, dtype=torch.float32) * 1e3
    x[0, :6] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, -3e38])
    kept = torch.rand(3, 70001, generator=g) < 0.9
    kept[0, :6] = torch.tensor([False, False, False, False, True, True])
    scale = torch.ones((), dtype=torch.float32).div_(0.9)
    out = ops.dropout_apply(x, kept, scale, backward)
    expected = reference.dropout_apply(x, kept, scale, backward)
    assert torch.equal(out.view(torch.int32), expected.view(torch.int32))
