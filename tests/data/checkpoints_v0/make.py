"""Write the checkpoints that tests/test_old_checkpoints.py loads: packed checkpoints written by the code of main at
47e5f65 (before the format module of issue 15), with their outputs on fixed inputs (`outputs.safetensors`).

Kept as test data so that every later format change is checked against files written before it; re-running this
script with newer code would defeat that, so do not regenerate them (add a new folder next to this one instead).

Run from the repository root: `python tests/data/checkpoints_v0/make.py` (the code files the checkpoint would carry
are deleted: the test loads them with the package, and they would be most of the folder's size).
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

import hf_binary_bert as hb

HERE = Path(__file__).resolve().parent
TINY = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 20,
            "max_position_embeddings": 16, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
INPUT_IDS = torch.randint(1, 40, (3, 9), generator=torch.Generator().manual_seed(0))
ATTENTION_MASK = torch.ones_like(INPUT_IDS).index_fill_(1, torch.tensor([7, 8]), 0)
CASES = {
    # W1A1 (BiT elastic activations, 1-bit softmax), learned α and γ per head, fp16 full-precision parts
    "w1a1-sequence-classification": (hb.BinaryBertForSequenceClassification, {
        "num_labels": 3, "activation_bits": 1, "activation_quantizer": "elastic", "weight_scale": "learned_offset",
        "scale_granularity": "head", "fp_dtype": "float16", "binarized_modules": [
            "query", "key", "value", "attention_output", "intermediate", "output", "pooler"]}),
    # W1A32 masked LM, learned α per row, 1-bit word embeddings (untied decoder)
    "w1-masked-lm": (hb.BinaryBertForMaskedLM, {
        "weight_scale": "learned", "scale_granularity": "row", "embedding_bits": 1, "tie_word_embeddings": False}),
}


def main():
    torch.manual_seed(0)
    for name, (cls, fields) in CASES.items():
        model = cls(hb.BinaryBertConfig(**TINY, **fields)).eval()
        hb.calibrate(model, [{"input_ids": torch.randint(1, 40, (4, 9))} for _ in range(2)])
        model.freeze()
        folder = HERE / name
        model.save_pretrained(folder)
        for code in folder.glob("*.py"):
            code.unlink()
        loaded = cls.from_pretrained(folder).eval().set_inference_kernel("reference")
        with torch.no_grad():
            logits = loaded(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).logits
        save_file({"input_ids": INPUT_IDS, "attention_mask": ATTENTION_MASK, "logits": logits.contiguous()},
                  folder / "outputs.safetensors")


if __name__ == "__main__":
    main()
