"""Multi-step distillation (issue 16): every stage measured against the original teacher, collapse detection, how
a total budget is shared by the stages, the held-out validation split."""

import json
import os

import pytest
import torch
from conftest import DATA, tiny_bert_config
from transformers import AutoTokenizer, BertForSequenceClassification

from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.data import load_glue, write_holdout_split
from hf_binary_bert.distillation.stages import (
    StageCollapseError,
    check_collapse_threshold,
    parse_stage_budget,
    split_budget,
    stage_diagnostics,
    stages_markdown,
)
from hf_binary_bert.recipes import distill, evaluate_model, stage_steps

STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
WORDS = ["a", "man", "woman", "dog", "cat", "plays", "runs", "the", "guitar", "ball", "on", "in", "park", "street", "car",
         "is", "eating", "food", "red", "blue"]


def _stsb_folder(path, n=48, seed=0):
    """An STS-B folder in the release's format: `train.tsv` with `n` made-up pairs, then a seeded 25 % held out."""
    g = torch.Generator().manual_seed(seed)
    source = path / "release"
    source.mkdir()
    lines = [STSB_HEADER]
    for i in range(n):
        a, b = (" ".join(WORDS[j] for j in torch.randint(0, len(WORDS), (6,), generator=g)) for _ in range(2))
        lines.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}.\t{b}.\t{5 * i / n:.3f}\n")
    (source / "train.tsv").write_text("".join(lines))
    counts = write_holdout_split("stsb", source, path / "split", fraction=0.25, seed=0)
    return source, path / "split", counts


