"""Analytic operation counts and packed-checkpoint size estimates (`hf_binary_bert/flops.py`)."""

import pytest
from conftest import tiny_bert_config, tiny_config
from transformers import BertConfig, BertForSequenceClassification

from hf_binary_bert import BinaryBertConfig, BinaryBertForMaskedLM, BinaryBertForSequenceClassification
from hf_binary_bert.flops import count_operations, estimate_packed_size, format_operations
from hf_binary_bert.format import COMPONENTS, component_of, read_safetensors_header

# BERT-base geometry at T = 128 tokens, encoder only, computed by hand.
T, D, I, L, V, P = 128, 768, 3072, 12, 30522, 512
LINEAR_OPS = L * (4 * 2 * T * D * D + 2 * T * D * I + 2 * T * I * D)  # Q, K, V, attention output, FFN in, FFN out
ATTENTION_OPS = L * (2 * T * T * D + 2 * T * T * D)  # Q·Kᵀ and probs·V
FP_FLOPS = 2 * 128 * (4 * 768**2 + 2 * 768 * 3072) * 12 + 2 * 2 * 128**2 * 768 * 12


def _w1(bits, **kwargs):
    return BinaryBertConfig(activation_bits=bits, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Operations


def test_full_precision_bert_base():
    assert LINEAR_OPS + ATTENTION_OPS == FP_FLOPS == 22_347_251_712  # BiBERT: 22.5 G with the elementwise ops
    for config in (BertConfig(), _w1(32)):  # a binarized Linear fed float activations is still float FLOPs
        report = count_operations(config, seq_len=128, head=None)
        assert report == {"fp_flops": FP_FLOPS, "binary_ops": 0, "flops": FP_FLOPS, "seq_len": 128,
                          "parts": {"linear": LINEAR_OPS, "attention": ATTENTION_OPS, "head": 0}}
    assert format_operations(report) == "22.35 GFLOPs (FP 22.35 G + 0 binary ops)"


@pytest.mark.parametrize(
    "bits, expected",
    [(1, 349_175_808), (4, 1_509_949_440), (8, 3_321_888_768)],  # BiBERT W1A1: 0.4 G; BinaryBERT W1A4: 1.5 G
)
def test_binarized_bert_base(bits, expected):
    report = count_operations(_w1(bits), seq_len=128, head=None)
    assert report["fp_flops"] == 0
    assert report["binary_ops"] == LINEAR_OPS * bits + ATTENTION_OPS * bits**2
    assert report["flops"] == (LINEAR_OPS * bits + ATTENTION_OPS * bits**2) / 64 == expected
    assert report["parts"] == {"linear": LINEAR_OPS * bits / 64, "attention": ATTENTION_OPS * bits**2 / 64, "head": 0}
    if bits == 1:
        assert FP_FLOPS / report["flops"] == 64
        assert format_operations(report) == "0.35 GFLOPs (FP 0.00 G + 22.35 G binary ops)"
    # same count for BiBERT's Bi-Attention
    assert count_operations(_w1(bits, attention_type="bi_attention"), head=None) == report


def test_partly_binarized_and_heads():
    config = _w1(1, binarized_modules=["intermediate", "output", "classifier"], num_labels=3)
    report = count_operations(config, seq_len=16, head="sequence_classification")
    d, i, t = 768, 3072, 16
    fp = 12 * (4 * 2 * t * d * d) + 2 * d * d  # Q, K, V, attention output; pooler on [CLS]
    binary = 12 * (2 * t * d * i * 2) + 12 * 2 * (2 * t * t * d) + 2 * d * 3  # FFN; attention; classifier on [CLS]
    assert (report["fp_flops"], report["binary_ops"]) == (fp, binary)
    assert report["flops"] == pytest.approx(sum(report["parts"].values()))
    assert report["parts"]["head"] == 2 * d * d + 2 * d * 3 / 64
    assert count_operations(config, seq_len=16, num_labels=5)["parts"]["head"] == 2 * d * d + 2 * d * 5 / 64

    mlm = count_operations(BertConfig(), seq_len=16, head="masked_lm")
    assert mlm["parts"]["head"] == 2 * t * d * d + 2 * t * d * 30522
    assert mlm["fp_flops"] == 12 * (4 * 2 * t * d * d + 2 * 2 * t * d * i + 2 * 2 * t * t * d) + mlm["parts"]["head"]


@pytest.mark.parametrize("kwargs", [{"head": "token_classification"}, {"seq_len": 0}, {"seq_len": 1.5}, {"seq_len": True}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        count_operations(BertConfig(), **kwargs)
    with pytest.raises(ValueError, match="head"):
        estimate_packed_size(BertConfig(), head="qa")


# ------------------------------------------------------------------------------------------------------------------
# Packed size: estimate == tensor bytes of the file save_pretrained writes


def _file_bytes(directory) -> dict[str, int]:
    header = read_safetensors_header(directory / "model.safetensors")
    sizes = dict.fromkeys(COMPONENTS, 0)
    for name, info in header.items():
        sizes[component_of(name)] += info["nbytes"]
    return sizes


@pytest.mark.parametrize(
    "model_class, head, kwargs",
    [
        (BinaryBertForSequenceClassification, "sequence_classification", {}),
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"weight_scale": "learned_offset", "scale_granularity": "row", "fp_dtype": "float16"}),
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"weight_scale": "learned", "scale_granularity": "head", "fp_dtype": "bfloat16", "num_labels": 3,
          "binarized_modules": ["query", "value", "intermediate", "pooler", "classifier"]}),
        (BinaryBertForMaskedLM, "masked_lm", {"weight_scale": "learned_offset", "scale_granularity": "head"}),
        (BinaryBertForMaskedLM, "masked_lm", {"fp_dtype": "float16", "activation_bits": 4}),
        # activation quantizers: 1-bit sign has no parameters, elastic adds a shift per input channel
        (BinaryBertForSequenceClassification, "sequence_classification", {"activation_bits": 1}),
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"activation_bits": 1, "activation_quantizer": "elastic", "binarized_modules": ["query", "pooler"]}),
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"activation_bits": 2, "activation_quantizer": "elastic", "attention_type": "bi_attention"}),
        # embeddings: 1 bit (packed + α per row, + γ with the offset scheme) and float16
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"embedding_bits": 1, "binarized_embeddings": ["word", "position", "token_type"],
          "weight_scale": "learned_offset", "fp_dtype": "float16"}),
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"embedding_bits": 1, "binarized_embeddings": ["word", "position"], "weight_scale": "learned_offset",
          "fp_dtype": "float16", "embedding_scale_dtype": "float16", "binarized_modules": [
              "query", "key", "value", "attention_output", "intermediate", "output", "pooler"]}),
        # the tables' own scheme (α only: no γ per row) and the elastic shifts in half precision
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"embedding_bits": 1, "binarized_embeddings": ["word", "position", "token_type"],
          "weight_scale": "learned_offset", "embedding_weight_scale": "learned", "fp_dtype": "float16",
          "embedding_scale_dtype": "float16", "activation_bits": 1, "activation_quantizer": "elastic",
          "activation_shift_dtype": "float16"}),
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"embedding_bits": 1, "weight_scale": "learned", "embedding_weight_scale": "learned_offset",
          "activation_bits": 2, "activation_quantizer": "elastic", "activation_shift_dtype": "bfloat16"}),
        (BinaryBertForSequenceClassification, "sequence_classification", {"embedding_bits": 16, "fp_dtype": "bfloat16"}),
        (BinaryBertForMaskedLM, "masked_lm", {"embedding_bits": 1, "tie_word_embeddings": False, "activation_bits": 1}),
        # pruned: per-layer heads and FFN widths (per-head α, elastic shifts over the kept heads' channels)
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"layer_num_attention_heads": [3, 1], "layer_intermediate_sizes": [17, 37], "weight_scale": "learned_offset",
          "scale_granularity": "head", "activation_bits": 1, "activation_quantizer": "elastic"}),
        (BinaryBertForMaskedLM, "masked_lm", {"layer_intermediate_sizes": [5, 20], "activation_bits": 4}),
        # pruned query/key dimensions: Q/K rows h·d_qk, per-head α over d_qk rows, Q/K shifts over h·d_qk channels
        (BinaryBertForSequenceClassification, "sequence_classification",
         {"layer_num_attention_heads": [3, 4], "layer_query_key_head_sizes": [5, 1], "weight_scale": "learned_offset",
          "scale_granularity": "head", "activation_bits": 1, "activation_quantizer": "elastic"}),
    ],
)
def test_estimate_matches_saved_checkpoint(tmp_path, model_class, head, kwargs):
    config = tiny_config(**kwargs)
    model_class(config).save_pretrained(tmp_path)
    measured = _file_bytes(tmp_path)
    estimate = estimate_packed_size(config, head=head)
    assert round(estimate["total"] * 1e6) == sum(measured.values())
    assert {k: round(estimate[k] * 1e6) for k in COMPONENTS} == measured


