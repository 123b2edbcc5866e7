"""A trained binarized classifier on the kernels against its pure-PyTorch reference path: dev-set accuracy, how often
the two paths predict the same label, and the time of each pass.

    python benchmarks/kernel_vs_reference.py runs/full-sst2-long/bit_ag/W1A1/seed42 --task sst2
    python benchmarks/kernel_vs_reference.py MODEL --task sst2 --markdown docs/measurements/kernel-vs-reference.md

MODEL is a packed `BinaryBertForSequenceClassification` checkpoint with its tokenizer (a Hub id or a folder), e.g.
a student from `hf-binary-bert distill`. The dev split is read from `--validation-file` (default: SST-2's
`data/glue/SST-2/dev.tsv`). The two paths run in alternation, `--rounds` times each, under `torch.inference_mode()`, and the reported time is
the median over the rounds.
"""

import argparse
import statistics
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_binary_bert  # noqa: F401  (registers binary_bert)
from hf_binary_bert.data import get_glue_task, load_glue
from markdown_output import write_markdown  # benchmarks/, on sys.path as the script's folder


def predict(model, tokenizer, texts, batch_size, max_length):
    preds = []
    with torch.inference_mode():
        for start in range(0, len(texts[0]), batch_size):
            batch = [column[start:start + batch_size] for column in texts]
            enc = tokenizer(*batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            preds.append(model(**enc).logits.argmax(-1))
    return torch.cat(preds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--validation-file", default="data/glue/SST-2/dev.tsv")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", metavar="PATH", help="also write the result table (with the command)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_glue_task(args.task)
    dev = load_glue(task, validation_file=args.validation_file)["validation"]
    keys = [k for k in task.text_fields if k is not None]
    texts = [list(dev[k]) for k in keys]
    labels = torch.tensor(dev["label"])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model)
    times, preds = {"kernels": [], "reference": []}, {}
    for _ in range(args.rounds):
        for path, kernel in (("kernels", "auto"), ("reference", "reference")):
            model.set_inference_kernel(kernel)
            start = time.perf_counter()
            preds[path] = predict(model, tokenizer, texts, args.batch_size, args.max_seq_length)
            times[path].append(time.perf_counter() - start)
    lines = [(f"{len(labels)} {task.name} dev examples, batch {args.batch_size}, max length {args.max_seq_length}, "
              f"{args.threads} threads, median of {args.rounds} rounds"), "",
             "| path | accuracy | seconds |", "|---|---|---|"]
    for path, seconds in times.items():
        accuracy = (preds[path] == labels).float().mean().item()
        lines.append(f"| {path} | {accuracy:.4f} | {statistics.median(seconds):.2f} |")
    agreement = (preds["kernels"] == preds["reference"]).float().mean().item()
    lines += ["", f"The two paths predict the same label for {100 * agreement:.2f} % of the examples."]
    print("\n".join(lines))
    if args.markdown:
        write_markdown(args.markdown, __file__, argv, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