def test_holdout_split_written_by_several_runs_at_once(tmp_path):
    """Two runs of the 1-1-1 results script writing the same held-out split at once collided on one temporary file
    (FileNotFoundError in os.replace); each writer now has its own."""
    from concurrent.futures import ThreadPoolExecutor

    source, split, counts = _stsb_folder(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: write_holdout_split("stsb", source, tmp_path / "shared", fraction=0.25,
                                                              seed=0), range(16)))
    assert results == [counts] * 16
    for name in ("dev.tsv", "train.tsv"):
        assert (tmp_path / "shared" / name).read_bytes() == (split / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["dev.tsv", "train.tsv"]


def test_holdout_split_is_seeded_disjoint_and_complete(tmp_path):
    source, split, counts = _stsb_folder(tmp_path)
    assert counts == {"train": 36, "validation": 12}
    data = load_glue("stsb", split)
    full = load_glue("stsb", split.parent / "release", validation_file=source / "train.tsv")["validation"]

    def pairs(d):
        return [(a, b, round(s, 3)) for a, b, s in zip(d["sentence1"], d["sentence2"], d["label"])]

    assert sorted(pairs(data["train"]) + pairs(data["validation"])) == sorted(pairs(full))
    assert not set(pairs(data["train"])) & set(pairs(data["validation"]))
    again = write_holdout_split("stsb", source, tmp_path / "again", fraction=0.25, seed=0)
    assert again == counts and (tmp_path / "again/dev.tsv").read_bytes() == (split / "dev.tsv").read_bytes()
    write_holdout_split("stsb", source, tmp_path / "other", fraction=0.25, seed=1)
    assert (tmp_path / "other/dev.tsv").read_bytes() != (split / "dev.tsv").read_bytes()
    with pytest.raises(ValueError, match="fraction"):
        write_holdout_split("stsb", source, tmp_path / "bad", fraction=1.0)
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        write_holdout_split("stsb", tmp_path / "nowhere", tmp_path / "bad")


def test_diagnostics_regression_constant_copy_and_noise():
    teacher = torch.linspace(0, 5, 200).reshape(-1, 1)
    copy = stage_diagnostics(teacher.clone(), teacher, regression=True)
    assert copy["skill"] == pytest.approx(1.0) and copy["loss_vs_original"] == 0 and not copy["collapsed"]
    mean = torch.full_like(teacher, float(teacher.mean()))
    const = stage_diagnostics(mean, teacher, teacher, regression=True)
    assert const["skill"] == pytest.approx(0.0, abs=1e-6) and const["collapsed"]
    assert const["loss_vs_original"] == pytest.approx(float(teacher.var(unbiased=False)), rel=1e-5)
    assert const["prediction_std"] == 0 and "R²" in const["collapse_reason"]
    # a collapsed stage teacher: the stage's own loss looks perfect, the loss against the original does not
    fooled = stage_diagnostics(mean + 0.01, teacher, mean, regression=True)
    assert fooled["loss_vs_stage_teacher"] == pytest.approx(1e-4, rel=1e-3) and fooled["collapsed"]
    half = stage_diagnostics(teacher * 0.5 + 1.25, teacher, regression=True)  # R² = 1 - 0.25 = 0.75
    assert half["skill"] == pytest.approx(0.75, abs=1e-5) and not half["collapsed"]
    with pytest.raises(ValueError, match="same, non-empty shape"):
        stage_diagnostics(teacher[:5], teacher, regression=True)


def test_diagnostics_classification_majority_baseline():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(100, 2, generator=g)
    classes = teacher.argmax(-1)
    majority = float(torch.bincount(classes).max()) / 100
    constant = torch.zeros(100, 2)
    constant[:, int(torch.bincount(classes).argmax())] = 3.0  # always the teacher's most frequent class
    d = stage_diagnostics(constant, teacher, regression=False)
    assert d["collapsed"] and d["skill"] == pytest.approx(0.0, abs=1e-6) and d["majority_share"] == 1.0
    assert d["teacher_majority_share"] == pytest.approx(majority)
    # a sharp student that is right on 90 % of the examples: not collapsed, whatever its soft cross-entropy
    sharp = torch.nn.functional.one_hot(classes, 2).float() * 20
    sharp[:10] = sharp[:10].flip(-1)
    d = stage_diagnostics(sharp, teacher, regression=False)
    assert d["skill"] == pytest.approx((0.9 - majority) / (1 - majority)) and not d["collapsed"]


def test_budget_shares_and_steps():
    assert parse_stage_budget(None, 3) == [1 / 3] * 3
    assert parse_stage_budget("2,1,1", 3) == [0.5, 0.25, 0.25]
    assert split_budget(180, [1 / 3] * 3) == [60, 60, 60]
    assert split_budget(100, [1 / 3] * 3) == [34, 33, 33]
    assert split_budget(10, [0.5, 0.25, 0.25]) == [5, 3, 2] or split_budget(10, [0.5, 0.25, 0.25]) == [5, 2, 3]
    assert sum(split_budget(7, [0.9, 0.05, 0.05])) == 7 and min(split_budget(7, [0.9, 0.05, 0.05])) >= 1
    assert stage_steps(3, max_steps=90, stage_budget="even") == [{"max_steps": 30}] * 3
    assert stage_steps(2, epochs=3.0, stage_budget="2,1") == [{"epochs": 2.0}, {"epochs": 1.0}]
    assert stage_steps(3, steps_per_stage=5) == [{"max_steps": 5}] * 3
    assert stage_steps(2, steps_per_stage=[4, 6]) == [{"max_steps": 4}, {"max_steps": 6}]
    for kwargs, match in (({"max_steps": 9, "steps_per_stage": 3}, "not both"), ({"steps_per_stage": [1, 2]}, "per each"),
                          ({"stage_budget": "1,1"}, "2 shares for 3"), ({"stage_budget": "1,0,1"}, "positive"),
                          ({"max_steps": 2}, "cannot give")):
        with pytest.raises(ValueError, match=match):
            stage_steps(3, **kwargs)


@pytest.fixture
def stsb_teacher(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")
    config = tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, num_labels=1)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(config)
    with torch.no_grad():  # a random tiny BERT's pooled output hardly varies: widen the head so that its scores do
        torch.nn.init.normal_(teacher.bert.pooler.dense.weight, std=1.0)
        torch.nn.init.normal_(teacher.classifier.weight, std=30.0)
        teacher.classifier.bias.fill_(2.5)
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher", _stsb_folder(tmp_path)[1]


def _collapse_stage(monkeypatch, bits):
    """Students with `activation_bits == bits` get a head whose output is a constant (a forward hook), in training
    and when their stage is loaded back to be measured; records the class of the model each student starts from."""
    starts = []
    original = BinaryBertForSequenceClassification.from_teacher.__func__
    original_load = BinaryBertForSequenceClassification.from_pretrained.__func__

    def collapse(student):
        if student.config.activation_bits == bits:
            student.classifier.register_forward_hook(lambda mod, args, out: out * 0 + 2.5)
        return student

    def from_teacher(cls, teacher, **kwargs):
        starts.append(type(teacher).__name__)
        return collapse(original(cls, teacher, **kwargs))

    monkeypatch.setattr(BinaryBertForSequenceClassification, "from_teacher", classmethod(from_teacher))
    monkeypatch.setattr(BinaryBertForSequenceClassification, "from_pretrained",
                        classmethod(lambda cls, *a, **k: collapse(original_load(cls, *a, **k))))
    return starts


KW = {"max_steps": 4, "batch_size": 8, "max_seq_length": 32, "logging_steps": 1, "progress": False,
      "learning_rate": 1e-3}


def test_collapsed_stage_is_reported_and_not_handed_on(tmp_path, monkeypatch, stsb_teacher):
    teacher, data_dir = stsb_teacher
    starts = _collapse_stage(monkeypatch, bits=2)
    out = tmp_path / "student"
    result = distill(str(teacher), "stsb", str(out), data_dir=str(data_dir), schedule="W1A2,W1A1", evaluate=False,
                     binarization={"activation_quantizer": "elastic"}, **KW)
    rows = json.loads((out / "stages.json").read_text())
    assert [r["stage"] for r in rows] == ["teacher", "1: W1A2", "2: W1A1"]
    assert [r["steps"] for r in rows[1:]] == [2, 2]  # max_steps is the total of the schedule
    first, second = rows[1], rows[2]
    assert first["collapsed"] and first["prediction_std"] == 0 and "R²" in first["collapse_reason"]
    assert first["skill"] < 0.1 and first["loss_vs_original"] > 0
    # default on_collapse: the next stage starts from the teacher again and is taught by the original teacher
    assert starts == ["BertForSequenceClassification", "BertForSequenceClassification"]
    assert second["taught_by"] == "original teacher" and second["prediction_std"] > 0
    assert set(rows[0]["metrics"]) == {"pearson", "spearmanr"} and set(second["metrics"]) == {"pearson", "spearmanr"}
    table = (out / "stages.md").read_text()
    assert table.count("\n") == 5 and "**COLLAPSED**" in table.splitlines()[3]
    assert [s["stage"] for s in result["stages"]] == ["1: W1A2", "2: W1A1"]
    assert result["collapsed"] == second["collapsed"]


def test_continue_logs_loss_against_original_teacher_and_stop_raises(tmp_path, monkeypatch, stsb_teacher):
    teacher, data_dir = stsb_teacher
    starts = _collapse_stage(monkeypatch, bits=4)
    out = tmp_path / "continued"
    result = distill(str(teacher), "stsb", str(out), data_dir=str(data_dir), schedule="W1A4,W1A2", evaluate=False,
                     on_collapse="continue", steps_per_stage=[2, 3], original_teacher_every=2,
                     **{**KW, "max_steps": None})
    assert starts == ["BertForSequenceClassification", "BinaryBertForSequenceClassification"]
    first, second = result["stages"]
    assert first["collapsed"] and second["taught_by"] == "stage 1" and second["steps"] == 3
    # stage 2 is measured against both teachers: its own (the constant 2.5) and the original
    assert second["loss_vs_stage_teacher"] != pytest.approx(second["loss_vs_original"], rel=1e-3)
    logged = [(e["step"], e["loss_prediction_original"]) for e in second["log_history"]
              if "loss_prediction_original" in e]
    # run on every second optimizer step only (global steps 0 and 2 of 3), each logged at the end of its step
    assert [step for step, _ in logged] == [1, 3] and all(v > 0 for _, v in logged)
    assert not any("loss_prediction_original" in e for e in first["log_history"])  # stage 1: its teacher is the original
    with pytest.raises(StageCollapseError, match="stage 1: W1A4 collapsed"):
        distill(str(teacher), "stsb", str(tmp_path / "stopped"), data_dir=str(data_dir), schedule="W1A4,W1A2",
                evaluate=False, on_collapse="stop", **KW)
    assert not (tmp_path / "stopped").exists() and (tmp_path / "stopped.partial/stages.md").is_file()


def test_stage_table_measures_the_saved_student(tmp_path, stsb_teacher):
    """The last stage's row is the saved student's score (full-precision parts rounded to float16 on disk), the
    number `evaluate_model` reports for the output folder, not the unrounded student still in memory."""
    teacher, data_dir = stsb_teacher
    out = tmp_path / "student"
    distill(str(teacher), "stsb", str(out), data_dir=str(data_dir), schedule="W1A8,W1A4", evaluate=False,
            binarization={"activation_quantizer": "elastic", "fp_dtype": "float16"}, **KW)
    last = json.loads((out / "stages.json").read_text())[-1]
    saved = evaluate_model(str(out), "stsb", data_dir=str(data_dir), max_seq_length=KW["max_seq_length"],
                           latency=False, progress=False)["metrics"]
    assert last["stage"] == "2: W1A4" and set(saved) == {"pearson", "spearmanr"}
    assert last["metrics"]["pearson"] == pytest.approx(saved["pearson"], rel=1e-6, abs=1e-9)
    assert last["metrics"]["spearmanr"] == pytest.approx(saved["spearmanr"], rel=1e-6, abs=1e-9)


def test_collapse_threshold_is_a_skill_below_one(tmp_path, stsb_teacher):
    for ok in (0.1, 0, -5, 0.999):
        check_collapse_threshold(ok)
    for bad in (1, 1.5, float("nan"), "0.1", True, None):
        with pytest.raises(ValueError, match="collapse_threshold must be a skill below 1"):
            check_collapse_threshold(bad)
    teacher, data_dir = stsb_teacher
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"got 2\.0"):
        distill(str(teacher), "stsb", str(out), data_dir=str(data_dir), collapse_threshold=2.0, max_steps=1)
    assert not out.exists() and not (tmp_path / "never.partial").exists()


