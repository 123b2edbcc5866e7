"""The native encoder runtime (hf_binary_bert/runtime.py, kernels/csrc/encoder.h): when it runs, that it agrees with
the eager kernel path, padding removal, its fall-backs, plan rebuilding, and bad input."""

import logging

import pytest
import torch
from conftest import HEADS, head_inputs, head_output, set_straddling_shift, straddle_shift, tiny_config

import hf_binary_bert as hb
from hf_binary_bert import (
    BinaryBertForMaskedLM,
    BinaryBertForSequenceClassification,
    BinaryBertModel,
    PackedBinaryLinear,
    kernels,
)
from hf_binary_bert.runtime import NATIVE_OUTPUT, BinaryBertBody, BinaryBertEncoder

pytestmark = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")

# Every scheme. The eager path computes attention in factored form (integer levels, scaled once) as the runtime
# does, so the two differ only by the float rounding of LayerNorm, GELU and softmax.
COMBOS = {
    "W1A1-sign": dict(activation_bits=1),
    "W1A1-elastic (BiT)": dict(activation_bits=1, activation_quantizer="elastic"),
    "W1A1-elastic-relu-E1": dict(activation_bits=1, activation_quantizer="elastic", hidden_act="relu",
                                 embedding_bits=1),
    "W1A1-sign-bi_attention": dict(activation_bits=1, attention_type="bi_attention"),
    "W1A1-elastic-bi_attention-E1": dict(activation_bits=1, activation_quantizer="elastic", attention_type="bi_attention",
                                         embedding_bits=1),
    "W1A8-elastic": dict(activation_bits=8, activation_quantizer="elastic"),
    "W1A4-sign": dict(activation_bits=4),
    "W1A2-elastic-relu": dict(activation_bits=2, activation_quantizer="elastic", hidden_act="relu"),
}


def _model(combo, cls=BinaryBertModel, layers=2, seed=0, **extra):
    torch.manual_seed(seed)
    model = cls(tiny_config(weight_scale="learned_offset", scale_granularity="head", num_hidden_layers=layers,
                            **combo, **extra))
    ids = torch.randint(1, 99, (4, 13), generator=torch.Generator().manual_seed(seed))
    model.train()(**head_inputs(cls.__name__, ids))  # calibrates the activation quantizers
    return model.eval().freeze()


def _inputs(seed=1, lengths=(13, 9, 1, 5)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 99, (len(lengths), max(lengths)), generator=g)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return ids, mask


def _linear_calls(model):
    calls = []
    handles = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.modules()
               if isinstance(m, PackedBinaryLinear)]
    return calls, handles


def _hidden(model, ids, mask, kernel):
    model.set_inference_kernel(kernel)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask)
    model.set_inference_kernel("auto")
    return out


def _native_then_eager(model, ids, mask):
    """The last hidden states on the native runtime, with no PyTorch Linear run (asserted), then on the eager kernel
    path; and how many PyTorch Linear calls the eager forward made."""
    calls, handles = _linear_calls(model)
    try:
        native = _hidden(model, ids, mask, "auto").last_hidden_state
        assert not calls, "the native runtime ran no PyTorch Linear"
        eager = _hidden(model, ids, mask, "eager").last_hidden_state
    finally:
        for h in handles:
            h.remove()
    return native, eager, len(calls)


def _live_forward(model, ids, mask):
    """A forward on the plan as it stands (no `set_inference_kernel`, which rebuilds the plan): the runtime's
    per-forward check alone decides whether to rebuild it. Returns the last hidden states and whether the plan was
    valid before the call."""
    valid = model.encoder.runtime()._still_valid()
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state, valid


@pytest.mark.parametrize("combo", list(COMBOS))
def test_runtime_runs_and_equals_the_eager_kernel_path(combo):
    model = _model(COMBOS[combo], layers=3)
    ids, mask = _inputs()
    native, eager, eager_calls = _native_then_eager(model, ids, mask)
    assert eager_calls == 18  # 3 layers × 6 Linears on the eager path
    valid = mask.bool()
    torch.testing.assert_close(native[valid], eager[valid], rtol=0, atol=2e-5)
    assert torch.equal(native[~valid], torch.zeros_like(native[~valid]))  # padding is not computed


def _through_bert_model_forward(model, **inputs):
    """The same forward through transformers' `BertModel.forward` (a no-op forward hook on the body makes the direct
    native forward step aside; the encoder module then runs the runtime as before)."""
    body = model if isinstance(model, BinaryBertModel) else model.bert
    handle = body.register_forward_hook(lambda *a: None)
    try:
        with torch.inference_mode():
            return model(**inputs)
    finally:
        handle.remove()


@pytest.mark.parametrize("cls", [BinaryBertModel, BinaryBertForSequenceClassification])
@pytest.mark.parametrize("lengths", [(13, 9, 1, 5), (13, 13), (0, 7)])
def test_direct_native_forward_equals_bert_model_forward(cls, lengths, monkeypatch):
    """`BinaryBertModelForward` (the bare model, and a head's body switched to `BinaryBertBody`) calls embeddings,
    runtime and pooler itself: the same outputs, bit for bit, as through `BertModel.forward`, with padding, without
    it, with an all-padding row, with token types and as a tuple; and it is the path taken (the encoder module's
    forward is not called)."""
    model = _model(COMBOS["W1A1-elastic (BiT)"], cls=cls)
    body = model if cls is BinaryBertModel else model.bert
    assert type(body) is BinaryBertModel or type(body) is BinaryBertBody
    ids, mask = _inputs(lengths=lengths)
    if lengths == (13, 9, 1, 5):  # padding on the left and inside a row too: the real tokens keep their positions
        mask[1] = mask[1].flip(0)
        mask[0, 3:6] = 0
    types = (torch.arange(ids.shape[1]) % 2).expand_as(ids)
    for inputs in ({"input_ids": ids, "attention_mask": mask}, {"input_ids": ids},
                   {"input_ids": ids, "attention_mask": mask.bool(), "token_type_ids": types}):
        calls = []
        encoder_forward = BinaryBertEncoder.forward
        monkeypatch.setattr(BinaryBertEncoder, "forward", lambda *a, **k: calls.append(1) or encoder_forward(*a, **k))
        with torch.inference_mode():
            direct = model(**inputs)
        monkeypatch.undo()
        assert not calls, "the direct forward ran, not the encoder module"
        through = _through_bert_model_forward(model, **inputs)
        assert direct.keys() == through.keys()
        for key in direct.keys():
            assert torch.equal(direct[key], through[key]), key
    with torch.inference_mode():
        as_tuple = model(input_ids=ids, attention_mask=mask, return_dict=False)
        as_dict = model(input_ids=ids, attention_mask=mask)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict)
    assert all(torch.equal(a, b) for a, b in zip(as_tuple, as_dict.to_tuple()))


