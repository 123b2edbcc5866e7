"""Can the task head alone fit a W1A1 student's scores to the teacher's? (issue 16: W1A1 stays near the mean)

A W1A1 BiT student made `from_teacher` (elastic 1-bit activations, 1-bit word embeddings, learned α/γ per head),
its activation quantizers calibrated on the same pairs, then frozen in eval mode (no dropout): its last-layer
`[CLS]` states on the first N training pairs are computed once, and copies of its full-precision pooler and
classifier are fitted to the teacher's scores on those pairs with Adam (full batch, the distillation's prediction
MSE) for 300 steps. Prints the MSE every 25 steps for two learning rates. The teacher's score variance is the
MSE of predicting the mean. 1 thread.

    python examples/stsb_head_fit_probe.py TEACHER DATA_DIR [N]   (N defaults to 64)
"""
import copy
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_binary_bert import BinaryBertForSequenceClassification, calibrate
from hf_binary_bert.recipes import load_task_data

torch.set_num_threads(1)
torch.manual_seed(0)
TEACHER, DATA_DIR = sys.argv[1:3]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 64
tok = AutoTokenizer.from_pretrained(TEACHER)
data = load_task_data("stsb", tok, data_dir=DATA_DIR, max_seq_length=128)
batch = data.collator([{k: data.train[i][k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                       for i in range(N)])
teacher = AutoModelForSequenceClassification.from_pretrained(TEACHER).eval()
student = BinaryBertForSequenceClassification.from_teacher(
    teacher, activation_bits=1, embedding_bits=1, activation_quantizer="elastic", weight_scale="learned_offset",
    scale_granularity="head")
calibrate(student, [batch])
student.eval()
with torch.no_grad():
    target = teacher(**batch).logits[:, 0]
    cls = student.bert(**batch).last_hidden_state[:, :1].detach()  # [N, 1, D]: what the pooler reads
    start = student.classifier(student.bert.pooler(cls))[:, 0]
print(f"{N} training pairs: teacher score variance {target.var(unbiased=False):.3f}, student score std "
      f"{start.std():.3f} (teacher {target.std():.3f})\n")
print("| learning rate | " + " | ".join(f"step {s}" for s in range(0, 301, 25)) + " |")
print("|---" * 14 + "|")
for lr in (5e-4, 5e-3):
    pooler, classifier = copy.deepcopy(student.bert.pooler), copy.deepcopy(student.classifier)
    optimizer = torch.optim.Adam([*pooler.parameters(), *classifier.parameters()], lr=lr)
    cells = []
    for step in range(301):
        loss = (classifier(pooler(cls))[:, 0] - target).pow(2).mean()
        if step % 25 == 0:
            cells.append(f"{loss.item():.3f}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"| {lr:g} | " + " | ".join(cells) + " |")
