import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from distill_helpers import tiny_teacher, toy_dataset
from transformers import AutoModelForSequenceClassification

from hf_binary_bert import (
    BinaryBertForSequenceClassification,
    DistillationTrainer,
    DistillationTrainingArguments,
    calibrate,
)
from hf_binary_bert.distillation import (
    attention_distillation_loss,
    hidden_state_cosine,
    hidden_state_mse,
    layer_map,
    prediction_distillation_loss,
)
from hf_binary_bert.distillation.trainer import capture_pooled, head_parameter_names, quantizer_parameter_names

# ----------------------------------------------------------------------------------------------------------------
# Losses against hand-written references


def test_soft_cross_entropy_with_temperature():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    ref = sum(-(F.softmax(t[i] / 2, -1) * F.log_softmax(s[i] / 2, -1)).sum() for i in range(5)) / 5 * 4
    assert torch.allclose(prediction_distillation_loss(s, t, temperature=2.0), ref)
    mask = torch.tensor([True, False, True, False, False])
    ref_masked = (-(F.softmax(t[[0, 2]], -1) * F.log_softmax(s[[0, 2]], -1)).sum(-1)).mean()
    assert torch.allclose(prediction_distillation_loss(s, t, mask=mask), ref_masked)
    assert torch.allclose(prediction_distillation_loss(s[:, :1], t[:, :1], regression=True), F.mse_loss(s[:, :1], t[:, :1]))


def test_hidden_losses_mask_padding_and_weight_layers():
    torch.manual_seed(0)
    hs = tuple(torch.randn(2, 4, 3) for _ in range(3))
    ht = tuple(torch.randn(2, 4, 3) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    real = mask.bool()
    ref = sum(w * ((a - b)[real] ** 2).mean() for w, a, b in zip([0.5, 1.0, 2.0], hs, ht))
    assert torch.allclose(hidden_state_mse(hs, ht, mask, [0.5, 1.0, 2.0]), ref)
    ref_cos = sum((1 - F.cosine_similarity(a[real], b[real], dim=-1)).mean() for a, b in zip(hs, ht))
    assert torch.allclose(hidden_state_cosine(hs, ht, mask), ref_cos)
    with pytest.raises(ValueError, match="hidden_layer_weights has 2 entries"):
        hidden_state_mse(hs, ht, mask, [1.0, 1.0])


def test_layer_map_is_uniform():
    assert layer_map(4, 7) == [0, 2, 4, 6]
    assert layer_map(7, 7) == list(range(7))
    with pytest.raises(ValueError, match="cannot map"):
        layer_map(4, 6)


def test_attention_losses():
    torch.manual_seed(0)
    a_s = (torch.softmax(torch.randn(1, 2, 3, 3), -1),)
    a_t = (torch.softmax(torch.randn(1, 2, 3, 3), -1),)
    assert torch.allclose(attention_distillation_loss(a_s, a_t, kind="mse"), ((a_s[0] - a_t[0]) ** 2).mean())
    kl = (a_t[0] * (a_t[0].log() - a_s[0].log())).sum(-1).mean()
    assert torch.allclose(attention_distillation_loss(a_s, a_t, kind="kl"), kl)
    assert attention_distillation_loss(a_t, a_t, kind="kl").abs() < 1e-6
    with pytest.raises(ValueError, match="'mse' or 'kl'"):
        attention_distillation_loss(a_s, a_t, kind="l1")


def test_arguments_validate():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DistillationTrainingArguments(output_dir="x", temperature=0, report_to=[])
    with pytest.raises(ValueError, match="attention_loss must be one of"):
        DistillationTrainingArguments(output_dir="x", attention_loss="l2", report_to=[])
    with pytest.raises(ValueError, match="attention_distribution must be one of"):
        DistillationTrainingArguments(output_dir="x", attention_distribution="float", report_to=[])
    with pytest.raises(ValueError, match="head_learning_rate must be > 0"):
        DistillationTrainingArguments(output_dir="x", head_learning_rate=0.0, report_to=[])
    with pytest.raises(ValueError, match="original_teacher_every must be >= 1"):
        DistillationTrainingArguments(output_dir="x", original_teacher_every=0, report_to=[])
    with pytest.raises(ValueError, match="pooled_loss_weight must be >= 0"):
        DistillationTrainingArguments(output_dir="x", pooled_loss_weight=-1.0, report_to=[])


# ----------------------------------------------------------------------------------------------------------------
# The Trainer


def _args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=1e-2, report_to=[], use_cpu=True,
        disable_tqdm=True, save_strategy="no", seed=0, optim="sgd", lr_scheduler_type="constant", logging_steps=1,
        task_loss_weight=1.0, hidden_loss_weight=1.0, attention_loss_weight=1.0, cosine_loss_weight=1.0,
    )
    defaults.update(kwargs)
    return DistillationTrainingArguments(**defaults)


