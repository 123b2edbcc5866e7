"""The native encoder runtime: a packed binarized BERT runs all its encoder layers in one native call.

`BinaryBertEncoder` is transformers' `BertEncoder` with one more path: in eval mode on the CPU, without autograd,
when every encoder Linear is a `PackedBinaryLinear` that the bitwise kernels can run, its forward hands the
embeddings' output to `encoder_forward` (kernels/csrc/encoder.h), which computes every layer — the binarized Linears
with their input quantizers fused, attention, GELU/ReLU, the residuals and LayerNorms — in preallocated buffers, and
returns the last hidden states to transformers (pooler, classifier, masked-LM head run as before). Otherwise, and
with `set_inference_kernel("reference")`, it is `BertEncoder.forward` unchanged.

Padding is not computed: the batch's real tokens are packed row after row (FasterTransformer's "remove padding") and
each sequence attends over its own tokens only, which is what the padding mask gives the eager path. The hidden
states at padding positions are returned as 0 (the eager path computes values there that no head reads).

What the runtime reads: each Linear's packed bits in the kernels' layout (made once per Linear and shared with the
per-Linear kernel path, `binarization.kernel_dispatch`), its scales, bias and input quantizer, the attention quantizers
and the LayerNorms — the module tree's own tensors, by address; the plan (`EncoderRuntime`) keeps them alive and is rebuilt
when one of them changes (a load, `.to()`, an edit). Attention per scheme:

| attention quantizers                  | scores Q̂·K̂ᵀ                 | weights                      | weights · V̂             |
|---------------------------------------|------------------------------|------------------------------|--------------------------|
| 1-bit signed Q, K (BiBERT sign, BiT)  | XNOR-popcount                | softmax → probs quantizer    | AND-popcount (1-bit A, V)|
| Bi-Attention (1-bit Q, K, V)          | XNOR-popcount                | 1[dot · c > 0]               | AND-popcount             |
| 2–8-bit                               | float GEMM on integer levels | softmax → probs quantizer    | float GEMM on levels     |
| none (W1A32, `float_activations="int8"`) | float GEMM                | softmax                      | float GEMM               |

Falls back to the eager path (per call) when: training, autograd needed, not float32 CPU, `torch.compile`,
`output_hidden_states` / `output_attentions` requested (their hooks sit on the eager layers), a decoder / cache /
cross-attention, an activation other than GELU / ReLU, an uncalibrated quantizer, a Linear that is not packed or has
no kernel (W1A32 with `float_activations="float32"`), or no compiled extension.

Agreement with the eager path: the binarized Linears are the same kernels on the same inputs; LayerNorm, softmax and
GELU are computed in native float32 code (GELU by the same erf formula as PyTorch's CPU kernel), so values differ
from the eager path by float rounding, and a quantizer downstream may flip a sign where an input sits within that
rounding of its threshold. tests/test_runtime.py bounds both; docs/inference.md reports them on trained models.
Where a GELU feeds a 1-bit sign quantizer (the output Linear of W1A1 models), it is not computed at all: the
quantizer's β becomes two thresholds per channel on the GELU's input (`gelu_sign_thresholds`, found with PyTorch's
own `F.gelu`), which gives the eager path's bits exactly.
"""

from __future__ import annotations

import struct
import threading

import torch
from transformers.modeling_outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    BaseModelOutputWithPoolingAndCrossAttentions,
)
from transformers.models.bert.modeling_bert import BertEmbeddings, BertEncoder, BertModel, BertPooler
from transformers.utils import logging

from .binarization.activation import ActivationQuantizer
from .binarization.embedding import PackedBinaryEmbedding
from .binarization.kernel_dispatch import _kernel_args
from .binarization.linear import PackedBinaryLinear
from .kernels import ops
from .kernels.linear import InferencePlanReader
from .layer_sizes import query_key_head_size_of

try:  # transformers' output-capturing context (output_hidden_states / output_attentions hooks)
    from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY, _active_collector
except ImportError:  # pragma: no cover - other transformers versions
    _CAN_RECORD_REGISTRY = _active_collector = None

# Plan layout, mirrored from kernels/csrc/encoder.h (checked against the extension's encoder_layout() when built).
LINEAR_WORDS, QUANT_WORDS = 17, 6
QUANT_OFFSET = 15
LINEAR_OFFSET = QUANT_OFFSET + 4 * QUANT_WORDS
LAYER_WORDS = LINEAR_OFFSET + 6 * LINEAR_WORDS
_QK_FLOAT, _QK_SIGN, _QK_SIGN_UNSIGNED, _QK_ELASTIC_SIGN, _QK_LEVELS = range(5)
_ACTIVATIONS = {"gelu": 0, "relu": 1}
_ACT_GELU_FOLDED = 2  # GELU folded into the output Linear's 1-bit input quantizer (encoder.h)
_MODE_SIGNED, _MODE_SIGNED_GELU = 0, 3  # kernels' BitMode (bitgemm.cpp)
_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
            "intermediate.dense", "output.dense")


logger = logging.get_logger(__name__)


def _f32(value: float) -> int:
    """A float as the int of its float32 bits (how the plan stores floats)."""
    return struct.unpack("<i", struct.pack("<f", float(value)))[0]


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _as_float32_vector(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous float32 CPU tensor for the native runtime, got {t.dtype} on "
                         f"{t.device}")
    return t


class _Unsupported(Exception):
    """Why the runtime cannot run a model (the eager path runs instead)."""


def _quantizer_calibrated(quantizer: torch.nn.Module) -> bool:
    return not isinstance(quantizer, ActivationQuantizer) or not quantizer.has_step or bool(quantizer.calibrated.item())