def test_run_rows_refuses_what_the_native_call_would_misread():
    """`EncoderRuntime._run_rows` hands raw addresses to the native call: rows of another width, dtype or layout, or
    lengths that do not add up to the rows, raise ValueError naming them before anything is read."""
    model = _model(COMBOS["W1A1-elastic (BiT)"])
    runtime = model.encoder.runtime()
    hidden = model.config.hidden_size
    good, lengths = torch.randn(6, hidden), torch.tensor([4, 2])
    bad_rows = [torch.randn(6, hidden + 1), torch.randn(6, hidden, dtype=torch.float64),
                torch.randn(hidden, 6).t(), torch.randn(1, 6, hidden)]
    for rows in bad_rows:
        with pytest.raises(ValueError, match="rows must be"):
            runtime._run_rows(rows, lengths)
    for bad in (torch.tensor([4, 3]), torch.tensor([7, -1]), torch.tensor([4.0, 2.0]), torch.tensor([[4, 2]])):
        with pytest.raises(ValueError, match="lengths must be"):
            runtime._run_rows(good.clone(), bad)
    rows = good.clone()
    assert runtime._run_rows(rows, lengths) is rows and not torch.equal(rows, good)  # in place


def test_direct_native_forward_steps_aside():
    """Where the direct forward does not apply, `BertModel.forward` runs: hidden states and attentions asked for
    (a head's switched body still captures them), a hook on the embeddings, autograd on, position ids; the encoder
    module then decides as before."""
    model = _model(COMBOS["W1A1-elastic (BiT)"], cls=BinaryBertForSequenceClassification)
    ids, mask = _inputs()
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    seen = []
    handle = model.bert.embeddings.register_forward_hook(lambda *a: seen.append(1))
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    handle.remove()
    assert seen == [1]
    calls = []
    handle = model.bert.encoder.register_forward_pre_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(ids.shape[1])[None])
    model(input_ids=ids, attention_mask=mask)  # autograd on (no parameter needs it: the encoder runs natively)
    handle.remove()
    assert calls == [1, 1]


@pytest.mark.parametrize("combo", list(COMBOS))
def test_runtime_runs_pruned_query_key_head_sizes(combo):
    """Layers whose query/key heads are narrower than their value heads (pruned dimensions, layer_sizes.py): D_qk =
    3, 8 and 5 (with 3 heads) over three layers; the plan carries each layer's D_qk."""
    model = _model(COMBOS[combo], layers=3, layer_query_key_head_sizes=[3, 8, 5], layer_num_attention_heads=[4, 4, 3])
    assert model.encoder.layer[0].attention.self.query.out_features == 12
    ids, mask = _inputs()
    native, eager, _ = _native_then_eager(model, ids, mask)
    valid = mask.bool()
    torch.testing.assert_close(native[valid], eager[valid], rtol=0, atol=2e-5)
    unpruned = _model(COMBOS[combo], layers=3, layer_num_attention_heads=[4, 4, 3])
    assert not torch.allclose(_hidden(unpruned, ids, mask, "auto").last_hidden_state[valid], native[valid])


@pytest.mark.parametrize("isa", [i for i in kernels.supported_isas() if i != kernels.get_isa()])
@pytest.mark.parametrize("combo", ["W1A1-elastic (BiT)", "W1A1-elastic-bi_attention-E1", "W1A4-sign"])
def test_pruned_query_key_head_sizes_on_every_instruction_set(isa, combo):
    """The attention with D_qk < D on the other instruction-set paths of this CPU (attention_head_avx2 / _avx512 /
    _portable): equal to the eager path as on the default one."""
    model = _model(COMBOS[combo], layers=2, layer_query_key_head_sizes=[3, 6])
    ids, mask = _inputs()
    previous = kernels.set_isa(isa)
    try:
        model.encoder.runtime().invalidate()
        native = _hidden(model, ids, mask, "auto").last_hidden_state
    finally:
        kernels.set_isa(previous)
    eager = _hidden(model, ids, mask, "eager").last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(native[valid], eager[valid], rtol=0, atol=2e-5)


# Q, K and V share one input quantizer here (dynamic int8, no shift): the runtime quantizes x once and, on AVX2, builds
# each row's lookup tables once for all three (run_w1a8_shared); 6 rows take its per-operand fall-back (too few rows
# to share between 2 threads), 28 rows the shared path.
@pytest.mark.parametrize("lengths,threads", [((13, 9, 1, 5), 1), ((13, 9, 1, 5), 2), ((4, 2), 2)])
def test_w1a32_int8_runs_natively_with_float_attention(lengths, threads):
    model = _model(dict(activation_bits=32)).set_inference_kernel("auto", float_activations="int8")
    ids, mask = _inputs(lengths=lengths)
    calls, handles = _linear_calls(model)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            native = model(input_ids=ids, attention_mask=mask).last_hidden_state
    finally:
        torch.set_num_threads(previous)
    assert not calls
    model.set_inference_kernel("eager")
    with torch.inference_mode():
        eager = model(input_ids=ids, attention_mask=mask).last_hidden_state
    for h in handles:
        h.remove()
    torch.testing.assert_close(native[mask.bool()], eager[mask.bool()], rtol=0, atol=1e-4)
    model.set_inference_kernel("auto", float_activations="float32")  # the exact reference: no runtime
    assert model.encoder.runtime().plan() is None
    assert "float_activations" in model.encoder.runtime().unsupported_reason


def test_padding_is_removed_and_each_sequence_equals_itself_alone():
    model = _model(COMBOS["W1A1-elastic-bi_attention-E1"])
    ids, mask = _inputs(lengths=(13, 4, 7))
    with torch.inference_mode():
        batch = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for b in range(3):
            n = int(mask[b].sum())
            alone = model(input_ids=ids[b:b + 1, :n]).last_hidden_state
            assert torch.equal(batch[b, :n], alone[0])  # the same rows, bit for bit


@pytest.mark.parametrize("head", list(HEADS))
def test_heads_run_on_the_runtime(head):
    cls, kwargs = getattr(hb, head), HEADS[head][2]
    extra = {"tie_word_embeddings": False} if cls is BinaryBertForMaskedLM else {}
    model = _model(COMBOS["W1A1-elastic (BiT)"], cls=cls, **extra, **kwargs)
    ids, mask = _inputs()
    inputs = head_inputs(head, ids, mask)
    calls, handles = _linear_calls(model)
    native = head_output(_hidden(model, inputs["input_ids"], inputs["attention_mask"], "auto"))
    assert not calls, "the native runtime ran no PyTorch Linear"
    eager = head_output(_hidden(model, inputs["input_ids"], inputs["attention_mask"], "eager"))
    assert calls
    for h in handles:
        h.remove()
    if native.dim() > 2 and head != "BinaryBertForMultipleChoice":  # per-token scores: padding is not compared
        native, eager = native[mask.bool()], eager[mask.bool()]
    torch.testing.assert_close(native, eager, rtol=0, atol=1e-4)


def test_falls_back_to_the_eager_path(caplog):
    model = _model(COMBOS["W1A4-sign"])
    ids, mask = _inputs()
    calls, handles = _linear_calls(model)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(calls) == 12 and len(out.hidden_states) == 3 and len(out.attentions) == 2
    calls.clear()
    with torch.no_grad():
        model.train()(input_ids=ids, attention_mask=mask)  # training mode
    assert len(calls) == 12
    calls.clear()
    logging.Logger.warning_once.cache_clear()  # transformers' once-per-message warning
    with caplog.at_level(logging.WARNING, logger="hf_binary_bert.runtime"):
        model.eval()(input_ids=ids, attention_mask=mask)  # autograd on
    assert len(calls) == 12
    assert "torch.inference_mode()" in caplog.text  # the user is told why the forward is slow
    calls.clear()
    _hidden(model, ids, mask, "reference")
    assert len(calls) == 12
    for h in handles:
        h.remove()
    assert isinstance(model.encoder, BinaryBertEncoder)