def test_markdown_marks_collapse():
    rows = [{"stage": "teacher", "metrics": {"pearson": 0.8}, "loss_vs_original": 0.0, "skill": 1.0,
             "prediction_std": 1.2, "teacher_prediction_std": 1.2},
            {"stage": "1: W1A4", "steps": 60, "taught_by": "original teacher", "metrics": {"pearson": 0.1},
             "loss_vs_original": 1.5, "loss_vs_stage_teacher": 1.5, "skill": 0.01, "prediction_std": 0.05,
             "teacher_prediction_std": 1.2, "collapsed": True}]
    lines = stages_markdown(rows).splitlines()
    assert lines[0].startswith("| stage | steps | taught by | pearson | loss vs original")
    assert "**COLLAPSED**" in lines[3] and "0.05 (1.2)" in lines[3] and "**COLLAPSED**" not in lines[2]


def test_cli_budget_flags_are_checked_before_anything_is_written(tmp_path, capsys, stsb_teacher):
    from hf_binary_bert.cli import main

    teacher, data_dir = stsb_teacher
    capsys.readouterr()  # the fixture's progress bars
    out = tmp_path / "never"
    base = ["distill", "--teacher", str(teacher), "--task", "stsb", "--data-dir", str(data_dir), "--output-dir", str(out)]
    for extra, needle in ((["--multi-step", "W1A4,W1A2,W1A1", "--stage-budget", "1,1"], "2 shares for 3 stages"),
                          (["--multi-step", "W1A4,W1A1", "--max-steps", "10", "--steps-per-stage", "5"], "not both"),
                          (["--multi-step", "W1A4,W1A1", "--steps-per-stage", "5", "6", "7"], "per each"),
                          (["--stage-budget", "2,1"], "--stage-budget needs --multi-step"),
                          (["--stage-attention-loss-weights", "1"],
                           "--stage-attention-loss-weights needs --multi-step"),
                          (["--multi-step", "W1A4,W1A1", "--stage-attention-loss-weights", "1"], "one weight >= 0 per"),
                          (["--multi-step", "W1A4,W1A1", "--stage-attention-loss-weights", "1", "-1"], "one weight"),
                          (["--multi-step", "W1A4,W1A1", "--stage-attention-loss-weights", "1", "0",
                            "--attention-loss-weight", "1"], "not both"),
                          (["--original-teacher-stages", "2"], "--original-teacher-stages needs --multi-step"),
                          (["--multi-step", "W1A4,W1A1", "--original-teacher-stages", "3"], "--original-teacher-stages [3]: stage numbers from 1 to 2"),
                          (["--collapse-threshold", "1"], "--collapse-threshold must be a skill below 1"),
                          (["--multi-step", "W1A4,W1A1", "--collapse-threshold", "nan"], "got nan")):
        assert main(base + extra) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and needle in err[0], err
    assert not out.exists() and not (tmp_path / "never.partial").exists()