def _nibble_layout(weight: torch.Tensor, in_features: int, out_features: int, keep: list) -> torch.Tensor | None:
    """On the AVX2 path: a W1A1 Linear's weights as the AVX2 table GEMM reads them (nibble-index blocks of 32 rows,
    2 bits of memory per weight; `nibble_layout` in kernels/csrc/bitgemm.cpp), made from its bits layout `weight`
    once per plan instead of at every call (paired A/B of the BERT-base W1A1 encoder, AMD EPYC Zen 3, AVX2: 0.956×
    the time at batch 1 × 32 tokens, 0.981× at 1 × 128; docs/inference.md); kept alive in `keep`. None on the other
    paths (the plan is rebuilt when the path changes)."""
    if ops.get_isa() != "avx2":
        return None
    size = ops._bitgemm.nibble_layout_bytes(out_features, in_features)
    buffer = torch.empty(size + 32, dtype=torch.uint8)  # the GEMM's aligned loads need a 32-byte aligned start
    out = buffer[-buffer.data_ptr() % 32:][:size]
    ops._bitgemm.nibble_layout(weight.data_ptr(), out_features, in_features, out.data_ptr(), torch.get_num_threads())
    keep.append(out)
    return out


def _amx_layout(packed: torch.Tensor, in_features: int, out_features: int, keep: list) -> torch.Tensor | None:
    """On the avx512_amx path: a W1 × u8 Linear's weights as the AMX GEMM reads them (`amx_layout` in
    kernels/csrc/amx_gemm.h: each 16 × 64 weight tile's bits in the tiles' VNNI order, 1 bit per weight), made from
    its checkpoint bits `packed` (uint8 [N, ceil(K / 8)]) once per plan; kept alive in `keep`. None on the other
    paths (the plan is rebuilt when the path changes). Paired A/B on a Sapphire Rapids VM (BERT-base W1A8 encoder,
    2 threads, `benchmarks/isa_ab.py`): 0.57–0.70× the time of the AVX-512 lookup tables, outputs identical."""
    if ops.get_isa() != "avx512_amx":
        return None
    words = ops._bitgemm.amx_layout_words(out_features, in_features)
    buffer = torch.empty(words + 8, dtype=torch.int64)  # 64-byte aligned start for the tile expansion
    out = buffer[(-buffer.data_ptr() % 64) // 8:][:words]
    packed = packed.contiguous()  # read during the call only
    ops._bitgemm.amx_layout(packed.data_ptr(), out_features, in_features, out.data_ptr(), torch.get_num_threads())
    keep.append(out)
    return out


def _linear_words(module: torch.nn.Module, name: str, keep: list) -> list[int]:
    if not isinstance(module, PackedBinaryLinear):
        raise _Unsupported(f"{name} is not a packed binarized Linear ({type(module).__name__})")
    quantizer = module.input_quantizer
    if not isinstance(quantizer, ActivationQuantizer) and module.float_activations != "int8":
        raise _Unsupported(f"{name} has float activations (W1A32 with float_activations='float32' runs the exact "
                           "reference path)")
    if not _quantizer_calibrated(quantizer):
        raise _Unsupported(f"{name}.input_quantizer is not calibrated")
    op, args = _kernel_args(module, torch.empty(0, module.in_features))
    keep.extend(a for a in args if isinstance(a, torch.Tensor))
    if op == "w1a1":
        _, weight, alpha, gamma, bias, shift, step, threshold, mode, scale_by_step = args
        s = float(step)
        words = [0, module.in_features, module.out_features, _ptr(weight), 0, _ptr(alpha), _ptr(gamma), _ptr(bias),
                 _ptr(shift), _f32(s), _f32(threshold), mode, _f32(s if scale_by_step else 1.0), 0, 0, 0,
                 _ptr(_nibble_layout(weight, module.in_features, module.out_features, keep))]
    else:
        packed, weight, sums, alpha, gamma, bias, shift, step, q_min, q_max, dynamic = args
        words = [1, module.in_features, module.out_features, _ptr(weight), _ptr(sums), _ptr(alpha), _ptr(gamma),
                 _ptr(bias), _ptr(shift), _f32(float(step)), 0, 0, 0, q_min, q_max, int(dynamic),
                 _ptr(_amx_layout(packed, module.in_features, module.out_features, keep))]
    for tensor, what in ((alpha, "weight_scale"), (gamma, "weight_offset"), (bias, "bias"), (shift, "input shift")):
        if tensor is not None:
            _as_float32_vector(tensor, f"{name} {what}")
    return words


def _float32_keys(x: torch.Tensor) -> torch.Tensor:
    """float32 → int64 keys in the order of the values (−0 and +0 share key 0)."""
    bits = x.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _float32_of_keys(keys: torch.Tensor) -> torch.Tensor:
    bits = torch.where(keys < 0, (-keys) | 0x80000000, keys)
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


# Folding GELU into the thresholds of a following 1-bit quantizer (`gelu_sign_thresholds`) is exact where float32
# GELU is monotonic; near its flat minimum (β between GELU_MIN and about −0.15) float32 rounding makes it wiggle by
# an ulp, and dense sampling found mismatches. A layer is folded only when every β of the output Linear's input
# quantizer is ≥ GELU_FOLD_SAFE_SHIFT (measured: none in 600k samples dense around each threshold) or ≤ GELU_MIN
# (every input gives +1); otherwise it keeps the GELU pass. Trained students' β sit within ±0.02.
GELU_FOLD_SAFE_SHIFT, GELU_MIN = -0.1, -0.17


def gelu_sign_thresholds(shift: torch.Tensor | None, channels: int) -> torch.Tensor:
    """Fold the exact GELU into a following 1-bit sign quantizer: per channel, the float32 thresholds lo ≤ hi with
    `GELU(x) − β ≥ 0  ⇔  x ≤ lo or x ≥ hi` for float32 x, GELU being PyTorch's float32 exact-erf `F.gelu` (what
    transformers' `hidden_act="gelu"` runs).

    GELU falls from 0 (x → −∞) to its minimum ≈ −0.170 at x ≈ −0.752, then rises without bound, so {GELU(x) ≥ β} is
    (−∞, lo] ∪ [hi, ∞): lo is NaN (an empty lower part) when β > 0 … GELU(−∞), and +∞ when β ≤ min GELU. Each bound
    is found by bisection over the ordered float32 values, evaluating `F.gelu` itself, so the bits equal those of
    GELU-then-sign wherever float32 `F.gelu` is monotonic on each side of its minimum (tests/test_runtime.py checks
    dense samples around every threshold). PyTorch computes `F.gelu` with oneDNN, whose kernel depends on the CPU:
    the AVX2 one is monotonic on those samples, the AVX-512 one is not, at the ulp level, below the minimum — there
    the eager bit flips back and forth over a band of inputs where GELU(x) is within float32 rounding of β (a few
    ulps wide for β ≤ −0.01; about [−5.54, −5.49] for β = 0, where GELU underflows to −0 irregularly), and the two
    thresholds match it only outside that band.

    Args:
        shift: the quantizer's β, float32 [channels] (None: 0).
        channels: the number of channels (the intermediate size).

    Returns:
        float32 [2, channels]: row 0 = lo, row 1 = hi.
    """
    beta = torch.zeros(channels, dtype=torch.float32) if shift is None else shift.detach().reshape(-1).to(torch.float32)
    gelu = torch.nn.functional.gelu

    def holds(keys):  # GELU(x) − β ≥ 0, computed as the eager path does
        return (gelu(_float32_of_keys(keys)) - beta) >= 0

    def full(value):
        return torch.full((channels,), int(value), dtype=torch.int64)

    def narrow(a, b, flips):  # keys a < b with flips(a) false and flips(b) true → adjacent keys
        while bool(((b - a) > 1).any()):
            m = (a + b) // 2
            ok = flips(m)
            a, b = torch.where(ok, a, m), torch.where(ok, m, b)
        return a, b

    f32 = torch.float32
    k_min = _float32_keys(torch.tensor(-0.7517915, dtype=f32))  # the minimum of GELU
    k_inf = _float32_keys(torch.tensor(float("inf"), dtype=f32))
    k_lowest = _float32_keys(torch.tensor(torch.finfo(f32).min, dtype=f32))
    all_true = holds(full(k_min))
    # upper part: the smallest x ≥ x_min with GELU(x) ≥ β (at +∞ it holds)
    hi = _float32_of_keys(narrow(full(k_min), full(k_inf), holds)[1])
    # lower part: the largest x < x_min with GELU(x) ≥ β, if the most negative finite x has it
    has_lower = holds(full(k_lowest))
    lo = _float32_of_keys(narrow(full(k_lowest), full(k_min), lambda keys: ~holds(keys))[0])
    lo = torch.where(has_lower, lo, torch.tensor(float("nan"), dtype=f32))
    lo = torch.where(all_true, torch.tensor(float("inf"), dtype=f32), lo)
    return torch.stack([lo, hi]).contiguous()


def _quant_words(quantizer: torch.nn.Module | None, name: str, keep: list) -> tuple[list[int], float]:
    """The QuantSpec words of an attention operand quantizer and its inference step (1 without one)."""
    if quantizer is None:
        return [_QK_FLOAT, 0, _f32(1.0), 0, 0, 0], 1.0
    if not isinstance(quantizer, ActivationQuantizer):
        raise _Unsupported(f"{name} is a {type(quantizer).__name__}")
    if not _quantizer_calibrated(quantizer):
        raise _Unsupported(f"{name} is not calibrated")
    shift = quantizer.effective_shift().detach().reshape(-1) if hasattr(quantizer, "shift") else None
    if shift is not None:
        keep.append(_as_float32_vector(shift, f"{name}.shift"))
    if not quantizer.has_step:
        kind, step = (_QK_SIGN if quantizer.signed else _QK_SIGN_UNSIGNED), torch.ones(())
    else:
        step = quantizer._inference_step(torch.float32)
        kind = _QK_ELASTIC_SIGN if quantizer.bits == 1 and quantizer.signed else _QK_LEVELS
    return [kind, _ptr(shift), _f32(float(step)), quantizer.q_n, quantizer.q_p, 0], step


def _layer_words(layer: torch.nn.Module, index: int, config, keep: list) -> list[int]:
    attention = layer.attention.self
    prefix = f"encoder.layer.{index}"
    if getattr(layer, "crossattention", None) is not None or getattr(attention, "is_causal", False):
        raise _Unsupported(f"{prefix} has cross-attention or causal attention")
    act = config.hidden_act if isinstance(config.hidden_act, str) else None
    if act not in _ACTIVATIONS:
        raise _Unsupported(f"hidden_act={config.hidden_act!r} (the runtime has {list(_ACTIVATIONS)})")
    if not 0 < attention.attention_head_size <= 256 or attention.num_attention_heads < 1:
        raise _Unsupported(f"{prefix}: {attention.num_attention_heads} heads of size {attention.attention_head_size} "
                           "(the runtime takes 1 or more heads of at most 256)")
    bi_attention = config.attention_type == "bi_attention"
    quants, steps = [], []
    for part in ("query", "key", "value", "probs"):
        words, step = _quant_words(getattr(attention, f"{part}_quantizer", None), f"{prefix}.attention.self.{part}_"
                                   "quantizer", keep)
        quants += words
        steps.append(step)
    if bi_attention and not all(quants[i * QUANT_WORDS] in (_QK_SIGN, _QK_ELASTIC_SIGN) for i in range(3)):
        raise _Unsupported("Bi-Attention with multi-bit Q/K/V")
    scaling = attention.scaling
    bi_scale = steps[0] * steps[1] * scaling  # as attention.bi_attention computes it (float32)
    lns = []
    for norm, name in ((layer.attention.output.LayerNorm, "attention.output.LayerNorm"),
                       (layer.output.LayerNorm, "output.LayerNorm")):
        for tensor, what in ((norm.weight, "weight"), (norm.bias, "bias")):
            keep.append(_as_float32_vector(tensor.detach(), f"{prefix}.{name}.{what}"))
        lns += [_ptr(norm.weight), _ptr(norm.bias), _f32(norm.eps)]
    intermediate = layer.intermediate.dense
    words = [layer.attention.output.dense.out_features, attention.num_attention_heads, attention.attention_head_size,
             intermediate.out_features, _ACTIVATIONS[act], int(bi_attention), _f32(scaling), _f32(float(bi_scale)),
             *lns, query_key_head_size_of(attention), *quants]
    for path in _LINEARS:
        words += _linear_words(layer.get_submodule(path), f"{prefix}.{path}", keep)
    out = LINEAR_OFFSET + 5 * LINEAR_WORDS  # the output Linear's words: kind 0 = W1A1, word 11 = its bit mode
    if act == "gelu" and words[out] == 0 and words[out + 11] == _MODE_SIGNED:
        output = layer.output.dense
        shift = output.input_quantizer.effective_shift() if hasattr(output.input_quantizer, "shift") else None
        shift = None if shift is None else shift.detach()
        if shift is None or bool(((shift >= GELU_FOLD_SAFE_SHIFT) | (shift <= GELU_MIN)).all()):
            thresholds = gelu_sign_thresholds(shift, output.in_features)
            keep.append(thresholds)
            words[out + 8], words[out + 11] = _ptr(thresholds), _MODE_SIGNED_GELU
            words[4] = _ACT_GELU_FOLDED
    if len(words) != LAYER_WORDS:
        raise AssertionError(f"plan layout: {len(words)} words, expected {LAYER_WORDS}")
    return words


class EncoderRuntime:
    """The native runtime's plan for one `BinaryBertEncoder`: the int64 plan (encoder.h's layout), the tensors it
    points into, and a grow-only work buffer per calling thread.

    Thread safety: the native call releases the GIL, so several Python threads may run one model at once. Each
    thread gets its own work buffer (a shared one would be written by both calls, and grown — freed — under the
    other), and building the plan is serialized by a lock; each call keeps the plan and the tensors it points into
    alive until it returns.

    Args:
        encoder: the encoder (its `layer` list and `config`).
    """

    def __init__(self, encoder: BertEncoder):
        self.encoder = encoder
        self._plan: torch.Tensor | None = None
        self._keep: list[torch.Tensor] = []
        self._reason: str | None = None
        # (owner dicts, names, objects) of every child module, parameter and buffer; their tensors and versions
        self._entries: tuple = ([], [], [])
        self._tensors: list[torch.Tensor] = []
        self._states = b""  # per tensor: int64 version, data pointer and two prefetch hints (`_bitgemm.tensor_states`)
        self._valid = False
        self._isa = ""  # the kernels' instruction-set path the plan was built for (`ops.get_isa()`)
        self._local = threading.local()  # .work: this thread's grow-only work buffer
        self._lock = threading.Lock()  # plan building

    def _work(self, need: int) -> torch.Tensor:
        """This thread's work buffer, grown to at least `need` floats."""
        work = getattr(self._local, "work", None)
        if work is None or work.numel() < need:
            work = self._local.work = torch.empty(need, dtype=torch.float32)
        return work

    # The plain attributes of an activation quantizer the plan is built from (by identity: dtypes, small ints and
    # interned strings are singletons, so assigning another value replaces the object)
    QUANTIZER_ATTRIBUTES = ("bits", "signed", "scheme", "shift_dtype")

    def _snapshot(self) -> None:
        """Record the encoder's structure (every `_modules` / `_parameters` / `_buffers` entry, and the activation
        quantizers' `QUANTIZER_ATTRIBUTES`) and its tensors' versions and data pointers."""
        tables, names, values = [], [], []
        for module in self.encoder.modules():
            for table in (module._modules, module._parameters, module._buffers):
                for name, value in table.items():
                    if value is not None:
                        tables.append(table)
                        names.append(name)
                        values.append(value)
            if isinstance(module, ActivationQuantizer):
                for name in self.QUANTIZER_ATTRIBUTES:
                    if name in module.__dict__:
                        tables.append(module.__dict__)
                        names.append(name)
                        values.append(module.__dict__[name])
        self._entries = (tables, names, values)
        self._tensors = [v for v in values if isinstance(v, torch.Tensor)]
        self._states = ops._bitgemm.tensor_states(self._tensors)

    def _still_valid(self) -> bool:
        """Whether nothing the plan read changed: no module, parameter or buffer of the encoder replaced (the owner
        dicts still hold the same objects), no quantizer's bits / scheme / shift dtype set anew, no tensor changed
        in place (versions) or given other data (data pointers: `param.data = other` keeps the version), and the
        kernels' instruction-set path (`ops.set_isa`) the same. Runs on every forward, so it is one C loop
        (`_bitgemm.unchanged`) over BERT-base's 1,501 entries and 684 tensors. Right after a forward those objects
        are out of the caches; the loop prefetches the entries ahead of the one it reads (their dicts, tensor
        objects, TensorImpls and StorageImpls, whose addresses `tensor_states` records), which took it from
        0.68–0.73 ms to 0.33–0.41 ms on an AMD EPYC Zen 4 (2 threads, BiT W1A1 BERT-base, B=1), and reads each
        tensor's `_version` and `data_ptr()` through the C functions behind them rather than two attribute lookups
        (bitgemm.cpp `tensor_access`): 0.62–0.64 → 0.40–0.44 ms inside forwards, 0.28–0.29 → 0.15 ms called on
        its own right after one, same machine (docs/inference.md)."""
        if not self._valid or self._isa != ops.get_isa():
            return False
        tables, names, values = self._entries
        return ops._bitgemm.unchanged(tables, names, values, self._tensors, self._states)

    def invalidate(self) -> None:
        """Rebuild the plan at the next call, after a change `plan()` cannot see: a module attribute such as
        `float_activations` (`set_inference_kernel` calls this)."""
        self._valid = False

    def plan(self) -> torch.Tensor | None:
        """The current plan, rebuilt when the encoder changed; None when the model has no runtime path
        (`unsupported_reason` says why)."""
        if self._still_valid():
            return self._plan
        with self._lock:
            return self._build()

    def _build(self) -> torch.Tensor | None:
        if not self._still_valid():  # another thread may have built it while this one waited
            keep: list[torch.Tensor] = []
            try:
                config = self.encoder.config
                words = [w for i, layer in enumerate(self.encoder.layer) for w in _layer_words(layer, i, config, keep)]
                self._plan, self._reason = torch.tensor(words, dtype=torch.int64), None
            except _Unsupported as exc:
                self._plan, self._reason = None, str(exc)
            self._keep = keep  # the tensors the plan points into stay alive as long as the plan
            self._isa = ops.get_isa()
            self._snapshot()  # after building: a repack or a calibration may have bumped versions
            self._valid = True
        return self._plan

    @property
    def known_unsupported(self) -> bool:
        """Whether the last plan built found no runtime path and nothing has been invalidated since (a cheap test:
        the encoder is not checked again)."""
        return self._valid and self._plan is None

    @property
    def unsupported_reason(self) -> str | None:
        """Why the last `plan()` found no runtime path (None when there is one)."""
        return self._reason

    @torch.no_grad()
    def forward(self, hidden_states: torch.Tensor, valid: torch.Tensor | None, *, checked: bool = False,
                layers: int | None = None) -> torch.Tensor:
        """Run every layer (or the first `layers`) natively.

        Args:
            hidden_states: float32 [B, T, H], the embeddings' output.
            valid: bool [B, T], True for real tokens (None: all).
            checked: the caller has just called `plan()` (skips checking the encoder again).
            layers: run only the first `layers` layers (default: all), e.g. to compare per layer with the eager path.

        Returns:
            float32 [B, T, H]: the hidden states after the last layer run (0 at padding positions).

        Raises:
            ValueError: when the encoder has no runtime path, or `layers` is not in 1 … number of layers.
        """
        batch, seq, hidden = hidden_states.shape
        index, lengths = _real_tokens(valid, batch, seq)
        if index is None:
            rows = hidden_states.reshape(batch * seq, hidden).clone()
            return self._run_rows(rows, lengths, checked=checked, layers=layers).view(batch, seq, hidden)
        rows = hidden_states.reshape(batch * seq, hidden).index_select(0, index)
        self._run_rows(rows, lengths, checked=checked, layers=layers)
        return _at_positions(rows, index, batch, seq)

    @torch.no_grad()
    def _run_rows(self, rows: torch.Tensor, lengths: torch.Tensor, *, checked: bool = False,
                  layers: int | None = None) -> torch.Tensor:
        """Run every layer (or the first `layers`) natively, in place, on the batch's real tokens packed together.

        Args:
            rows: float32 [M, H], contiguous: the B sequences' real tokens one after another (their embeddings).
            lengths: int64 [B], each sequence's number of real tokens (summing to M; 0 allowed).
            checked, layers: as `forward`.

        Returns:
            `rows`, now the hidden states after the last layer run.

        Raises:
            ValueError: no runtime path, `layers` out of range, or `rows` / `lengths` not as above (the native call
                reads them by address).
        """
        plan = self._plan if checked else self.plan()
        keep = self._keep  # the tensors the plan points into, alive until this call returns
        if plan is None:
            raise ValueError(f"the native runtime cannot run this encoder: {self._reason}")
        hidden = self.encoder.config.hidden_size
        if (rows.dim() != 2 or rows.shape[1] != hidden or rows.dtype != torch.float32 or not rows.is_contiguous()
                or rows.device.type != "cpu"):
            raise ValueError(f"rows must be a contiguous float32 CPU tensor [M, {hidden}], got {rows.dtype} "
                             f"{tuple(rows.shape)} on {rows.device}")
        if (lengths.dim() != 1 or lengths.dtype != torch.int64 or lengths.device.type != "cpu"
                or (lengths.numel() and int(lengths.min()) < 0) or int(lengths.sum()) != rows.shape[0]):
            raise ValueError(f"lengths must be int64 [B] on the CPU, each >= 0, summing to the {rows.shape[0]} rows")
        batch = lengths.numel()
        cu = torch.zeros(batch + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=cu[1:])
        total = len(self.encoder.layer)
        layers = total if layers is None else layers
        if not 1 <= layers <= total:
            raise ValueError(f"layers must be in 1 … {total}, got {layers}")
        m, threads = rows.shape[0], torch.get_num_threads()
        if m:
            need = ops._bitgemm.encoder_work_floats(plan.data_ptr(), layers, m, int(lengths.max()), threads)
            work = self._work(need)
            ops._bitgemm.encoder_forward(plan.data_ptr(), layers, rows.data_ptr(), m, cu.data_ptr(), batch,
                                         work.data_ptr(), work.numel(), threads)
        del keep
        return rows


def _real_tokens(valid: torch.Tensor | None, batch: int, seq: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The flat positions of a [batch, seq] batch's real tokens (`valid`: bool [batch, seq], None: all real) and
    each sequence's number of them: `(index [M] int64, lengths [batch] int64)`, with index None when every token is
    real (M = batch·seq)."""
    if valid is None or bool(valid.all()):
        return None, torch.full((batch,), seq, dtype=torch.int64)
    return valid.reshape(-1).nonzero().squeeze(1), valid.sum(1, dtype=torch.int64)


def _at_positions(rows: torch.Tensor, index: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
    """The packed real tokens' rows [M, H] put back at their flat positions `index` [M] of a [batch, seq, H] tensor,
    0 at the padding positions."""
    out = rows.new_zeros(batch * seq, rows.shape[1])
    out.index_copy_(0, index, rows)
    return out.view(batch, seq, rows.shape[1])


# Set (True) on the hidden states the encoder runtime returns: the modules after it may continue natively.
NATIVE_OUTPUT = "_hf_binary_bert_native_output"


def _native_mode(module: torch.nn.Module) -> bool:
    """What every native path of a module needs: its plan's kernel is "auto", eval mode, the compiled extension, and
    no `torch.compile` tracing."""
    return (module.inference_kernel == "auto" and not module.training and ops.available()
            and not torch.compiler.is_compiling())


def _needs_autograd(module: torch.nn.Module, *inputs: torch.Tensor) -> bool:
    """Whether this call must record gradients (the native paths cannot): grad mode on and an input or one of the
    module's parameters requires grad."""
    return torch.is_grad_enabled() and (any(t.requires_grad for t in inputs)
                                        or any(p.requires_grad for p in module.parameters()))


def _key_padding(attention_mask: torch.Tensor | None, batch: int, seq: int) -> torch.Tensor | None | bool:
    """bool [B, T] of real tokens from the 4-D mask the encoder receives (None: no mask), or False when the mask is
    not a padding mask (some query row differs from the others)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 4 or attention_mask.shape[-1] != seq or attention_mask.shape[0] not in (1, batch):
        return False
    mask = attention_mask[:, 0]
    if mask.shape[-2] > 1 and not bool((mask == mask[:, :1]).all()):
        return False
    row = mask[:, 0]
    valid = row if row.dtype == torch.bool else row == 0
    return valid.expand(batch, seq)


class BinaryBertEncoder(InferencePlanReader, BertEncoder):
    """transformers' `BertEncoder` whose forward runs on the native runtime when it can (module docstring).

    The class of a binarized model's encoder is switched to this one after construction (it adds no parameters or
    buffers: the state dict is unchanged). It reads the model's inference plan (`inference_plan`, set by
    `BinaryBertPreTrainedModel.set_inference_kernel`): only kernel "auto" runs the native runtime.
    """

    def runtime(self) -> EncoderRuntime:
        """This encoder's `EncoderRuntime` (created on first use)."""
        runtime = self.__dict__.get("_native_runtime")
        if runtime is None:
            runtime = self.__dict__["_native_runtime"] = EncoderRuntime(self)
        return runtime

    def runtime_applies(self, hidden_states: torch.Tensor, kwargs: dict) -> bool:
        """Whether this call can run natively (see the module docstring for the conditions)."""
        if (not _native_mode(self) or hidden_states.device.type != "cpu"
                or hidden_states.dtype != torch.float32):
            return False
        if _needs_autograd(self, hidden_states):
            logger.warning_once(
                "The native encoder runtime does not record gradients, so this eval-mode forward with autograd "
                "enabled runs the slower eager kernel path; call the model under torch.inference_mode() or "
                "torch.no_grad() (as pipelines do) for the native runtime.")
            return False
        if kwargs.get("encoder_hidden_states") is not None or kwargs.get("cache") is not None or self.config.is_decoder:
            return False
        if any(kwargs.get(k) or getattr(self.config, k, False) for k in ("output_attentions", "output_hidden_states")):
            return False
        if _active_collector is not None and _active_collector.get():
            return False
        return self.runtime().plan() is not None

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        if not self.runtime_applies(hidden_states, kwargs):
            return self._eager_forward(hidden_states, attention_mask, *args, **kwargs)
        valid = _key_padding(attention_mask, *hidden_states.shape[:2])
        if valid is False:
            return self._eager_forward(hidden_states, attention_mask, *args, **kwargs)
        hidden = self.runtime().forward(hidden_states, valid, checked=True)  # runtime_applies checked the plan
        setattr(hidden, NATIVE_OUTPUT, True)  # the pooler may continue natively (BinaryBertPooler)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden)

    def _eager_forward(self, hidden_states, attention_mask, *args, **kwargs):
        # `BertEncoder.forward`. After native embeddings that found the team cold (docs/inference.md, "The cold
        # forward"), PyTorch's regions take the team now: the kernels' wake-ahead helper stops spinning beside them
        if ops.available():  # (without the compiled kernels there is neither)
            ops._bitgemm.team_release()
        return super().forward(hidden_states, attention_mask, *args, **kwargs)


