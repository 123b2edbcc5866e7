"""Stage-1 probes on STS-B (issue 16 §2): why the first stage of a 1-1-1 schedule does not leave the mean.

One binarized stage (BiT's recipe: learned offset per head, elastic activations, 1-bit word embeddings;
`--bits` activation bits) distilled from the full-precision teacher with a lean loop that mirrors
`DistillationTrainer`'s defaults (AdamW, weight decay 0, linear warm-up over 10 % of the steps then linear decay,
ℓ = ℓ_pred (MSE on the score) + ℓ_hid (per-layer hidden-state MSE)), with one knob per candidate remedy:

    --head-lr LR      a separate learning rate for the pooler and classifier
    --pooled W        + W·MSE(pooled [CLS] state of the student, of the teacher)
    --lr LR           the learning rate of everything else (latent weights, scales, quantizers)
    --bits B          activation bits of the stage (W1A32 / W1A8 / W1A4 ...)
    --steps N         the stage's budget

Scored on the held-out pairs (Pearson with the gold scores, output std, skill = R² against the teacher's
scores); appends one JSON line per run to --results. 1 torch thread.

    python examples/stsb_stage1_recipes.py --name base --teacher TEACHER --data-dir SPLIT --results R.jsonl
    python examples/collect_stsb_stage1_recipes.py R.jsonl > docs/measurements/stsb-stage1-recipes.md

(TEACHER: a MiniLM fine-tuned on STS-B; SPLIT: the folder written by `data.write_holdout_split`; `--task sst2`
with an SST-2 teacher and data folder runs the same loop on SST-2, scored by accuracy.)
"""
import argparse
import json
import math
import random
import time

import numpy as np
import torch
from scipy.stats import pearsonr
from transformers import AutoTokenizer, BertForSequenceClassification

from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.distillation.losses import hidden_state_mse, prediction_distillation_loss
from hf_binary_bert.recipes import load_task_data

p = argparse.ArgumentParser()
p.add_argument("--name", required=True); p.add_argument("--bits", type=int, default=4)
p.add_argument("--steps", type=int, default=100); p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--head-lr", type=float, default=None); p.add_argument("--head", default="classifier,pooler")
p.add_argument("--scale-lr", type=float, default=None)
p.add_argument("--pooled", type=float, default=0.0); p.add_argument("--hidden", type=float, default=1.0)
p.add_argument("--pred", type=float, default=1.0); p.add_argument("--norm-pred", action="store_true")
p.add_argument("--warmup", type=float, default=0.1); p.add_argument("--seed", type=int, default=42)
p.add_argument("--batch", type=int, default=16); p.add_argument("--seq", type=int, default=64)
p.add_argument("--task", default="stsb"); p.add_argument("--eval-every", type=int, default=0)
p.add_argument("--teacher", required=True); p.add_argument("--data-dir", required=True); p.add_argument("--results", default="results.jsonl")
a = p.parse_args()
torch.set_num_threads(1); torch.manual_seed(a.seed); random.seed(a.seed); np.random.seed(a.seed)
T, D = a.teacher, a.data_dir
tok = AutoTokenizer.from_pretrained(T)
data = load_task_data(a.task, tok, data_dir=D, max_seq_length=a.seq, max_eval_samples=None if a.task == "stsb" else 872)
cols = ("input_ids", "attention_mask", "token_type_ids")
teacher = BertForSequenceClassification.from_pretrained(T).eval().requires_grad_(False)
student = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset", scale_granularity="head",
    activation_bits=a.bits, activation_quantizer="elastic", embedding_bits=1)
regression = a.task == "stsb"
def batches(ds, bs, shuffle, gen=None):
    idx = torch.randperm(len(ds), generator=gen).tolist() if shuffle else list(range(len(ds)))
    for i in range(0, len(idx) - (bs - 1 if shuffle else 0), bs):
        rows = [ds[j] for j in idx[i:i + bs]]
        b = data.collator([{k: r[k] for k in cols if k in r} for r in rows]); b["labels"] = torch.tensor([r["labels"] for r in rows])
        yield b
