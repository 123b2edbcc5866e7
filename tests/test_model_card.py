"""The generated model card (issue 5, §1): metadata through huggingface_hub's ModelCardData, sizes read from the
saved checkpoint, metrics as model-index results."""

import pytest
import torch
from conftest import HEADS, tiny_bert_config, tiny_config
from huggingface_hub import ModelCard
from transformers import BertForMaskedLM, BertForSequenceClassification

import hf_binary_bert as hb
from hf_binary_bert import BinaryBertForMaskedLM, BinaryBertForSequenceClassification, checkpoint_size_report
from hf_binary_bert.model_card import create_model_card, eval_results_for_task, float32_size_report, is_hub_id


def _saved(model, path):
    model.save_pretrained(path)
    return path


def test_card_metadata_and_sections_round_trip(tmp_path):
    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    model = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset",
                                                             activation_bits=1, activation_quantizer="elastic")
    _saved(model, tmp_path / "m")
    card = create_model_card(model, tmp_path / "m", repo_id="alice/tiny-w1a1", base_model="google-bert/bert-base-uncased",
                             task="SST-2", metrics={"accuracy": 0.78899, "size_mb": 1.0},
                             teacher_metrics={"accuracy": 0.899}, latency_ms={1: 4.0, 8: 20.0},
                             teacher_latency_ms={1: 10.0, 8: 50.0}, license="apache-2.0", tags=["sst2"])
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.base_model == "google-bert/bert-base-uncased"
    assert data.pipeline_tag == "text-classification" and data.library_name == "transformers"
    assert data.license == "apache-2.0" and data.datasets == ["nyu-mll/glue"]
    assert {"hf_binary_bert", "binarized", "w1a1", "sst2"} <= set(data.tags)
    (result,) = data.eval_results  # size_mb is not a metric
    assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == (
        "text-classification", "nyu-mll/glue", "sst2", "validation")
    assert (result.metric_type, result.metric_value) == ("accuracy", 0.789)
    text = loaded.text
    assert "| bits (W-E-A) | 1-32-1 |" in text
    assert "elastic (BiT)" in text and "W ≈ α·sign(W − γ) + γ" in text
    assert "| 1 | 4.0 | 10.0 | 2.50× |" in text and "| SST-2 | Accuracy | 0.7890 | 0.8990 |" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("alice/tiny-w1a1", trust_remote_code=True)' in text


def test_size_table_matches_the_checkpoint_and_a_saved_float32_bert(tmp_path):
    """The card's numbers: the binarized side is the saved file's header, the float32 side equals the tensor bytes
    of the teacher architecture saved by transformers."""
    torch.manual_seed(0)
    model = BinaryBertForMaskedLM(tiny_config())
    _saved(model, tmp_path / "binary")
    BertForMaskedLM(tiny_bert_config()).save_pretrained(tmp_path / "fp32")
    fp32 = float32_size_report(model)
    saved_fp32 = checkpoint_size_report(tmp_path / "fp32")
    assert fp32["total"] == pytest.approx(sum(saved_fp32[p] for p in ("packed_weights", "scales", "embeddings", "other")))
    assert fp32["embeddings"] == pytest.approx(saved_fp32["embeddings"])
    d, i = 32, 37  # six encoder Linears per layer, 2 layers, float32
    assert fp32["packed_weights"] == pytest.approx(2 * (4 * d * d + 2 * d * i) * 4 / 1e6)
    student = checkpoint_size_report(tmp_path / "binary")
    card = create_model_card(model, tmp_path / "binary")
    row = next(line for line in card.text.splitlines() if line.startswith("| binarized weights"))
    assert row == (f"| binarized weights | {student['packed_weights']:.3f} | {fp32['packed_weights']:.3f} | "
                   f"{fp32['packed_weights'] / student['packed_weights']:.1f}× |")
    assert card.data.pipeline_tag == "fill-mask" and card.data.eval_results is None


def test_base_model_only_when_it_is_a_hub_id(tmp_path):
    teacher_dir = tmp_path / "my-teacher"
    BertForSequenceClassification(tiny_bert_config(num_labels=2)).save_pretrained(teacher_dir)
    model = BinaryBertForSequenceClassification.from_teacher(str(teacher_dir))
    assert model.config.teacher_name_or_path == str(teacher_dir)
    _saved(model, tmp_path / "m")
    card = create_model_card(model, tmp_path / "m")
    assert card.data.base_model is None and "`my-teacher`" in card.text
    assert is_hub_id("sentence-transformers/all-MiniLM-L6-v2") and not is_hub_id(str(teacher_dir))
    # a multi-step stage keeps the first teacher
    assert BinaryBertForSequenceClassification.from_teacher(model).config.teacher_name_or_path == str(teacher_dir)


def test_eval_results_and_errors():
    (mcc,) = eval_results_for_task("cola", {"matthews_correlation": 0.5})
    assert (mcc.dataset_config, mcc.metric_type) == ("cola", "matthews_correlation")
    assert eval_results_for_task("mnli", {"accuracy": 0.8})[0].dataset_split == "validation_matched"
    assert eval_results_for_task("mlm", {"accuracy": 0.5}) == []
    (mrr,) = eval_results_for_task("mlm", {"mrr": 0.6}, {"type": "wikitext", "config": "wikitext-2-raw-v1", "split": "test"})
    assert (mrr.task_type, mrr.dataset_type) == ("fill-mask", "wikitext")
    with pytest.raises(ValueError, match="GLUE"):
        eval_results_for_task("imdb", {"accuracy": 0.5})