def _student(teacher):
    return _student_with(teacher)


def _student_with(teacher, **kwargs):
    torch.manual_seed(1)
    return BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset",
                                                            scale_granularity="head", **kwargs)


@pytest.mark.parametrize(("num_labels", "student_kwargs", "given", "expected"), [
    (1, {}, None, 1.0), (1, {"activation_bits": 4}, None, 1.0), (2, {}, None, 0.0), (1, {}, 0.0, 0.0), (2, {}, 0.5, 0.5),
    # 1-bit attention probabilities: the KL has no gradient through their zeros (docs/distillation.md)
    (1, {"activation_bits": 1}, None, 0.0), (1, {"attention_type": "bi_attention", "activation_bits": 1}, None, 0.0),
    (1, {"activation_bits": 1}, 1.0, 1.0),
])
def test_attention_loss_defaults_to_kl_for_a_regression_student_only(tmp_path, num_labels, student_kwargs, given,
                                                                     expected):
    from conftest import tiny_bert_config
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=num_labels)).eval()  # sdpa, as loaded
    student = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset", **student_kwargs)
    data = toy_dataset()
    if num_labels == 1:
        data = data.map(lambda row: {"labels": float(row["labels"])})
    # None: not given (the helper's own default is 1.0)
    args = _args(tmp_path, max_steps=1, task_loss_weight=0.0, cosine_loss_weight=0.0, attention_loss_weight=given)
    assert args.attention_loss == "kl"
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=data)
    assert args.attention_loss_weight == expected
    assert (teacher.config._attn_implementation == "eager") == (expected > 0)
    trainer.train()
    assert ("loss_attention" in trainer.state.log_history[0]) == (expected > 0)


def test_attention_loss_default_stays_off_when_the_heads_differ():
    from conftest import tiny_bert_config
    from transformers import BertForSequenceClassification

    from hf_binary_bert.distillation.trainer import default_attention_loss_weight

    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=1))
    student = BinaryBertForSequenceClassification.from_teacher(teacher)
    assert default_attention_loss_weight(student, teacher) == 1.0
    other = BertForSequenceClassification(tiny_bert_config(num_labels=1, num_attention_heads=1))
    assert default_attention_loss_weight(student, other) == 0.0
    pruned = BertForSequenceClassification(tiny_bert_config(num_labels=1))
    pruned.config.layer_num_attention_heads = [1] + [pruned.config.num_attention_heads] * (pruned.config.num_hidden_layers - 1)
    assert default_attention_loss_weight(student, pruned) == 0.0
    pruned_student = BinaryBertForSequenceClassification.from_teacher(teacher)
    pruned_student.config.layer_num_attention_heads = list(pruned.config.layer_num_attention_heads)
    assert default_attention_loss_weight(pruned_student, pruned) == 1.0  # the same heads layer by layer


@pytest.mark.parametrize("student_kwargs", [{"activation_bits": 1, "activation_quantizer": "elastic"}, {"activation_bits": 4}])
def test_record_softmax_gives_the_distributions_before_the_probability_quantizer(student_kwargs):
    from hf_binary_bert.attention import record_softmax

    teacher = tiny_teacher()
    student = _student_with(teacher, **student_kwargs).train()
    batch = {k: torch.tensor(v) for k, v in toy_dataset()[:4].items() if k != "labels"}
    batch["attention_mask"][1, 9:] = 0
    with record_softmax(student) as maps:
        out = student(**batch, output_attentions=True)
    assert len(maps) == len(out.attentions) == student.config.num_hidden_layers
    for a_soft, a_quant in zip(maps, out.attentions):
        assert a_soft.shape == a_quant.shape and a_soft.requires_grad
        torch.testing.assert_close(a_soft.sum(-1), torch.ones(a_soft.shape[:-1]))
        assert a_soft[1, :, :, 9:].abs().max() < 1e-6  # padding keys
        assert not torch.equal(a_soft, a_quant)  # the quantized map is another tensor
    assert not any(hasattr(m, "_softmax_record") for m in student.modules())  # nothing left attached
    student.eval()
    with record_softmax(student) as with_grad:
        student(**batch)
    with record_softmax(student) as without_grad, torch.no_grad():  # the factored inference path
        student(**batch)
    assert len(without_grad) == len(with_grad)
    for a, b in zip(without_grad, with_grad):
        torch.testing.assert_close(a, b.detach())


