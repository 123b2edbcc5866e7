"""Analytic operation count and packed-checkpoint size of a (binarized) BERT, from its config alone.

Operations follow BiBERT (Qin et al., ICLR 2022, results table: BERT-base 22.5 GFLOPs at full precision → 0.4 G at W1A1)
and BinaryBERT (Bai et al., ACL 2021: 1.5 G at W1A4): a matmul [M, K] x [K, N] costs 2·M·K·N operations; a binarized
Linear fed b-bit activations (b < 32) does them as bit operations, b per MAC (bit-serial), and 64 bit operations
count as one FLOP. Sizes use MB = 10⁶ bytes, split like `format.py` (`COMPONENTS`, `component_of`). A pruned config's
per-layer sizes (`layer_num_attention_heads`, `layer_query_key_head_sizes`, `layer_intermediate_sizes`;
`layer_sizes.py`) set each layer's shapes.
"""

from __future__ import annotations

from .binarization.swap import num_scale_groups
from .format import COMPONENTS, component_of
from .layer_sizes import layer_attention_sizes

HEADS = ("sequence_classification", "masked_lm", None)
# binarizable name -> module path inside `bert.encoder.layer.N`
_ENCODER_PATHS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                  "attention_output": "attention.output.dense", "intermediate": "intermediate.dense",
                  "output": "output.dense"}
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_EMBEDDINGS = {"word": "vocab_size", "position": "max_position_embeddings", "token_type": "type_vocab_size"}


def _check(head, seq_len: int = 1) -> None:
    if head not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}")


def _layer_widths(config, layer: int) -> tuple[int, int, int]:
    """(attention width h_n·d_head, query/key width h_n·d_qk, FFN width) of encoder layer `layer`, from the
    per-layer sizes of a pruned config (`layer_num_attention_heads`, `layer_query_key_head_sizes`,
    `layer_intermediate_sizes`; absent: the full geometry)."""
    heads, qk, d = layer_attention_sizes(config, layer)
    widths = getattr(config, "layer_intermediate_sizes", None)
    return heads * d, heads * qk, widths[layer] if widths else config.intermediate_size


def _encoder_linears(config, layer: int) -> list[tuple[str, int, int]]:
    """(binarizable name, in_features, out_features) of encoder layer `layer` (per-layer sizes when pruned)."""
    d, (a, qk, i) = config.hidden_size, _layer_widths(config, layer)
    return [("query", d, qk), ("key", d, qk), ("value", d, a), ("attention_output", a, d), ("intermediate", d, i),
            ("output", i, d)]


def count_operations(config, seq_len: int = 128, head: str | None = "sequence_classification",
                     num_labels: int | None = None) -> dict:
    """Operations of one forward pass over ONE sequence of `seq_len` tokens.

    Counted: every Linear (2·T·in·out), the two attention matmuls per layer (Q·Kᵀ and probs·V, 2·T²·D each) and the
    head. A Linear named in `config.binarized_modules` with `activation_bits` b < 32 runs as b·2·T·in·out bit
    operations (a binarized Linear at b = 32 stays full-precision FLOPs); with b < 32 the attention matmuls run as
    b²·2·T²·D bit operations (both operands quantized; same for `"softmax"` and `"bi_attention"`). Elementwise ops
    (LayerNorm, softmax, GELU, residual adds, scaling) and embedding lookups are left out, hence 22.35 G instead of
    BiBERT's 22.5 G for BERT-base at T = 128. A plain `BertConfig` counts as full precision.

    Args:
        config: a `BinaryBertConfig` or a plain `transformers.BertConfig`.
        seq_len: tokens T in the sequence.
        head: `"sequence_classification"` (pooler D→D and classifier D→num_labels on the [CLS] token),
            `"masked_lm"` (transform D→D and decoder D→vocab on all T tokens, full precision) or None (encoder only).
        num_labels: classifier outputs (default `config.num_labels`).

    Returns:
        `{"fp_flops": int, "binary_ops": int, "flops": float (= fp_flops + binary_ops / 64), "seq_len": int,
        "parts": {"linear", "attention", "head"} in FLOPs-equivalent}`.

    Raises:
        ValueError: for an unknown head or seq_len < 1.
    """
    _check(head, seq_len)
    bits = getattr(config, "activation_bits", 32)
    binarized = set(getattr(config, "binarized_modules", None) or ())
    t, d = seq_len, config.hidden_size
    totals = {"linear": [0, 0], "attention": [0, 0], "head": [0, 0]}  # part -> [fp_flops, binary_ops]

    def linear(part: str, name: str | None, tokens: int, n_in: int, n_out: int) -> None:
        ops = 2 * tokens * n_in * n_out
        if name in binarized and bits < 32:
            totals[part][1] += ops * bits
        else:
            totals[part][0] += ops

    for n in range(config.num_hidden_layers):
        for name, n_in, n_out in _encoder_linears(config, n):
            linear("linear", name, t, n_in, n_out)
        a, qk, _ = _layer_widths(config, n)
        matmuls = 2 * t * t * qk + 2 * t * t * a  # Q·Kᵀ and probs·V over the layer's kept heads and dimensions
        if bits < 32:
            totals["attention"][1] += matmuls * bits * bits
        else:
            totals["attention"][0] += matmuls
    if head == "sequence_classification":
        linear("head", "pooler", 1, d, d)
        linear("head", "classifier", 1, d, config.num_labels if num_labels is None else num_labels)
    elif head == "masked_lm":
        linear("head", None, t, d, d)
        linear("head", None, t, d, config.vocab_size)
    fp_flops = sum(fp for fp, _ in totals.values())
    binary_ops = sum(b for _, b in totals.values())
    return {"fp_flops": fp_flops, "binary_ops": binary_ops, "flops": fp_flops + binary_ops / 64, "seq_len": t,
            "parts": {part: fp + b / 64 for part, (fp, b) in totals.items()}}


