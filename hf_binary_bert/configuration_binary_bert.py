"""`BinaryBertConfig`: a `BertConfig` plus the validated binarization settings."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

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


def _check_choice(field: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"BinaryBertConfig.{field} must be one of {list(allowed)}, got {value!r}")


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
        packed_weights (`bool`, *optional*, defaults to `False`):
            Set by `save_pretrained` in the saved config: the binarized Linears are built in their packed inference
            form (`PackedBinaryLinear`, uint8 bits + scales) instead of the training form with latent weights.

    Raises:
        ValueError: at construction, for an unknown value of any field above (naming the field and the allowed
            values), or for `scale_granularity="head"` when `num_attention_heads` does not divide `hidden_size`.

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
    packed_weights: bool = False

    def __post_init__(self, **kwargs):
        if self.binarized_modules is None:
            self.binarized_modules = list(ENCODER_MODULES)
        _check_choice("weight_scale", self.weight_scale, WEIGHT_SCALES)
        _check_choice("scale_granularity", self.scale_granularity, SCALE_GRANULARITIES)
        _check_choice("ste", self.ste, STES)
        _check_choice("fp_dtype", self.fp_dtype, FP_DTYPES)
        if not isinstance(self.binarized_modules, (list, tuple)):
            raise ValueError(
                f"BinaryBertConfig.binarized_modules must be a list of names from {list(BINARIZABLE_MODULES)}, "
                f"got {self.binarized_modules!r}"
            )
        for name in self.binarized_modules:
            _check_choice("binarized_modules", name, BINARIZABLE_MODULES)
        self.binarized_modules = list(dict.fromkeys(self.binarized_modules))
        if self.scale_granularity == "head" and self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"BinaryBertConfig.scale_granularity='head' needs num_attention_heads ({self.num_attention_heads}) "
                f"to divide hidden_size ({self.hidden_size}); use one of ['tensor', 'row'] instead"
            )
        super().__post_init__(**kwargs)

    @property
    def binarization(self) -> dict:
        """The binarization settings alone, as keyword arguments for another `BinaryBertConfig`."""
        return {
            "weight_scale": self.weight_scale,
            "scale_granularity": self.scale_granularity,
            "binarized_modules": list(self.binarized_modules),
            "ste": self.ste,
            "fp_dtype": self.fp_dtype,
        }


__all__ = ["BinaryBertConfig"]
