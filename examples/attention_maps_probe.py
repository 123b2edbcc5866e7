"""How close a binarized student's attention maps are to its teacher's, layer by layer (issue 16, STS-B).

For the first `--pairs` held-out sentence pairs, each model runs once (eval mode, eager attention) and the script
prints one markdown table per student: per layer, averaged over heads and real query rows,
- the largest entry of the student's quantized maps (its probability step α at 1 bit; Q_p·α with Q_p levels above
  0 otherwise) and the number of keys a query row keeps (entries > 0 of the quantized map),
- the entropy (nats) of the student's softmax before its quantizer (`attention.record_softmax`) and of the
  teacher's attention, and the mean largest probability of each,
- KL(A_teacher ‖ softmax_student), the per-row attention loss of `attention_distribution="softmax"`.

    python examples/attention_maps_probe.py --teacher TEACHER --data-dir SPLIT STUDENT [STUDENT ...]

(TEACHER: a MiniLM fine-tuned on STS-B; SPLIT: the folder of `data.write_holdout_split`; STUDENT: a saved
binarized student with softmax attention.) Set OMP_NUM_THREADS=1 for one torch thread.
"""
import argparse
import csv

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_binary_bert  # noqa: F401  (registers binary_bert with the Auto classes)
from hf_binary_bert.attention import record_softmax

p = argparse.ArgumentParser()
p.add_argument("--teacher", required=True)
p.add_argument("--data-dir", required=True)
p.add_argument("--pairs", type=int, default=64)
p.add_argument("--seq", type=int, default=64)
p.add_argument("students", nargs="+")
a = p.parse_args()

with open(f"{a.data_dir}/dev.tsv", newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[: a.pairs]
tokenizer = AutoTokenizer.from_pretrained(a.teacher)
batch = tokenizer([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], padding=True, truncation=True,
                  max_length=a.seq, return_tensors="pt")
real = batch["attention_mask"].bool()
teacher = AutoModelForSequenceClassification.from_pretrained(a.teacher, attn_implementation="eager", dtype=torch.float32).eval()
with torch.no_grad():
    teacher_maps = teacher(**batch, output_attentions=True).attentions


def row_mean(x: torch.Tensor) -> float:
    """Mean of a [B, H, T] per-row quantity over heads and real query rows."""
    return x[real[:, None, :].expand_as(x)].mean().item()


def entropy(maps: torch.Tensor) -> torch.Tensor:
    return -(maps * maps.clamp_min(1e-12).log()).sum(-1)


print(f"{len(rows)} held-out pairs of `{a.data_dir}`, at most {a.seq} tokens; teacher `{a.teacher}`.\n")
for path in a.students:
    student = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    student.set_attn_implementation("eager")
    with torch.no_grad(), record_softmax(student) as softmax_maps:
        quantized_maps = student(**batch, output_attentions=True).attentions
    if len(softmax_maps) != len(quantized_maps):
        raise SystemExit(f"{path}: no softmax attention to record (Bi-Attention or a float model)")
    print(f"`{path}` ({student.config.activation_bits}-bit activations)\n")
    print("| layer | largest quantized entry (α at 1 bit) | keys kept per row | entropy, student softmax | entropy, teacher | largest p, student | "
          "largest p, teacher | KL(teacher ‖ student softmax) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for layer, (quantized, soft, target) in enumerate(zip(quantized_maps, softmax_maps, teacher_maps)):
        kl = (target * (target.clamp_min(1e-12).log() - soft.clamp_min(1e-12).log())).sum(-1)
        print(f"| {layer} | {quantized.max().item():.3f} | {row_mean((quantized > 0).sum(-1).float()):.2f} | "
              f"{row_mean(entropy(soft)):.2f} | {row_mean(entropy(target)):.2f} | "
              f"{row_mean(soft.max(-1).values):.2f} | {row_mean(target.max(-1).values):.2f} | {row_mean(kl):.2f} |")
    print()