def test_softmax_attention_loss_compares_the_softmax_of_a_binarized_teacher_too(tmp_path):
    """A multi-step stage: the teacher is an earlier binarized stage; both sides' maps are their softmax."""
    from hf_binary_bert.attention import record_softmax

    teacher = _student_with(tiny_teacher(), activation_bits=2, activation_quantizer="elastic").eval()
    student = _student_with(tiny_teacher(), activation_bits=1, activation_quantizer="elastic").eval()
    teacher.set_attn_implementation("eager")
    batch = {k: torch.tensor(v) for k, v in toy_dataset()[:8].items()}
    features = {k: v for k, v in batch.items() if k != "labels"}
    for model in (teacher, student):
        calibrate(model, [features])
    losses = {}
    for distribution in ("quantized", "softmax"):
        args = _args(tmp_path, max_steps=1, task_loss_weight=0.0, prediction_loss_weight=0.0, hidden_loss_weight=0.0,
                     cosine_loss_weight=0.0, attention_loss_weight=1.0, attention_distribution=distribution)
        trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset())
        losses[distribution] = trainer.compute_loss(student, batch).item()
    with torch.no_grad(), record_softmax(teacher) as a_t, record_softmax(student) as a_s:
        out_t, out_s = teacher(**features, output_attentions=True), student(**features, output_attentions=True)
    assert losses["softmax"] == pytest.approx(attention_distillation_loss(a_s, a_t, features["attention_mask"], "kl").item(), rel=1e-5)
    assert losses["quantized"] == pytest.approx(
        attention_distillation_loss(out_s.attentions, out_t.attentions, features["attention_mask"], "kl").item(), rel=1e-5)
    assert losses["softmax"] != pytest.approx(losses["quantized"], rel=1e-2)


def test_training_student_with_recorded_softmax_maps_is_not_asked_for_its_quantized_maps(tmp_path):
    """With the attention loss on the recorded softmax of a student that records one per layer, its training forward
    runs without `output_attentions` (its quantized maps would only take memory): the same loss and gradients as
    with them. In eval mode (where the native runtime could run and record nothing) it still asks for them."""
    from hf_binary_bert.attention import record_softmax
    from hf_binary_bert.distillation.trainer import _records_every_layer

    teacher = tiny_teacher().eval()
    teacher.set_attn_implementation("eager")
    student = _student_with(teacher, activation_bits=1, activation_quantizer="elastic",
                            attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
    assert _records_every_layer(student) and not _records_every_layer(teacher)
    batch = {k: torch.tensor(v) for k, v in toy_dataset()[:8].items()}
    batch["attention_mask"][1, 9:] = 0
    features = {k: v for k, v in batch.items() if k != "labels"}
    calibrate(student, [features])
    args = _args(tmp_path, max_steps=1, task_loss_weight=0.0, prediction_loss_weight=0.0, hidden_loss_weight=0.0,
                 cosine_loss_weight=0.0, attention_loss_weight=1.0)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset())
    asked = []
    hook = student.register_forward_pre_hook(lambda m, a, kw: asked.append(kw.get("output_attentions")),
                                             with_kwargs=True)
    try:
        student.train()
        loss = trainer.compute_loss(student, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
        student.zero_grad()
        with torch.no_grad():
            out_t = teacher(**features, output_attentions=True)
        with record_softmax(student) as a_s:
            student(**features, output_attentions=True)
        expected = attention_distillation_loss(a_s, out_t.attentions, features["attention_mask"], "kl")
        expected.backward()
        student.eval()
        with torch.no_grad():
            trainer.compute_loss(student, batch)
    finally:
        hook.remove()
    assert asked[0] is None and asked[1] is True and asked[2] is True  # training: not asked; eval: asked
    assert torch.equal(loss.detach(), expected.detach())
    assert grads and all(torch.equal(grads[n], p.grad) for n, p in student.named_parameters() if n in grads)


@pytest.mark.parametrize(("student_kwargs", "given", "expected"), [
    ({"activation_bits": 1}, None, "softmax"), ({"activation_bits": 4}, None, "quantized"), ({}, None, "quantized"),
    ({"activation_bits": 1, "attention_type": "bi_attention"}, None, "quantized"),  # no softmax to compare
    ({"activation_bits": 1}, "quantized", "quantized"), ({"activation_bits": 4}, "softmax", "softmax"),
])
def test_attention_distribution_default_is_the_softmax_for_1bit_probabilities(tmp_path, student_kwargs, given, expected):
    teacher = tiny_teacher()
    args = _args(tmp_path, max_steps=1, attention_distribution=given)
    DistillationTrainer(teacher_model=teacher, model=_student_with(teacher, **student_kwargs), args=args,
                        train_dataset=toy_dataset())
    assert args.attention_distribution == expected


def test_attention_kl_reaches_a_1bit_student_only_through_the_softmax(tmp_path):
    """BiT's 1-bit probabilities {0, α}: the KL of the quantized map has no gradient for Q and K (the log of the zero
    entries is clamped); the KL of the softmax before the quantizer has one."""
    teacher = tiny_teacher()
    student = _student_with(teacher, activation_bits=1, activation_quantizer="elastic")
    batch = {k: torch.tensor(v) for k, v in toy_dataset()[:8].items()}
    grads = {}
    for distribution in ("quantized", "softmax"):
        args = _args(tmp_path, max_steps=1, task_loss_weight=0.0, prediction_loss_weight=0.0, hidden_loss_weight=0.0,
                     cosine_loss_weight=0.0, attention_loss_weight=1.0, attention_distribution=distribution)
        trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset())
        student.zero_grad()
        loss = trainer.compute_loss(student.train(), batch)
        loss.backward()
        query = student.bert.encoder.layer[0].attention.self.query
        grads[distribution] = (loss.item(), query.weight.grad.abs().sum().item())
    assert grads["quantized"][1] == 0.0 and grads["softmax"][1] > 0
    assert grads["softmax"][0] < grads["quantized"][0]  # no clamped log(1e-12) terms