def test_uncalibrated_quantizers_do_not_run_natively():
    torch.manual_seed(0)
    model = BinaryBertModel(tiny_config(activation_bits=1, activation_quantizer="elastic")).eval().freeze()
    assert model.encoder.runtime().plan() is None
    assert "not calibrated" in model.encoder.runtime().unsupported_reason


def _plan_follows(model, change) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build the plan with a forward, check it is in use, `change()` the model (no `set_inference_kernel`), and run
    the next forward on the live plan, which must see the change (rebuild). Returns the hidden states before, after,
    and of a plan built afresh for the changed model."""
    ids, mask = _inputs()
    before, _ = _live_forward(model, ids, mask)  # builds the plan
    assert model.encoder.runtime()._still_valid()  # and it is in use from here
    change()
    after, valid = _live_forward(model, ids, mask)
    assert not valid
    model.encoder.runtime().invalidate()
    return before, after, _hidden(model, ids, mask, "auto").last_hidden_state


def test_plan_follows_changed_tensors(tmp_path):
    model = _model(COMBOS["W1A8-elastic"])
    other = _model(COMBOS["W1A8-elastic"], seed=1)
    before, after, _ = _plan_follows(model, lambda: model.load_state_dict(other.state_dict()))
    ids, mask = _inputs()
    expected = _hidden(other, ids, mask, "auto").last_hidden_state
    assert not torch.equal(before, after)
    assert torch.equal(after, expected)


def test_plan_follows_replaced_modules_and_parameters():
    """The per-forward plan check (`_bitgemm.unchanged`) also sees an entry of a module's `_modules` / `_parameters`
    replaced by another object, not only tensors changed in place: a whole layer swapped for another model's, and a
    LayerNorm weight Parameter replaced. The runtime then equals a fresh plan of the changed model."""
    model = _model(COMBOS["W1A8-elastic"])
    other = _model(COMBOS["W1A8-elastic"], seed=1)

    def change():
        model.encoder.layer[0] = other.encoder.layer[0]
        norm = model.encoder.layer[1].output.LayerNorm
        norm.weight = torch.nn.Parameter(norm.weight.detach() * 1.5)

    before, after, fresh = _plan_follows(model, change)
    assert not torch.equal(before, after)
    assert torch.equal(after, fresh)


def test_plan_follows_tensors_given_new_data():
    """`param.data = other` swaps a tensor's data but keeps its object and its version counter: the plan check
    compares data pointers too, so the runtime then equals a fresh plan of the changed model (before, it kept
    running on the old values), for a LayerNorm weight the plan reads by pointer and a packed weight it derives
    from."""
    model = _model(COMBOS["W1A1-elastic (BiT)"])
    norm = model.encoder.layer[1].output.LayerNorm
    dense = model.encoder.layer[0].intermediate.dense
    version = norm.weight._version

    def change():
        norm.weight.data = norm.weight.detach() * 1.5
        dense.weight_packed.data = dense.weight_packed.flip(0)

    before, after, fresh = _plan_follows(model, change)
    assert norm.weight._version == version  # what the version check alone missed
    assert not torch.equal(before, after)
    assert torch.equal(after, fresh)


def test_plan_check_reads_what_the_attributes_say():
    """`tensor_states` reads `_version` and `data_ptr()` through the C functions behind them for tensor types with
    the generic attribute lookup, and through the attributes for a type that overrides one: for each kind it
    records what Python reads, before and after an in-place edit."""
    import struct

    class OwnPointer(torch.Tensor):  # a subclass that answers data_ptr() itself
        def data_ptr(self):
            return 12345

    tensors = [torch.nn.Parameter(torch.ones(4)), torch.zeros(3), torch.zeros(2, 2)[:, 1],
               torch.zeros(5).as_subclass(OwnPointer)]

    def states():
        raw = kernels.ops._bitgemm.tensor_states(tensors)
        words = struct.unpack(f"{len(raw) // 8}q", raw)
        return [(words[4 * i], words[4 * i + 1] % 2**64) for i in range(len(tensors))]

    expected = [(t._version, t.data_ptr()) for t in tensors]
    assert expected[3][1] == 12345 and states() == expected
    with torch.no_grad():
        tensors[0].mul_(2)
    tensors[1].add_(1)
    assert [v for v, _ in states()] == [1, 1, 0, 0] == [t._version for t in tensors]


def test_plan_check_takes_a_tensor_without_storage():
    """A tensor whose `data_ptr()` raises (a sparse buffer, not read by the plan) does not break the plan check: its
    data pointer counts as 0, its version is still compared."""
    model = _model(COMBOS["W1A1-sign"])
    ids, mask = _inputs()
    before = _hidden(model, ids, mask, "auto").last_hidden_state
    model.encoder.layer[0].register_buffer("extra", torch.zeros(3, 3).to_sparse())
    runtime = model.encoder.runtime()
    after, _ = _live_forward(model, ids, mask)  # the plan rebuilt with the new buffer in its snapshot
    assert torch.equal(after, before)
    assert runtime.plan() is not None and runtime._still_valid()
    model.encoder.layer[0].extra.add_(torch.ones(3, 3).to_sparse())  # in place: the version still counts
    assert not runtime._still_valid()


def test_loaded_checkpoint_runs_natively_and_under_float64_default(tmp_path):
    model = _model(COMBOS["W1A1-sign-bi_attention"], cls=BinaryBertForSequenceClassification)
    model.save_pretrained(tmp_path)
    loaded = BinaryBertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask = _inputs()
    assert loaded.bert.encoder.runtime().plan() is not None
    expected = _hidden(model, ids, mask, "auto").logits
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the runtime's buffers are float32 whatever the default
    try:
        got = _hidden(loaded, ids, mask, "auto").logits
    finally:
        torch.set_default_dtype(previous)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("combo", ["W1A1-elastic-bi_attention-E1", "W1A1-elastic (BiT)", "W1A8-elastic"])
@pytest.mark.parametrize("isa", [i for i in kernels.supported_isas() if i != kernels.get_isa()])
def test_other_instruction_sets_agree(isa, combo):
    """Every vector path gives the same bits as the default one (the same float operations in the same order; the
    integer parts exact); the portable path computes exp / erf / LayerNorm's sums in other orders: within 2e-5."""
    model = _model(COMBOS[combo])
    ids, mask = _inputs()
    expected = _hidden(model, ids, mask, "auto").last_hidden_state
    previous = kernels.set_isa(isa)
    try:
        got = _hidden(model, ids, mask, "auto").last_hidden_state
    finally:
        kernels.set_isa(previous)
    if "portable" in (isa, kernels.get_isa()):
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
    else:
        assert torch.equal(got, expected)


