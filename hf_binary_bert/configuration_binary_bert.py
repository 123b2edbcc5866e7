"""`BinaryBertConfig`: a `BertConfig` plus the validated binarization settings."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

from .layer_sizes import check_layer_sizes

WEIGHT_SCALES = ("mean_abs", "learned", "learned_offset")
SCALE_GRANULARITIES = ("tensor", "head", "row")
STES = ("clipped_identity", "approx_sign")
FP_DTYPES = ("float32", "float16", "bfloat16")
# Names of the Linear layers that can be binarized, and where they live in transformers' BERT.
BINARIZABLE_MODULES = (
    "query",  # encoder.layer.N.attention.self.query
    "key",  # encoder.layer.N.attention.self.key
    "value",  # encoder.layer.N.attention.self.value
    "attention_output",  # encoder.layer.N.attention.output.dense
    "intermediate",  # encoder.layer.N.intermediate.dense
    "output",  # encoder.layer.N.output.dense
    "pooler",  # pooler.dense
    "classifier",  # classifier (sequence-classification head)
)
ENCODER_MODULES = BINARIZABLE_MODULES[:6]
ACTIVATION_BITS = (32, 8, 4, 2, 1)
ACTIVATION_QUANTIZERS = ("sign", "elastic")
ACTIVATION_STEP_INITS = ("lsq", "least_squares")
ATTENTION_TYPES = ("softmax", "bi_attention")
EMBEDDING_BITS = (32, 16, 1)
BINARIZABLE_EMBEDDINGS = ("word", "position", "token_type")
CLASSIFIER_POOLINGS = ("cls", "mean")


def _check_choice(field: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"BinaryBertConfig.{field} must be one of {list(allowed)}, got {value!r}")


def _check_names(field: str, names, allowed: tuple) -> list[str]:
    """A list of names from `allowed`, duplicates dropped (order kept)."""
    if not isinstance(names, (list, tuple)):
        raise ValueError(f"BinaryBertConfig.{field} must be a list of names from {list(allowed)}, got {names!r}")
    for name in names:
        _check_choice(field, name, allowed)
    return list(dict.fromkeys(names))


# The fields that say how a BERT is binarized (the rest of a BinaryBertConfig is the BERT's architecture): read
# from a config or from the command line's `BinarizationArguments` by `binarization_kwargs`.
BINARIZATION_FIELDS = (
    "weight_scale", "scale_granularity", "binarized_modules", "ste", "fp_dtype", "activation_bits",
    "activation_quantizer", "attention_type", "embedding_bits", "binarized_embeddings", "embedding_weight_scale",
    "embedding_scale_dtype", "activation_shift_dtype", "activation_step_init",
)


def binarization_kwargs(source) -> dict:
    """`BINARIZATION_FIELDS` read from `source` (a `BinaryBertConfig`, `BinarizationArguments` or any object with
    those attributes) as keyword arguments for a `BinaryBertConfig`; the lists of names copied."""
    kwargs = {name: getattr(source, name) for name in BINARIZATION_FIELDS}
    for name in ("binarized_modules", "binarized_embeddings"):
        kwargs[name] = list(kwargs[name])
    return kwargs


@strict
class BinaryBertConfig(BertConfig):
    r"""
    Configuration of a BERT whose Linear layers are binarized (1-bit weights, W ≈ α·B + γ with B ∈ {−1, +1}).

    Every field of [`~transformers.BertConfig`] keeps its meaning; the fields below add the binarization.

    Args:
        weight_scale (`str`, *optional*, defaults to `"mean_abs"`):
            How the scale α (and offset γ) of each binarized weight is obtained.
            - `"mean_abs"`: α = ‖W‖₁ / n recomputed from the latent weight at every forward (XNOR-Net, Rastegari et
              al. 2016); B = sign(W).
            - `"learned"`: α is a trainable parameter initialised to ‖W‖₁ / n; B = sign(W).
            - `"learned_offset"`: W ≈ α·B + γ with B = sign(W − γ); γ and α are trainable, initialised to
              γ₀ = mean(W) and α₀ = mean|W − γ₀| (the blog series' learned offset).
        scale_granularity (`str`, *optional*, defaults to `"tensor"`):
            How many α (and γ) each weight matrix gets: `"tensor"` (one), `"head"` (one per attention head on the
            query/key/value projections, the blog's fix for the fused QKV; other layers get one per tensor) or
            `"row"` (one per output channel, as BiBERT).
        binarized_modules (`list[str]`, *optional*):
            Which Linear layers are binarized, by name: any of `query`, `key`, `value`, `attention_output`,
            `intermediate`, `output` (the six encoder Linears, the default), `pooler`, `classifier`.
            LayerNorm, the embeddings and the masked-LM prediction head stay full precision.
        ste (`str`, *optional*, defaults to `"clipped_identity"`):
            Straight-through estimator for ∂sign(x)/∂x: `"clipped_identity"` (1 where |x| ≤ 1, Courbariaux et al.
            2016) or `"approx_sign"` (2 − 2|x| where |x| < 1, Bi-Real Net, Liu et al. 2018).
        fp_dtype (`str`, *optional*, defaults to `"float32"`):
            dtype in which the full-precision parts (embeddings, LayerNorm, biases, heads) are written by
            `save_pretrained`: `"float32"`, `"float16"` (the blog's fp16 embeddings) or `"bfloat16"`. The model
            always runs in float32 after loading.
        activation_bits (`int`, *optional*, defaults to 32):
            Bits of the activations that enter every binarized Linear and the attention matmuls (Q, K, V and the
            attention probabilities): 32 (full precision, W1A32), 8, 4, 2 or 1 (W1A1, BiBERT). Below 32 the attention
            runs through this package's registered attention functions (eager path only, no SDPA/flash).
        activation_quantizer (`str`, *optional*, defaults to `"sign"`):
            How activations are quantized below 32 bits (`binarization/activation.py`):
            - `"sign"`: 1 bit: sign(x) ∈ {−1, +1} with the `ste` estimator (BiBERT); non-negative inputs (attention
              probabilities) become 1[x ≥ 0.5] ∈ {0, 1}. 2–8 bits: uniform quantizer with a learned step (LSQ,
              Esser et al. 2020), no shift.
            - `"elastic"`: BiT's elastic binarization (Liu et al. 2022): learned scale α and learned per-channel shift
              β; signed inputs map to {−α, +α} (1 bit) or α·{−2ᵇ⁻¹ … 2ᵇ⁻¹−1}, non-negative inputs (attention
              probabilities, the FFN input after ReLU) to {0, α} or α·{0 … 2ᵇ−1}.
        attention_type (`str`, *optional*, defaults to `"softmax"`):
            `"softmax"`: softmax attention, its probabilities quantized like a non-negative activation (with
            `"elastic"` this is BiT's binarized softmax). `"bi_attention"`: BiBERT's Bi-Attention, weights
            bool(B_Q·B_Kᵀ/√D) ∈ {0, 1} without softmax, multiplied with the quantized V.
        embedding_bits (`int`, *optional*, defaults to 32):
            32: embeddings full precision (written in `fp_dtype`); 16: written in float16 whatever `fp_dtype` (the
            blog's fp16 embeddings; a reloaded model runs on the float16-rounded tables); 1: the tables named in
            `binarized_embeddings` binarized per row, E_v ≈ α_v·sign(E_v − γ_v) + γ_v with the `weight_scale`
            scheme (BiBERT binarizes the word embeddings), packed 1 bit per value. A masked-LM model with binarized
            word embeddings needs `tie_word_embeddings=False` (its decoder stays full precision).
        binarized_embeddings (`list[str]`, *optional*, defaults to `["word"]`):
            Which tables `embedding_bits=1` binarizes: any of `word`, `position`, `token_type`.
        embedding_weight_scale (`str`, *optional*):
            How the per-row α_v (and γ_v) of the 1-bit embedding tables are obtained, one of the `weight_scale`
            schemes; None (the default): the same as `weight_scale`. `"learned"` (or `"mean_abs"`) binarizes each row
            with a scale only, E_q[v] = α_v·sign(E[v]), no offset γ_v: the form of BiT (Liu et al., NeurIPS 2022),
            whose code binarizes the word embeddings with BWN per row, α_v = mean|E[v]| and no offset added back
            (facebookresearch/bit, `transformer/utils_quant.py`: `QuantizeEmbedding` → `BwnQuantizer` with
            `embed_layerwise=False`; BiT also subtracts the whole table's mean before the sign, this package does
            not). BiT's α_v is recomputed from the row at every forward, as `"mean_abs"`; `"learned"` trains α_v from
            that value. Training, the eager path and the native runtime all compute this form; the file then holds no
            `<table>.weight_offset` (one value per token less: 2 bytes per row in float16, 0.061 MB for a MiniLM /
            BERT-base word table). The Linears keep `weight_scale`.
        embedding_scale_dtype (`str`, *optional*, defaults to `"float32"`):
            dtype in which `save_pretrained` writes the per-row scales α_v (and offsets γ_v) of the 1-bit embedding
            tables: `"float32"`, `"float16"` or `"bfloat16"`. A 1-bit word table has one α (and γ) per token, 4
            bytes each in float32 (MiniLM / BERT-base: 0.24 MB with γ, a sixth of the table's bits); in float16 they
            take half, rounded as `fp_dtype="float16"` rounds a full-precision table (relative error ≤ 2⁻¹¹). The
            Linears' α / γ (one per tensor, head or row) stay float32. The model runs in float32 after loading.
        activation_shift_dtype (`str`, *optional*, defaults to `"float32"`):
            dtype of the elastic activation shifts β (`activation_quantizer="elastic"`; one per input channel of
            every binarized Linear, one per channel of Q / K / V): `"float32"`, `"float16"` or `"bfloat16"`. Not
            storage rounding: every forward (training, eager inference, the native runtime) subtracts β rounded to
            this dtype (round to nearest even; the trained float32 β gets the straight-through gradient), and
            `save_pretrained` writes exactly those rounded values in this dtype, so a reloaded model computes what
            the trained one did. Half precision halves the shifts' bytes (4 → 2 per channel: 0.042 MB of a pruned
            MiniLM 1-1-1 file, 0.17 MB of BERT-base's). No effect without elastic shifts.
        activation_step_init (`str`, *optional*, defaults to `"lsq"`):
            How the learned step α of a 1-bit signed elastic quantizer (`activation_quantizer="elastic"`,
            `activation_bits=1`: the inputs of the binarized Linears and Q / K / V) starts from data (the first
            training batch, or `hf_binary_bert.calibrate`): `"lsq"`, α₀ = 2·mean|x − β| (LSQ's rule 2·mean|x|/√Q_p
            with Q_p = 1, as BiT initialises it: facebookresearch/bit `AlphaInit`), or `"least_squares"`, α₀ =
            mean|x − β|, the α that minimises ‖(x − β) − α·sign(x − β)‖² (XNOR-Net's activation scale, Rastegari et
            al. 2016). The products that attention takes of 1-bit Q and K are its scores, so α_Q·α_K is the softmax's
            temperature: with `"lsq"` a W1A1 MiniLM student's softmax starts at about 1 nat of entropy where its
            teacher's has 1.4–2.7, with `"least_squares"` at about 3 (and stays near the teacher's through training;
            on STS-B the score did not change: docs/distillation.md#the-1-bit-step-rule-and-the-attention-temperature).
            Other quantizers (2–8 bits, unsigned) keep LSQ's rule. Only the start differs; α is learned from there.
        classifier_pooling (`str`, *optional*, defaults to `"cls"`):
            What the pooler of `BinaryBertForSequenceClassification` reads (the name and choices of transformers'
            `ModernBertConfig.classifier_pooling`): `"cls"`, the last hidden state of the first token (BERT's
            pooler, `BertForSequenceClassification`), or `"mean"`, the mean of the last hidden states over the real
            tokens (`attention_mask` nonzero; all tokens without a mask), the pooling all-MiniLM-L6-v2 was trained
            with (sentence-transformers). The pooler's dense layer and tanh, the dropout and the classifier are the
            same in both. Other heads ignore it. Measured on STS-B W1A1 in docs/results.md#stsb-w1a1-mean-pooling.
        packed_weights (`bool`, *optional*, defaults to `False`):
            Set by `save_pretrained` in the saved config: the binarized Linears are built in their packed inference
            form (`PackedBinaryLinear`, uint8 bits + scales) instead of the training form with latent weights.
        teacher_name_or_path (`str`, *optional*):
            The full-precision BERT this model was binarized from (Hub id or local folder), set by `from_teacher`
            (after multi-step distillation, the first stage's teacher). The generated model card names it as the
            base model. Informational only.
        layer_num_attention_heads (`list[int]`, *optional*):
            Set by block-structured pruning (`hf_binary_bert.pruning`): attention heads kept in each encoder layer
            (one entry per layer, each in [1, num_attention_heads]); None: all. See `layer_sizes.py`.
        layer_intermediate_sizes (`list[int]`, *optional*):
            Set by pruning: FFN width kept in each encoder layer (each in [1, intermediate_size]); None: all.
        layer_query_key_head_sizes (`list[int]`, *optional*):
            Set by pruning: the query/key head size d_qk of each encoder layer (each in [1, hidden_size /
            num_attention_heads]; value heads keep the full size); None: all full. See `layer_sizes.py`.

    Raises:
        ValueError: at construction, for an unknown value of any field above (naming the field and the allowed
            values), for `scale_granularity="head"` when `num_attention_heads` does not divide `hidden_size`, or for
            `attention_type="bi_attention"` with `activation_bits=32`.

    Example:

    ```python
    >>> from hf_binary_bert import BinaryBertConfig, BinaryBertForMaskedLM
    >>> config = BinaryBertConfig(weight_scale="learned_offset", scale_granularity="head")
    >>> model = BinaryBertForMaskedLM(config)
    ```
    """

    model_type = "binary_bert"

    weight_scale: str = "mean_abs"
    scale_granularity: str = "tensor"
    binarized_modules: list[str] | None = None
    ste: str = "clipped_identity"
    fp_dtype: str = "float32"
    activation_bits: int = 32
    activation_quantizer: str = "sign"
    attention_type: str = "softmax"
    embedding_bits: int = 32
    binarized_embeddings: list[str] | None = None
    embedding_weight_scale: str | None = None
    embedding_scale_dtype: str = "float32"
    activation_shift_dtype: str = "float32"
    activation_step_init: str = "lsq"
    classifier_pooling: str = "cls"
    packed_weights: bool = False
    teacher_name_or_path: str | None = None
    layer_num_attention_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    layer_query_key_head_sizes: list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.binarized_modules is None:
            self.binarized_modules = list(ENCODER_MODULES)
        _check_choice("weight_scale", self.weight_scale, WEIGHT_SCALES)
        _check_choice("scale_granularity", self.scale_granularity, SCALE_GRANULARITIES)
        _check_choice("ste", self.ste, STES)
        _check_choice("fp_dtype", self.fp_dtype, FP_DTYPES)
        self.binarized_modules = _check_names("binarized_modules", self.binarized_modules, BINARIZABLE_MODULES)
        _check_choice("activation_bits", self.activation_bits, ACTIVATION_BITS)
        _check_choice("activation_quantizer", self.activation_quantizer, ACTIVATION_QUANTIZERS)
        _check_choice("attention_type", self.attention_type, ATTENTION_TYPES)
        _check_choice("embedding_bits", self.embedding_bits, EMBEDDING_BITS)
        if self.embedding_weight_scale is not None:
            _check_choice("embedding_weight_scale", self.embedding_weight_scale, WEIGHT_SCALES)
        _check_choice("embedding_scale_dtype", self.embedding_scale_dtype, FP_DTYPES)
        _check_choice("activation_shift_dtype", self.activation_shift_dtype, FP_DTYPES)
        _check_choice("activation_step_init", self.activation_step_init, ACTIVATION_STEP_INITS)
        _check_choice("classifier_pooling", self.classifier_pooling, CLASSIFIER_POOLINGS)
        if self.attention_type == "bi_attention" and self.activation_bits == 32:
            raise ValueError(
                "BinaryBertConfig.attention_type='bi_attention' binarizes Q, K and V: it needs activation_bits < 32"
            )
        if self.binarized_embeddings is None:
            self.binarized_embeddings = ["word"]
        self.binarized_embeddings = _check_names("binarized_embeddings", self.binarized_embeddings, BINARIZABLE_EMBEDDINGS)
        if self.scale_granularity == "head" and self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"BinaryBertConfig.scale_granularity='head' needs num_attention_heads ({self.num_attention_heads}) "
                f"to divide hidden_size ({self.hidden_size}); use one of ['tensor', 'row'] instead"
            )
        check_layer_sizes(self, "BinaryBertConfig")
        super().__post_init__(**kwargs)

    @property
    def binarization(self) -> dict:
        """The binarization settings alone, as keyword arguments for another `BinaryBertConfig`."""
        return binarization_kwargs(self)

    def to_bert_config(self) -> BertConfig:
        """The plain `BertConfig` of the same architecture (binarization fields and this package's bookkeeping
        dropped): the teacher's shape, used by `to_bert()` and the model card's size comparison."""
        dropped = (*self.binarization, "classifier_pooling", "packed_weights", "teacher_name_or_path", "model_type",
                   "architectures", "transformers_version", "_name_or_path", "dtype", "auto_map")
        return BertConfig(**{k: v for k, v in self.to_dict().items() if k not in dropped})

    @property
    def embedding_scale_scheme(self) -> str:
        """The `weight_scale` scheme of the 1-bit embedding tables: `embedding_weight_scale`, else `weight_scale`."""
        return self.embedding_weight_scale or self.weight_scale

    @property
    def quantized_attention(self) -> str | None:
        """Name of the registered attention function this config needs (`"bi_attention"` or
        `"binary_bert_softmax"`), or None when the attention runs in full precision (any transformers
        implementation)."""
        if self.attention_type == "bi_attention":
            return "bi_attention"
        if self.activation_bits < 32:
            return "binary_bert_softmax"
        return None


__all__ = ["BinaryBertConfig"]