def _table_words(table: torch.nn.Module, hidden: int) -> list[int] | None:
    """The `embeddings_sum` words (kind, data, scale, offset, rows) of an embedding table, or None when the native sum
    cannot read it (the eager forward runs instead)."""
    if isinstance(table, PackedBinaryEmbedding):
        packed, scale = table.weight_packed, table.weight_scale
        offset = table.weight_offset if table.has_offset else None
        rows = packed.shape[0]
        if (table.embedding_dim != hidden or packed.shape[1] != (hidden + 7) // 8 or not packed.is_contiguous()
                or any(t is not None and (t.dtype != torch.float32 or t.shape != (rows,) or not t.is_contiguous())
                       for t in (scale, offset))):
            return None
        return [1, packed.data_ptr(), scale.data_ptr(), _ptr(offset), rows]
    if type(table) is torch.nn.Embedding and table.max_norm is None:
        weight = table.weight
        if weight.dtype != torch.float32 or weight.dim() != 2 or weight.shape[1] != hidden or not weight.is_contiguous():
            return None
        return [0, weight.data_ptr(), 0, 0, weight.shape[0]]
    return None


class BinaryBertEmbeddings(InferencePlanReader, BertEmbeddings):
    """transformers' `BertEmbeddings` whose word + token-type + position sum is one native call (`embeddings_sum` in
    kernels/csrc/encoder.h) in eval mode on the CPU without autograd, for float32 and packed 1-bit tables; the
    LayerNorm and dropout stay the module's own. The sum is the eager one bit for bit: ((word + token_type) +
    position) in float32, a 1-bit row being α·(±1) + γ as `format.dequantize` computes it. Otherwise (training,
    `inputs_embeds`, a cache offset, another table type, `set_inference_kernel("eager" | "reference")`) it is
    `BertEmbeddings.forward` unchanged. The class of a binarized model's embeddings is switched to this one after
    construction (no new parameters or buffers).

    Raises:
        IndexError: a token, position or token-type id outside its table (as `nn.Embedding`).
    """

    def _native_tables(self, input_ids, inputs_embeds, kwargs) -> torch.Tensor | None:
        if (not _native_mode(self) or inputs_embeds is not None or input_ids is None or input_ids.dim() != 2
                or input_ids.device.type != "cpu" or any(kwargs.values()) or _needs_autograd(self)):
            return None
        hidden = self.LayerNorm.normalized_shape[0]
        words = [_table_words(t, hidden) for t in (self.word_embeddings, self.position_embeddings,
                                                    self.token_type_embeddings)]
        if any(w is None for w in words):
            return None
        return torch.tensor([w for table in words for w in table], dtype=torch.int64)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, **kwargs):
        tables = self._native_tables(input_ids, inputs_embeds, kwargs)
        if tables is None:
            return super().forward(input_ids, token_type_ids, position_ids, inputs_embeds, **kwargs)
        batch, seq = input_ids.shape
        hidden = self.LayerNorm.normalized_shape[0]

        def flat(ids):  # None stays None (the default ids); else int64 [batch·seq]
            return None if ids is None else ids.expand(batch, seq).to(torch.int64).contiguous().reshape(-1)

        ids, positions, types = flat(input_ids), flat(position_ids), flat(token_type_ids)
        out = torch.empty(batch, seq, hidden, dtype=torch.float32)
        status = ops._bitgemm.embeddings_sum(out.data_ptr(), batch * seq, hidden, seq, ids.data_ptr(), _ptr(positions),
                                             _ptr(types), tables.data_ptr(), torch.get_num_threads())
        if status != 0:
            ops._bitgemm.team_release()  # no encoder follows
            raise IndexError("index out of range in self: a token, position or token-type id is outside its "
                             "embedding table")
        if ops._bitgemm.team_awake():
            return self.dropout(self.LayerNorm(out))
        # A cold forward (after an idle wait: the kernels' wake-ahead has asked its helper and no native region has
        # taken the team yet; docs/inference.md, "The cold forward"): PyTorch's LayerNorm would wake the sleeping
        # OpenMP worker and wait for it (milliseconds on a small VM; its region has no spread_team, so the worker may
        # even land on this thread's CPU), so it runs on this thread alone. Its rows are independent, so the values
        # are the same on any number of threads. omp_thread_count sets this thread's OpenMP count only, not
        # torch.set_num_threads' process-wide default, which a thread starting PyTorch work meanwhile would take for
        # good.
        threads = ops._bitgemm.omp_thread_count(1)
        try:
            normed = self.LayerNorm(out)
        finally:
            ops._bitgemm.omp_thread_count(threads)
        return self.dropout(normed)