def test_teacher_is_frozen_and_every_component_is_logged(tmp_path):
    teacher = tiny_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = DistillationTrainer(teacher_model=teacher, model=_student(teacher), args=_args(tmp_path, max_steps=3), train_dataset=toy_dataset())
    trainer.train()
    assert not trainer.teacher.training and not any(p.requires_grad for p in trainer.teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in trainer.teacher.state_dict().items())
    log = trainer.state.log_history[0]
    for name in ("task", "prediction", "hidden", "attention", "cosine"):
        assert f"loss_{name}" in log
    total = log["loss_task"] + log["loss_prediction"] + log["loss_hidden"] + log["loss_attention"] + log["loss_cosine"]
    assert log["loss"] == pytest.approx(total, rel=1e-4)


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    teacher = tiny_teacher()
    results = []
    for batch, accumulation in ((8, 1), (4, 2)):
        student = _student(teacher)
        trainer = DistillationTrainer(
            teacher_model=teacher, model=student,
            args=_args(tmp_path / f"{batch}", per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_steps=2),
            train_dataset=toy_dataset(),
        )
        trainer.train()
        results.append({k: v.detach().clone() for k, v in student.state_dict().items()})
    initial = _student(teacher).state_dict()
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(results[0][key], initial[key])  # the step did move the weights
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-6, rtol=1e-5), k


def test_resume_from_checkpoint_matches_the_uninterrupted_run(tmp_path):
    teacher = tiny_teacher()
    common = dict(max_steps=6, save_strategy="steps", save_steps=3, optim="adamw_torch", learning_rate=1e-3)
    straight = _student(teacher)
    DistillationTrainer(teacher_model=teacher, model=straight, args=_args(tmp_path / "a", **common), train_dataset=toy_dataset()).train()
    assert sorted(os.listdir(tmp_path / "a")) == ["checkpoint-3", "checkpoint-6"]
    assert "bert.encoder.layer.0.output.dense.weight" in __import__("safetensors.torch").torch.load_file(tmp_path / "a/checkpoint-3/model.safetensors")
    resumed = _student(teacher)
    trainer = DistillationTrainer(teacher_model=teacher, model=resumed, args=_args(tmp_path / "a", **common), train_dataset=toy_dataset())
    trainer.train(resume_from_checkpoint=str(tmp_path / "a/checkpoint-3"))
    assert trainer.state.global_step == 6
    for k, v in straight.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k