def test_stage_attention_loss_weights_reach_each_stage(tmp_path, monkeypatch, stsb_teacher):
    """`stage_attention_loss_weights=[1, 0]`: the first stage's trainer has the attention loss (and logs it), the
    second has none; a wrong length, a negative weight or both options raise before anything is written."""
    from hf_binary_bert.distillation import DistillationTrainer

    teacher, data_dir = stsb_teacher
    seen = []
    original = DistillationTrainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.args.attention_loss_weight)

    monkeypatch.setattr(DistillationTrainer, "__init__", init)
    out = tmp_path / "student"
    result = distill(str(teacher), "stsb", str(out), data_dir=str(data_dir), schedule="W1A4,W1A2", evaluate=False,
                     stage_attention_loss_weights=[1, 0], binarization={"activation_quantizer": "elastic"}, **KW)
    assert seen == [1.0, 0.0]
    first, second = result["stages"]
    assert any("loss_attention" in e for e in first["log_history"])
    assert not any("loss_attention" in e for e in second["log_history"])
    for kwargs, match in (({"stage_attention_loss_weights": [1]}, "one weight"),
                          ({"stage_attention_loss_weights": [1, -1]}, "one weight"),
                          ({"stage_attention_loss_weights": [1, 0], "attention_loss_weight": 1.0}, "not both")):
        with pytest.raises(ValueError, match=match):
            distill(str(teacher), "stsb", str(tmp_path / "never"), data_dir=str(data_dir), schedule="W1A4,W1A2",
                    evaluate=False, **kwargs, **KW)
    with pytest.raises(ValueError, match="needs a multi-step schedule"):
        distill(str(teacher), "stsb", str(tmp_path / "never"), data_dir=str(data_dir), evaluate=False,
                stage_attention_loss_weights=[1], **KW)
    assert not (tmp_path / "never").exists() and not (tmp_path / "never.partial").exists()


