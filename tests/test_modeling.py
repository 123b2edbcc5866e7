import json
import struct

import pytest
import torch
import transformers
from conftest import HEADS, head_inputs, head_output, tiny_bert_config, tiny_config
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
)

import hf_binary_bert as hb
from hf_binary_bert import (
    BinaryBertConfig,
    BinaryBertForMaskedLM,
    BinaryBertForSequenceClassification,
    BinaryBertModel,
    BinaryLinear,
    PackedBinaryLinear,
)

ENCODER_LINEARS = 6


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _round_fp_parts(model, dtype):
    """The saved model after rounding its full-precision parts (not the scales) to `dtype`."""
    with torch.no_grad():
        for module in model.modules():
            for pname, p in module.named_parameters(recurse=False):
                if isinstance(module, BinaryLinear) and pname in ("weight", "weight_scale", "weight_offset"):
                    continue
                p.copy_(p.to(dtype).float())


def test_swaps_exactly_the_configured_linears():
    model = BinaryBertForSequenceClassification(tiny_config(num_labels=3))
    names = sorted(model.binary_modules())
    assert len(names) == ENCODER_LINEARS * 2
    assert all(n.startswith("bert.encoder.layer.") for n in names)
    assert type(model.bert.pooler.dense) is torch.nn.Linear and type(model.classifier) is torch.nn.Linear
    model = BinaryBertForSequenceClassification(tiny_config(binarized_modules=["query", "pooler", "classifier"]))
    assert sorted(model.binary_modules()) == ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query", "bert.pooler.dense", "classifier"]


def test_head_granularity_gives_one_scale_per_head_on_qkv_only():
    model = BinaryBertModel(tiny_config(weight_scale="learned", scale_granularity="head"))
    layer = model.encoder.layer[0]
    assert layer.attention.self.value.weight_scale.shape == (4,)
    assert layer.intermediate.dense.weight_scale.shape == (1,)
    model = BinaryBertModel(tiny_config(weight_scale="learned", scale_granularity="row"))
    assert model.encoder.layer[0].intermediate.dense.weight_scale.shape == (37,)


@pytest.mark.parametrize("scheme", ["mean_abs", "learned", "learned_offset"])
@pytest.mark.parametrize("granularity", ["tensor", "head", "row"])
def test_packed_save_then_auto_reload_is_exact(tmp_path, input_ids, scheme, granularity):
    torch.manual_seed(0)
    model = BinaryBertForMaskedLM(tiny_config(weight_scale=scheme, scale_granularity=granularity))
    # move learned scales away from their initial values so that the test sees them stored
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BinaryLinear) and scheme != "mean_abs":
                m.weight_scale.mul_(1.7)
    expected = _logits(model, input_ids)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert "bert.encoder.layer.0.attention.self.query.weight_packed" in saved
    assert not any(k.endswith("attention.self.query.weight") for k in saved)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert isinstance(loaded, BinaryBertForMaskedLM) and loaded.config.packed_weights
    assert isinstance(loaded.bert.encoder.layer[1].output.dense, PackedBinaryLinear)
    assert torch.equal(_logits(loaded, input_ids), expected)
    assert not model.config.packed_weights  # saving does not change the model in memory


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_packed_save_then_auto_reload_is_exact(tmp_path, input_ids, head):
    """Each head (W1A1 BiT, learned offsets per head) saves packed and reloads through its Auto class with equal
    outputs; the head's own layers (classifier, qa_outputs) are in the file in full precision."""
    auto, _, kwargs = HEADS[head]
    torch.manual_seed(0)
    model = getattr(hb, head)(tiny_config(weight_scale="learned_offset", scale_granularity="head", activation_bits=1,
                                          activation_quantizer="elastic", **kwargs))
    inputs = head_inputs(head, input_ids)
    model.train()(**inputs)  # calibrates the activation quantizers
    expected = head_output(model.eval()(**inputs))
    model.save_pretrained(tmp_path)
    loaded = getattr(transformers, auto).from_pretrained(tmp_path)
    assert type(loaded) is getattr(hb, head) and loaded.config.packed_weights
    assert isinstance(loaded.bert.encoder.layer[1].output.dense, PackedBinaryLinear)
    with torch.no_grad():  # the packed reference forward: equal up to float rounding of α·B + γ
        torch.testing.assert_close(head_output(loaded.eval().set_inference_kernel("reference")(**inputs)), expected,
                                   rtol=0, atol=1e-6)
    saved = load_file(tmp_path / "model.safetensors")
    head_keys = {k for k in saved if not k.startswith("bert.")}
    own = {name for name, _ in model.named_parameters() if not name.startswith("bert.")}
    assert head_keys == own and own  # MLM: cls.predictions.*, others: classifier / qa_outputs


