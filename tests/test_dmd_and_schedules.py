"""Direction-matching distillation, two-stage distillation and the DistillationTrainer with a 1-1-1 student."""

from copy import deepcopy

import pytest
import torch
from distill_helpers import distill_args, tiny_teacher, toy_dataset

from hf_binary_bert import BinaryBertForSequenceClassification, DistillationTrainer
from hf_binary_bert.distillation.losses import direction_matching_loss, similarity_pattern
from hf_binary_bert.distillation.trainer import capture_qkv
from hf_binary_bert.recipes import parse_schedule


def _reference_pattern(x, heads, mask):
    """P = X·Xᵀ / ‖X·Xᵀ‖_F per sample and head, by explicit loops, padding rows/columns removed."""
    b, t, d = x.shape
    out = torch.zeros(b, heads, t, t)
    for i in range(b):
        real = mask[i].bool()
        for h in range(heads):
            xh = x[i, real, h * (d // heads):(h + 1) * (d // heads)]
            p = xh @ xh.T
            out[i, h][real.nonzero()[:, 0][:, None], real.nonzero()[:, 0][None, :]] = p / p.norm()
    return out


def test_similarity_pattern_matches_the_reference_and_ignores_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    p = similarity_pattern(x, 2, mask)
    assert torch.allclose(p, _reference_pattern(x, 2, mask), atol=1e-6)
    assert torch.allclose(p.flatten(2).norm(dim=-1), torch.ones(2, 2))
    # whatever sits in the padded positions does not matter
    y = x.clone()
    y[1, 3:] = 100 * torch.randn(2, 8)
    assert torch.allclose(similarity_pattern(y, 2, mask), p)


def test_direction_matching_loss_reference_and_properties():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    student = [torch.randn(2, 4, 6) for _ in range(2)]
    teacher = [torch.randn(2, 4, 6) for _ in range(4)]  # 4 teacher layers → student layer l ↦ teacher 2l
    loss = direction_matching_loss(student, teacher, num_heads=3, mask=mask)
    ref = sum(
        (_reference_pattern(s, 3, mask) - _reference_pattern(t, 3, mask)).flatten(2).norm(dim=-1).mean()
        for s, t in zip(student, (teacher[1], teacher[3]))
    )
    assert torch.allclose(loss, ref, atol=1e-5)
    # scale-invariant (directions only) and zero against itself
    assert torch.allclose(direction_matching_loss([3 * s for s in student], teacher, 3, mask), loss, atol=1e-5)
    assert direction_matching_loss(student, student, 3, mask) < 1e-5
    with pytest.raises(ValueError, match="query/key/value outputs"):
        direction_matching_loss([], teacher, 3, mask)


def test_capture_qkv_records_every_layer_before_quantization():
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=1, attention_type="bi_attention")
    ids = torch.randint(1, 99, (2, 6))
    with capture_qkv(student) as qkv:
        student(input_ids=ids)
    assert [len(qkv[t]) for t in ("query", "key", "value")] == [2, 2, 2]
    layer0 = student.bert.encoder.layer[0]
    hidden = student.bert.embeddings(input_ids=ids)
    assert torch.allclose(qkv["query"][0], layer0.attention.self.query(hidden), atol=1e-6)
    assert qkv["query"][0].unique().numel() > 2  # full precision, not yet binarized
    assert not student.bert.encoder.layer[0].attention.self.query._forward_hooks  # hooks removed


def test_bibert_loss_is_dmd_plus_hidden_plus_prediction_and_each_is_logged(tmp_path):
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=1, attention_type="bi_attention", embedding_bits=1)
    args = distill_args(tmp_path, max_steps=3, dmd_loss_weight=1.0, hidden_loss_weight=1.0, prediction_loss_weight=1.0)
    data = toy_dataset(n=8)  # one batch of 8: step 1 sees all of it (the loss is a mean over samples: order-free)
    # ℓ_DMD of step 1 from the formula, independently: Q/K/V outputs by our own hooks on a copy of the student (its
    # first training forward calibrates it on the same batch, as step 1 does), patterns by explicit loops
    # (_reference_pattern), student layer l ↦ teacher layer l (2 and 2 layers), Σ over Q, K, V and layers of the
    # mean over (sample, head) of ‖P_s − P_t‖_F
    batch = {k: torch.tensor(data[k]) for k in ("input_ids", "attention_mask")}
    states = {}

    def record(model, tag):
        return [getattr(layer.attention.self, t).register_forward_hook(
            lambda m, a, out, key=(tag, t, i): states.__setitem__(key, out.detach()))
            for i, layer in enumerate(model.bert.encoder.layer) for t in ("query", "key", "value")]

    copy = deepcopy(student).train()
    hooks = record(copy, "s") + record(teacher, "t")
    with torch.no_grad():
        copy(**batch)
        teacher(**batch)
    for h in hooks:
        h.remove()
    heads, mask = teacher.config.num_attention_heads, batch["attention_mask"]
    expected = sum(float((_reference_pattern(states["s", t, i], heads, mask)
                          - _reference_pattern(states["t", t, i], heads, mask)).flatten(2).norm(dim=-1).mean())
                   for t in ("query", "key", "value") for i in range(2))
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=data)
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["loss"] == pytest.approx(log["loss_dmd"] + log["loss_hidden"] + log["loss_prediction"], rel=1e-4)
    assert log["loss_dmd"] == pytest.approx(expected, rel=1e-4, abs=1e-6)  # logged rounded to 6 decimals


def test_two_stage_runs_intermediate_losses_then_prediction_losses(tmp_path):
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=4)
    args = distill_args(tmp_path, max_steps=4, two_stage=True, intermediate_stage_ratio=0.5, dmd_loss_weight=1.0)
    assert args.loss_weights(0, 4).keys() == {"hidden", "dmd"}
    assert args.loss_weights(2, 4).keys() == {"prediction"}
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset())
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [sorted(k for k in e if k.startswith("loss_")) for e in logs] == [["loss_dmd", "loss_hidden"]] * 2 + [["loss_prediction"]] * 2
    with pytest.raises(ValueError, match="second stage has no loss"):
        distill_args(tmp_path, two_stage=True, prediction_loss_weight=0)
    with pytest.raises(ValueError, match="intermediate_stage_ratio"):
        distill_args(tmp_path, intermediate_stage_ratio=1.0)
    with pytest.raises(ValueError, match="dmd_targets"):
        distill_args(tmp_path, dmd_targets=["output"])


def test_parse_schedule():
    assert parse_schedule("W1A4,W1A2, w1a1") == [4, 2, 1]
    assert parse_schedule([8, 1]) == [8, 1]
    assert parse_schedule(None) == []
    with pytest.raises(ValueError, match="W1A3"):
        parse_schedule("W1A4,W1A3")
