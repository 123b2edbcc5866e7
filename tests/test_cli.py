import json
import subprocess
import sys
import time

import pytest
from conftest import DATA, tiny_bert_config
from transformers import AutoTokenizer, BertForMaskedLM, BertForSequenceClassification, GPT2Config, GPT2Model

from hf_binary_bert.cli import main
from hf_binary_bert.format import read_safetensors_header


def _one_error_line(capsys, code, *needles):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("hf-binary-bert"), captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_teachers(tmp_path_factory):
    """Tiny BERTs with the real uncased tokenizer: an SST-2 classifier and a masked LM."""
    root = tmp_path_factory.mktemp("teachers")
    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")
    config = tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, num_labels=2)
    for name, cls in (("cls", BertForSequenceClassification), ("mlm", BertForMaskedLM)):
        cls(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(root / "gpt2")
    return root


def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, tiny_teachers):
    out = tmp_path / "out"
    base = ["distill", "--output-dir", str(out)]
    _one_error_line(capsys, main(base + ["--teacher", str(tmp_path / "missing"), "--task", "sst2"]), "--teacher", "no such model folder")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "cls"), "--task", "imdb"]), "--task", "Unknown GLUE task 'imdb'")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "gpt2"), "--task", "sst2"]), "'gpt2'", "not a BERT")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "mlm"), "--task", "mlm", "--train-files", str(tmp_path / "none.txt")]), "--train-files", "no such file")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--weight-scale", "median"]), "--weight-scale")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--temperature", "0"]), "--temperature must be > 0")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--multi-step", "W1A8,W1A8", "--attention-loss-weight", "1", "--stage-attention-loss-weights", "1", "0"]), "give --attention-loss-weight (every stage) or --stage-attention-loss-weights, not both")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--multi-step", "W1A3"]), "--multi-step: multi-step stage 'W1A3'")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--binarization-ramp-ratio", "1"]), "--binarization-ramp-ratio must be in [0, 1), got 1.0")
    _one_error_line(capsys, main(base + ["--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--activation-ramp-ratio", "-0.5"]), "--activation-ramp-ratio must be in [0, 1), got -0.5")
    _one_error_line(capsys, main(["finetune", "--task", "rte", "--output-dir", str(out), "--data-dir", str(tmp_path / "nodir")]), "--data-dir")
    _one_error_line(capsys, main(["size", str(tmp_path)]), "no model.safetensors")
    assert not out.exists()


@pytest.mark.parametrize("flag, value, needle", [
    ("--batch-size", "0", "--batch-size must be a positive number of examples, got 0"),
    ("--max-steps", "0", "--max-steps must be a positive number of optimizer steps, got 0"),
    ("--epochs", "-1", "--epochs must be positive, got -1.0"),
    ("--learning-rate", "0", "--learning-rate must be positive, got 0.0"),
    ("--warmup-ratio", "1", "--warmup-ratio must be a fraction of the steps in [0, 1), got 1.0"),
    ("--max-seq-length", "0", "--max-seq-length must be a positive number of tokens, got 0"),
    ("--max-seq-length", "129", "--max-seq-length: max_seq_length=129 is longer than model"),
    ("--max-train-samples", "0", "--max-train-samples must be a positive number of examples, got 0"),
    ("--max-eval-samples", "-2", "--max-eval-samples must be a positive number of examples, got -2"),
    ("--logging-steps", "0", "--logging-steps must be a positive number of steps, got 0"),
])
@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_bad_training_values_exit_2_naming_the_flag_and_write_nothing(tmp_path, capsys, tiny_teachers, command,
                                                                      flag, value, needle):
    """Values the Trainer or the data loaders would reject with a traceback in their own names (or, for
    --max-seq-length 0 and --warmup-ratio >= 1, train on silently) stop before anything is loaded or written."""
    out = tmp_path / "out"
    model = ["--model" if command == "finetune" else "--teacher", str(tiny_teachers / "cls")]
    _one_error_line(capsys, main([command, *model, "--task", "sst2", "--output-dir", str(out), "--max-steps", "1",
                                  flag, value]), needle)
    assert not out.exists() and not out.with_name("out.partial").exists()


