"""Masked-LM logits at chosen positions only (`logits_positions`) and the fill-mask pipeline that uses them (issue 11)."""

import pytest
import torch
from conftest import DATA, tiny_config
from transformers import AutoTokenizer, pipeline

from hf_binary_bert import BinaryBertFillMaskPipeline, BinaryBertForMaskedLM

TOKENIZER = DATA / "tokenizer" / "bert-base-uncased"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def _model(vocab_size=300, **kwargs):
    torch.manual_seed(0)
    model = BinaryBertForMaskedLM(tiny_config(vocab_size=vocab_size, **kwargs))
    model.train()(input_ids=torch.randint(1, vocab_size, (2, 9)))  # calibrates the activation quantizers
    return model.eval().freeze()


@pytest.mark.parametrize(("activation_bits", "mlm_head"), [(32, "float32"), (1, "float32"), (1, "int8")])
def test_logits_at_positions_equal_the_full_logits_there(activation_bits, mlm_head):
    model = _model(activation_bits=activation_bits).set_inference_kernel("auto", mlm_head=mlm_head)
    ids = torch.randint(1, 300, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding in the batch
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[0, 2] = positions[1, 0] = positions[1, 5] = positions[2, 10] = True
    labels = torch.randint(1, 300, ids.shape)
    with torch.inference_mode():
        full = model(input_ids=ids, attention_mask=mask)
        part = model(input_ids=ids, attention_mask=mask, logits_positions=positions, labels=labels)
    assert part.logits.shape == (4, 300)
    torch.testing.assert_close(part.logits, full.logits[positions], rtol=1e-5, atol=1e-5)
    expected_loss = torch.nn.functional.cross_entropy(full.logits[positions], labels[positions])
    torch.testing.assert_close(part.loss, expected_loss, rtol=1e-5, atol=1e-5)
    assert isinstance(model(input_ids=ids, logits_positions=positions, return_dict=False), tuple)


@pytest.mark.parametrize("bad", [torch.zeros(3, 11, dtype=torch.long), torch.zeros(3, 10, dtype=torch.bool), [0, 1]])
def test_bad_logits_positions_name_the_argument(bad):
    model = _model()
    with pytest.raises(ValueError, match="logits_positions must be a bool tensor of shape \\(3, 11\\)"):
        model(input_ids=torch.randint(1, 300, (3, 11)), logits_positions=bad)


def test_binary_fill_mask_pipeline_equals_the_stock_pipeline(tmp_path, tokenizer):
    model = _model(vocab_size=tokenizer.vocab_size, activation_bits=1)
    calls = []
    head = model.cls.predictions.decoder
    handle = head.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    texts = ["the cat sat on the [MASK] .", "a [MASK] day in a long year of [MASK] things"]
    stock = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=4)(texts)
    ours_pipe = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=4, pipeline_class=BinaryBertFillMaskPipeline)
    assert isinstance(ours_pipe, BinaryBertFillMaskPipeline)
    calls.clear()
    ours = ours_pipe(texts)
    handle.remove()
    assert [c[0] for c in calls] == [1, 2]  # the decoder saw the masked rows only (1, then 2 masks)
    assert len(ours) == len(stock)
    for a, b in zip(ours, stock):
        a, b = (a if isinstance(a[0], list) else [a]), (b if isinstance(b[0], list) else [b])
        for ra, rb in zip(a, b):
            assert [r["token"] for r in ra] == [r["token"] for r in rb]
            assert [r["sequence"] for r in ra] == [r["sequence"] for r in rb]
            torch.testing.assert_close(torch.tensor([r["score"] for r in ra]), torch.tensor([r["score"] for r in rb]))