def test_head_learning_rate_gives_the_pooler_and_classifier_their_own_group(tmp_path):
    teacher = tiny_teacher()
    student = _student(teacher)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, train_dataset=toy_dataset(),
                                  args=_args(tmp_path, max_steps=1, optim="adamw_torch", head_learning_rate=0.5))
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(student.named_parameters())
    head = {n for n in names if n.startswith(("classifier.", "bert.pooler."))}
    assert head and set(head_parameter_names(student)) == head
    assert {lr_of[id(names[n])] for n in head} == {0.5}
    assert {lr_of[id(p)] for n, p in names.items() if n not in head} == {1e-2}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(names)  # every parameter once


def test_quantizer_learning_rate_gives_the_activation_quantizers_their_own_group(tmp_path):
    teacher = tiny_teacher()
    student = _student_with(teacher, activation_bits=1, activation_quantizer="elastic")
    trainer = DistillationTrainer(teacher_model=teacher, model=student, train_dataset=toy_dataset(),
                                  args=_args(tmp_path, max_steps=1, optim="adamw_torch", weight_decay=0.01,
                                             quantizer_learning_rate=1e-4, head_learning_rate=0.5))
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(student.named_parameters())
    quantizers = set(quantizer_parameter_names(student))
    # every layer's elastic quantizers: a step α and a shift β each (the query/key/value/probabilities ones too)
    assert {n.rsplit(".", 1)[1] for n in quantizers} == {"step", "shift"}
    assert {n for n in names if n.endswith((".step", ".shift"))} == quantizers
    head = set(head_parameter_names(student))
    assert {lr_of[id(names[n])] for n in quantizers} == {1e-4}
    assert {lr_of[id(names[n])] for n in head} == {0.5}
    assert {lr_of[id(p)] for n, p in names.items() if n not in quantizers | head} == {1e-2}
    # each moved parameter keeps the weight decay of the group it came from (the Trainer's: none for biases and
    # LayerNorm weights)
    assert {decay_of[id(names[n])] for n in quantizers} <= {0.0, 0.01}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(names)  # every parameter once
    before = {n: p.detach().clone() for n, p in names.items()}
    for p in names.values():
        p.grad = torch.ones_like(p)
    optimizer.step()  # Adam's first step moves every entry by its group's learning rate (+ lr·decay·|p|)
    moved = {n: (p.detach() - before[n]).abs() for n, p in names.items()}
    assert all(torch.allclose(moved[n], torch.full_like(moved[n], 1e-4), rtol=0.05) for n in quantizers)
    assert all(torch.allclose(moved[n], torch.full_like(moved[n], 0.5), rtol=0.05) for n in head)
    assert all(moved[n].min() > 5e-3 for n in names if n not in quantizers | head)
    with pytest.raises(ValueError, match="quantizer_learning_rate must be > 0"):
        _args(tmp_path, quantizer_learning_rate=0.0)


def test_pooled_loss_is_the_mse_of_the_pooler_outputs(tmp_path):
    teacher = tiny_teacher()
    student = _student(teacher).eval()  # no dropout: the loss is deterministic
    args = _args(tmp_path, max_steps=1, task_loss_weight=0.0, prediction_loss_weight=0.0, hidden_loss_weight=0.0,
                 attention_loss_weight=0.0, cosine_loss_weight=0.0, pooled_loss_weight=1.0)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset())
    batch = {k: torch.tensor(v) for k, v in toy_dataset()[:8].items()}
    features = {k: v for k, v in batch.items() if k != "labels"}
    loss = trainer.compute_loss(student, batch)
    with torch.no_grad():
        expected = F.mse_loss(student.bert(**features).pooler_output, teacher.bert(**features).pooler_output)
    assert expected > 0 and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="needs a model with a pooler"), capture_pooled(torch.nn.Linear(2, 2)):
        pass


def test_save_model_writes_a_packed_checkpoint_that_reloads_equal(tmp_path):
    teacher = tiny_teacher()
    student = _student(teacher)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=_args(tmp_path, max_steps=2), train_dataset=toy_dataset())
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    assert json.loads((tmp_path / "final/config.json").read_text())["packed_weights"] is True
    # the attention loss switched the student to eager attention; compare like with like
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final", attn_implementation="eager").eval()
    ids = torch.tensor(toy_dataset(4)["input_ids"])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, student.eval()(input_ids=ids).logits)