class BinaryBertPooler(InferencePlanReader, BertPooler):
    """transformers' `BertPooler` (tanh(dense(first token))) whose dense layer runs as one native call
    (`dense_rows` in kernels/csrc/encoder.h) in eval mode on the CPU without autograd, for a float32 `nn.Linear` and
    at most `NATIVE_ROWS` sequences: each output is a dot product split over the threads by output feature. At batch
    1 the layer is a read of its weight matrix (H × H floats, 2.36 MB for BERT-base), mostly from memory after the
    encoder has run, which PyTorch does on one thread (docs/inference.md). The sums run in another
    order than PyTorch's GEMM (float rounding; the same bits on every instruction set). Otherwise (training, a
    binarized pooler, `set_inference_kernel("eager" | "reference")`, more rows) it is `BertPooler.forward` unchanged.
    The class of a binarized model's pooler is switched to this one after construction (no new parameters). It
    continues the native path only: its input must be the encoder runtime's output (`NATIVE_OUTPUT` set on that
    tensor), so wherever the encoder ran eagerly (a model in training form, W1A32 with float activations, …) the
    whole forward stays the eager one, bit for bit.
    """

    NATIVE_ROWS = 16  # above this a GEMM's blocking (PyTorch) beats one pass of dot products per row

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dense = self.dense
        if (not getattr(hidden_states, NATIVE_OUTPUT, False) or not _native_mode(self)
                or type(dense) is not torch.nn.Linear or type(self.activation) is not torch.nn.Tanh
                or hidden_states.device.type != "cpu" or hidden_states.dtype != torch.float32
                or hidden_states.dim() != 3 or hidden_states.shape[0] > self.NATIVE_ROWS
                or hidden_states.stride(-1) != 1 or dense.weight.dtype != torch.float32
                or not dense.weight.is_contiguous() or _needs_autograd(self, hidden_states)
                or (dense.bias is not None and (dense.bias.dtype != torch.float32 or not dense.bias.is_contiguous()))):
            return super().forward(hidden_states)
        batch, hidden = hidden_states.shape[0], hidden_states.shape[-1]
        out_features = dense.out_features
        first = hidden_states[:, 0]  # [B, H], rows at stride T·H
        pooled = torch.empty(batch, out_features, dtype=torch.float32)
        ops._bitgemm.dense_rows(first.data_ptr(), batch, hidden_states.stride(0), hidden, dense.weight.data_ptr(),
                                out_features, _ptr(dense.bias), pooled.data_ptr(), torch.get_num_threads())
        return self.activation(pooled)