def test_estimate_matches_full_precision_bert(tmp_path):
    config = tiny_bert_config()
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    assert round(estimate_packed_size(config)["total"] * 1e6) == sum(_file_bytes(tmp_path).values())
    assert estimate_packed_size(config)["packed_weights"] == estimate_packed_size(config)["scales"] == 0


def test_bert_base_w1_fp16_masked_lm_size():
    """The BERT-base packed MLM checkpoint measured 59.81 MB with its header (test_modeling.py, checkpoint-format.md)."""
    packed = L * (4 * D * (D // 8) + I * (D // 8) + D * (I // 8))
    scales = L * 6 * 4
    encoder_fp16 = L * (4 * D + I + D + 2 * 2 * D) * 2  # 6 biases, 2 LayerNorms
    embeddings = (V + P + 2) * D * 2 + 2 * D * 2  # 3 tables + LayerNorm
    mlm_head = (D * D + D + 2 * D + V) * 2  # transform dense, its LayerNorm, decoder bias (decoder weight tied)
    total = packed + scales + encoder_fp16 + embeddings + mlm_head
    assert total == 59_776_404
    estimate = estimate_packed_size(BinaryBertConfig(fp_dtype="float16"), head="masked_lm")
    assert estimate["total"] == pytest.approx(total / 1e6, abs=0.01)
    assert estimate["packed_weights"] == pytest.approx(packed / 1e6)
    assert estimate["embeddings"] == pytest.approx(embeddings / 1e6)
    assert 59.81 - 0.1 < estimate["total"] < 59.81  # the measured file adds its JSON header (~35 kB)


def test_bert_base_binarized_embeddings_size():
    """BiBERT's 1-1-1 (W1 E1 A1, 1-bit sign activations: no quantizer parameters), float32, by hand."""
    config = BinaryBertConfig(activation_bits=1, embedding_bits=1)  # binarized_embeddings defaults to ["word"]
    word = V * (D // 8) + 4 * V  # packed bits + one float32 α per row
    other_tables = (P + 2) * D * 4 + 2 * D * 4  # position, token type, LayerNorm
    encoder = L * (4 * D * (D // 8) + I * (D // 8) + D * (I // 8)) + L * 6 * 4 + L * (4 * D + I + D + 4 * D) * 4
    head = (D * D + D) * 4 + (D * 2 + 2) * 4  # pooler, classifier
    assert word + other_tables + encoder + head == 18_102_224
    assert estimate_packed_size(config)["total"] == pytest.approx(18_102_224 / 1e6)
    offset = BinaryBertConfig(embedding_bits=1, binarized_embeddings=["word", "position"],
                              weight_scale="learned_offset", fp_dtype="float16")
    tables = (V + P) * (D // 8 + 8) + 2 * D * 2  # 2 binarized tables with α and γ per row; token type in float16
    assert estimate_packed_size(offset, head=None)["total"] == pytest.approx(
        (tables + 2 * D * 2 + L * (4 * D * (D // 8) + I * (D // 8) + D * (I // 8)) + L * 6 * 8
         + L * (4 * D + I + D + 4 * D) * 2) / 1e6)
    # embedding_bits 16: tables in float16 whatever fp_dtype; LayerNorm stays in fp_dtype
    half = estimate_packed_size(BinaryBertConfig(embedding_bits=16), head=None)
    assert half["embeddings"] == pytest.approx(((V + P + 2) * D * 2 + 2 * D * 4) / 1e6)
    # a binarized word table cannot be tied to the MLM decoder: the decoder weight and bias are written
    mlm = estimate_packed_size(BinaryBertConfig(embedding_bits=1, tie_word_embeddings=False), head="masked_lm")
    mlm_tied_fp = estimate_packed_size(BinaryBertConfig(), head="masked_lm")
    assert mlm["total"] == pytest.approx(mlm_tied_fp["total"] + (word - V * D * 4 + (V * D + V) * 4) / 1e6)
    with pytest.raises(ValueError, match="tie_word_embeddings=False"):
        estimate_packed_size(BinaryBertConfig(embedding_bits=1), head="masked_lm")


def test_bert_base_elastic_quantizer_size():
    """BiT's elastic quantizers: step (4 B) + calibrated flag (1 B) each, shift per input channel (4 B)."""
    base = estimate_packed_size(BinaryBertConfig(activation_bits=1), head=None)  # 1-bit sign: no parameters
    assert base == estimate_packed_size(BinaryBertConfig(), head=None)
    elastic = estimate_packed_size(BinaryBertConfig(activation_bits=1, activation_quantizer="elastic"), head=None)
    per_layer = 10 * (4 + 1) + (4 * D + D + I) * 4 + 3 * D * 4  # 6 Linear inputs + Q, K, V + probs; shifts
    assert per_layer * L == 442_968
    assert elastic["other"] - base["other"] == pytest.approx(442_968 / 1e6)
    assert elastic["total"] - base["total"] == pytest.approx(442_968 / 1e6)


def test_operations_of_a_pruned_config_follow_its_per_layer_sizes():
    """Layer n with h_n heads (width a_n = h_n·d/H) and FFN width I_n: 2·T·(3·d·a_n + a_n·d + 2·d·I_n) for its Linears
    and 2·2·T²·a_n for Q·Kᵀ and probs·V, full precision."""
    config = tiny_bert_config(layer_num_attention_heads=[3, 1], layer_intermediate_sizes=[17, 37])
    t, d = 10, 32
    expected_linear = sum(2 * t * (4 * d * a + 2 * d * i) for a, i in ((24, 17), (8, 37)))
    report = count_operations(config, seq_len=t, head=None)
    assert report["parts"]["linear"] == expected_linear
    assert report["parts"]["attention"] == sum(4 * t * t * a for a in (24, 8))


def test_operations_of_pruned_query_key_head_sizes():
    """Layer n with h_n heads of query/key size d_qk,n: Q and K are [h_n·d_qk,n, d], and Q·Kᵀ costs 2·T²·h_n·d_qk,n
    (probs·V keeps 2·T²·h_n·d)."""
    config = tiny_bert_config(layer_num_attention_heads=[3, 4], layer_query_key_head_sizes=[5, 1])
    t, d = 10, 32
    expected_linear = sum(2 * t * (2 * d * qk + 2 * d * a + 2 * d * 37) for a, qk in ((24, 15), (32, 4)))
    report = count_operations(config, seq_len=t, head=None)
    assert report["parts"]["linear"] == expected_linear
    assert report["parts"]["attention"] == sum(2 * t * t * qk + 2 * t * t * a for a, qk in ((24, 15), (32, 4)))