def test_metrics_need_a_task(tmp_path):
    model = BinaryBertForSequenceClassification(tiny_config(num_labels=2))
    _saved(model, tmp_path)
    with pytest.raises(ValueError, match="needs task="):
        create_model_card(model, tmp_path, metrics={"accuracy": 0.5})


def test_the_card_records_the_training_run(tmp_path):
    """ModelCardCallback (added by DistillationTrainer) fills the record during training; the card renders it, from
    the model or, for a model loaded from the folder, from training_record.json."""
    from distill_helpers import tiny_teacher, toy_dataset

    from hf_binary_bert import DistillationTrainer, DistillationTrainingArguments
    from hf_binary_bert.model_card import TrainingRecord

    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned")
    args = DistillationTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=8,
                                         learning_rate=1e-3, logging_steps=1, report_to=[], use_cpu=True,
                                         disable_tqdm=True, save_strategy="no", dmd_loss_weight=0.5)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset(),
                                  model_card_datasets=["toy (64 random sequences)"])
    trainer.train()
    record = student.training_record
    last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    assert record.steps == 3 and record.datasets == ["toy (64 random sequences)"]
    assert record.hyperparameters["learning_rate"] == 1e-3 and record.hyperparameters["train_batch_size"] == 8
    assert record.hyperparameters["dmd_loss_weight"] == 0.5 and record.hyperparameters["training_steps"] == 3
    assert {k: record.final_losses[k] for k in last if k.startswith("loss")} == {
        k: v for k, v in last.items() if k.startswith("loss")}
    assert record.final_losses["train_loss"] == trainer.state.log_history[-1]["train_loss"]

    student.save_pretrained(tmp_path / "student")
    assert TrainingRecord.load(tmp_path / "student") == record
    loaded = BinaryBertForSequenceClassification.from_pretrained(tmp_path / "student")
    card = create_model_card(loaded, tmp_path / "student")
    assert "toy (64 random sequences)" in card.data.datasets
    assert "## Training" in card.text and "3 optimizer steps" in card.text
    assert "| learning_rate | 0.0010 |" in card.text and "| dmd_loss_weight | 0.5000 |" in card.text
    assert f"| loss_dmd | {record.final_losses['loss_dmd']:.4f} |" in card.text
    untrained = BinaryBertForSequenceClassification(tiny_config())
    untrained.save_pretrained(tmp_path / "untrained")
    assert "## Training" not in create_model_card(untrained, tmp_path / "untrained").text


@pytest.mark.parametrize("head, tag, has_pipeline", [
    ("BinaryBertForMaskedLM", "fill-mask", True),
    ("BinaryBertForSequenceClassification", "text-classification", True),
    ("BinaryBertForQuestionAnswering", "question-answering", False),  # transformers 5 removed that pipeline
    ("BinaryBertForTokenClassification", "token-classification", True),
    ("BinaryBertForMultipleChoice", "multiple-choice", False),
])
def test_every_head_has_its_auto_class_and_pipeline_tag(tmp_path, head, tag, has_pipeline):
    auto, _, kwargs = HEADS[head]
    model = getattr(hb, head)(tiny_config(**kwargs))
    _saved(model, tmp_path)
    card = create_model_card(model, tmp_path, repo_id="alice/m")
    assert card.data.pipeline_tag == tag
    assert f'{auto}.from_pretrained("alice/m", trust_remote_code=True)' in card.text
    assert (f'pipeline("{tag}", model="alice/m")' in card.text) is has_pipeline


def test_card_of_a_pruned_student_states_its_sparsity(tmp_path):
    """What `push_to_hub` uploads (`save_for_hub`): the card of a pruned student gives heads kept and FFN width per
    layer and the share of the encoder Linears' weights kept, from the per-layer sizes of its config."""
    from hf_binary_bert.pruning import prune_

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=2)).eval()
    with torch.no_grad():  # head 1 of layer 1 (V rows), FFN neurons 0–9 of layer 0 (intermediate rows)
        teacher.bert.encoder.layer[1].attention.self.value.weight[8:16] = 0
        teacher.bert.encoder.layer[0].intermediate.dense.weight[:10] = 0
    prune_(teacher)
    model = BinaryBertForSequenceClassification.from_teacher(teacher)
    model.save_for_hub(tmp_path / "hub", repo_id="alice/pruned")
    card = ModelCard.load(tmp_path / "hub" / "README.md")
    assert "pruned" in card.data.tags
    d, i = 32, 37  # layer 0: 4 heads, 27 neurons; layer 1: 3 heads, 37 neurons; per layer 4·d·d + 2·d·i weights
    kept = [(4 * d * d + 2 * d * 27) / (4 * d * d + 2 * d * i), (4 * 24 * d + 2 * d * i) / (4 * d * d + 2 * d * i)]
    assert f"| 0 | 4/4 | 8/8 | 27/37 | {100 * kept[0]:.1f} % |" in card.text
    assert f"| 1 | 3/4 | 8/8 | 37/37 | {100 * kept[1]:.1f} % |" in card.text
    assert (f"keeps 7/8 attention heads, 64/74 FFN neurons and {100 * sum(kept) / 2:.1f} %" in
            " ".join(card.text.split()))
    unpruned = BinaryBertForSequenceClassification.from_teacher(BertForSequenceClassification(tiny_bert_config()))
    unpruned.save_for_hub(tmp_path / "dense")
    text = (tmp_path / "dense" / "README.md").read_text()
    assert "## Sparsity" not in text and "pruned" not in ModelCard.load(tmp_path / "dense" / "README.md").data.tags
