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
    _error_line(capsys, main(base + ["--ffn-keep-share", "1.5"]), "BlockPruningConfig.ffn_keep_share")
    _error_line(capsys, main(base + ["--heads-keep-share", "0.1"]), "heads_keep_share=0.1 keeps no head of a layer")
    _error_line(capsys, main(base + ["--proximal-outside-target", "--ffn-keep-share", "0.5"]),
                "BlockPruningConfig.proximal_outside_target", "needs proximal=True")
    _error_line(capsys, main(base + ["--proximal", "--penalty-form", "gate"]), "BlockPruningConfig.proximal")
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
    assert f"| 0 | 4/4 | 8/8 | {widths[0]}/37 |" in out
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
    assert f"| 1 | 4/4 | 8/8 | {widths[1]}/37 |" in capsys.readouterr().out
    assert main(["size", str(pruned), "--json"]) == 0
    assert [r["ffn_width"] for r in json.loads(capsys.readouterr().out)["sparsity"]] == [f"{w}/37" for w in widths]

    student = tmp_path / "student"  # a pruned teacher, binarized, distilled with the penalty and pruned further
    code = main(["distill", "--teacher", str(pruned), "--output-dir", str(student), *SMALL_RUN, "--prune",
                 "--prune-modules", "intermediate", "--epsilon", "0.0"])
    assert code == 0
    saved = json.loads((student / "config.json").read_text())
    assert saved["packed_weights"] and saved["layer_intermediate_sizes"] == widths
    assert (student / "sparsity.md").read_text().startswith("| layer | heads | Q/K head size | FFN width |")


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
    assert f"| 0 | 4/4 | 8/8 | {widths[0]}/37 |" in printed and (out / "sparsity.png").exists()
    log = json.loads((out / "finetune_results.json").read_text())["log_history"][0]
    assert "loss_group_lasso" in log and "loss_prediction" not in log  # the task loss only, no teacher
    model = load_pruned_bert(out)
    assert [layer.intermediate.dense.out_features for layer in model.bert.encoder.layer] == widths


def test_prune_to_keep_shares_then_recover_from_the_dense_teacher(tmp_path, capsys, tiny_teacher_dir, monkeypatch):
    """`--ffn-keep-share` / `--heads-keep-share` remove down to the target sizes whatever ε leaves; `prune(...,
    teacher=dense)` then distils the pruned model from the dense one (λ₁ = 0, ε = 0: nothing more removed)."""
    from safetensors.torch import load_file as load

    from hf_binary_bert.pruning import BlockPruningConfig
    from hf_binary_bert.pruning.recipe import prune

    monkeypatch.chdir(DATA.parent)
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_teacher_dir), "--output-dir", str(pruned), *SMALL_RUN,
                 "--prune-modules", "intermediate", "value", "--ffn-keep-share", "0.5", "--heads-keep-share",
                 "0.75"]) == 0
    config = json.loads((pruned / "config.json").read_text())
    assert config["layer_intermediate_sizes"] == [18, 18] and config["layer_num_attention_heads"] == [3, 3]
    recovered = tmp_path / "recovered"
    options = {"max_steps": 2, "batch_size": 8, "max_train_samples": 32, "max_eval_samples": 32, "max_seq_length": 32,
               "progress": False, "learning_rate": 1e-3}
    prune(str(pruned), "sst2", str(recovered), teacher=str(tiny_teacher_dir), evaluate=False,
          pruning=BlockPruningConfig(group_lasso_weight=0.0, epsilon=0.0), **options)
    saved = json.loads((recovered / "config.json").read_text())
    assert saved["layer_intermediate_sizes"] == [18, 18] and saved["layer_num_attention_heads"] == [3, 3]
    before, after = load(pruned / "model.safetensors"), load(recovered / "model.safetensors")
    assert before.keys() == after.keys() and any(not after[k].equal(before[k]) for k in before)
    from transformers import AutoConfig, BertForSequenceClassification

    three = AutoConfig.from_pretrained(tiny_teacher_dir, num_labels=3)  # a teacher for another task
    BertForSequenceClassification(three).save_pretrained(tmp_path / "t3")
    with pytest.raises(ValueError, match="has 3 labels, model .* has 2"):
        prune(str(pruned), "sst2", str(tmp_path / "bad"), teacher=str(tmp_path / "t3"), evaluate=False,
              pruning=BlockPruningConfig(group_lasso_weight=0.0, epsilon=0.0), **options)