def test_original_teacher_stages_teach_the_chosen_stage(tmp_path, monkeypatch, stsb_teacher):
    """`original_teacher_stages=[3]`: the W1A1 stage starts from the W1A2 student but its trainer's teacher is the
    full-precision one (no second teacher for `loss_prediction_original`); its row says so and measures both losses
    against that teacher; stage numbers outside the schedule, or no schedule, raise before anything is written."""
    from hf_binary_bert.distillation import DistillationTrainer

    teacher, data_dir = stsb_teacher
    seen = []
    original = DistillationTrainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append((type(self.teacher).__name__, type(self.model).__name__, self.original_teacher is None))

    monkeypatch.setattr(DistillationTrainer, "__init__", init)
    starts = []
    from_teacher = BinaryBertForSequenceClassification.from_teacher.__func__

    def recording(cls, start, **kwargs):
        starts.append(type(start).__name__)
        return from_teacher(cls, start, **kwargs)

    monkeypatch.setattr(BinaryBertForSequenceClassification, "from_teacher", classmethod(recording))
    out = tmp_path / "student"
    result = distill(str(teacher), "stsb", str(out), data_dir=str(data_dir), schedule="W1A4,W1A2,W1A1",
                     evaluate=False, original_teacher_stages=[3], binarization={"activation_quantizer": "elastic"},
                     on_collapse="continue", original_teacher_every=1, **{**KW, "max_steps": 6})
    bert, binary = BertForSequenceClassification.__name__, BinaryBertForSequenceClassification.__name__
    assert [t for t, _, _ in seen] == [bert, binary, bert]  # the teacher of each stage's trainer
    assert [no_second for _, _, no_second in seen] == [True, False, True]
    assert starts == [bert, binary, binary]  # stage 3 still starts from stage 2's student
    rows = result["stages"]
    assert [r["taught_by"] for r in rows] == ["original teacher", "stage 1", "original teacher"]
    assert rows[2]["loss_vs_stage_teacher"] == rows[2]["loss_vs_original"]
    assert any("loss_prediction_original" in e for e in rows[1]["log_history"])
    assert not any("loss_prediction_original" in e for e in rows[2]["log_history"])
    for kwargs, match in (({"schedule": "W1A4,W1A2", "original_teacher_stages": [3]}, "from 1 to 2"),
                          ({"schedule": "W1A4,W1A2", "original_teacher_stages": [0]}, "from 1 to 2"),
                          ({"original_teacher_stages": [1]}, "needs a multi-step schedule")):
        with pytest.raises(ValueError, match=match):
            distill(str(teacher), "stsb", str(tmp_path / "never"), data_dir=str(data_dir), evaluate=False,
                    **kwargs, **KW)
    assert not (tmp_path / "never").exists() and not (tmp_path / "never.partial").exists()