def test_round_ste_forward_is_the_rounding_and_gradient_goes_straight_through():
    from hf_binary_bert.binarization.ste import round_ste

    x = (torch.randn(64) * 3).requires_grad_()
    y = round_ste(x, torch.float16)
    assert y.dtype == torch.float32 and torch.equal(y, x.detach().half().float()) and not torch.equal(y, x.detach())
    (y * torch.arange(64.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(64.0))
    assert round_ste(x, torch.float32) is x
    with torch.no_grad():
        assert not round_ste(x, torch.bfloat16).requires_grad


def test_stored_dtypes_are_the_dtypes_packed_state_dict_writes():
    from hf_binary_bert.format import packed_state_dict, stored_dtypes

    teacher = tiny_teacher()
    student = _student_with(teacher, fp_dtype="float16", activation_bits=1, activation_quantizer="elastic",
                            activation_shift_dtype="bfloat16")
    dtypes = stored_dtypes(student)
    packed = packed_state_dict(student)
    assert dtypes and all(packed[name].dtype == dtype for name, dtype in dtypes.items())
    # every trainable float32 parameter the file holds narrower is rounded; binarized weights are packed, not rounded
    narrower = {name for name, p in student.named_parameters() if name in packed and packed[name].dtype != p.dtype}
    assert narrower == set(dtypes)
    assert any(n.endswith("LayerNorm.weight") for n in dtypes) and any(n.endswith("_quantizer.shift") for n in dtypes)
    assert not any(n.endswith(("query.weight", "weight_scale", "weight_offset")) for n in dtypes)
    assert dtypes["bert.encoder.layer.0.attention.self.query.bias"] == torch.float16
    assert stored_dtypes(_student_with(teacher, fp_dtype="float32")) == {}
    assert stored_dtypes(teacher) == {}  # a full-precision BERT: nothing rounded


@pytest.mark.parametrize("train_in_fp_dtype", [True, False])
def test_float16_student_trained_is_the_student_saved(tmp_path, train_in_fp_dtype):
    """With `train_in_fp_dtype` the student's forward during training uses its LayerNorms, biases and tables as the
    float16 file stores them: the forward the trainer scores equals the reloaded file's exactly, while the float32
    master parameters keep updates below float16's resolution. Without it the two differ."""
    teacher = tiny_teacher()
    student = _student_with(teacher, fp_dtype="float16")
    args = _args(tmp_path, max_steps=3, train_in_fp_dtype=train_in_fp_dtype)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset())
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final", attn_implementation="eager").eval()
    ids = torch.tensor(toy_dataset(4)["input_ids"])
    student.eval()
    with torch.no_grad():
        trained = trainer._forward_as_saved(student)(input_ids=ids).logits
        saved = reloaded(input_ids=ids).logits
    layer_norm = student.bert.encoder.layer[0].output.LayerNorm.weight
    assert layer_norm.dtype == torch.float32 and not torch.equal(layer_norm, layer_norm.half().float())
    if train_in_fp_dtype:
        assert torch.equal(trained, saved)
    else:
        assert torch.equal(trained, student(input_ids=ids).logits) and not torch.equal(trained, saved)


def test_a_binarized_float16_teacher_teaches_as_saved(tmp_path):
    """A multi-step stage's teacher is the previous stage's student: with `train_in_fp_dtype` it teaches as its
    float16 file would, not with its float32 master parameters."""
    stage = _student_with(tiny_teacher(), fp_dtype="float16")
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(torch.randn_like(p) * 1e-3)  # off the float16 grid
    stage.save_pretrained(tmp_path / "stage")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "stage", attn_implementation="eager").eval()
    ids = torch.tensor(toy_dataset(4)["input_ids"])
    for train_in_fp_dtype in (True, False):
        args = _args(tmp_path, max_steps=1, train_in_fp_dtype=train_in_fp_dtype)
        trainer = DistillationTrainer(teacher_model=stage, model=_student_with(tiny_teacher()), args=args,
                                      train_dataset=toy_dataset())
        with torch.no_grad():
            taught = trainer._forward_as_saved(trainer.teacher)(input_ids=ids).logits
            assert torch.equal(taught, reloaded(input_ids=ids).logits) == train_in_fp_dtype


def test_loss_falls_on_two_processes_and_student_reloads(tmp_path):
    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    import socket

    with socket.socket() as sock:  # a free port: a fixed one can still be held by an earlier run
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           os.path.join(here, "ddp_distill_script.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    # soft cross-entropy is bounded below by the teacher's entropy; the hidden-state MSE can go to 0
    assert result["losses"][-1] < result["losses"][0], result["losses"]
    assert result["hidden"][-1] < 0.7 * result["hidden"][0], result["hidden"]
    assert result["reload_equal"]
    assert result["components"] == ["loss_hidden", "loss_prediction"]
