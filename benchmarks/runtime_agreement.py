"""Agreement of the native encoder runtime with the eager kernel path on a trained model and real data.

For each saved sequence-classification model (`--model`, a packed hf_binary_bert checkpoint with its tokenizer) it
runs the SST-2 dev sentences (`--data-dir`, GLUE's dev.tsv; dynamic padding, so batches mix lengths) twice:

    native   `set_inference_kernel("auto")`: the native encoder runtime (hf_binary_bert.runtime)
    eager    `set_inference_kernel("eager")`: the same bitwise kernels, called Linear by Linear from PyTorch

and prints: the share of sentences whose predicted label agrees, the largest logit difference, both paths'
accuracy and wall time, and per layer the share of activations whose binarization flips — the sign of
(h − β) / α with β, α of the next layer's query input quantizer, for the native hidden states after that many
layers against the eager ones, over real tokens (cumulative: a layer sees the flips of the layers before it).

    python benchmarks/runtime_agreement.py --model runs/bit-w1a1-sst2 --markdown docs/measurements/runtime-agreement.md
"""

import argparse
import csv
import time

import torch
from markdown_output import write_markdown  # benchmarks/, on sys.path as the script's folder
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_binary_bert  # noqa: F401  (registers binary_bert with the Auto classes)
from hf_binary_bert.kernels import get_isa, set_isa, supported_isas


def read_sst2(path, limit):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[:limit] if limit else rows
    return [r["sentence"] for r in rows], torch.tensor([int(r["label"]) for r in rows])


def logits_of(model, batches, kernel, float_activations):
    model.set_inference_kernel(kernel, float_activations=float_activations)
    start = time.perf_counter()
    with torch.inference_mode():
        out = torch.cat([model(**batch).logits for batch in batches])
    return out, time.perf_counter() - start


def layer_flips(model, batches):
    """Per layer l < L−1: the share of real-token activations whose sign((h − β)/α) under layer l+1's query input
    quantizer differs between the native hidden states after l+1 layers and the eager ones."""
    encoder = model.bert.encoder
    runtime = encoder.runtime()
    layers = len(encoder.layer)
    flips, counts = torch.zeros(layers - 1), torch.zeros(layers - 1)
    model.set_inference_kernel("eager")  # (float_activations as set by the caller)
    with torch.inference_mode():
        for batch in batches:
            eager = model.bert(**batch, output_hidden_states=True).hidden_states  # (embeddings, layer 1, …)
            valid = batch["attention_mask"].bool()
            for upto in range(1, layers):
                native = runtime.forward(eager[0], valid, layers=upto)[valid]
                quantizer = encoder.layer[upto].attention.self.query.input_quantizer
                shift = quantizer.shift.detach() if hasattr(quantizer, "shift") else 0.0
                step = quantizer._inference_step(torch.float32) if quantizer.has_step else 1.0
                native_bits = (native - shift) / step >= 0
                eager_bits = (eager[upto][valid] - shift) / step >= 0
                flips[upto - 1] += (native_bits != eager_bits).sum()
                counts[upto - 1] += native_bits.numel()
    model.set_inference_kernel("auto")
    return flips / counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", required=True, help="saved packed sequence-classification models")
    parser.add_argument("--data-dir", default="data/glue/SST-2")
    parser.add_argument("--max-samples", type=int, default=0, help="first N dev sentences (0: all 872)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--float-activations", choices=["float32", "int8"],
                        help="W1A32 models: run their float activations as dynamic int8 on both paths (the runtime "
                             "needs int8 for them)")
    parser.add_argument("--isa", choices=supported_isas(),
                        help="run the kernels on this instruction set's path (default: the best this CPU has), e.g. "
                             "avx2 on an AVX-512 machine: every path gives the same bits by design, and this checks it")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.isa:
        set_isa(args.isa)
    sentences, labels = read_sst2(f"{args.data_dir}/dev.tsv", args.max_samples)
    lines = [(f"instruction set: {get_isa()}, {args.threads} threads, {len(sentences)} SST-2 dev sentences, batch "
              f"{args.batch_size} (dynamic padding)"), ""]
    table = ["| model | agreement | max abs logit diff | accuracy native | accuracy eager | native s | eager s |",
             "|---|---|---|---|---|---|---|"]
    flip_lines = []
    for path in args.model:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        batches = [tokenizer(sentences[i:i + args.batch_size], padding=True, return_tensors="pt")
                   for i in range(0, len(sentences), args.batch_size)]
        model.set_inference_kernel("auto", float_activations=args.float_activations)
        if model.bert.encoder.runtime().plan() is None:
            table.append(f"| {path} | native runtime does not apply: {model.bert.encoder.runtime().unsupported_reason} "
                         "| | | | | |")
            continue
        native, native_s = logits_of(model, batches, "auto", args.float_activations)
        eager, eager_s = logits_of(model, batches, "eager", args.float_activations)
        agree = (native.argmax(-1) == eager.argmax(-1)).float().mean().item()
        acc = [(x.argmax(-1) == labels).float().mean().item() for x in (native, eager)]
        table.append(f"| {path} | {agree:.4%} | {(native - eager).abs().max().item():.3g} | {acc[0]:.4f} | "
                     f"{acc[1]:.4f} | {native_s:.2f} | {eager_s:.2f} |")
        if not hasattr(model.bert.encoder.layer[1].attention.self.query.input_quantizer, "has_step"):
            flip_lines.append(f"- {path}: float activations (no binarized activations to flip)")
            continue
        shares = layer_flips(model, batches)
        flip_lines.append(f"- {path}: share of binarized activations that flip, after layer 1 … {len(shares)}: "
                          + ", ".join(f"{s:.2e}" for s in shares.tolist()))
    body = "\n".join(lines + table) + "\n\n" + "\n".join(flip_lines) + "\n"
    print(body)
    if args.markdown:
        write_markdown(args.markdown, __file__, argv, body)


if __name__ == "__main__":
    main()