def test_evaluate_refuses_bad_lengths_and_sample_counts(capsys, tiny_teachers):
    """Before: --max-seq-length 0 scored untruncated inputs and --max-eval-samples 0 printed a row without metrics."""
    base = ["evaluate", "--model", str(tiny_teachers / "cls"), "--task", "sst2", "--no-latency"]
    _one_error_line(capsys, main([*base, "--max-seq-length", "200"]), "--max-seq-length: max_seq_length=200",
                    "(max_position_embeddings=128)")
    _one_error_line(capsys, main([*base, "--max-seq-length", "0"]),
                    "--max-seq-length must be a positive number of tokens, got 0")
    _one_error_line(capsys, main([*base, "--max-eval-samples", "0"]),
                    "--max-eval-samples must be a positive number of examples, got 0")


def test_demo_checks_its_values_before_training(tmp_path, capsys, tiny_teachers):
    """Before: a folder without the TSVs or a negative step count ended in a traceback after the teacher loaded."""
    out = tmp_path / "demo"
    sst2 = str(DATA / "glue/SST-2")
    base = ["demo", "--output-dir", str(out), "--teacher-model", str(tiny_teachers / "cls")]
    _one_error_line(capsys, main([*base, "--data-dir", str(tmp_path)]), "--data-dir", "has no train.tsv")
    _one_error_line(capsys, main([*base, "--data-dir", sst2, "--teacher-steps", "-1"]),
                    "--teacher-steps must be a number of steps >= 0 (0 = one epoch), got -1")
    _one_error_line(capsys, main([*base, "--data-dir", sst2, "--student-steps", "-3"]), "--student-steps", "got -3")
    _one_error_line(capsys, main([*base, "--data-dir", sst2, "--student-learning-rate", "0"]),
                    "--student-learning-rate must be positive, got 0.0")
    _one_error_line(capsys, main([*base, "--data-dir", sst2, "--max-seq-length", "0"]),
                    "--max-seq-length must be a positive number of tokens, got 0")
    _one_error_line(capsys, main([*base, "--data-dir", sst2, "--max-seq-length", "129"]),
                    "--max-seq-length: max_seq_length=129 is longer than model")
    assert not out.exists()