def test_bad_work_space_and_offsets_raise():
    from hf_binary_bert.kernels import ops

    model = _model(COMBOS["W1A4-sign"])
    runtime = model.encoder.runtime()
    plan = runtime.plan()
    x = torch.randn(5, 32)
    cu = torch.tensor([0, 5], dtype=torch.int64)
    with pytest.raises(ValueError, match="work space"):
        ops._bitgemm.encoder_forward(plan.data_ptr(), 2, x.data_ptr(), 5, cu.data_ptr(), 1, x.data_ptr(), 1, 1)
    bad = torch.tensor([0, 4], dtype=torch.int64)
    with pytest.raises(ValueError, match="cu_seqlens"):
        ops._bitgemm.encoder_forward(plan.data_ptr(), 2, x.data_ptr(), 5, bad.data_ptr(), 1, x.data_ptr(), 1, 1)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.7, 5.0, 1e-6, -1e-6, -0.01, -0.05, -0.1, -0.17, -0.5])
def test_gelu_folded_into_sign_thresholds_gives_the_eager_bits(beta):
    """GELU(x) − β ≥ 0 ⇔ x ≤ lo or x ≥ hi, on random x and on every float32 within 3000 ulps of each threshold —
    exactly where the eager F.gelu is monotonic around the threshold. PyTorch runs F.gelu through oneDNN, whose
    AVX-512 kernel is not monotonic at the ulp level below GELU's minimum (its AVX2 kernel is, on these samples):
    there the eager bit itself flips back and forth over a band of inputs, and the fold may differ from it only
    inside that band, only where GELU(x) is within float32 rounding of β."""
    from hf_binary_bert.runtime import _float32_keys, _float32_of_keys, gelu_sign_thresholds

    shift = torch.tensor([beta, 0.02], dtype=torch.float32)
    lo, hi = gelu_sign_thresholds(shift, 2)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(100_000, generator=g) * 3, torch.tensor([0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38])]
    bands = []
    for t in (lo[0], hi[0]):
        if torch.isfinite(t):
            xs.append(_float32_of_keys(_float32_keys(t.reshape(1)) + torch.arange(-3000, 3001)))
            bands.append(_float32_of_keys(_float32_keys(t.reshape(1)) + torch.arange(-2**18, 2**18 + 1)))
    x = torch.cat(xs)
    gelu = torch.nn.functional.gelu(x)
    eager = (gelu - shift[0]) >= 0
    folded = (x <= lo[0]) | (x >= hi[0])
    wiggle = torch.zeros_like(eager)
    for band in bands:  # the span between the first and the last change of the eager bit over ±2¹⁸ ulps
        changes = (((torch.nn.functional.gelu(band) - shift[0]) >= 0).diff() != 0).nonzero().flatten()
        if len(changes) > 1:
            wiggle |= (x >= band[changes[0]]) & (x <= band[changes[-1] + 1])
    assert torch.equal(folded[~wiggle], eager[~wiggle])
    off = folded != eager
    assert bool(((gelu[off] - shift[0]).abs() <= x[off].abs() * 2.0**-21).all())
    assert hi[0] >= -0.7518 and (torch.isnan(lo[0]) or lo[0] <= -0.7517 or lo[0] == float("inf"))


def test_gelu_is_folded_only_for_one_bit_sign_inputs_away_from_its_minimum():
    from hf_binary_bert import runtime

    act = 4  # the layer's activation word (encoder.h F_ACT)
    folded = _model(COMBOS["W1A1-elastic (BiT)"], layers=2)
    plan = folded.encoder.runtime().plan().view(-1, runtime.LAYER_WORDS)
    assert plan[:, act].tolist() == [runtime._ACT_GELU_FOLDED] * 2
    for combo in ("W1A8-elastic", "W1A1-elastic-relu-E1"):  # multi-bit input, or ReLU: nothing to fold
        plan = _model(COMBOS[combo], layers=2).encoder.runtime().plan().view(-1, runtime.LAYER_WORDS)
        assert runtime._ACT_GELU_FOLDED not in plan[:, act].tolist()
    with torch.no_grad():  # a β on GELU's flat minimum, where float32 GELU is not monotonic: layer 1 keeps its GELU
        folded.encoder.layer[1].output.dense.input_quantizer.shift[..., 3] = -0.16
    plan = folded.encoder.runtime().plan().view(-1, runtime.LAYER_WORDS)
    assert plan[:, act].tolist() == [runtime._ACT_GELU_FOLDED, runtime._ACTIVATIONS["gelu"]]
    ids, mask = _inputs()
    native = _hidden(folded, ids, mask, "auto").last_hidden_state
    eager = _hidden(folded, ids, mask, "eager").last_hidden_state
    torch.testing.assert_close(native[mask.bool()], eager[mask.bool()], rtol=0, atol=2e-5)


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="the wake-ahead only acts with a team of threads")
@pytest.mark.parametrize("lengths", [(20, 13), (64, 64)], ids=["40 rows", "128 rows"])
def test_a_forward_after_an_idle_wait_equals_a_back_to_back_one(lengths):
    """The wake-ahead (kernels/csrc/bitgemm.cpp `WakeAhead`, docs/inference.md): a forward that starts more than 5 ms
    after the last one is cold — it wakes a helper thread, runs its embeddings (native sum and LayerNorm) on one
    thread and its native regions on one thread until the helper runs; its outputs are a back-to-back forward's, bit
    for bit, for every head of the encoder (the sums do not depend on the thread count)."""
    import time

    from hf_binary_bert.kernels import ops

    model = _model(COMBOS["W1A1-elastic (BiT)"], layers=3)
    ids, mask = _inputs(lengths=lengths)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
        warm = model(input_ids=ids, attention_mask=mask)
        for _ in range(3):
            time.sleep(0.05)
            before = ops._bitgemm.wake_requests()
            after_idle = model(input_ids=ids, attention_mask=mask)
            assert before < 0 or ops._bitgemm.wake_requests() > before  # it was cold (where compiled in)
            assert torch.equal(after_idle.last_hidden_state, warm.last_hidden_state)
            assert torch.equal(after_idle.pooler_output, warm.pooler_output)
    assert torch.get_num_threads() >= 2  # the one-thread LayerNorm gave the thread count back


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="the wake-ahead only acts with a team of threads")
def test_the_wake_ahead_asks_once_per_cold_forward():
    """`WakeAhead`: a forward after an idle wait asks the helper once — at the embeddings, the encoder finding the
    request open (a first version asked again there whenever the helper had run before the embeddings' LayerNorm,
    and ran the encoder's first regions on one thread while waiting for it a second time) — also when
    `BertModel.forward` runs and the native encoder follows (a forward hook on the model); the embeddings leave the
    forward cold (`team_awake()` false: they never take the team then) until the encoder takes the team, or its eager
    forward releases it (`output_hidden_states`); a forward right after another asks nothing (the team is warm), nor
    does a forward on one thread or one of more than 128 token rows. The counts assume the encoder starts within
    20 ms of the embeddings and a back-to-back forward within 5 ms of the last (ms here): on a loaded machine a
    late start can add a request, never take one away, so each timed count gets three tries (`settle`), while the
    faults it guards against (a second request in every cold forward, one in every warm one) fail all three; a
    fault that adds a request only some of the time can pass (the price of a test that a loaded machine does not
    fail)."""
    import time

    from hf_binary_bert.kernels import ops

    if ops._bitgemm.wake_requests() < 0:
        pytest.skip("the wake-ahead is compiled out (Linux with OpenMP only)")
    model = _model(COMBOS["W1A1-elastic (BiT)"], layers=3)
    ids, mask = _inputs(lengths=(64, 64))

    def requests(idle=0.0, inputs=(ids, mask), **kwargs):
        if idle:
            time.sleep(idle)
        before = ops._bitgemm.wake_requests()
        model(input_ids=inputs[0], attention_mask=inputs[1], **kwargs)
        return ops._bitgemm.wake_requests() - before

    def settle(expected, **kwargs):
        counts = []
        for _ in range(3):
            counts.append(requests(**kwargs))
            if counts[-1] == expected:
                return
        raise AssertionError(f"wake-ahead requests {counts}, expected {expected} ({kwargs})")

    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
        for _ in range(3):
            settle(1, idle=0.05)
            settle(0)
        handle = model.register_forward_hook(lambda *args: None)  # BertModel.forward, the native encoder
        try:
            settle(1, idle=0.05)
        finally:
            handle.remove()
        for _ in range(3):  # the encoder ends the cold forward once the helper runs: a loaded CPU can delay that
            time.sleep(0.05)  # past a 1 ms forward, so the helper gets 5 ms, and the whole check three tries
            model.embeddings(input_ids=ids)
            assert not ops._bitgemm.team_awake()
            time.sleep(0.005)
            model(input_ids=ids, attention_mask=mask)
            if ops._bitgemm.team_awake():
                break
        assert ops._bitgemm.team_awake()
        # the eager encoder follows the embeddings: it ends the cold forward
        settle(1, idle=0.05, output_hidden_states=True)
        assert ops._bitgemm.team_awake()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a forward on one thread asks nothing: no region would stop the helper spinning
        try:
            assert requests(idle=0.05) == 0
            assert ops._bitgemm.team_awake()
        finally:
            torch.set_num_threads(threads)
        assert requests(idle=0.05, inputs=_inputs(lengths=(64, 64, 1))) == 0  # 129 rows


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs an OpenMP team of two or more")
def test_omp_thread_count_sets_the_calling_threads_count_only():
    """`_bitgemm.omp_thread_count`, which the wake-ahead's one-thread LayerNorm uses instead of torch.set_num_threads:
    the calling thread's PyTorch count changes and comes back; a thread that starts PyTorch work meanwhile keeps the
    process default; a count under 1 is a ValueError."""
    import threading

    from hf_binary_bert.kernels import ops

    previous = ops._bitgemm.omp_thread_count(1)
    try:
        assert torch.get_num_threads() == 1
        seen = []
        worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        worker.start()
        worker.join()
        assert seen == [previous]
    finally:
        ops._bitgemm.omp_thread_count(previous)
    assert torch.get_num_threads() == previous
    with pytest.raises(ValueError, match="at least 1"):
        ops._bitgemm.omp_thread_count(0)


