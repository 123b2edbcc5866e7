"""Packed-file sizes of pruned 1-1-1 students (issue 12's size goals), measured on real saved files: MiniLM (the
shared SST-2 teacher, its real weights) and BERT-base (random weights: a file's size depends on the shapes and dtypes
only), unpruned and pruned with the goals' shares (75 % of the heads and 50 % of the FFN neurons kept in every layer,
the package's own top-k removal, `prune_`), binarized with `from_teacher`, calibrated by one training forward and
saved packed (`save_pretrained`), in five variants (`VARIANTS`: as `distill` writes it, then one change after
another down to the smallest). Each file is then read back: its size, its tensor bytes per group, and
`flops.estimate_packed_size` of its config next to them (equal to the tensor data; the file adds its JSON header).

python examples/pruned_sizes.py [TEACHER] > docs/measurements/pruned-sizes.md
"""

from __future__ import annotations

import copy
import os
import struct
import sys
import tempfile
from collections import defaultdict

import torch
from safetensors import safe_open
from transformers import BertConfig, BertForSequenceClassification

from hf_binary_bert import BinaryBertConfig, BinaryBertForSequenceClassification
from hf_binary_bert.flops import estimate_packed_size
from hf_binary_bert.pruning import BlockPruningConfig, load_pruned_bert, prune_

TEACHER = sys.argv[1] if len(sys.argv) > 1 else "../shared/teachers/minilm-sst2"
GOAL_MB = 2.5  # issue 12: "packed MiniLM file ≤ 2.5 MB"
SHARES = {"heads_keep_share": 0.75, "ffn_keep_share": 0.5}  # the goals' "≤ 75 % of heads, ≤ 50 % FFN width"
ENCODER = ["query", "key", "value", "attention_output", "intermediate", "output"]
# The 1-1-1 student as `distill` writes it (examples/pruning_goals.py `student`: BiT's elastic activations, 1-bit
# word table, learned α/γ per head; the command line's fp_dtype float16), then two ways to a smaller file.
VARIANTS = {
    "as distilled": {"weight_scale": "learned_offset", "scale_granularity": "head", "activation_bits": 1,
                     "activation_quantizer": "elastic", "embedding_bits": 1, "fp_dtype": "float16"},
}
VARIANTS["+ pooler 1-bit, embedding α/γ float16"] = {
    **VARIANTS["as distilled"], "binarized_modules": [*ENCODER, "pooler"], "embedding_scale_dtype": "float16"}
VARIANTS["+ position, token-type tables 1-bit"] = {
    **VARIANTS["+ pooler 1-bit, embedding α/γ float16"], "binarized_embeddings": ["word", "position", "token_type"]}
# Two changes of the model itself (each the computation of training, the eager path and the runtime alike): the 1-bit
# tables binarized with a per-row α only, no offset γ (BiT's embedding binarization), then the elastic shifts rounded
# to float16 in every forward and stored so.
VARIANTS["+ tables α only (BiT)"] = {**VARIANTS["+ position, token-type tables 1-bit"],
                                     "embedding_weight_scale": "learned"}
VARIANTS["+ activation shifts float16"] = {**VARIANTS["+ tables α only (BiT)"], "activation_shift_dtype": "float16"}


def group(name: str) -> str:
    """The byte group a checkpoint tensor belongs to (finer than `format.component_of`)."""
    table = next((t for t in ("word", "position", "token_type") if f"{t}_embeddings." in name), None)
    if table is not None:
        if name.endswith(".weight_packed"):
            return f"{table} table, 1-bit"
        return f"{table} table α (γ)" if name.endswith(("weight_scale", "weight_offset")) else f"{table} table, float"
    where = "pooler" if ".pooler." in name else "classifier" if name.startswith("classifier.") else "encoder"
    if name.endswith(".weight_packed"):
        return f"{where} weights, 1-bit"
    if name.endswith((".weight_scale", ".weight_offset")):
        return f"{where} α/γ"
    if name.endswith("_quantizer.shift"):
        return "activation shifts β"
    if "_quantizer." in name:
        return "activation steps, flags"
    if "LayerNorm" in name:
        return "LayerNorm"
    if name.endswith(".bias"):
        return "biases" if where == "encoder" else f"{where} bias"
    return f"{where} weight, float"


