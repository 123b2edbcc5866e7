"""Interop: transformers pipelines on binarized checkpoints, and the export back to a plain BERT (issue 5, §3)."""

import pytest
import torch
import transformers
from conftest import DATA, HEADS, head_inputs, head_output, tiny_config
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertForSequenceClassification, pipeline

import hf_binary_bert as hb
from hf_binary_bert import (
    BinaryBertForMaskedLM,
    BinaryBertForSequenceClassification,
    BinaryBertForTokenClassification,
    BinaryBertModel,
)

TOKENIZER = DATA / "tokenizer" / "bert-base-uncased"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("activation_bits", [32, 1])
def test_fill_mask_pipeline_agrees_with_the_model(tmp_path, tokenizer, activation_bits):
    torch.manual_seed(0)
    model = BinaryBertForMaskedLM(tiny_config(vocab_size=tokenizer.vocab_size, activation_bits=activation_bits))
    model.train()(input_ids=torch.randint(1000, 2000, (2, 9)))  # calibrates the activation quantizers
    path = _save(model.eval(), tokenizer, tmp_path)
    fill = pipeline("fill-mask", model=path, top_k=3)
    text = "the cat sat on the [MASK] ."
    results = fill(text)
    loaded = BinaryBertForMaskedLM.from_pretrained(path)
    enc = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        logits = loaded(**enc).logits[0, enc.input_ids[0].tolist().index(tokenizer.mask_token_id)]
    probs = logits.softmax(-1)
    top = probs.topk(3)
    assert [r["token"] for r in results] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([r["score"] for r in results]), top.values, rtol=1e-5, atol=1e-7)


def test_text_classification_pipeline_agrees_with_the_model(tmp_path, tokenizer):
    torch.manual_seed(1)
    model = BinaryBertForSequenceClassification(tiny_config(vocab_size=tokenizer.vocab_size, num_labels=2))
    path = _save(model.eval(), tokenizer, tmp_path)
    classify = pipeline("text-classification", model=path, top_k=None)
    texts = ["a fine movie", "dull and long"]
    results = classify(texts)
    loaded = BinaryBertForSequenceClassification.from_pretrained(path)
    with torch.inference_mode():
        probs = loaded(**tokenizer(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
    for row, expected in zip(results, probs):
        scores = {r["label"]: r["score"] for r in row}
        torch.testing.assert_close(torch.tensor([scores["LABEL_0"], scores["LABEL_1"]]), expected, rtol=1e-5, atol=1e-7)


def test_token_classification_pipeline_agrees_with_the_model(tmp_path, tokenizer):
    torch.manual_seed(3)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    model = BinaryBertForTokenClassification(tiny_config(
        vocab_size=tokenizer.vocab_size, num_labels=5, activation_bits=1, activation_quantizer="elastic",
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)}))
    model.train()(input_ids=torch.randint(1000, 2000, (2, 9)))  # calibrates the activation quantizers
    path = _save(model.eval(), tokenizer, tmp_path)
    tag = pipeline("token-classification", model=path)  # aggregation "none": one entity per non-"O" token
    text = "alice flew from paris to london ."
    results = tag(text)
    loaded = BinaryBertForTokenClassification.from_pretrained(path)
    enc = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0]
    with torch.inference_mode():
        probs = loaded(**enc).logits[0].softmax(-1)
    expected = [(labels[int(p.argmax())], float(p.max()), int(offsets[i, 0]), int(offsets[i, 1]))
                for i, p in enumerate(probs) if enc.input_ids[0, i] not in tokenizer.all_special_ids
                and labels[int(p.argmax())] != "O"]
    assert expected, "a random model tags something here; otherwise the comparison is empty"
    assert [(r["entity"], r["start"], r["end"]) for r in results] == [(e, s, t) for e, _, s, t in expected]
    assert all(r["word"] == text[r["start"]:r["end"]] for r in results)
    torch.testing.assert_close(torch.tensor([r["score"] for r in results]), torch.tensor([p for _, p, _, _ in expected]),
                               rtol=1e-5, atol=1e-7)


EXPORTS = [(getattr(hb, head), getattr(transformers, twin), kwargs) for head, (_, twin, kwargs) in HEADS.items()] + [
    (BinaryBertModel, None, {}),
    (BinaryBertForSequenceClassification, BertForSequenceClassification,
     {"num_labels": 2, "weight_scale": "learned_offset", "scale_granularity": "head", "embedding_bits": 1,
      "binarized_embeddings": ["word", "position"]}),
]


@pytest.mark.parametrize("binary_cls,plain_cls,kwargs", EXPORTS)
@pytest.mark.parametrize("packed", [False, True])
def test_to_bert_exports_dequantized_weights_with_equal_outputs(tmp_path, input_ids, binary_cls, plain_cls, kwargs,
                                                                packed):
    torch.manual_seed(2)
    model = binary_cls(tiny_config(**kwargs)).eval()
    if packed:
        model.freeze()
    bert = model.to_bert()
    assert bert.config.model_type == "bert" and not bert.training
    if plain_cls is not None:
        assert type(bert) is plain_cls
    inputs = head_inputs(binary_cls.__name__, input_ids)
    with torch.no_grad():
        ours, theirs = model(**inputs), bert(**inputs)
    torch.testing.assert_close(head_output(theirs), head_output(ours), rtol=1e-6, atol=1e-6)
    # each binarized weight takes two values per scale group: α·(±1) + γ
    query = bert.base_model.encoder.layer[0].attention.self.query.weight
    assert all(row.unique().numel() <= 2 for row in query)
    bert.save_pretrained(tmp_path)  # a plain checkpoint that needs nothing from this package
    assert AutoConfig.from_pretrained(tmp_path).model_type == "bert"
    reloaded = AutoModel.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=input_ids).last_hidden_state,
                                   bert.base_model(input_ids=input_ids).last_hidden_state)


@pytest.mark.parametrize("kwargs", [{"activation_bits": 4}, {"activation_bits": 1, "attention_type": "bi_attention"}])
def test_to_bert_refuses_quantized_activations(kwargs):
    with pytest.raises(ValueError, match="full-precision activations"):
        BinaryBertForSequenceClassification(tiny_config(num_labels=2, **kwargs)).to_bert()