@pytest.mark.parametrize("isa", kernels.supported_isas())
@pytest.mark.parametrize("tables", ["float32", "1-bit α·(±1) + γ", "1-bit α·(±1), hidden 44"])
def test_embeddings_sum_is_native_and_equals_the_eager_sum(tables, isa):
    """`BinaryBertEmbeddings`: the word + token-type + position sum in one native call, bit for bit the eager one
    (float32 tables, or 1-bit tables α·(±1) + γ or α·(±1)), with default and given token types and positions, on
    every instruction set (the 1-bit rows are expanded 16 / 8 features at a time on AVX-512 / AVX2; hidden 44 leaves
    a tail of 12 features and half a byte of bits)."""
    extra = {}
    if tables != "float32":
        extra = {"embedding_bits": 1, "binarized_embeddings": ["word", "position", "token_type"],
                 "tie_word_embeddings": False}
    if "hidden 44" in tables:
        extra.update(hidden_size=44, num_attention_heads=2, embedding_weight_scale="mean_abs")
    model = _model(COMBOS["W1A1-elastic (BiT)"], **extra)
    embeddings = model.embeddings
    assert type(embeddings).__name__ == "BinaryBertEmbeddings"
    if tables != "float32":  # the offset γ is there or not, as the test says
        assert embeddings.word_embeddings.has_offset == ("γ" in tables)
    ids, _ = _inputs()
    g = torch.Generator().manual_seed(3)
    types = torch.randint(0, model.config.type_vocab_size, ids.shape, generator=g)
    positions = torch.randint(0, model.config.max_position_embeddings, ids.shape, generator=g)
    calls = []
    handle = embeddings.word_embeddings.register_forward_hook(lambda *a: calls.append(1))
    previous = kernels.set_isa(isa)
    try:
        with torch.inference_mode():
            for kwargs in ({}, {"token_type_ids": types}, {"token_type_ids": types, "position_ids": positions}):
                native = embeddings(input_ids=ids, **kwargs)
                assert not calls  # the table module itself did not run
                model.set_inference_kernel("reference")
                eager = embeddings(input_ids=ids, **kwargs)
                model.set_inference_kernel("auto")
                assert calls and torch.equal(native, eager)
                calls.clear()
            with pytest.raises(IndexError, match="outside its embedding table"):
                embeddings(input_ids=torch.tensor([[1, model.config.vocab_size]]))
            with pytest.raises(IndexError, match="outside its embedding table"):
                embeddings(input_ids=ids, position_ids=positions + model.config.max_position_embeddings)
            embeddings(inputs_embeds=torch.zeros(1, 3, model.config.hidden_size))  # the eager path takes inputs_embeds
    finally:
        kernels.set_isa(previous)
        handle.remove()


