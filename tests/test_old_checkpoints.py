"""Checkpoints written before a format change keep loading with the same outputs (issue 15, goal 3).

`tests/data/checkpoints_v0/` holds packed checkpoints written by the code of main at 47e5f65 (`make.py` there): a
W1A1 sequence classifier (elastic activations, learned α and γ per head, fp16 parts) and a W1A32 masked LM (learned α
per row, 1-bit word embeddings), each with its logits on fixed inputs computed then on the pure-PyTorch reference path.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

import hf_binary_bert as hb

DATA = Path(__file__).resolve().parent / "data" / "checkpoints_v0"
CASES = {
    "w1a1-sequence-classification": (hb.BinaryBertForSequenceClassification, AutoModelForSequenceClassification),
    "w1-masked-lm": (hb.BinaryBertForMaskedLM, AutoModelForMaskedLM),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_old_checkpoint_loads_with_identical_outputs(name):
    folder = DATA / name
    saved = load_file(folder / "outputs.safetensors")
    inputs = {"input_ids": saved["input_ids"], "attention_mask": saved["attention_mask"]}
    cls, auto = CASES[name]
    for loader in (cls, auto):
        model = loader.from_pretrained(folder)
        assert type(model) is cls and model.config.packed_weights
        model.eval().set_inference_kernel("reference")
        with torch.no_grad():
            logits = model(**inputs).logits
        # bit for bit on the machine kind that saved them; PyTorch's float kernels (oneDNN's GELU, the GEMMs) pick
        # their code by CPU, so another kind differs by rounding (5.6e-8 seen on an AVX-512 AMD EPYC Zen 4). The
        # loaded tensors themselves are compared exactly by test_old_checkpoint_round_trips.
        torch.testing.assert_close(logits, saved["logits"], rtol=0, atol=1e-6)
    # the default path (native runtime or bitwise kernels where they apply) agrees up to float rounding
    model.set_inference_kernel("auto")
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, saved["logits"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_old_checkpoint_round_trips(name, tmp_path):
    """Re-saving an old checkpoint with the current code writes the same tensors (names, dtypes, values)."""
    cls, _ = CASES[name]
    cls.from_pretrained(DATA / name).save_pretrained(tmp_path)
    old, new = load_file(DATA / name / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert old.keys() == new.keys()
    for key in old:
        assert old[key].dtype == new[key].dtype and torch.equal(old[key], new[key]), key
