"""Progressive binarization and quantization (`DistillationArguments.binarization_ramp_ratio`,
`activation_ramp_ratio`): λ·W_q + (1 − λ)·W and λ·x̂ + (1 − λ)·(x − β) in training forwards, λ rising linearly over a
share of the steps, never in eval mode or in the saved student."""

import pytest
import torch
import torch.nn.functional as F
from distill_helpers import distill_args, tiny_teacher, toy_dataset

from hf_binary_bert import BinaryBertForSequenceClassification, DistillationTrainer
from hf_binary_bert.binarization.activation import ActivationQuantizer
from hf_binary_bert.binarization.embedding import BinaryEmbedding
from hf_binary_bert.binarization.linear import BinarizedWeightMixin, BinaryLinear


def _linear():
    torch.manual_seed(0)
    layer = BinaryLinear(16, 8, weight_scale="learned_offset", num_groups=2)
    with torch.no_grad():
        layer.weight_scale.mul_(1.3)
        layer.weight_offset.add_(0.01)
    return layer


@pytest.mark.parametrize("lam", [0.0, 0.25, 1.0])
def test_linear_training_forward_blends_latent_and_binarized_weight(lam):
    layer = _linear().train()
    x = torch.randn(3, 16)
    with torch.no_grad():
        binarized = layer.quantized_weight()
    layer.binarization_mix = lam
    expected = F.linear(x, lam * binarized + (1 - lam) * layer.weight.detach(), layer.bias.detach())
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    if lam == 0.0:  # the latent (teacher's) weight alone
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)
    # eval mode: the binarized weight whatever λ says
    layer.eval()
    torch.testing.assert_close(layer(x), F.linear(x, binarized, layer.bias), rtol=0, atol=0)


def test_blend_reaches_latent_weight_and_scales_through_autograd():
    layer = _linear().train()
    layer.binarization_mix = 0.25
    layer(torch.randn(4, 16)).sum().backward()
    assert layer.weight.grad.abs().sum() > 0 and layer.weight_scale.grad.abs().sum() > 0
    layer.zero_grad()
    layer.binarization_mix = 0.0  # α and γ do not enter the forward at λ = 0
    layer(torch.randn(4, 16)).sum().backward()
    assert layer.weight_scale.grad is None or layer.weight_scale.grad.abs().sum() == 0


def test_embedding_training_forward_blends_rows():
    torch.manual_seed(0)
    table = BinaryEmbedding(10, 6, weight_scale="learned_offset").train()
    ids = torch.tensor([[1, 2, 3]])
    binarized = table(ids).detach()
    table.binarization_mix = 0.5
    torch.testing.assert_close(table(ids), 0.5 * binarized + 0.5 * table.weight[ids].detach(), rtol=1e-6, atol=1e-7)
    table.eval()
    torch.testing.assert_close(table(ids), binarized, rtol=0, atol=0)


@pytest.mark.parametrize("bits", [1, 4])
def test_activation_quantizer_blends_its_input_in_training(bits):
    torch.manual_seed(0)
    quantizer = ActivationQuantizer(bits, scheme="elastic", shift_shape=(6,)).train()
    with torch.no_grad():
        quantizer.shift.copy_(torch.linspace(-0.2, 0.3, 6))
    x = torch.randn(4, 6, requires_grad=True)
    quantized = quantizer(x).detach()  # calibrates the step on this batch
    assert quantized.unique().numel() <= 2 ** bits
    quantizer.quantization_mix = 0.25
    blended = quantizer(x)
    torch.testing.assert_close(blended, 0.25 * quantized + 0.75 * (x - quantizer.shift).detach(), rtol=1e-6, atol=1e-6)
    blended.sum().backward()  # through the STE and the identity part
    assert x.grad.abs().sum() > 0 and quantizer.shift.grad is not None
    quantizer.eval()
    torch.testing.assert_close(quantizer(x), quantized, rtol=0, atol=0)


