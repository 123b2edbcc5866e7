"""Which binarized part removes the input dependence of an STS-B student at initialisation (issue 16 §2).

`from_teacher` students (learned offset per head, W1A32: float activations) with only some Linears binarized, scored
before any training step on 64 held-out pairs against the teacher's scores: output std, Pearson correlation with
the teacher, R² against the teacher. Last rows: every Linear binarized, then each layer's α re-fitted by least
squares on its output over 64 other held-out pairs (α_g = ⟨y_fp − γ·Σx, B·x⟩ / ‖B·x‖² per head g: the α that best
reproduces the full-precision layer's output on data, instead of mean|W − γ|), or each bias corrected by the mean
output error, b ← b − (W_q − W)·E[x] over the same pairs (the bias correction of data-free quantization, Nagel et
al. 2019). 1 thread, eval mode.

    python examples/stsb_init_parts.py TEACHER SPLIT > docs/measurements/stsb-stage1-init-parts.md
"""
import sys

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.binarization.linear import BinaryLinear, per_row
from hf_binary_bert.binarization.ste import binary_sign
from hf_binary_bert.recipes import load_task_data

torch.set_num_threads(1)
T, SPLIT = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(T)
data = load_task_data("stsb", tok, data_dir=SPLIT, max_seq_length=64, max_eval_samples=128, train=False)
rows = [{k: r[k] for k in ("input_ids", "attention_mask", "token_type_ids")} for r in data.eval]
calibration, batch = data.collator(rows[:64]), data.collator(rows[64:])
teacher = BertForSequenceClassification.from_pretrained(T).eval()
with torch.no_grad():
    target = teacher(**batch).logits.flatten()


def row(name, student):
    with torch.no_grad():
        y = student(**batch).logits.flatten()
    r2 = 1 - ((y - target) ** 2).mean() / target.var(unbiased=False)
    corr = torch.corrcoef(torch.stack([y, target]))[0, 1]
    print(f"| {name} | {y.std():.3f} | {corr:.3f} | {r2:.3f} |")


def layer_inputs(student):
    """{name: [N, in] input of every BinaryLinear over the real tokens of the calibration pairs}."""
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0]))
             for n, m in student.named_modules() if isinstance(m, BinaryLinear)]
    student(**calibration)
    for h in hooks:
        h.remove()
    mask = calibration["attention_mask"].bool()
    return {name: x[mask] for name, x in inputs.items()}


@torch.no_grad()
def bias_correction(student):
    inputs = layer_inputs(student)
    for name, m in student.named_modules():
        if name in inputs:
            m.bias.sub_((m.quantized_weight() - m.weight) @ inputs[name].mean(0))


@torch.no_grad()
def least_squares_alpha(student):
    inputs = layer_inputs(student)
    for name, m in student.named_modules():
        if name not in inputs:
            continue
        x = inputs[name]
        _, gamma = m.scales()
        gamma_rows = per_row(gamma, m.weight.shape[0])
        b = x @ binary_sign(m.weight - gamma_rows).T
        y = x @ m.weight.T - x.sum(-1, keepdim=True) * gamma_rows.reshape(1, -1)
        groups = (len(x), m.num_groups, -1)
        m.weight_scale.copy_((y * b).reshape(groups).sum((0, 2)) / (b * b).reshape(groups).sum((0, 2)))


print(f"Teacher's output std on these 64 pairs: {target.std():.3f}.\n")
print("| binarized (W1A32, learned offset per head) | output std | corr. with teacher | R² vs teacher |")
print("|---|---|---|---|")
parts = [("query, key, value", ["query", "key", "value"]), ("value only", ["value"]),
         ("attention output only", ["attention_output"]), ("FFN (intermediate, output) only", ["intermediate", "output"])]
for name, modules in parts:
    row(name, BinaryBertForSequenceClassification.from_teacher(
        teacher, weight_scale="learned_offset", scale_granularity="head", binarized_modules=modules).eval())
for bits in (32, 1):
    student = BinaryBertForSequenceClassification.from_teacher(
        teacher, weight_scale="learned_offset", scale_granularity="head", embedding_bits=bits).eval()
    row(f"all six encoder Linears, word embeddings {bits}-bit", student)
least_squares_alpha(student)
row("all six, word embeddings 1-bit, α re-fitted by least squares on the output", student)
student = BinaryBertForSequenceClassification.from_teacher(
    teacher, weight_scale="learned_offset", scale_granularity="head", embedding_bits=1).eval()
bias_correction(student)
row("all six, word embeddings 1-bit, biases corrected by the mean output error", student)
