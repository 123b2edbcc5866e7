"""STS-B students at initialisation (`from_teacher`, before any training step), issue 16 §2: for each activation
width, the spread of the student's scores against the teacher's (std, R² against the teacher), the hidden-state
and prediction losses, and the gradient norm each loss sends to the classifier, the pooler and the encoder.
64 held-out pairs (one batch), sequences ≤ 64 tokens, dropout off, 1 thread.

    python examples/stsb_stage1_probe.py TEACHER DATA_DIR
    (TEACHER: a MiniLM fine-tuned on STS-B; DATA_DIR: the folder written by data.write_holdout_split)
"""
import sys

import torch
from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding

from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.distillation.losses import hidden_state_mse, prediction_distillation_loss
from hf_binary_bert.recipes import load_task_data

torch.set_num_threads(1); torch.manual_seed(0)
T, DATA_DIR = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(T)
data = load_task_data("stsb", tok, data_dir=DATA_DIR, max_seq_length=64, max_eval_samples=64, train=False)
batch = DataCollatorWithPadding(tok)([{k: r[k] for k in ("input_ids", "attention_mask", "token_type_ids")} for r in data.eval])
teacher = BertForSequenceClassification.from_pretrained(T).eval()
with torch.no_grad(): to = teacher(**batch, output_hidden_states=True)
t = to.logits.flatten()
print(f"teacher: std {t.std():.3f}")
for bits in (32, 8, 4, 2, 1):
    s = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset", scale_granularity="head",
        activation_bits=bits, activation_quantizer="elastic", embedding_bits=1)
    s.train(); [m.eval() for m in s.modules() if isinstance(m, torch.nn.Dropout)]
    so = s(**batch, output_hidden_states=True)
    y = so.logits.flatten()
    r2 = 1 - ((y - t) ** 2).mean() / t.var(unbiased=False)
    pooled_std = None
    lh = hidden_state_mse(so.hidden_states, to.hidden_states, batch["attention_mask"])
    lp = prediction_distillation_loss(so.logits, to.logits, regression=True)
    norms = {}
    for name, loss in (("hidden", lh), ("pred", lp)):
        s.zero_grad(); loss.backward(retain_graph=True)
        def g(pred, s=s):
            return sum(p.grad.pow(2).sum() for n, p in s.named_parameters()
                       if p.grad is not None and pred(n)) ** 0.5

        norms[name] = (float(g(lambda n: n.startswith("classifier"))), float(g(lambda n: "pooler" in n)), float(g(lambda n: "encoder" in n)))
    per_layer = [float(((a - b) ** 2).mean()) for a, b in zip(so.hidden_states, to.hidden_states)]
    print(f"W1A{bits}: out std {y.std():.3f} R2 {r2:.3f} loss_hidden {lh:.3f} (per state {', '.join(f'{v:.3f}' for v in per_layer)}) "
          f"loss_pred {lp:.3f}; grad norm classifier/pooler/encoder hidden={tuple(round(v,4) for v in norms['hidden'])} pred={tuple(round(v,4) for v in norms['pred'])}")