def test_linear_with_blended_input_quantizer_matches_plain_composition():
    layer = _linear().train()
    layer.input_quantizer = ActivationQuantizer(1, scheme="elastic", shift_shape=(16,))
    x = torch.randn(5, 16)
    layer(x)  # calibrates
    layer.input_quantizer.quantization_mix = 0.5
    expected = F.linear(layer.input_quantizer(x), layer.quantized_weight(), layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    layer.input_quantizer.quantization_mix = 1.0  # λ = 1: the fused kernel form, close to F.linear's
    torch.testing.assert_close(layer(x), F.linear(layer.input_quantizer(x), layer.quantized_weight(), layer.bias),
                               rtol=1e-5, atol=1e-5)


def _train_recording(trainer, record):
    """Train, appending `record()` after each compute_loss call (the λ that step's forward used); return the list."""
    seen, compute_loss = [], trainer.compute_loss

    def spy(model, inputs, *args, **kwargs):
        out = compute_loss(model, inputs, *args, **kwargs)
        seen.append(record())
        return out

    trainer.compute_loss = spy
    trainer.train()
    return seen


def test_trainer_ramps_lambda_over_the_given_share_and_resets_it(tmp_path):
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=1, embedding_bits=1)
    modules = [m for m in student.modules() if isinstance(m, BinarizedWeightMixin)]
    assert any(isinstance(m, BinaryEmbedding) for m in modules) and any(isinstance(m, BinaryLinear) for m in modules)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, train_dataset=toy_dataset(),
                                  args=distill_args(tmp_path, max_steps=4, binarization_ramp_ratio=0.5))
    seen = _train_recording(trainer, lambda: sorted({m.binarization_mix for m in modules}))
    assert seen == [[0.0], [0.5], [1.0], [1.0]]  # λ = min(1, step / (0.5 · 4))
    assert {m.binarization_mix for m in modules} == {1.0}  # reset after training
    assert {m.quantization_mix for m in student.modules() if isinstance(m, ActivationQuantizer)} == {1.0}


def test_trainer_ramps_activations_on_their_own_schedule(tmp_path):
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=1)
    quantizers = [m for m in student.modules() if isinstance(m, ActivationQuantizer)]
    weights = [m for m in student.modules() if isinstance(m, BinarizedWeightMixin)]
    assert quantizers and weights
    trainer = DistillationTrainer(teacher_model=teacher, model=student, train_dataset=toy_dataset(),
                                  args=distill_args(tmp_path, max_steps=4, activation_ramp_ratio=0.75))
    seen = _train_recording(trainer, lambda: ({m.quantization_mix for m in quantizers},
                                              {m.binarization_mix for m in weights}))
    assert [q for q, _ in seen] == [{0.0}, {1 / 3}, {2 / 3}, {1.0}]  # λ = min(1, step / (0.75 · 4))
    assert all(w == {1.0} for _, w in seen)  # weights binarized from the first step
    assert {m.quantization_mix for m in quantizers} == {1.0}


def test_trainer_resets_lambda_when_training_ends_mid_ramp(tmp_path):
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=1)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, train_dataset=toy_dataset(),
                                  args=distill_args(tmp_path, max_steps=2, binarization_ramp_ratio=0.9,
                                                    activation_ramp_ratio=0.9))
    seen = _train_recording(trainer, lambda: {m.binarization_mix for m in student.modules()
                                              if isinstance(m, BinarizedWeightMixin)})
    assert seen == [{0.0}, {1 / 1.8}]  # the last step still blends
    assert {m.binarization_mix for m in student.modules() if isinstance(m, BinarizedWeightMixin)} == {1.0}
    assert {m.quantization_mix for m in student.modules() if isinstance(m, ActivationQuantizer)} == {1.0}


def test_trainer_without_ramp_leaves_lambda_alone(tmp_path):
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=8)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, train_dataset=toy_dataset(),
                                  args=distill_args(tmp_path, max_steps=2))
    trainer.train()
    assert {m.binarization_mix for m in student.modules() if isinstance(m, BinarizedWeightMixin)} == {1.0}


@pytest.mark.parametrize("name", ["binarization_ramp_ratio", "activation_ramp_ratio"])
@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ramp_ratio_outside_zero_one_is_refused(tmp_path, name, ratio):
    with pytest.raises(ValueError, match=f"{name} must be in \\[0, 1\\)"):
        distill_args(tmp_path, **{name: ratio})