@pytest.mark.parametrize("fp_dtype, torch_dtype, stored", [("float16", torch.float16, "F16"), ("bfloat16", torch.bfloat16, "BF16")])
def test_half_precision_parts_equal_the_rounded_model(tmp_path, input_ids, fp_dtype, torch_dtype, stored):
    torch.manual_seed(0)
    model = BinaryBertForSequenceClassification(tiny_config(weight_scale="learned_offset", fp_dtype=fp_dtype, num_labels=2))
    model.save_pretrained(tmp_path)
    header_len = struct.unpack("<Q", (tmp_path / "model.safetensors").read_bytes()[:8])[0]
    header = json.loads((tmp_path / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert header["bert.embeddings.word_embeddings.weight"]["dtype"] == stored
    assert header["bert.encoder.layer.0.attention.self.key.weight_scale"]["dtype"] == "F32"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.dtype == torch.float32
    _round_fp_parts(model, torch_dtype)
    assert torch.equal(_logits(loaded, input_ids), _logits(model, input_ids))


def test_base_model_loads_from_masked_lm_checkpoint(tmp_path, input_ids):
    model = BinaryBertForMaskedLM(tiny_config())
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, BinaryBertModel)
    with torch.no_grad():
        expected = model.eval().bert(input_ids=input_ids).last_hidden_state
        assert torch.equal(base.eval()(input_ids=input_ids).last_hidden_state, expected)


def test_training_form_checkpoint_round_trip_and_unfreeze(tmp_path, input_ids):
    model = BinaryBertForMaskedLM(tiny_config(weight_scale="learned"))
    model.save_pretrained(tmp_path / "latent", packed=False)
    latent = BinaryBertForMaskedLM.from_pretrained(tmp_path / "latent")
    assert isinstance(latent.bert.encoder.layer[0].attention.self.query, BinaryLinear)
    assert torch.equal(_logits(latent, input_ids), _logits(model, input_ids))
    model.save_pretrained(tmp_path / "packed")
    packed = BinaryBertForMaskedLM.from_pretrained(tmp_path / "packed")
    with pytest.raises(ValueError, match="unfreeze"):
        packed.save_pretrained(tmp_path / "x", packed=False)
    packed.unfreeze()
    assert not packed.config.packed_weights
    assert torch.allclose(_logits(packed, input_ids), _logits(model, input_ids), atol=1e-5)
    packed.freeze()
    assert torch.allclose(_logits(packed, input_ids), _logits(model, input_ids), atol=1e-5)


def test_bert_base_packed_checkpoint_size(tmp_path):
    model = BinaryBertForMaskedLM(BinaryBertConfig(fp_dtype="float16"))
    model.save_pretrained(tmp_path)
    report = hb.checkpoint_size_report(tmp_path)
    assert report["total"] <= 61.0 and report["total_mib"] <= 58.0, report
    # 85M encoder weights at 1 bit each
    assert report["packed_weights"] == pytest.approx(12 * (4 * 768 * 96 + 2 * 768 * 3072 // 8) / 1e6)
    assert report["embeddings"] == pytest.approx((30522 + 512 + 2) * 768 * 2 / 1e6 + 2 * 768 * 2 / 1e6)
    assert sum(report[k] for k in ("packed_weights", "scales", "embeddings", "other", "header")) == pytest.approx(report["total"])


# ------------------------------------------------------------------------------------------------------------------
# Malformed checkpoints


@pytest.fixture
def packed_dir(tmp_path):
    model = BinaryBertForMaskedLM(tiny_config(weight_scale="learned_offset"))
    model.save_pretrained(tmp_path)
    return tmp_path


def _rewrite(directory, edit):
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_missing_scale_raises(packed_dir):
    _rewrite(packed_dir, lambda t: t.pop("bert.encoder.layer.1.intermediate.dense.weight_scale"))
    with pytest.raises(ValueError, match=r"missing tensor 'bert\.encoder\.layer\.1\.intermediate\.dense\.weight_scale'"):
        AutoModelForMaskedLM.from_pretrained(packed_dir)


def test_wrong_packed_length_raises(packed_dir):
    key = "bert.encoder.layer.0.attention.self.value.weight_packed"
    _rewrite(packed_dir, lambda t: t.__setitem__(key, t[key][:, :-1].contiguous()))
    with pytest.raises(ValueError, match=rf"tensor '{key}' has shape \[32, 3\], expected \[32, 4\]"):
        AutoModelForMaskedLM.from_pretrained(packed_dir)


def test_wrong_dtype_raises(packed_dir):
    key = "bert.encoder.layer.0.output.dense.weight_packed"
    _rewrite(packed_dir, lambda t: t.__setitem__(key, t[key].float()))
    with pytest.raises(ValueError, match=rf"tensor '{key}' has dtype F32, expected U8"):
        AutoModelForMaskedLM.from_pretrained(packed_dir)


def test_truncated_file_raises(packed_dir):
    path = packed_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated safetensors file"):
        AutoModelForMaskedLM.from_pretrained(packed_dir)


def test_config_that_does_not_match_the_tensors_raises(packed_dir):
    config = json.loads((packed_dir / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (packed_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected tensor 'bert\.encoder\.layer\.1\."):
        AutoModelForMaskedLM.from_pretrained(packed_dir)
    config["num_hidden_layers"], config["scale_granularity"] = 2, "row"
    (packed_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"weight_(scale|offset)' has shape \[1\], expected \[(32|37)\]"):
        AutoModelForMaskedLM.from_pretrained(packed_dir)


def test_pickle_checkpoints_are_refused(tmp_path):
    BinaryBertForMaskedLM(tiny_config()).config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="only safetensors checkpoints load"):
        AutoModelForMaskedLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        BinaryBertForMaskedLM(tiny_config()).save_pretrained(tmp_path / "x", safe_serialization=False)


# ------------------------------------------------------------------------------------------------------------------
# Conversion from a teacher


@pytest.mark.parametrize("teacher_cls, student_cls", [(BertModel, BinaryBertModel)] + [
    (getattr(transformers, twin), getattr(hb, head)) for head, (_, twin, _) in HEADS.items()])
def test_from_teacher_copies_weights_and_initialises_scales(teacher_cls, student_cls):
    torch.manual_seed(0)
    teacher = teacher_cls(tiny_bert_config(num_labels=2))
    student = student_cls.from_teacher(teacher, weight_scale="learned_offset", scale_granularity="head")
    t_state = teacher.state_dict()
    prefix = "" if teacher_cls is BertModel else "bert."
    q = student.get_submodule(f"{prefix}encoder.layer.1.attention.self.query")
    w = t_state[f"{prefix}encoder.layer.1.attention.self.query.weight"]
    assert torch.equal(q.weight, w)
    gamma = w.reshape(4, -1).mean(1)
    assert torch.allclose(q.weight_offset, gamma) and torch.allclose(q.weight_scale, (w.reshape(4, -1) - gamma[:, None]).abs().mean(1))
    emb = student.get_submodule(f"{prefix}embeddings.word_embeddings").weight
    assert torch.equal(emb, t_state[f"{prefix}embeddings.word_embeddings.weight"])
    for head_layer in ("classifier", "qa_outputs"):  # every head but masked LM's: copied as it is
        if hasattr(teacher, head_layer):
            assert torch.equal(getattr(student, head_layer).weight, getattr(teacher, head_layer).weight)
            assert torch.equal(getattr(student, head_layer).bias, getattr(teacher, head_layer).bias)
    if teacher_cls is BertForMaskedLM:
        assert student.cls.predictions.decoder.weight is student.bert.embeddings.word_embeddings.weight


def test_from_teacher_path_and_non_bert_refusal(tmp_path):
    from transformers import GPT2Config, GPT2Model

    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=3))
    teacher.save_pretrained(tmp_path / "bert")
    student = BinaryBertForSequenceClassification.from_teacher(str(tmp_path / "bert"), weight_scale="learned")
    assert student.config.num_labels == 3 and student.config.weight_scale == "learned"
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="teacher must be a BERT checkpoint .*'gpt2'"):
        BinaryBertForSequenceClassification.from_teacher(str(tmp_path / "gpt2"))


def test_binarized_student_is_the_teacher_with_binarized_weights(input_ids):
    """At full-precision activations the student is exactly the teacher whose encoder Linear weights are replaced by
    α·sign(W) with α = mean|W| (mean_abs, per tensor; sign(0) = +1), computed here from the formula; it differs from
    the teacher itself."""
    torch.manual_seed(0)
    teacher = BertModel(tiny_bert_config()).eval()
    student = BinaryBertModel.from_teacher(teacher).eval()
    binarized = BertModel(tiny_bert_config()).eval()
    binarized.load_state_dict(teacher.state_dict())
    replaced = 0
    with torch.no_grad():
        for name, module in binarized.encoder.named_modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                module.weight.copy_(w.abs().mean() * torch.where(w >= 0, 1.0, -1.0))
                replaced += 1
        t = teacher(input_ids=input_ids).last_hidden_state
        s = student(input_ids=input_ids).last_hidden_state
        b = binarized(input_ids=input_ids).last_hidden_state
    assert replaced == 2 * ENCODER_LINEARS
    torch.testing.assert_close(s, b, rtol=1e-5, atol=1e-5)  # float32 rounding of the same arithmetic
    assert (s - t).abs().max() > 100 * 1e-5  # far outside that rounding from the teacher


def test_documented_format_reads_with_plain_numpy(tmp_path):
    """docs/checkpoint-format.md: a layer dequantized with safetensors + numpy alone equals the model's weight."""
    import numpy as np
    from safetensors.numpy import load_file as load_numpy

    model = BinaryBertForMaskedLM(tiny_config(weight_scale="learned_offset", scale_granularity="head"))
    model.save_pretrained(tmp_path)
    t = load_numpy(tmp_path / "model.safetensors")
    name, n_in = "bert.encoder.layer.1.attention.self.query", 32
    bits = np.unpackbits(t[f"{name}.weight_packed"], axis=1, bitorder="little")[:, :n_in]
    B = bits.astype(np.float32) * 2 - 1
    G = t[f"{name}.weight_scale"].shape[0]
    alpha = np.repeat(t[f"{name}.weight_scale"], B.shape[0] // G)[:, None]
    gamma = np.repeat(t.get(f"{name}.weight_offset", np.zeros(G, np.float32)), B.shape[0] // G)[:, None]
    W = alpha * B + gamma
    expected = model.get_submodule(name).quantized_weight().detach().numpy()
    assert G == 4 and np.array_equal(W, expected)