def test_a_command_destroys_the_process_group_its_launch_set_up(tmp_path, capsys):
    # under torchrun the Trainer initializes the default group; a command ends it (cli.end_distributed), also when it
    # fails, or a gloo process can abort at exit. A real one-process gloo group here.
    import torch.distributed as dist

    from hf_binary_bert import end_distributed

    with pytest.raises(ValueError, match="handover_s"):
        end_distributed(-1.0)
    assert end_distributed() is False  # none initialized: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        _one_error_line(capsys, main(["size", str(tmp_path)]), "no model.safetensors")
        assert not dist.is_initialized()
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group2'}", rank=0, world_size=1)
        start = time.perf_counter()
        assert end_distributed(0.2) is True and not dist.is_initialized()
        assert time.perf_counter() - start >= 0.2  # the GIL hand-over sleep
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_help_of_every_subcommand(capsys):
    # the module entry point once in a fresh interpreter (12 s on a slow CI machine: torch and transformers imported
    # again), every subcommand's help in this process
    proc = subprocess.run([sys.executable, "-m", "hf_binary_bert.cli", "distill", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "usage: hf-binary-bert distill" in proc.stdout
    for command in ("finetune", "distill", "evaluate", "size", "demo"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0 and "usage: hf-binary-bert " + command in capsys.readouterr().out


def test_distill_then_evaluate_and_size_end_to_end(tmp_path, capsys, tiny_teachers, monkeypatch):
    monkeypatch.chdir(DATA.parent)  # data/glue/SST-2 is the default data folder
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(tiny_teachers / "cls"), "--task", "SST-2", "--output-dir", str(out),
                 "--max-steps", "3", "--batch-size", "8", "--max-train-samples", "64", "--max-eval-samples", "32",
                 "--max-seq-length", "32", "--no-latency", "--no-progress", "--logging-steps", "1"])
    assert code == 0
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["teacher", "student"]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    assert rows[1]["size_mb"] < rows[0]["size_mb"]
    assert (out / "comparison.md").read_text().startswith("| model | accuracy | size_mb |")
    assert (out / "losses.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "config.json").read_text())["packed_weights"] is True
    capsys.readouterr()

    assert main(["evaluate", "--model", str(out), "--task", "sst2", "--max-eval-samples", "16", "--max-seq-length", "32", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "latency_ms_b1" in table and "latency_ms_b8" in table
    assert main(["size", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["packed_weights"] > 0 and report["total"] == pytest.approx(sum(report[k] for k in ("packed_weights", "scales", "embeddings", "other", "header")))


def test_distill_with_alpha_only_tables_and_float16_shifts(tmp_path, tiny_teachers, monkeypatch):
    """--embedding-weight-scale learned --activation-shift-dtype float16 reach the student: its config carries them,
    its file has no offsets for the 1-bit tables (the Linears keep theirs) and float16 shifts."""
    monkeypatch.chdir(DATA.parent)
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--output-dir", str(out),
                 "--max-steps", "2", "--batch-size", "8", "--max-train-samples", "32", "--max-eval-samples", "16",
                 "--max-seq-length", "32", "--no-latency", "--no-progress", "--weight-scale", "learned_offset",
                 "--activation-bits", "1", "--activation-quantizer", "elastic", "--embedding-bits", "1",
                 "--binarized-embeddings", "word", "position", "--embedding-weight-scale", "learned",
                 "--activation-shift-dtype", "float16"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["embedding_weight_scale"], config["activation_shift_dtype"]) == ("learned", "float16")
    header = read_safetensors_header(out / "model.safetensors")
    assert not [k for k in header if k.startswith("bert.embeddings.") and k.endswith("weight_offset")]
    assert header["bert.encoder.layer.0.attention.self.query.weight_offset"]["dtype"] == "F32"
    shifts = [k for k in header if k.endswith("_quantizer.shift")]
    assert shifts and all(header[k]["dtype"] == "F16" for k in shifts)


def test_finetune_mlm_then_distill_mlm(tmp_path, capsys, tiny_teachers):
    text = tmp_path / "train.txt"
    text.write_text("\n".join((DATA / "text/tiny-shakespeare/input.txt").read_text().splitlines()[:300]))
    teacher = tmp_path / "teacher"
    assert main(["finetune", "--model", str(tiny_teachers / "mlm"), "--task", "mlm", "--train-files", str(text),
                 "--eval-files", str(text), "--output-dir", str(teacher), "--max-steps", "2", "--batch-size", "4",
                 "--max-seq-length", "32", "--max-eval-samples", "8", "--no-progress"]) == 0
    metrics = json.loads((teacher / "finetune_results.json").read_text())["metrics"]
    assert {"eval_cross_entropy", "eval_accuracy", "eval_mrr"} <= set(metrics)
    student = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--task", "mlm", "--train-files", str(text), "--eval-files", str(text),
                 "--output-dir", str(student), "--max-steps", "2", "--batch-size", "4", "--max-seq-length", "32",
                 "--max-eval-samples", "8", "--no-progress", "--no-latency", "--whole-word-mask"]) == 0
    rows = json.loads((student / "comparison.json").read_text())
    assert {"cross_entropy", "accuracy", "mrr", "size_mb"} <= set(rows[1])


def test_dataset_name_loads_glue_from_the_hub_instead_of_files(monkeypatch, tiny_teachers):
    """--dataset-name goes to datasets.load_dataset (faked here: no network), even when data/glue/SST-2 exists."""
    import datasets

    import hf_binary_bert.data as data_module
    from hf_binary_bert.recipes import load_task_data

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        split = datasets.Dataset.from_dict({"sentence": ["a fine film", "dull"], "label": [1, 0], "idx": [0, 1]})
        return datasets.DatasetDict({"train": split, "validation": split})

    monkeypatch.setattr(data_module.datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(DATA.parent)
    tokenizer = AutoTokenizer.from_pretrained(tiny_teachers / "cls")
    data = load_task_data("sst2", tokenizer, dataset_name="someone/glue")
    assert calls == [("someone/glue", "sst2")]
    assert len(data.train) == 2 and data.train["labels"] == [1, 0]


def test_multi_step_distillation_saves_every_stage(tmp_path, capsys, tiny_teachers, monkeypatch):
    """BiT-style W1A2 → W1A1 with Bi-Attention, 1-bit embeddings, DMD and two stages, through the CLI."""
    monkeypatch.chdir(DATA.parent)
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--output-dir", str(out),
                 "--steps-per-stage", "2", "--batch-size", "8", "--max-train-samples", "32", "--max-eval-samples", "16",
                 "--max-seq-length", "32", "--no-latency", "--no-progress", "--multi-step", "W1A2,W1A1",
                 "--attention-type", "bi_attention", "--embedding-bits", "1", "--dmd-loss-weight", "1", "--two-stage",
                 "--logging-steps", "1", "--embedding-scale-dtype", "float16", "--hidden-dropout-prob", "0"])
    assert code == 0
    configs = {name: json.loads((out / name / "config.json").read_text()) for name in ("stage1-W1A2", "stage2-W1A1", ".")}
    # the student's dropout in every stage; the attention dropout stays the teacher's
    teacher_config = json.loads((tiny_teachers / "cls" / "config.json").read_text())
    assert {(c["hidden_dropout_prob"], c["attention_probs_dropout_prob"]) for c in configs.values()} == {
        (0.0, teacher_config["attention_probs_dropout_prob"])}
    assert [configs[n]["activation_bits"] for n in ("stage1-W1A2", "stage2-W1A1", ".")] == [2, 1, 1]
    assert all(c["attention_type"] == "bi_attention" and c["embedding_bits"] == 1 and c["packed_weights"] for c in configs.values())
    for name in configs:  # every stage writes the word table's α in float16, the Linears' in float32
        header = read_safetensors_header(out / name / "model.safetensors")
        assert configs[name]["embedding_scale_dtype"] == "float16"
        assert header["bert.embeddings.word_embeddings.weight_scale"]["dtype"] == "F16"
        assert header["bert.encoder.layer.0.attention.self.query.weight_scale"]["dtype"] == "F32"
    results = json.loads((out / "distill_results.json").read_text())
    assert [s["activation_bits"] for s in results["stages"]] == [2, 1]
    assert [s["steps"] for s in results["stages"]] == [2, 2]
    assert "stages, each measured against the original teacher" in capsys.readouterr().out
    logged = [k for s in results["stages"] for e in s["log_history"] for k in e if k.startswith("loss_")]
    assert {"loss_dmd", "loss_hidden", "loss_prediction"} <= set(logged)
    rows = json.loads((out / "comparison.json").read_text())
    assert rows[1]["size_mb"] < rows[0]["size_mb"]
    capsys.readouterr()
    base = ["distill", "--teacher", str(tiny_teachers / "cls"), "--task", "sst2", "--output-dir", str(tmp_path / "bad")]
    _one_error_line(capsys, main(base + ["--multi-step", "W1A4,W1A3"]), "--multi-step", "W1A3")
    _one_error_line(capsys, main(base + ["--attention-type", "bi_attention"]), "--activation-bits < 32")
    _one_error_line(capsys, main(base + ["--dmd-targets", "output"]), "--dmd-targets")
    _one_error_line(capsys, main(base + ["--attention-probs-dropout-prob", "1"]), "--attention-probs-dropout-prob must be in [0, 1)")
    assert not (tmp_path / "bad").exists()