_MODEL_KWARGS_ALLOWED = ("return_dict", "output_attentions", "output_hidden_states")


def _hooked(*modules: torch.nn.Module | None) -> bool:
    """Whether a forward hook (of these modules, or a global one) would run if they were called."""
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(m is not None and (m._forward_hooks or m._forward_pre_hooks) for m in modules)


class BinaryBertModelForward:
    """transformers' `BertModel` (the bare model, and the body `bert` of every head) whose forward, when the encoder
    runs natively, calls its three native parts directly: the embeddings' sum and LayerNorm (`BinaryBertEmbeddings`),
    every encoder layer (`EncoderRuntime`) and the pooler (`BinaryBertPooler`). It skips what `BertModel.forward`
    wraps around them for this case — the config-default and output-capturing decorators, the 4-D attention mask
    built from the 2-D one and read back by the encoder, module-call dispatch — about 0.3–0.5 ms of a 3–11 ms
    batch-1 forward (docs/inference.md). With padding, the embeddings are computed for the real tokens only (each
    at its own position), already packed as the runtime takes them, where `BertModel.forward` embeds every position
    and the runtime then gathers the real ones; each token's embedding is computed the same way, so the outputs are
    the same bit for bit (tests/test_runtime.py).

    It applies in eval mode on the CPU under `torch.no_grad()` / `torch.inference_mode()` with kernel "auto", for
    2-D `input_ids` with an optional 2-D `attention_mask` of the same shape (nonzero = a real token, as
    transformers reads it) and `token_type_ids`, no `position_ids` / `inputs_embeds` / cross-attention / cache,
    `output_attentions` / `output_hidden_states` off (in the call and the config), and no forward hook on the model
    or its embeddings, encoder and pooler (nor a global one). Otherwise, and when the encoder has no runtime plan,
    it is `BertModel.forward` unchanged. `return_dict=False` gives the tuple `BertModel` gives.
    """

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                encoder_hidden_states=None, encoder_attention_mask=None, cache=None, use_cache=None, **kwargs):
        if (input_ids is not None and inputs_embeds is None and position_ids is None and encoder_hidden_states is None
                and encoder_attention_mask is None and cache is None and not use_cache):
            out = self._native_forward(input_ids, attention_mask, token_type_ids, kwargs)
            if out is not None:
                return out
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds,
                               encoder_hidden_states=encoder_hidden_states,
                               encoder_attention_mask=encoder_attention_mask, cache=cache, use_cache=use_cache,
                               **kwargs)

    def _native_forward(self, input_ids, attention_mask, token_type_ids, kwargs):
        """The direct native forward, or None when it does not apply (class docstring)."""
        embeddings, encoder, pooler = self.embeddings, self.encoder, self.pooler
        if (torch.is_grad_enabled() or not isinstance(encoder, BinaryBertEncoder)
                or not isinstance(embeddings, BinaryBertEmbeddings)
                or not (pooler is None or isinstance(pooler, BinaryBertPooler)) or not _native_mode(encoder)
                or input_ids.dim() != 2 or input_ids.device.type != "cpu"):
            return None
        if any(k not in _MODEL_KWARGS_ALLOWED or (k != "return_dict" and v) for k, v in kwargs.items()):
            return None
        if attention_mask is not None and (attention_mask.shape != input_ids.shape
                                           or attention_mask.device.type != "cpu"):
            return None
        config = self.config
        if (config.is_decoder or getattr(config, "output_attentions", False)
                or getattr(config, "output_hidden_states", False) or getattr(config, "is_causal", None)
                or (_active_collector is not None and _active_collector.get())
                or _hooked(self, embeddings, encoder, pooler)):
            return None
        runtime = encoder.runtime()
        if runtime.known_unsupported:
            return None
        batch, seq = input_ids.shape
        index, lengths = _real_tokens(None if attention_mask is None else attention_mask.bool(), batch, seq)
        if index is None:
            embedded = embeddings.forward(input_ids=input_ids, token_type_ids=token_type_ids)
        else:  # the real tokens only, packed (their own positions)
            if not index.numel():
                return None
            types = None if token_type_ids is None else token_type_ids.expand(batch, seq).reshape(-1)[index][None]
            embedded = embeddings.forward(input_ids=input_ids.reshape(-1)[index][None],
                                          position_ids=(index % seq)[None], token_type_ids=types)
        if embedded.dtype != torch.float32 or embedded.device.type != "cpu" or runtime.plan() is None:
            return None
        rows = embedded.reshape(-1, embedded.shape[-1])  # a fresh tensor of this call's: run in place
        if not rows.is_contiguous():
            rows = rows.contiguous()
        runtime._run_rows(rows, lengths, checked=True)
        hidden_states = rows.view(batch, seq, -1) if index is None else _at_positions(rows, index, batch, seq)
        setattr(hidden_states, NATIVE_OUTPUT, True)
        pooled = pooler.forward(hidden_states) if pooler is not None else None
        out = BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=hidden_states, pooler_output=pooled)
        return out if kwargs.get("return_dict", getattr(config, "return_dict", True)) else out.to_tuple()