def test_proximal_flags_reach_the_pruning_config():
    from hf_binary_bert.cli import _pruning, build_parser

    parser = build_parser()
    base = ["--model", "m", "--output-dir", "o", "--task", "sst2"]
    plain = _pruning(parser.parse_args(["prune", *base]))
    assert plain.proximal is False and plain.proximal_outside_target is False
    config = _pruning(parser.parse_args(["prune", *base, "--proximal", "--proximal-outside-target",
                                         "--ffn-keep-share", "0.5", "--group-lasso-weight", "200"]))
    assert config.proximal is True and config.proximal_outside_target is True and config.group_lasso_weight == 200
    distill = _pruning(parser.parse_args(["distill", "--teacher", "t", "--output-dir", "o", "--task", "sst2",
                                          "--prune", "--proximal"]))
    assert distill.proximal is True


def test_distill_binarizes_a_pruned_model_taught_by_the_dense_teacher(tmp_path, capsys, tiny_teacher_dir,
                                                                     monkeypatch):
    """`distill --student-init PRUNED`: prune, then binarize, taught by the dense teacher — the trainer gets the
    dense teacher and a student of the pruned shapes, and the saved student keeps them. Losses that compare heads
    one to one (attention, DMD) and a student_init of another hidden size are refused (exit 2, naming the field),
    with nothing written."""
    from transformers import AutoConfig, BertForSequenceClassification

    from hf_binary_bert.distillation import DistillationTrainer
    from hf_binary_bert.distillation.trainer import heads_per_layer

    monkeypatch.chdir(DATA.parent)
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_teacher_dir), "--output-dir", str(pruned), *SMALL_RUN,
                 "--prune-modules", "intermediate", "value", "--ffn-keep-share", "0.5", "--heads-keep-share",
                 "0.75"]) == 0
    seen, init = [], DistillationTrainer.__init__

    def spy(self, teacher_model=None, args=None, **kwargs):
        seen.append((heads_per_layer(teacher_model), heads_per_layer(kwargs["model"]),
                     teacher_model.bert.encoder.layer[0].intermediate.dense.out_features))
        init(self, teacher_model=teacher_model, args=args, **kwargs)

    monkeypatch.setattr(DistillationTrainer, "__init__", spy)
    student = tmp_path / "student"
    base = ["distill", "--teacher", str(tiny_teacher_dir), *SMALL_RUN, "--student-init", str(pruned)]
    assert main([*base, "--output-dir", str(student), "--multi-step", "W1A4,W1A1"]) == 0  # 1 step each
    assert seen == [([4, 4], [3, 3], 37)] * 2  # both stages: the dense teacher (4 heads, 37 FFN neurons) teaches
    saved = json.loads((student / "config.json").read_text())
    assert saved["packed_weights"] and saved["layer_num_attention_heads"] == [3, 3]
    assert saved["layer_intermediate_sizes"] == [18, 18]

    capsys.readouterr()
    bad = tmp_path / "bad"
    _error_line(capsys, main([*base, "--output-dir", str(bad), "--attention-loss-weight", "1"]),
                "attention_loss_weight > 0 compare attention heads one to one", "student layer 0 has 3 heads")
    _error_line(capsys, main([*base, "--output-dir", str(bad), "--dmd-loss-weight", "1"]), "dmd_loss_weight > 0")
    wide = AutoConfig.from_pretrained(tiny_teacher_dir, hidden_size=48)
    BertForSequenceClassification(wide).save_pretrained(tmp_path / "wide")
    _error_line(capsys, main(["distill", "--teacher", str(tiny_teacher_dir), *SMALL_RUN, "--student-init",
                              str(tmp_path / "wide"), "--output-dir", str(bad)]),
                "has hidden_size=48, the teacher 32")
    assert not bad.exists() and not (tmp_path / "bad.partial").exists()
