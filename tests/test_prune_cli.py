"""`hf-binary-bert prune`, `distill --prune` and `size` on a pruned checkpoint, end to end on tiny models."""

import json

import pytest
from conftest import DATA, save_tiny_sst2_teacher
from safetensors.torch import load_file

from hf_binary_bert.cli import main

SMALL_RUN = ["--task", "sst2", "--max-steps", "2", "--batch-size", "8", "--max-train-samples", "32",
             "--max-eval-samples", "32", "--max-seq-length", "32", "--no-latency", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_teacher_dir(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    return save_tiny_sst2_teacher(tmp_path_factory.mktemp("teacher"))


def _error_line(capsys, code, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-binary-bert")]
    assert code == 2 and len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]


def test_bad_pruning_arguments_exit_2_and_write_nothing(tmp_path, capsys, tiny_teacher_dir, monkeypatch):
    monkeypatch.chdir(DATA.parent)
    out = tmp_path / "out"
    base = ["prune", "--model", str(tiny_teacher_dir), "--output-dir", str(out), *SMALL_RUN]
    _error_line(capsys, main(base + ["--epsilon", "-1"]), "BlockPruningConfig.epsilon")
    _error_line(capsys, main(base + ["--group-lasso-weight", "-0.5"]), "BlockPruningConfig.group_lasso_weight")
    _error_line(capsys, main(base + ["--num-blocks", "3"]), "num_blocks=3 must divide")
    _error_line(capsys, main(base + ["--epsilon", "100"]), "epsilon=100.0 would remove every attention head of layer 0")
    distill = ["distill", "--teacher", str(tiny_teacher_dir), "--output-dir", str(out), *SMALL_RUN, "--prune"]
    _error_line(capsys, main(distill + ["--binarizing-weight", "-1"]), "BlockPruningConfig.binarizing_weight")
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()


def test_prune_then_size_evaluate_and_distill_a_pruned_student(tmp_path, capsys, tiny_teacher_dir, monkeypatch):
    monkeypatch.chdir(DATA.parent)
    pruned = tmp_path / "pruned"
    # intermediate rows have L2 norm ≈ 0.02·√32 ≈ 0.11 at initialisation: ε = 0.11 removes about half the FFN
    code = main(["prune", "--model", str(tiny_teacher_dir), "--output-dir", str(pruned), *SMALL_RUN,
                 "--prune-modules", "intermediate", "--epsilon", "0.11", "--logging-steps", "1"])
    assert code == 0
    out = capsys.readouterr().out
    config = json.loads((pruned / "config.json").read_text())
    widths = config["layer_intermediate_sizes"]
    assert all(1 <= w < 37 for w in widths) and config.get("layer_num_attention_heads") is None
    assert f"| 0 | 4/4 | {widths[0]}/37 |" in out
    assert (pruned / "sparsity.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((pruned / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["dense", "pruned"]
    log = json.loads((pruned / "prune_results.json").read_text())["log_history"][0]
    # step 1 penalises the teacher's own weights (the pruned model starts as its copy): λ₁ = 1e-4 (the default) times
    # the sum of the L2 norms of the rows of each layer's intermediate.dense (--prune-modules intermediate, K = 1)
    weights = load_file(tiny_teacher_dir / "model.safetensors")
    rows = [row for name, w in weights.items() if name.endswith("intermediate.dense.weight") for row in w]
    assert len(rows) == 2 * 37
    expected = 1e-4 * sum(float(row.double().pow(2).sum().sqrt()) for row in rows)
    assert log["loss_group_lasso"] == pytest.approx(expected, abs=1e-6) and "loss_prediction" in log  # 6 decimals

    assert main(["size", str(pruned)]) == 0
    assert f"| 1 | 4/4 | {widths[1]}/37 |" in capsys.readouterr().out
    assert main(["size", str(pruned), "--json"]) == 0
    assert [r["ffn_width"] for r in json.loads(capsys.readouterr().out)["sparsity"]] == [f"{w}/37" for w in widths]

    student = tmp_path / "student"  # a pruned teacher, binarized, distilled with the penalty and pruned further
    code = main(["distill", "--teacher", str(pruned), "--output-dir", str(student), *SMALL_RUN, "--prune",
                 "--prune-modules", "intermediate", "--epsilon", "0.0"])
    assert code == 0
    saved = json.loads((student / "config.json").read_text())
    assert saved["packed_weights"] and saved["layer_intermediate_sizes"] == widths
    assert (student / "sparsity.md").read_text().startswith("| layer | heads | FFN width |")


def test_finetune_prune_removes_ffn_neurons_and_refuses_a_layer_emptied(tmp_path, capsys, tiny_teacher_dir,
                                                                        monkeypatch):
    """`finetune --prune`: plain fine-tuning (task loss) with the penalty, then the removal; the kept sizes are in
    config.json and the pruned BERT loads back with those shapes. ε that would empty a layer: exit 2, nothing
    published."""
    from hf_binary_bert.pruning import load_pruned_bert

    monkeypatch.chdir(DATA.parent)
    out = tmp_path / "ft"
    base = ["finetune", "--model", str(tiny_teacher_dir), "--output-dir", str(out), *SMALL_RUN[:-2], "--prune",
            "--prune-modules", "intermediate", "--logging-steps", "1"]
    _error_line(capsys, main(base + ["--epsilon", "100"]), "epsilon=100.0 would remove every FFN neuron of layer 0")
    assert not out.exists()
    assert main(base + ["--epsilon", "0.11"]) == 0  # about half the intermediate rows (norm ≈ 0.02·√32 ≈ 0.11)
    printed = capsys.readouterr().out
    widths = json.loads((out / "config.json").read_text())["layer_intermediate_sizes"]
    assert all(1 <= w < 37 for w in widths)
    assert f"| 0 | 4/4 | {widths[0]}/37 |" in printed and (out / "sparsity.png").exists()
    log = json.loads((out / "finetune_results.json").read_text())["log_history"][0]
    assert "loss_group_lasso" in log and "loss_prediction" not in log  # the task loss only, no teacher
    model = load_pruned_bert(out)
    assert [layer.intermediate.dense.out_features for layer in model.bert.encoder.layer] == widths