@pytest.mark.parametrize("hidden", [32, 44])
def test_pooler_is_native_equals_pytorch_and_is_the_same_on_every_instruction_set(hidden):
    """`BinaryBertPooler`: tanh(dense(first token)) with the dense layer in one native call, within float rounding
    of PyTorch's (the sums in another order), bit for bit the same on every instruction set (hidden 44: a tail of 12
    features after the 16-lane sums); it continues only the native encoder's output: a model in training form, hidden
    states from elsewhere, training, `set_inference_kernel("reference")` and more than NATIVE_ROWS sequences run
    `BertPooler.forward` itself."""
    from transformers.models.bert.modeling_bert import BertPooler

    from hf_binary_bert.runtime import BinaryBertPooler

    model = _model(COMBOS["W1A1-elastic (BiT)"], hidden_size=hidden, num_attention_heads=2)
    pooler = model.pooler
    assert type(pooler) is BinaryBertPooler
    g = torch.Generator().manual_seed(5)
    def native_output(t):  # as the encoder runtime marks its output
        setattr(t, NATIVE_OUTPUT, True)
        return t

    h = native_output(torch.randn(3, 7, hidden, generator=g) * 3)
    calls = []
    handle = pooler.dense.register_forward_hook(lambda *a: calls.append(1))  # runs only on PyTorch's path
    try:
        with torch.inference_mode():
            expected = BertPooler.forward(pooler, h)
            calls.clear()
            native = pooler(h)
            assert not calls
            torch.testing.assert_close(native, expected, rtol=0, atol=2e-6)
            assert not torch.equal(native, pooler(native_output(h.flip(0))))  # it reads each sequence's own first token
            for isa in kernels.supported_isas():
                previous = kernels.set_isa(isa)
                try:
                    assert torch.equal(pooler(h), native), isa
                finally:
                    kernels.set_isa(previous)
            assert not calls
            many = native_output(torch.randn(BinaryBertPooler.NATIVE_ROWS + 1, 2, hidden, generator=g))
            torch.testing.assert_close(pooler(many), BertPooler.forward(pooler, many), rtol=0, atol=0)
            assert calls
            calls.clear()
            model.set_inference_kernel("reference")
            assert torch.equal(pooler(h), expected) and calls
            model.set_inference_kernel("auto")
        calls.clear()
        model.train()
        assert torch.equal(pooler(h), BertPooler.forward(pooler, h)) and calls
        calls.clear()
        with torch.inference_mode():  # hidden states the encoder runtime did not make: PyTorch's pooler
            assert torch.equal(pooler(h.clone()), expected) and calls
    finally:
        handle.remove()
    # a whole forward: the pooler continues the native encoder's output, an eager encoder's output stays eager
    ids, mask = _inputs()
    auto = _hidden(model.eval(), ids, mask, "auto")
    assert getattr(auto.last_hidden_state, NATIVE_OUTPUT)
    with torch.inference_mode():
        torch.testing.assert_close(auto.pooler_output, BertPooler.forward(pooler, auto.last_hidden_state), rtol=0,
                                   atol=2e-6)
    model.unfreeze().eval()  # training form: its eval forward is the reference path's, bit for bit
    with torch.inference_mode():
        eager = model(input_ids=ids, attention_mask=mask)
    assert not getattr(eager.last_hidden_state, NATIVE_OUTPUT, False)
    with torch.inference_mode():
        assert torch.equal(eager.pooler_output, BertPooler.forward(pooler, eager.last_hidden_state))


# The size options of issue 12's pruned 1-1-1 file: every table 1-bit with a per-row α only (BiT), elastic shifts
# rounded to half precision in every forward. The last layer's FFN input Linear gets shifts that straddle its input, so
# the runtime and the eager path differ unless both subtract the rounded β.
@pytest.mark.parametrize("hidden_act", ["gelu", "relu"])
@pytest.mark.parametrize("shift_dtype", ["float16", "bfloat16"])
def test_runtime_equals_eager_with_alpha_only_tables_and_half_precision_shifts(hidden_act, shift_dtype):
    compact = dict(activation_bits=1, activation_quantizer="elastic", hidden_act=hidden_act, embedding_bits=1,
                   binarized_embeddings=["word", "position", "token_type"], embedding_weight_scale="learned",
                   activation_shift_dtype=shift_dtype)
    model = _model(compact, layers=3)
    with torch.no_grad():  # every shift off the half-precision grid (they start at 0)
        for quantizer in model.modules():
            if hasattr(quantizer, "shift"):
                quantizer.shift.copy_(0.3 * torch.randn(quantizer.shift.shape, generator=torch.Generator().manual_seed(5)))
    assert not any(model.embeddings.get_submodule(f"{t}_embeddings").has_offset
                   for t in ("word", "position", "token_type"))
    ids, mask = _inputs()
    model.set_inference_kernel("eager")
    linear = "encoder.layer.2.intermediate.dense"  # signed input (the FFN output Linear's is unsigned after ReLU)
    assert straddle_shift(model, linear, {"input_ids": ids, "attention_mask": mask},
                          getattr(torch, shift_dtype)) >= 30  # of 32
    native, eager, _ = _native_then_eager(model, ids, mask)
    valid = mask.bool()
    torch.testing.assert_close(native[valid], eager[valid], rtol=0, atol=2e-5)
    live = _after_live_change(model, ids, mask, [model.get_submodule(f"{linear}.input_quantizer")], "shift_dtype",
                              torch.float32)
    unrounded = _hidden(model, ids, mask, "eager").last_hidden_state
    assert (unrounded[valid] - eager[valid]).abs().max() > 1e-2  # the rounding matters for these inputs
    # the runtime saw the change: it planned again (β unrounded sits an ulp from the eager path's x, so the runtime,
    # whose LayerNorm rounds otherwise, is compared with a fresh plan rather than with eager)
    assert torch.equal(live, _hidden(model, ids, mask, "auto").last_hidden_state)
    assert not torch.equal(live[valid], native[valid])


def _after_live_change(model, ids, mask, quantizers, name, value):
    """Plan the runtime (a native forward), set `name` = `value` on each quantizer of the live model (no
    `set_inference_kernel`), check that the plan check sees it, and return the next native forward's hidden states."""
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
        runtime = model.encoder.runtime()
        assert runtime._still_valid()
        for quantizer in quantizers:
            setattr(quantizer, name, value)
        assert not runtime._still_valid()
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


def _record_levels(quantizers, seen):
    """Wrap each quantizer's `levels` to append (its input, its levels) to `seen` (the eager attention calls it)."""
    for quantizer in quantizers:
        levels = quantizer.levels
        quantizer.levels = lambda x, levels=levels: (seen.append((x, levels(x)[0])), levels(x))[1]


