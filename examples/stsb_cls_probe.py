"""Where a fine-tuned BERT's regression score gets its input dependence, and what binarizing removes (issue 16).

Before any training, on 128 held-out STS-B pairs (≤ 64 tokens): the variance of the `[CLS]` hidden state over the
pairs at every layer of the teacher (summed over the hidden dimensions; embeddings first), and for `from_teacher`
students (W1A32, learned offset per head, 1-bit word embeddings) the output spread, the correlation with the
teacher's scores and R² against them — all six layers binarized, or only the last (the other layers the teacher's
own). 1 thread, eval mode, eager attention.

    python examples/stsb_cls_probe.py TEACHER SPLIT > docs/measurements/stsb-cls-probe.md
"""
import copy
import sys

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.recipes import load_task_data

torch.set_num_threads(1)
T, SPLIT = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(T)
data = load_task_data("stsb", tok, data_dir=SPLIT, max_seq_length=64, max_eval_samples=128, train=False)
batch = data.collator([{k: r[k] for k in ("input_ids", "attention_mask", "token_type_ids")} for r in data.eval])
teacher = BertForSequenceClassification.from_pretrained(T, attn_implementation="eager").eval()


@torch.no_grad()
def run(model):
    out = model(**batch, output_hidden_states=True)
    return out.logits.flatten(), [float(h[:, 0].var(0, unbiased=False).sum()) for h in out.hidden_states]


target, teacher_var = run(teacher)
print(f"{len(target)} held-out pairs. Teacher: output std {target.std():.3f}.\n")
print("| hidden state | " + " | ".join(["embeddings"] + [f"layer {i}" for i in range(1, len(teacher_var))]) + " |")
print("|---|" + "---|" * len(teacher_var))
print("| teacher: `[CLS]` variance over the pairs | " + " | ".join(f"{v:.2f}" for v in teacher_var) + " |\n")
print("| student (W1A32, learned offset per head, 1-bit word embeddings) | output std | corr. with teacher | R² vs teacher |")
print("|---|---|---|---|")
n = teacher.config.num_hidden_layers
for name, keep in (("all six layers binarized", ()), ("only the last layer binarized", range(n - 1))):
    student = BinaryBertForSequenceClassification.from_teacher(
        teacher, weight_scale="learned_offset", scale_granularity="head", embedding_bits=1).eval()
    student.set_attn_implementation("eager")  # the teacher's layers below read the eager form of the mask
    for i in keep:  # the teacher's own full-precision layer
        student.bert.encoder.layer[i] = copy.deepcopy(teacher.bert.encoder.layer[i])
    with torch.no_grad():
        y = student(**batch).logits.flatten()
    r2 = 1 - ((y - target) ** 2).mean() / target.var(unbiased=False)
    corr = torch.corrcoef(torch.stack([y, target]))[0, 1]
    print(f"| {name} | {y.std():.3f} | {corr:.3f} | {r2:.3f} |")