def format_operations(report: dict) -> str:
    """One line, e.g. `"22.35 GFLOPs (FP 22.35 G + 0 binary ops)"` (G = 10⁹)."""
    binary = f"{report['binary_ops'] / 1e9:.2f} G" if report["binary_ops"] else "0"
    return f"{report['flops'] / 1e9:.2f} GFLOPs (FP {report['fp_flops'] / 1e9:.2f} G + {binary} binary ops)"


def _tensors(config, head, num_labels) -> list[tuple[str, int]]:
    """(checkpoint tensor name, bytes) of the packed checkpoint a model with this config writes."""
    fp = _DTYPE_BYTES[getattr(config, "fp_dtype", "float32")]
    binarized = set(getattr(config, "binarized_modules", None) or ())
    offset = getattr(config, "weight_scale", None) == "learned_offset"
    embedding_offset = (getattr(config, "embedding_weight_scale", None) or getattr(config, "weight_scale", None)) \
        == "learned_offset"
    shift_bytes = _DTYPE_BYTES[getattr(config, "activation_shift_dtype", "float32")]
    bits, scheme = getattr(config, "activation_bits", 32), getattr(config, "activation_quantizer", "sign")
    d, out = config.hidden_size, []

    def quantizer(name: str, channels: int = 0) -> None:  # step + calibrated flag (not 1-bit sign), elastic shift
        if bits < 32 and (scheme == "elastic" or bits > 1):
            out.extend([(f"{name}.step", 4), (f"{name}.calibrated", 1)])
        if bits < 32 and scheme == "elastic" and channels:
            out.append((f"{name}.shift", shift_bytes * channels))

    def packed(name: str, rows: int, cols: int, groups: int, scale_bytes: int = 4,
               has_offset: bool = offset) -> None:  # bits, α (and γ)
        out.extend([(f"{name}.weight_packed", rows * -(-cols // 8)), (f"{name}.weight_scale", scale_bytes * groups)])
        out.extend([(f"{name}.weight_offset", scale_bytes * groups)] if has_offset else [])

    def linear(name: str, target: str | None, n_in: int, n_out: int, heads: int | None = None) -> None:
        if target in binarized:
            packed(name, n_out, n_in, num_scale_groups(config, target, n_out, heads))
            quantizer(f"{name}.input_quantizer", n_in)
        else:
            out.append((f"{name}.weight", n_in * n_out * fp))
        out.append((f"{name}.bias", n_out * fp))

    def layer_norm(name: str) -> None:
        out.extend([(f"{name}.LayerNorm.weight", d * fp), (f"{name}.LayerNorm.bias", d * fp)])

    emb_bits = getattr(config, "embedding_bits", 32)
    binarized_tables = set(getattr(config, "binarized_embeddings", None) or ()) if emb_bits == 1 else set()
    for table, size_field in _EMBEDDINGS.items():
        rows, name = getattr(config, size_field), f"bert.embeddings.{table}_embeddings"
        if table in binarized_tables:
            packed(name, rows, d, rows, _DTYPE_BYTES[getattr(config, "embedding_scale_dtype", "float32")],
                   embedding_offset)
        else:
            out.append((f"{name}.weight", rows * d * (2 if emb_bits == 16 else fp)))
    layer_norm("bert.embeddings")
    for n in range(config.num_hidden_layers):
        prefix = f"bert.encoder.layer.{n}"
        heads = layer_attention_sizes(config, n)[0]
        for target, n_in, n_out in _encoder_linears(config, n):
            linear(f"{prefix}.{_ENCODER_PATHS[target]}", target, n_in, n_out, heads)
        a, qk, _ = _layer_widths(config, n)
        for part, width in (("query", qk), ("key", qk), ("value", a)):
            quantizer(f"{prefix}.attention.self.{part}_quantizer", width)
        if getattr(config, "attention_type", "softmax") == "softmax":
            quantizer(f"{prefix}.attention.self.probs_quantizer")
        layer_norm(f"{prefix}.attention.output")
        layer_norm(f"{prefix}.output")
    if head == "sequence_classification":
        linear("bert.pooler.dense", "pooler", d, d)
        linear("classifier", "classifier", d, config.num_labels if num_labels is None else num_labels)
    elif head == "masked_lm":
        linear("cls.predictions.transform.dense", None, d, d)
        layer_norm("cls.predictions.transform")
        out.append(("cls.predictions.bias", config.vocab_size * fp))
        if not getattr(config, "tie_word_embeddings", True):
            linear("cls.predictions.decoder", None, d, config.vocab_size)
        elif "word" in binarized_tables:
            raise ValueError("a binarized word table cannot be tied to the masked-LM decoder: "
                             "set tie_word_embeddings=False")
    return out


def estimate_packed_size(config, head: str | None = "sequence_classification",
                         num_labels: int | None = None) -> dict[str, float]:
    """Tensor data of the packed safetensors checkpoint (`save_pretrained`) of a model with this config, in MB.

    Binarized Linear: out·ceil(in/8) bytes of bits + 4 bytes per α group (+4 per γ group under `learned_offset`) +
    bias in `fp_dtype`; every other Linear, LayerNorm and bias in `fp_dtype`. Embedding tables: `fp_dtype` at
    `embedding_bits` 32, float16 at 16; at 1 each table in `binarized_embeddings` is rows·ceil(D/8) bytes + 4 per row
    (+4 per row with γ, i.e. under `embedding_weight_scale` or else `weight_scale` "learned_offset"; 2 and 2 with
    `embedding_scale_dtype` float16 / bfloat16), named `<table>.weight_packed` /
    `.weight_scale` / `.weight_offset` (so they count under "packed_weights" / "scales"). The MLM decoder weight is written only when `tie_word_embeddings` is False.
    Activation quantizers (activation_bits < 32) add 4 + 1 bytes per quantizer (step, calibrated flag; none for 1-bit
    "sign") and, for "elastic", 4 bytes per input channel (2 with `activation_shift_dtype` float16 / bfloat16;
    BERT-base W1A1 elastic: 0.44 MB in float32, under "other").
    Left out: the JSON header (~35 kB for BERT-base). A plain `BertConfig` counts as float32, nothing binarized.

    Args:
        config: a `BinaryBertConfig` or a plain `transformers.BertConfig`.
        head: `"sequence_classification"` (pooler + classifier), `"masked_lm"` (prediction head) or None (no head,
            no pooler).
        num_labels: classifier outputs (default `config.num_labels`).

    Returns:
        `{"packed_weights", "scales", "embeddings", "other", "total"}` in MB (10⁶ bytes).

    Raises:
        ValueError: for an unknown head, or a binarized word table tied to the masked-LM decoder.
    """
    _check(head)
    sizes = dict.fromkeys(COMPONENTS, 0)
    for name, nbytes in _tensors(config, head, num_labels):
        sizes[component_of(name)] += nbytes
    report = {k: v / 1e6 for k, v in sizes.items()}
    report["total"] = sum(sizes.values()) / 1e6
    return report


__all__ = ["HEADS", "count_operations", "estimate_packed_size", "format_operations"]
