"""`BinaryBertConfig.classifier_pooling`: the sequence classifier's pooler reads the first token ("cls", BERT's) or
the mean over the real tokens ("mean", sentence-transformers' pooling)."""
import pytest
import torch
from conftest import tiny_bert_config, tiny_config
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from hf_binary_bert import BinaryBertConfig, BinaryBertForSequenceClassification, kernels
from hf_binary_bert.distillation.arguments import BinarizationArguments
from hf_binary_bert.modeling_binary_bert import mean_pool


def _inputs(lengths=(11, 6, 1)):
    ids = torch.randint(1, 99, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return ids, mask


def _model(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = tiny_config(num_labels=1, weight_scale="learned_offset", scale_granularity="head",
                         classifier_pooling="mean", **kwargs)
    model = BinaryBertForSequenceClassification(config)
    ids, mask = _inputs()
    model.train()(input_ids=ids, attention_mask=mask)  # calibrates the activation quantizers
    return model.eval()


def test_config_refuses_an_unknown_pooling_and_defaults_to_cls():
    assert BinaryBertConfig().classifier_pooling == "cls"
    with pytest.raises(ValueError, match=r"classifier_pooling must be one of \['cls', 'mean'\], got 'max'"):
        BinaryBertConfig(classifier_pooling="max")
    with pytest.raises(ValueError, match="classifier_pooling"):
        BinarizationArguments(classifier_pooling="first")
    assert BinarizationArguments(classifier_pooling="mean").binarization(1)["classifier_pooling"] == "mean"
    assert "classifier_pooling" not in BinarizationArguments().binarization(1)  # the teacher's or the default


def test_mean_pool_averages_the_real_tokens_only():
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]])
    hidden[0, 3:] = float("nan")  # whatever a padding position holds does not enter
    hidden[2, 0] = float("inf")
    got = mean_pool(hidden, mask)
    expected = torch.stack([hidden[0, :3].mean(0), hidden[1].mean(0), hidden[2, [1, 3]].mean(0)])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mean_pool(hidden[1:2], None), hidden[1:2].mean(1))
    with pytest.raises(ValueError, match="row without a real token"):
        mean_pool(hidden, torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"attention_mask must be \[batch, seq\] = \[3, 5\]"):
        mean_pool(hidden, mask[:, :4])


@pytest.mark.parametrize("bits", [32, 1])
def test_mean_pooled_logits_are_the_head_on_the_masked_mean(bits):
    """The logits are the classifier on tanh(dense(mean of the real tokens' last hidden states)), for W1A32 and BiT
    W1A1 (eager path, hidden states asked for); the regression loss is their MSE to the labels."""
    model = _model(activation_bits=bits, activation_quantizer="elastic" if bits < 32 else "sign")
    ids, mask = _inputs()
    labels = torch.tensor([0.5, 2.0, -1.0])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
        last = out.hidden_states[-1]
        mean = torch.stack([last[b, : int(n)].mean(0) for b, n in enumerate(mask.sum(1))])
        expected = model.classifier(torch.tanh(model.bert.pooler.dense(mean)))
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits[:, 0], labels))
    # the first token alone no longer decides the score: another token changes it
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 99 + 1
    with torch.no_grad():
        assert not torch.equal(model(input_ids=changed, attention_mask=mask).logits[0], out.logits[0])
    # the same weights with "cls": BERT's pooler on the first token, as before the option
    cls_model = BinaryBertForSequenceClassification(BinaryBertConfig(**{**model.config.to_dict(),
                                                                         "classifier_pooling": "cls"}))
    cls_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        first = cls_model.eval()(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        expected_cls = model.classifier(torch.tanh(model.bert.pooler.dense(first.hidden_states[-1][:, 0])))
    assert cls_model.config.classifier_pooling == "cls"
    torch.testing.assert_close(first.logits, expected_cls, rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_a_mean_pooled_score():
    model = _model(activation_bits=32)
    ids, mask = _inputs()
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        alone = torch.cat([model(input_ids=ids[b : b + 1, : int(n)]).logits for b, n in enumerate(mask.sum(1))])
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")
def test_packed_round_trip_keeps_mean_pooling_and_runs_natively(tmp_path):
    """Saved packed and reloaded by the Auto class: the config keeps "mean", the packed reference forward gives the
    scores of the model before saving (up to the float rounding of α·B + γ), and on the native runtime (the
    encoder's plan built, no eager encoder layer called) they are the head on the mean of the runtime's own last
    hidden states, bit for bit."""
    model = _model(activation_bits=1, activation_quantizer="elastic")
    ids, mask = _inputs()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is BinaryBertForSequenceClassification and loaded.config.classifier_pooling == "mean"
    loaded.set_inference_kernel("reference")
    with torch.inference_mode():
        reference = loaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(reference, before, rtol=0, atol=1e-6)
    loaded.set_inference_kernel("auto")
    calls = []
    handle = loaded.bert.encoder.layer[0].register_forward_pre_hook(lambda *a: calls.append(1))
    with torch.inference_mode():
        native = loaded(input_ids=ids, attention_mask=mask).logits
        last = loaded.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = loaded.classifier(torch.tanh(loaded.bert.pooler.dense(mean_pool(last, mask))))
        as_tuple = loaded(input_ids=ids, attention_mask=mask, return_dict=False)
    handle.remove()
    assert loaded.bert.encoder.runtime().plan() is not None and not calls
    assert torch.equal(native, expected)
    torch.testing.assert_close(native, reference, rtol=0, atol=1e-4)  # float rounding of LayerNorm / GELU / softmax
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], native)


def test_from_teacher_sets_and_later_stages_keep_the_pooling():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=1)).eval()
    stage1 = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=4, classifier_pooling="mean")
    assert stage1.config.classifier_pooling == "mean"
    stage2 = BinaryBertForSequenceClassification.from_teacher(stage1, activation_bits=1)
    assert stage2.config.classifier_pooling == "mean"
    assert BinaryBertForSequenceClassification.from_teacher(teacher).config.classifier_pooling == "cls"


def test_to_bert_refuses_mean_pooling():
    model = _model(activation_bits=32)
    with pytest.raises(ValueError, match="classifier_pooling='cls'"):
        model.to_bert()
    model.config.classifier_pooling = "cls"
    assert isinstance(model.to_bert(), BertForSequenceClassification)