def measure(folder: str) -> dict:
    """Bytes of `folder/model.safetensors`: per group, its header (8-byte length + JSON) and the whole file; the
    dtypes per group."""
    path = os.path.join(folder, "model.safetensors")
    groups, dtypes = defaultdict(int), defaultdict(set)
    with safe_open(path, framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            tensor = f.get_slice(name)
            numel = 1
            for d in tensor.get_shape():
                numel *= d
            size = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1}[tensor.get_dtype()]
            groups[group(name)] += numel * size
            dtypes[group(name)].add(tensor.get_dtype())
    with open(path, "rb") as f:
        header = 8 + struct.unpack("<Q", f.read(8))[0]
    others = {n: os.path.getsize(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n != "model.safetensors"}
    return {"groups": dict(groups), "dtypes": {k: "/".join(sorted(v)) for k, v in dtypes.items()}, "header": header,
            "file": os.path.getsize(path), "others": others}


def student_file(teacher, binarization: dict, folder: str) -> tuple[dict, BinaryBertConfig]:
    torch.manual_seed(0)
    student = BinaryBertForSequenceClassification.from_teacher(teacher, **binarization)
    student.train()
    with torch.no_grad():  # calibrates the activation quantizers, as the first training step does
        student(input_ids=torch.randint(1000, 2000, (2, 16)))
    student.save_pretrained(folder)
    return measure(folder), student.config


def main() -> None:
    minilm = load_pruned_bert(TEACHER).eval()
    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(num_labels=2)).eval()  # bert-base-uncased's shapes
    rows, breakdowns, pruned_minilm = [], {}, []
    for name, dense in (("MiniLM (SST-2 teacher)", minilm), ("BERT-base geometry", base)):
        for pruned in (False, True):
            teacher = dense
            if pruned:
                teacher = copy.deepcopy(dense)
                prune_(teacher, BlockPruningConfig(group_lasso_weight=0.0, modules=["intermediate", "value"],
                                                   epsilon=0.0, **SHARES))
            config = teacher.config
            heads = sum(getattr(config, "layer_num_attention_heads", None) or
                        [config.num_attention_heads] * config.num_hidden_layers)
            ffn = sum(getattr(config, "layer_intermediate_sizes", None) or
                      [config.intermediate_size] * config.num_hidden_layers)
            for variant, binarization in VARIANTS.items():
                with tempfile.TemporaryDirectory() as folder:
                    m, student_config = student_file(teacher, binarization, folder)
                data = sum(m["groups"].values())
                estimate = estimate_packed_size(student_config)["total"]
                rows.append((name, f"{heads}/{dense.config.num_attention_heads * config.num_hidden_layers}",
                             f"{ffn}/{dense.config.intermediate_size * config.num_hidden_layers}", variant,
                             m["file"] / 1e6, data / 1e6, estimate, m["header"] / 1e6))
                if pruned:
                    breakdowns[(name, variant)] = m
                    if dense is minilm:
                        pruned_minilm.append((variant, m["file"] / 1e6))
                del m
        del teacher
    print(f"`python examples/pruned_sizes.py > docs/measurements/pruned-sizes.md` (torch {torch.__version__})\n")
    print("Every figure is read from a saved `model.safetensors` (MB = 10⁶ bytes). *as distilled*: the 1-1-1 "
          "student that `distill` writes (BiT elastic activations, 1-bit word table, learned α/γ per head, "
          "`fp_dtype=\"float16\"`); *+ pooler 1-bit, embedding α/γ float16*: also `binarized_modules` + pooler (as "
          "BiBERT's and BiT's code) and `embedding_scale_dtype=\"float16\"`; *+ position, token-type tables 1-bit*: "
          "also `binarized_embeddings=[\"word\", \"position\", \"token_type\"]`, every embedding table 1-bit "
          "(beyond BiBERT and BiT, which keep those two full precision); *+ tables α only (BiT)*: also "
          "`embedding_weight_scale=\"learned\"`, each 1-bit table row E_v ≈ α_v·sign(E_v) with no offset γ_v, as "
          "BiT binarizes its word embeddings; *+ activation shifts float16*: also `activation_shift_dtype=\"float16\"`, "
          "the elastic shifts β rounded to float16 in every forward and stored so. The last two change the model "
          "(training, eager path and runtime compute them), the others only how it is stored or what is binarized. "
          "Pruned: 75 % of the heads and 50 % of the FFN neurons kept in every layer (`prune_`, top-k by norm).\n")
    print("| model | heads kept | FFN kept | student | file (MB) | tensor data (MB) | estimate_packed_size (MB) | "
          "header (MB) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, heads, ffn, variant, file, data, estimate, header in rows:
        print(f"| {name} | {heads} | {ffn} | {variant} | {file:.3f} | {data:.3f} | {estimate:.3f} | {header:.3f} |")
    print()
    under = [f"*{variant}* ({file:.3f} MB)" for variant, file in pruned_minilm if file <= GOAL_MB]
    print(f"Issue 12's size goal, pruned MiniLM file ≤ {GOAL_MB} MB: "
          + (f"met by {', '.join(under)}." if under else
             f"not met (smallest {min(f for _, f in pruned_minilm):.3f} MB).") + "\n")
    for name in ("MiniLM (SST-2 teacher)", "BERT-base geometry"):
        parts = {variant: breakdowns[(name, variant)] for variant in VARIANTS}
        names = sorted({g for m in parts.values() for g in m["groups"]},
                       key=lambda g: -max(m["groups"].get(g, 0) for m in parts.values()))
        print(f"Where the bytes of the pruned {name} file go (MB; dtypes as stored):\n")
        print("| tensors | " + " | ".join(parts) + " |")
        print("|---|" + "---:|" * len(parts))
        for g in names:
            cells = [f"{m['groups'][g] / 1e6:.4f} ({m['dtypes'][g]})" if g in m["groups"] else "–"
                     for m in parts.values()]
            print(f"| {g} | " + " | ".join(cells) + " |")
        print("| safetensors header | " + " | ".join(f"{m['header'] / 1e6:.4f}" for m in parts.values()) + " |")
        print("| **model.safetensors** | " + " | ".join(f"**{m['file'] / 1e6:.3f}**" for m in parts.values()) + " |")
        others = next(iter(parts.values()))["others"]
        print("\nBeside it in the folder (not counted above): "
              + ", ".join(f"`{n}` {b / 1e6:.3f} MB" for n, b in others.items())
              + " (the standalone code for `trust_remote_code`; the tokenizer adds its own files).\n")


if __name__ == "__main__":
    main()
