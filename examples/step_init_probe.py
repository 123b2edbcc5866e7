"""A W1A1 student at its start, before any training step, under each rule for its 1-bit activation steps (issue 16).

The student (`from_teacher`: learned α/γ per head, elastic 1-bit activations, 16-bit word table: the STS-B W1A1
recipe's last stage) is calibrated on the first `--examples` examples of a TSV file, once with
`activation_step_init="lsq"` (α₀ = 2·mean|x − β|, BiT's) and once with `"least_squares"` (α₀ = mean|x − β|), then
compared with its teacher on those examples (eval mode, eager attention). Per layer:
- the mean squared difference of the hidden states (real tokens),
- the entropy (nats) of the student's softmax before its probability quantizer and of the teacher's attention,
- KL(teacher ‖ student softmax), the attention loss of `attention_distribution="softmax"`,
- the keys a query row keeps after the 1-bit probability quantizer.
Averages over heads and real query rows. One table per rule, markdown on stdout.

    python examples/step_init_probe.py --teacher ../shared/teachers/minilm-sst2 --data ../shared/data/glue/SST-2/dev.tsv
    python examples/step_init_probe.py --teacher TEACHER --data SPLIT/dev.tsv --pair     # STS-B: sentence pairs

Set OMP_NUM_THREADS=1 for one torch thread.
"""
import argparse
import csv

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_binary_bert as hb
from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.attention import record_softmax

p = argparse.ArgumentParser()
p.add_argument("--teacher", required=True)
p.add_argument("--data", required=True, help="a GLUE TSV: `sentence`, or `sentence1` / `sentence2` with --pair")
p.add_argument("--pair", action="store_true")
p.add_argument("--examples", type=int, default=96)
p.add_argument("--seq", type=int, default=64)
a = p.parse_args()

torch.manual_seed(0)
with open(a.data, newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[: a.examples]
texts = ([r["sentence1"] for r in rows], [r["sentence2"] for r in rows]) if a.pair else ([r["sentence"] for r in rows],)
tokenizer = AutoTokenizer.from_pretrained(a.teacher)
batch = tokenizer(*texts, padding=True, truncation=True, max_length=a.seq, return_tensors="pt")
real = batch["attention_mask"].bool()
teacher = AutoModelForSequenceClassification.from_pretrained(a.teacher, attn_implementation="eager",
                                                             dtype=torch.float32).eval()
with torch.no_grad():
    target = teacher(**batch, output_attentions=True, output_hidden_states=True)


def row_mean(x: torch.Tensor) -> float:
    """Mean of a [B, H, T] per-row quantity over heads and real query rows."""
    return x[real[:, None, :].expand_as(x)].mean().item()


def entropy(maps: torch.Tensor) -> torch.Tensor:
    return -(maps * maps.clamp_min(1e-12).log()).sum(-1)


print(f"{len(rows)} examples of `{a.data}` (at most {a.seq} tokens), teacher `{a.teacher}`; the student calibrated on "
      "them and not trained.\n")
for rule in ("lsq", "least_squares"):
    student = BinaryBertForSequenceClassification.from_teacher(
        teacher, weight_scale="learned_offset", scale_granularity="head", activation_bits=1, embedding_bits=16,
        activation_quantizer="elastic", activation_step_init=rule)
    student.set_attn_implementation("eager")
    hb.calibrate(student, [batch])
    student.eval()
    with torch.no_grad(), record_softmax(student) as soft:
        out = student(**batch, output_attentions=True, output_hidden_states=True)
    print(f"`activation_step_init=\"{rule}\"`\n")
    print("| layer | hidden-state MSE | entropy, student softmax | entropy, teacher | KL(teacher ‖ student softmax) | "
          "keys kept per row |")
    print("|---:|---:|---:|---:|---:|---:|")
    for layer, (h, t_h, s, t, q) in enumerate(zip(out.hidden_states[1:], target.hidden_states[1:], soft,
                                                  target.attentions, out.attentions)):
        kl = (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum(-1)
        print(f"| {layer} | {((h - t_h)[real] ** 2).mean().item():.3f} | {row_mean(entropy(s)):.2f} | "
              f"{row_mean(entropy(t)):.2f} | {row_mean(kl):.2f} | {row_mean((q > 0).sum(-1).float()):.1f} |")
    print()
