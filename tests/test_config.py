import dataclasses

import pytest
from conftest import tiny_config
from transformers import AutoConfig, BertConfig

from hf_binary_bert import BinaryBertConfig


def test_defaults_binarize_the_six_encoder_linears():
    config = BinaryBertConfig()
    assert config.model_type == "binary_bert"
    assert config.binarized_modules == ["query", "key", "value", "attention_output", "intermediate", "output"]
    assert (config.weight_scale, config.scale_granularity, config.ste, config.fp_dtype) == (
        "mean_abs", "tensor", "clipped_identity", "float32",
    )


@pytest.mark.parametrize(
    "field, value",
    [("weight_scale", "median"), ("scale_granularity", "channel"), ("ste", "tanh"), ("fp_dtype", "int8"),
     ("binarized_modules", ["query", "embeddings"]), ("embedding_scale_dtype", "int8"),
     ("embedding_weight_scale", "alpha_only"), ("activation_shift_dtype", "float8")],
)
def test_unknown_values_raise_naming_field_and_choices(field, value):
    with pytest.raises(ValueError, match=rf"BinaryBertConfig\.{field} must be one of \[") as err:
        BinaryBertConfig(**{field: value})
    assert repr(value if not isinstance(value, list) else value[-1]) in str(err.value)


def test_head_granularity_needs_divisible_hidden_size():
    with pytest.raises(ValueError, match=r"scale_granularity='head'.*num_attention_heads \(5\).*hidden_size \(32\)"):
        BinaryBertConfig(hidden_size=32, num_attention_heads=5, scale_granularity="head")
    assert BinaryBertConfig(hidden_size=30, num_attention_heads=5, scale_granularity="tensor").hidden_size == 30


def test_round_trip_through_auto_config(tmp_path):
    config = tiny_config(weight_scale="learned_offset", scale_granularity="row", ste="approx_sign", fp_dtype="bfloat16")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, BinaryBertConfig)
    assert loaded.binarization == config.binarization
    assert loaded.hidden_size == 32


def test_binarization_arguments_give_the_student_every_binarization_field():
    from hf_binary_bert.configuration_binary_bert import BINARIZATION_FIELDS
    from hf_binary_bert.distillation import BinarizationArguments

    args = BinarizationArguments(
        weight_scale="learned_offset", scale_granularity="head", activation_bits=4,
        activation_quantizer="elastic", embedding_bits=1, binarized_embeddings=["word", "position"],
        embedding_scale_dtype="float16", activation_shift_dtype="float16", hidden_act="relu",
    )
    fields = args.binarization(activation_bits=1)
    assert set(fields) == set(BINARIZATION_FIELDS) | {"hidden_act"}
    # a field added to the config or to the arguments is a binarization field, or named here as something else
    added = set(BinaryBertConfig().to_dict()) - set(BertConfig().to_dict())
    bookkeeping = {"layer_intermediate_sizes", "layer_num_attention_heads", "layer_query_key_head_sizes",
                   "packed_weights", "teacher_name_or_path"}
    head = {"classifier_pooling"}  # the task head's architecture, set only when given (like the BERT fields below)
    assert added - bookkeeping - head == set(BINARIZATION_FIELDS)
    bert_fields = {"hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob"}
    assert {f.name for f in dataclasses.fields(BinarizationArguments)} - bert_fields - head - {"multi_step"} == set(
        BINARIZATION_FIELDS)
    assert fields["activation_bits"] == 1 and args.binarization()["activation_bits"] == 4
    student = BinaryBertConfig(**fields)
    assert {**student.binarization, "hidden_act": student.hidden_act} == {**args.binarization(), "activation_bits": 1}
    assert student.hidden_act == "relu" and student.binarized_embeddings == ["word", "position"]
    fields["binarized_modules"].append("pooler")  # a copy: the arguments keep their own list
    assert "pooler" not in args.binarized_modules


def test_student_dropout_arguments_reach_every_stage_and_are_checked():
    from torch import nn
    from transformers import BertForSequenceClassification

    from hf_binary_bert import BinaryBertForSequenceClassification
    from hf_binary_bert.distillation import BinarizationArguments

    assert "hidden_dropout_prob" not in BinarizationArguments().binarization()  # default: the teacher's
    args = BinarizationArguments(activation_bits=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.05,
                                 multi_step="W1A4,W1A1")
    teacher = BertForSequenceClassification(BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    start = teacher
    for bits in args.stage_bits():  # each stage's student from the previous one, as distill builds them
        start = BinaryBertForSequenceClassification.from_teacher(start, **args.binarization(bits))
        assert (start.config.hidden_dropout_prob, start.config.attention_probs_dropout_prob) == (0.0, 0.05)
        dropouts = [(".attention.self." in name, m.p) for name, m in start.named_modules() if isinstance(m, nn.Dropout)]
        attention, other = ({p for in_self, p in dropouts if in_self is flag} for flag in (True, False))
        assert (attention, other) == ({0.05}, {0.0})  # hidden, embeddings and classifier dropout: hidden_dropout_prob
        assert start.config.activation_bits == bits
    for name, value in [("hidden_dropout_prob", 1.0), ("attention_probs_dropout_prob", -0.1)]:
        with pytest.raises(ValueError, match=name):
            BinarizationArguments(**{name: value})
