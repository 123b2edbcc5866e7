"""The training and eager paths on a CUDA GPU (skipped without one: the CI machines have none; run on a GPU machine
with `python -m pytest tests/test_cuda.py`).

The native runtime and the bitwise kernels are CPU code; on a GPU a binarized model trains and predicts through its
PyTorch forward. These tests distil tiny students of every binarization scheme on the GPU with the
`DistillationTrainer`, pack them there, and check that the packed model, saved from the GPU and loaded on the CPU,
gives the GPU's predictions.
"""

import pytest
import torch
from distill_helpers import tiny_teacher, toy_dataset

from hf_binary_bert import (
    BinaryBertForSequenceClassification,
    DistillationTrainer,
    DistillationTrainingArguments,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

SCHEMES = {
    "W1A32 learned α·B + γ": {"weight_scale": "learned_offset", "scale_granularity": "head"},
    "W1A8 elastic": {"weight_scale": "learned", "activation_bits": 8, "activation_quantizer": "elastic"},
    "W1A1 BiT (elastic, binarized softmax)": {"weight_scale": "learned", "activation_bits": 1,
                                              "activation_quantizer": "elastic"},
    "W1A1 Bi-Attention, 1-bit embeddings": {"weight_scale": "learned", "activation_bits": 1,
                                            "attention_type": "bi_attention", "embedding_bits": 1},
}


def _distil(student, teacher, out, **extra):
    args = DistillationTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=16, max_steps=40, learning_rate=2e-3, logging_steps=5,
        report_to=[], save_strategy="no", disable_tqdm=True, seed=0, hidden_loss_weight=1.0,
        prediction_loss_weight=1.0, temperature=2.0, **extra)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset(256))
    trainer.train()
    return trainer


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_distils_on_the_gpu_and_the_cpu_loads_what_it_saved(scheme, tmp_path):
    torch.manual_seed(0)
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, **SCHEMES[scheme])
    extra = {"dmd_loss_weight": 1.0} if "Bi-Attention" in scheme else {}  # BiBERT's direction matching
    trainer = _distil(student, teacher, tmp_path / "run", **extra)
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert all(p.device.type == "cuda" for p in model.parameters())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses  # the student moves towards the teacher on the GPU

    ids = torch.tensor(toy_dataset(32, seed=1)["input_ids"])
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=ids.cuda()).logits.float().cpu()
        model.freeze()  # packs the weights on the GPU
        packed = model(input_ids=ids.cuda()).logits.float().cpu()
    assert next(model.parameters()).device.type == "cuda"
    # the packed forward is the training form's eval forward (α·B + γ from the same bits) up to float rounding
    torch.testing.assert_close(packed, trained, rtol=1e-4, atol=1e-4)

    model.save_pretrained(tmp_path / "packed")
    on_cpu = BinaryBertForSequenceClassification.from_pretrained(tmp_path / "packed").eval()
    assert next(on_cpu.parameters()).device.type == "cpu"
    with torch.inference_mode():
        native = on_cpu(input_ids=ids).logits
        reference = on_cpu.set_inference_kernel("reference")(input_ids=ids).logits
    # the CPU's reference forward against the GPU's: float rounding apart, the same computation; with 1-bit
    # activations a value within rounding of a sign threshold may flip, so W1A1 compares the predicted classes
    if "W1A1" in scheme:
        assert (reference.argmax(-1) == packed.argmax(-1)).float().mean() >= 0.9
        assert (native.argmax(-1) == packed.argmax(-1)).float().mean() >= 0.9
    else:
        torch.testing.assert_close(reference, packed, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(native, packed, rtol=1e-3, atol=1e-3)


def test_a_packed_model_moved_to_the_gpu_predicts_as_on_the_cpu(tmp_path):
    """A checkpoint loaded on the CPU and moved with `.to("cuda")`: the eager path there (the native runtime does not
    apply to CUDA tensors), the same logits as the CPU's reference forward up to float rounding; and back on the CPU
    the native runtime runs again on the moved-back tensors."""
    torch.manual_seed(0)
    student = BinaryBertForSequenceClassification.from_teacher(tiny_teacher(), **SCHEMES["W1A8 elastic"])
    student.train()(input_ids=torch.tensor(toy_dataset(8)["input_ids"]))  # calibrates the activation quantizers
    student.eval().freeze().save_pretrained(tmp_path)
    model = BinaryBertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.tensor(toy_dataset(16, seed=2)["input_ids"])
    with torch.inference_mode():
        cpu = model(input_ids=ids).logits
        gpu = model.to("cuda")(input_ids=ids.cuda()).logits.cpu()
        back = model.to("cpu")(input_ids=ids).logits
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    assert torch.equal(back, cpu)
