"""examples/run_glue_distill.py end to end with a tiny teacher (2 optimizer steps)."""

import csv
import importlib.util
import json
import sys

import pytest
from conftest import DATA, REPO, save_tiny_sst2_teacher
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification

import hf_binary_bert  # noqa: F401  (registers binary_bert with the Auto classes)

SCRIPT = REPO / "examples" / "run_glue_distill.py"
COMMON = ["--max_steps", "2", "--per_device_train_batch_size", "8", "--max_seq_length", "32",
          "--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "no"]
W1A1 = ["--activation_bits", "1", "--attention_type", "bi_attention", "--dmd_loss_weight", "1"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("run_glue_distill", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny random SST-2 BERT classifier with the real uncased tokenizer."""
    return save_tiny_sst2_teacher(tmp_path_factory.mktemp("teacher"))


def test_sst2_w1a1_train_eval_packed_checkpoint_and_flops(script, teacher, tmp_path, capsys):
    out = tmp_path / "student"
    results = script.main(["--teacher_model_name_or_path", str(teacher), "--task_name", "sst2",
                           "--data_dir", str(DATA / "glue/SST-2"), "--do_train", "--do_eval",
                           "--max_train_samples", "32", "--max_eval_samples", "16", "--output_dir", str(out),
                           *W1A1, *COMMON])
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(model).__name__ == "BinaryBertForSequenceClassification"
    assert model.config.packed_weights and model.config.activation_bits == 1
    assert model.config.attention_type == "bi_attention"
    assert (out / "tokenizer.json").exists() or (out / "vocab.txt").exists()
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert 0 <= evaluation["eval_accuracy"] <= 1 and evaluation["eval_samples"] == 16
    train = json.loads((out / "train_results.json").read_text())
    assert train["train_samples"] == 32
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    flops = json.loads((out / "flops.json").read_text())
    # W1A1, hidden 32, FFN 37, 2 layers, T = 128, by hand: per layer the six Linears 2·T·(4·32·32 + 2·32·37) =
    # 1 654 784 and the two attention matmuls 2·(2·T²·32)·1·1 = 2 097 152 bit operations
    assert flops["seq_len"] == 128 and flops["binary_ops"] == 2 * (1_654_784 + 2_097_152) == 7_503_872
    assert flops["flops"] < flops["teacher_flops"]
    assert flops["packed_size_mb"]["total"] < flops["teacher_size_mb"]
    assert results["eval"]["eval_accuracy"] == evaluation["eval_accuracy"]
    assert "W1A1 student:" in capsys.readouterr().out
    card = ModelCard.load(out / "README.md")  # this package's card, as run_glue writes the Trainer's
    assert "| bits (W-E-A) | 1-32-1 |" in card.text and "Bi-Attention" in card.text
    assert card.data.eval_results[0].metric_value == round(evaluation["eval_accuracy"], 4)


def test_csv_files_without_task_name(script, teacher, tmp_path):
    rows = [("a touching and funny film", "positive"), ("dull , lifeless and far too long", "negative")] * 10
    for name in ("train.csv", "dev.csv"):
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            writer.writerows(rows)
    out = tmp_path / "student"
    results = script.main(["--teacher_model_name_or_path", str(teacher), "--train_file", str(tmp_path / "train.csv"),
                           "--validation_file", str(tmp_path / "dev.csv"), "--do_train", "--do_eval",
                           "--output_dir", str(out), *COMMON])
    assert results["train"]["train_samples"] == 20 and results["eval"]["eval_samples"] == 20
    assert json.loads((out / "config.json").read_text())["packed_weights"] is True
    assert (out / "flops.json").exists()
    # --min_train_tokens 9 keeps the 9-token rows ([CLS] dull , lifeless … [SEP]), then --max_train_samples samples
    # them; the 7-token rows stay in the validation data
    long = script.main(["--teacher_model_name_or_path", str(teacher), "--train_file", str(tmp_path / "train.csv"),
                        "--validation_file", str(tmp_path / "dev.csv"), "--do_train", "--do_eval",
                        "--output_dir", str(tmp_path / "long"), "--min_train_tokens", "9", "--max_train_samples", "6",
                        *COMMON])
    assert long["train"]["train_samples"] == 6 and long["eval"]["eval_samples"] == 20
    with pytest.raises(ValueError, match="min_train_tokens=10 keeps none of the 20 training examples"):
        script.main(["--teacher_model_name_or_path", str(teacher), "--train_file", str(tmp_path / "train.csv"),
                     "--do_train", "--output_dir", str(tmp_path / "none"), "--min_train_tokens", "10", *COMMON])
    assert not (tmp_path / "none").exists()


def test_bad_arguments(script, teacher, tmp_path):
    base = ["--teacher_model_name_or_path", str(teacher), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="Unknown GLUE task 'squad'"):
        script.main([*base, "--task_name", "squad"])
    with pytest.raises(ValueError, match="--task_name"):
        script.main(base)
    with pytest.raises(ValueError, match="--min_train_tokens must be a positive number of tokens, got 0"):
        script.main([*base, "--task_name", "sst2", "--min_train_tokens", "0"])
    with pytest.raises(ValueError, match="W1A3"):
        script.main([*base, "--task_name", "sst2", "--multi_step", "W1A4,W1A3"])
    assert not (tmp_path / "out").exists()