def _attention_that_matters(model, ids, mask):
    """Make a calibrated random BiT model's attention decide its output, for tests that compare attention paths: Q̂, K̂,
    V̂ = ±1 (Q/K/V steps 1: a Hamming step of 2 is then a factor e^(2/√D) in probability), the attention output
    Linear's input ±1 (step 1; calibration set these steps to ~1e-6, so the attention output barely moved the hidden
    states), and each layer's probability threshold at 1.09 × the median probability of real (query, key) pairs (an
    attained value times 1.09: a row's keys on both sides, the threshold between levels). Returns the share of
    probability bits set per layer (eager path; None for Bi-Attention, which has no probability quantizer)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("query_quantizer", "key_quantizer", "value_quantizer",
                              "attention.output.dense.input_quantizer")):
                module.step.fill_(1.0)
    pairs = mask[:, None, :, None].bool() & mask[:, None, None, :].bool()  # [B, 1, T, T] query and key both real
    quantizers = [m for n, m in model.named_modules() if n.endswith("probs_quantizer")]
    seen = []
    _record_levels(quantizers, seen)
    _hidden(model, ids, mask, "eager")
    with torch.no_grad():
        for quantizer, (probs, _) in zip(quantizers, seen):
            quantizer.step.fill_(2 * 1.09 * probs[pairs.expand_as(probs)].median())
    seen.clear()
    _hidden(model, ids, mask, "eager")
    for quantizer in quantizers:
        del quantizer.levels  # the class's method again
    return torch.stack([(q != 0)[pairs.expand_as(q)].float().mean() for _, q in seen]) if seen else None


def _native_equals_eager_and_depends_on(model, ids, mask, isa, perturb):
    """On instruction set `isa`: the runtime's hidden states equal the eager path's (2e-5), and change by > 0.1 after
    `perturb(model)` (so the compared part decides the output)."""
    eager = _hidden(model, ids, mask, "eager").last_hidden_state
    valid = mask.bool()
    previous = kernels.set_isa(isa)
    try:
        native = _hidden(model, ids, mask, "auto").last_hidden_state
        torch.testing.assert_close(native[valid], eager[valid], rtol=0, atol=2e-5)
        with torch.no_grad():
            perturb(model)
        assert (_hidden(model, ids, mask, "auto").last_hidden_state - native)[valid].abs().max() > 0.1
    finally:
        kernels.set_isa(previous)


def _fill(model, suffix, name, value):
    """Fill the tensor `name` of every module whose name ends with `suffix`."""
    for module_name, module in model.named_modules():
        if module_name.endswith(suffix):
            getattr(module, name).fill_(value)


@pytest.mark.parametrize("isa", kernels.supported_isas())
@pytest.mark.parametrize("geometry", ["tiny", "64-wide heads, long rows", "two-word heads, long rows"])
def test_bit_attention_with_probabilities_on_both_sides_of_the_threshold_equals_eager(geometry, isa):
    """BiT attention (1-bit Q, K, V and probabilities) where the probability bits decide the output
    (`_attention_that_matters`). The runtime equals the eager path on every instruction set; with head dimension 64
    (one word: the AVX2 and VPOPCNTDQ paths' per-value softmax, `bit_softmax_rows_avx2` / `_avx512`) and 128 (two
    words) and rows of up to 150 keys as well. (The calibrated random models of the other tests set hardly any probability bit, and their
    attention output barely moves the hidden states.)"""
    heads = {"tiny": None, "64-wide heads, long rows": 2, "two-word heads, long rows": 1}[geometry]
    extra = {} if heads is None else dict(hidden_size=128, num_attention_heads=heads, max_position_embeddings=160)
    model = _model(COMBOS["W1A1-elastic (BiT)"], **extra)
    ids, mask = _inputs(lengths=(13, 9, 1, 5) if geometry == "tiny" else (150, 70, 13, 1))
    share = _attention_that_matters(model, ids, mask)
    assert ((share > 0.2) & (share < 0.8)).all(), share  # both levels occur: the threshold is tested
    # and the probability bits matter: none set changes the output
    _native_equals_eager_and_depends_on(model, ids, mask, isa, lambda m: _fill(m, "probs_quantizer", "step", 100.0))


@pytest.mark.parametrize("shift_dtype", ["float16", "bfloat16"])
def test_runtime_rounds_query_key_value_shifts_as_eager(shift_dtype):
    """`activation_shift_dtype` on the attention operands: layer 0's Q, K and V shifts β are set where β and β rounded
    to half precision lie on either side of the first token's value in every channel, in a model whose attention
    decides its output. The runtime (its plan reads `effective_shift`, the rounded β) equals eager; eager with β
    unrounded differs, so the rounding is tested."""
    model = _model(dict(COMBOS["W1A1-elastic (BiT)"], activation_shift_dtype=shift_dtype))
    ids, mask = _inputs()
    attention = model.encoder.layer[0].attention.self
    operands = [getattr(attention, f"{n}_quantizer") for n in ("query", "key", "value")]
    seen = []
    _record_levels(operands, seen)
    _hidden(model, ids, mask, "eager")
    for quantizer in operands:
        del quantizer.levels
    dtype = getattr(torch, shift_dtype)
    for quantizer, (x, _) in zip(operands, seen):  # x [B, heads, T, D] before β: the first sequence's first token
        assert set_straddling_shift(quantizer, x[0, :, :1, :], dtype) >= 30  # of 32 channels
    share = _attention_that_matters(model, ids, mask)
    assert ((share > 0.2) & (share < 0.8)).all(), share
    eager = _hidden(model, ids, mask, "eager").last_hidden_state
    native = _hidden(model, ids, mask, "auto").last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(native[valid], eager[valid], rtol=0, atol=2e-5)
    live = _after_live_change(model, ids, mask, operands, "shift_dtype", torch.float32)
    unrounded = _hidden(model, ids, mask, "eager").last_hidden_state
    assert (unrounded[valid] - eager[valid]).abs().max() > 1e-2  # the rounding matters for these inputs
    torch.testing.assert_close(live[valid], unrounded[valid], rtol=0, atol=2e-5)  # the runtime saw the change
    assert torch.equal(live, _hidden(model, ids, mask, "auto").last_hidden_state)  # as a fresh plan


@pytest.mark.parametrize("isa", kernels.supported_isas())
@pytest.mark.parametrize("geometry", ["tiny", "64-wide heads, long rows"])
def test_bi_attention_whose_weights_decide_the_output_equals_eager(geometry, isa):
    """Bi-Attention (weights 1[Q̂·K̂ᵀ > 0]) in a model whose attention output reaches the next layer
    (`_attention_that_matters`): the runtime equals eager on every instruction set, also with 64-wide heads and rows of
    150 keys (every path compares the keys' popcounts, encoder.h `bi_attention_bits`)."""
    extra = {} if geometry == "tiny" else dict(hidden_size=128, num_attention_heads=2, max_position_embeddings=160)
    model = _model(COMBOS["W1A1-elastic-bi_attention-E1"], **extra)
    ids, mask = _inputs(lengths=(13, 9, 1, 5) if geometry == "tiny" else (150, 70, 13, 1))
    assert _attention_that_matters(model, ids, mask) is None
    # and the attention matters: every value −1 (ctx = −#selected) changes the output
    _native_equals_eager_and_depends_on(model, ids, mask, isa, lambda m: _fill(m, "value_quantizer", "shift", 1e3))


@pytest.mark.skipif("avx2" not in kernels.supported_isas(), reason="no AVX2 on this CPU")
@pytest.mark.parametrize("combo", ["W1A1-elastic (BiT)", "W1A1-sign", "W1A8-elastic"])
def test_avx2_plan_keeps_the_table_gemms_weights_and_gives_the_same_bits(combo):
    """On the AVX2 path the plan makes each W1A1 Linear's nibble-index weights once (`_nibble_layout`, plan word
    L_NIB = 16) instead of the table GEMM transposing them at every call: the outputs are the same bits as with those
    words zeroed (the per-call transposition), the words are set only on the AVX2 path, and switching the path
    rebuilds the plan."""
    from hf_binary_bert import runtime

    nib = runtime.LINEAR_OFFSET + 16 + runtime.LINEAR_WORDS * torch.arange(6)  # each Linear's L_NIB word
    model = _model(COMBOS[combo], layers=2)
    ids, mask = _inputs(lengths=(13, 9, 1, 5, 12))  # 40 rows: the table path (≥ 8 rows)
    encoder = model.encoder.runtime()
    previous = kernels.set_isa("avx2")
    try:
        plan = encoder.plan().view(-1, runtime.LAYER_WORDS)
        one_bit = plan[:, runtime.LINEAR_OFFSET + runtime.LINEAR_WORDS * torch.arange(6)] == 0  # kind 0: W1A1
        assert bool((plan[:, nib][one_bit] != 0).all()) and bool((plan[:, nib][~one_bit] == 0).all())
        assert bool(one_bit.any()) == (combo != "W1A8-elastic")
        with torch.inference_mode():
            hidden = model.embeddings(input_ids=ids)
            valid = mask.bool()
            kept = encoder.forward(hidden, valid)
            saved = plan.clone()
            plan[:, nib] = 0  # the same plan without the kept weights: the table GEMM transposes them per call
            try:
                per_call = encoder.forward(hidden, valid, checked=True)
            finally:
                plan.copy_(saved)
        assert torch.equal(kept, per_call)
        kernels.set_isa("portable")
        assert bool((encoder.plan().view(-1, runtime.LAYER_WORDS)[:, nib] == 0).all())  # rebuilt for the new path
    finally:
        kernels.set_isa(previous)


@pytest.mark.skipif(not hasattr(kernels.ops._bitgemm, "amx_layout"), reason="the amx layout is x86-64's")
def test_amx_layout_puts_each_tile_row_in_vnni_order():
    """`amx_layout` (kernels/csrc/amx_gemm.h): word q of (16-row block b, 64-input chunk c) holds B[16b + j][64c + 4q
    + t] (1 = +1) at bit 4j + t; blocks padded to a multiple of 4 (64 rows), rows past N and inputs past K are 0."""
    from hf_binary_bert.format import pack_bits

    n, k = 37, 141
    positive = torch.rand(n, k, generator=torch.Generator().manual_seed(3)) > 0.5
    packed = pack_bits(positive)
    words = kernels.ops._bitgemm.amx_layout_words(n, k)
    blocks, chunks = (n + 63) // 64 * 4, (k + 63) // 64
    assert words == blocks * chunks * 16
    out = torch.empty(words + 8, dtype=torch.int64)
    aligned = out[(-out.data_ptr() % 64) // 8:][:words]
    kernels.ops._bitgemm.amx_layout(packed.data_ptr(), n, k, aligned.data_ptr(), 1)
    padded = torch.zeros(blocks * 16, chunks * 64, dtype=torch.bool)
    padded[:n, :k] = positive
    # [block, j, chunk, q, t] → [block, chunk, q, j, t]: 64 bits per word, bit 4j + t
    bits = padded.reshape(blocks, 16, chunks, 16, 4).permute(0, 2, 3, 1, 4).reshape(-1, 64)
    expected = [sum(1 << i for i in range(64) if row[i]) for row in bits.tolist()]
    assert [w & (2**64 - 1) for w in aligned.tolist()] == expected


@pytest.mark.skipif("avx512_amx" not in kernels.supported_isas(), reason="this CPU has no AMX-INT8 (or it is not "
                    "enabled for this process)")
@pytest.mark.parametrize("combo", ["W1A8-elastic", "W1A4-sign", "W1A2-elastic-relu"])
def test_amx_gemm_equals_the_lookup_tables(combo):
    """On avx512_amx the W1 × u8 Linears run on AMX tiles (the plan makes their amx layout) and the encoder's outputs
    equal avx512_vpopcnt's (the AVX-512 lookup tables) bit for bit, over several 32-row blocks with a tail (70 real
    tokens) and on the eager path."""
    model = _model(COMBOS[combo])
    ids, mask = _inputs(lengths=(31, 17, 1, 21))
    outputs, layouts = {}, {}
    # the layouts of the 32 → 37 intermediate Linears (2 layers): 4 blocks × 1 chunk × 16 words, only in the AMX plan
    words = kernels.ops._bitgemm.amx_layout_words(37, 32)
    for isa in ("avx512_vpopcnt", "avx512_amx"):
        previous = kernels.set_isa(isa)
        try:
            outputs[isa] = _hidden(model, ids, mask, "auto").last_hidden_state
            keep = model.encoder.runtime()._keep
            layouts[isa] = sum(t.dtype == torch.int64 and t.numel() == words for t in keep)
        finally:
            kernels.set_isa(previous)
    assert layouts["avx512_amx"] >= layouts["avx512_vpopcnt"] + 2, layouts
    assert torch.equal(outputs["avx512_amx"], outputs["avx512_vpopcnt"])
    eager = _hidden(model, ids, mask, "eager").last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(outputs["avx512_amx"][valid], eager[valid], rtol=0, atol=2e-5)


def _last_hidden_per_isa(model, ids, mask, paths):
    """{isa: the model's last hidden state on that instruction-set path}; the path in use restored."""
    outputs = {}
    previous = kernels.get_isa()
    try:
        for isa in paths:
            kernels.set_isa(isa)
            with torch.inference_mode():
                outputs[isa] = model(input_ids=ids, attention_mask=mask).last_hidden_state
    finally:
        kernels.set_isa(previous)
    return outputs


@pytest.mark.parametrize("combo", ["W1A8-elastic", "W1A32-int8"])
def test_attention_float_gemm_is_the_same_on_every_vector_path(combo):
    """The attention's float GEMM (`sgemm_avx512` / `sgemm_avx2`: one FMA per input in order, from zero, per output)
    gives the same bits on every vector path, on integer levels (W1A8; on the VPOPCNTDQ paths with VNNI these run
    as integer GEMMs, test_integer_attention_gives_the_float_gemms_bits) and on float Q, K, V (W1A32 with int8
    activations: float attention, where the order of the FMAs matters): 40 tokens pad to 48 columns, the AVX-512
    kernel's 32-column block and its 16-column tail."""
    if combo == "W1A32-int8":
        model = _model(dict(activation_bits=32)).set_inference_kernel("auto", float_activations="int8")
    else:
        model = _model(COMBOS[combo])
    ids, mask = _inputs(lengths=(40, 7))
    paths = [i for i in kernels.supported_isas() if i != "portable"]
    outputs = _last_hidden_per_isa(model, ids, mask, paths)
    assert all(torch.equal(outputs[isa], outputs[paths[0]]) for isa in paths)


@pytest.mark.parametrize("combo", ["W1A8-elastic", "W1A4-sign", "W1A2-elastic-relu"])
def test_integer_attention_gives_the_float_gemms_bits(combo):
    """With AVX-512 VNNI the attention of 2–8-bit Q, K, V and probabilities runs on integer GEMMs (encoder.h
    `vnni_row`: u8 × s8 → int32, exact) on the VPOPCNTDQ paths; the AVX2 path keeps the float GEMMs on the same
    levels (exact as well: runtime checks that every partial sum stays under 2^24), so both give the same bits. Head
    size 24 (a 16-wide block and an 8-value tail of the byte conversions), 150 tokens (ten 16-key blocks: vnni_row's
    eight-block step and a tail; 38 groups of four keys with a partial last one) next to a sequence of 3."""
    features = kernels.cpu_features()
    if not (features["avx512_vpopcntdq"] and features["avx512_vnni"]):
        pytest.skip("needs AVX-512 VPOPCNTDQ and VNNI")
    model = _model(COMBOS[combo], hidden_size=96, max_position_embeddings=160)
    ids, mask = _inputs(lengths=(150, 3))
    paths = [i for i in kernels.supported_isas() if i in ("avx2", "avx512_vpopcnt", "avx512_amx")]
    outputs = _last_hidden_per_isa(model, ids, mask, paths)
    for isa in paths[1:]:
        assert torch.equal(outputs[isa], outputs["avx2"]), isa
    eager = _hidden(model, ids, mask, "eager").last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(outputs["avx512_vpopcnt"][valid], eager[valid], rtol=0, atol=1e-4)