class BinaryBertBody(BinaryBertModelForward, BertModel):
    """The class a head's `bert` body (a transformers `BertModel`) is switched to (`use_native_encoder`): the direct
    native forward of `BinaryBertModelForward`; no new parameters or buffers."""


def use_native_encoder(model: torch.nn.Module) -> int:
    """Switch every `BertEncoder` of `model` to `BinaryBertEncoder`, every `BertEmbeddings` to
    `BinaryBertEmbeddings`, every `BertPooler` to `BinaryBertPooler` and every plain `BertModel` (a head's body) to
    `BinaryBertBody` in place (no new tensors). Returns how many encoders."""
    count = 0
    for module in model.modules():
        if type(module) is BertModel:  # a head's body: the direct native forward (BinaryBertModelForward)
            module.__class__ = BinaryBertBody
            if _CAN_RECORD_REGISTRY is not None:  # output capturing looks its layers up by the model's class
                _CAN_RECORD_REGISTRY[module] = module._can_record_outputs
        elif type(module) is BertEncoder:
            module.__class__ = BinaryBertEncoder
            count += 1
        elif type(module) is BertEmbeddings:
            module.__class__ = BinaryBertEmbeddings
        elif type(module) is BertPooler:
            module.__class__ = BinaryBertPooler
    return count


__all__ = ["BinaryBertBody", "BinaryBertEmbeddings", "BinaryBertEncoder", "BinaryBertModelForward", "BinaryBertPooler",
           "EncoderRuntime", "use_native_encoder"]