@torch.no_grad()
def predict(m):
    m.eval(); out, lab = [], []
    for b in batches(data.eval, 64, False):
        lab.append(b.pop("labels")); out.append(m(**b).logits.float())
    m.train(); return torch.cat(out), torch.cat(lab)
t_eval, labels = predict(teacher)
def score(logits):
    if regression:
        y, t = logits.flatten(), t_eval.flatten()
        return {"pearson": float(pearsonr(y.numpy(), labels.numpy())[0]), "std": float(y.std()),
                "skill": float(1 - ((y - t) ** 2).mean() / t.var(unbiased=False))}
    acc = float((logits.argmax(-1) == labels).float().mean()); return {"accuracy": acc}
# pooled state capture
pooled = {}
def hook(key):
    def f(mod, args, out): pooled[key] = out
    return f
student.bert.pooler.register_forward_hook(hook("s")); teacher.bert.pooler.register_forward_hook(hook("t"))
head_names = tuple(a.head.split(","))
groups = {"head": [], "scale": [], "rest": []}
for n, q in student.named_parameters():
    if not q.requires_grad: continue
    if a.head_lr is not None and n.split(".")[0] in head_names or (a.head_lr is not None and any(n.startswith(f"bert.{h}") for h in head_names)): groups["head"].append(q)
    elif a.scale_lr is not None and ("weight_scale" in n or "weight_offset" in n): groups["scale"].append(q)
    else: groups["rest"].append(q)
pg = [{"params": groups["rest"], "lr": a.lr}]
if groups["head"]: pg.append({"params": groups["head"], "lr": a.head_lr})
if groups["scale"]: pg.append({"params": groups["scale"], "lr": a.scale_lr})
opt = torch.optim.AdamW(pg, weight_decay=0.0)
warm = math.ceil(a.warmup * a.steps)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / max(1, warm) if s < warm else max(0.0, (a.steps - s) / max(1, a.steps - warm)))
tvar = float(t_eval.var()) if regression else 1.0
student.train(); gen = torch.Generator().manual_seed(a.seed); step = 0; log = []; start = time.time(); hist = []
acc = {}
while step < a.steps:
    for b in batches(data.train, a.batch, True, gen):
        b.pop("labels")
        with torch.no_grad(): to = teacher(**b, output_hidden_states=a.hidden > 0)
        so = student(**b, output_hidden_states=a.hidden > 0)
        lp = prediction_distillation_loss(so.logits, to.logits, regression=regression)
        comps = {"pred": lp / tvar if a.norm_pred else lp}
        if a.hidden > 0: comps["hidden"] = hidden_state_mse(so.hidden_states, to.hidden_states, b["attention_mask"])
        if a.pooled > 0: comps["pooled"] = ((pooled["s"] - pooled["t"]) ** 2).mean()
        w = {"pred": a.pred, "hidden": a.hidden, "pooled": a.pooled}
        loss = sum(w[k] * v for k, v in comps.items())
        opt.zero_grad(); loss.backward(); opt.step(); sched.step(); step += 1
        for k, v in comps.items(): acc.setdefault(k, []).append(float(v))
        if step % 20 == 0:
            hist.append({"step": step, **{k: round(float(np.mean(v)), 3) for k, v in acc.items()}}); acc = {}
            if a.eval_every and step % a.eval_every == 0 and step < a.steps:
                hist[-1].update({k: round(v, 4) for k, v in score(predict(student)[0]).items()})
            print(hist[-1], flush=True)
        if step >= a.steps: break
res = {"name": a.name, **vars(a), **{k: round(v, 4) for k, v in score(predict(student)[0]).items()},
       "teacher": score(t_eval), "seconds": round(time.time() - start), "history": hist}
print(json.dumps(res))
with open(a.results, "a") as f:
    f.write(json.dumps(res) + "\n")