def test_cli_gradient_checkpointing_reaches_the_training_arguments():
    from hf_binary_bert.cli import _train_kwargs, build_parser

    # --max-seq-length given: the commands fill in its default (`_check_task`) before `_train_kwargs` checks it
    base = ["distill", "--teacher", "t", "--task", "stsb", "--output-dir", "o", "--max-seq-length", "128"]
    assert _train_kwargs(build_parser().parse_args(base + ["--gradient-checkpointing"]))["gradient_checkpointing"]
    assert "gradient_checkpointing" not in _train_kwargs(build_parser().parse_args(base))


def _saved_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("case", ["continue", "fallback", "train_in_fp_dtype"])
def test_packed_stage_teacher_trains_the_same_student(tmp_path, monkeypatch, stsb_teacher, case):
    """An earlier stage teaches in its packed form (`_teach_packed`: no latent weights in memory): every stage's
    saved student, stage table and logged losses are the ones the latent stage teacher gives, bit for bit —
    stage 2 taught by stage 1 (W1A4 → W1A2 with the attention KL on quantized maps, float16 parts), with
    `train_in_fp_dtype` (the teacher's parts rounded once instead of in each forward), and after stage 2 collapses:
    stage 3 starts from stage 1 given back in training form from its stashed latent weights (file removed after)."""
    from hf_binary_bert import recipes
    from hf_binary_bert.distillation import stages

    teacher, data_dir = stsb_teacher
    if case == "fallback":  # stage 1 healthy (a tiny student after 2 steps is not: the detector is overridden), 2 not
        diagnostics, seen = stages.stage_diagnostics, []

        def forced(*args, **kwargs):
            row = diagnostics(*args, **kwargs)
            seen.append(None)  # calls: the teacher's row, then one per stage
            if len(seen) in (2, 3):
                row.update(collapsed=len(seen) == 3, collapse_reason="forced by the test" if len(seen) == 3 else None)
            return row

        monkeypatch.setattr(stages, "stage_diagnostics", forced)
    schedule = "W1A4,W1A2,W1A1" if case == "fallback" else "W1A4,W1A2"
    extra = {"train_in_fp_dtype": True} if case == "train_in_fp_dtype" else {}
    calls, restored = [], []
    teach, restore = recipes._teach_packed, recipes._restore_latent

    def recording_teach(model, stash, round_to_saved):
        calls.append((stash is not None, round_to_saved))
        plan = teach(model, stash, round_to_saved)
        assert model.config.packed_weights and model.inference_plan.kernel == "reference"
        return plan

    def recording_restore(model, stash, plan):
        restore(model, stash, plan)
        restored.append(not model.config.packed_weights and not os.path.exists(stash) and model.inference_plan is plan)

    runs = {}
    for packed in (True, False):
        if case == "fallback":
            seen.clear()
        if packed:
            monkeypatch.setattr(recipes, "_teach_packed", recording_teach)
            monkeypatch.setattr(recipes, "_restore_latent", recording_restore)
        else:  # the latent stage teacher, as before
            monkeypatch.setattr(recipes, "_teach_packed", lambda model, stash, round_to_saved: model.inference_plan)
        out = tmp_path / f"student-{packed}"
        on_collapse = "original_teacher" if case == "fallback" else "continue"
        runs[packed] = (out, distill(str(teacher), "stsb", str(out), data_dir=str(data_dir), schedule=schedule,
                                     evaluate=False, on_collapse=on_collapse, original_teacher_every=1,
                                     binarization={"activation_quantizer": "elastic", "fp_dtype": "float16"},
                                     **extra, **{**KW, "max_steps": 6 if case == "fallback" else 4}))
    (out_p, packed), (out_l, latent) = runs[True], runs[False]
    if case == "fallback":
        assert calls == [(True, False)] and restored == [True]  # stage 3: taught by the original teacher
        assert [r["taught_by"] for r in packed["stages"]] == ["original teacher", "stage 1", "original teacher"]
    else:
        assert calls == [(False, case == "train_in_fp_dtype")]
    assert not list(out_p.glob("*latent*")) and not list(out_p.glob("*/*latent*"))
    for stage_p, stage_l in zip(packed["stages"], latent["stages"]):
        losses = [{k: v for k, v in e.items() if k.startswith("loss")} for e in stage_p["log_history"]]
        assert losses == [{k: v for k, v in e.items() if k.startswith("loss")} for e in stage_l["log_history"]]
        row_p, row_l = ({k: v for k, v in row.items() if k not in ("log_history", "train_seconds")}
                        for row in (stage_p, stage_l))
        assert json.dumps(row_p, sort_keys=True) == json.dumps(row_l, sort_keys=True)  # (a NaN metric: the same)
    for folder in sorted(p.name for p in out_p.iterdir() if p.is_dir() and p.name.startswith("stage")) + ["."]:
        a, b = _saved_tensors(out_p / folder), _saved_tensors(out_l / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder


def test_stage_loss_plots_are_drawn_after_the_last_stage(tmp_path, monkeypatch, stsb_teacher):
    """Every stage folder and the output folder get their losses.png, all drawn after the last stage has trained
    (matplotlib, once imported, would stay resident through the later stages' training)."""
    from hf_binary_bert import recipes

    teacher, data_dir = stsb_teacher
    events = []
    train, plot = recipes._train_and_record, recipes.plot_losses
    monkeypatch.setattr(recipes, "_train_and_record", lambda *a, **k: (events.append("train"), train(*a, **k))[1])
    monkeypatch.setattr(recipes, "plot_losses", lambda history, path: (events.append("plot"), plot(history, path))[1])
    out = tmp_path / "student"
    distill(str(teacher), "stsb", str(out), data_dir=str(data_dir), schedule="W1A4,W1A2", evaluate=False,
            on_collapse="continue", **KW)
    assert events == ["train", "train", "plot", "plot", "plot"]
    for folder in (out / "stage1-W1A4", out / "stage2-W1A2", out):
        assert (folder / "losses.png").read_bytes()[:4] == b"\x89PNG"
