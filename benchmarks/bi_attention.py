"""Bitwise Bi-Attention against the eager float Bi-Attention, inside a whole W1A1 BERT (binarized Linears on the
kernels in both rows), timed in interleaved rounds in one process (medians, ms per forward).

    python benchmarks/bi_attention.py                                  # BERT-base geometry, seq 128, batch 1 and 8
    python benchmarks/bi_attention.py --markdown docs/measurements/bi-attention.md
"""

import argparse
import statistics
import time

import torch

from hf_binary_bert import BinaryBertConfig, BinaryBertModel
from markdown_output import write_markdown  # benchmarks/, on sys.path as the script's folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--markdown", metavar="PATH", help="also write the table (with the command)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BinaryBertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, weight_scale="learned_offset", scale_granularity="head",
                              activation_bits=1, activation_quantizer="elastic", attention_type="bi_attention")
    model = BinaryBertModel(config)
    model.train()(input_ids=torch.randint(0, config.vocab_size, (2, args.seq_len)))  # calibrates the quantizers
    model = model.eval().freeze()
    model.encoder.inference_kernel = "eager"  # PyTorch's forward layer by layer (not the native runtime)
    attention = [m for m in model.modules() if hasattr(m, "query_quantizer")]
    lines = [(f"W1A1 BERT-base with Bi-Attention, seq {args.seq_len}, {args.threads} threads, median of {args.runs} "
              "interleaved rounds"), "", "| batch | bitwise ms | eager float ms | speed-up |", "|---|---|---|---|"]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        ids = torch.randint(0, config.vocab_size, (batch, args.seq_len), generator=torch.Generator().manual_seed(batch))
        times = {"auto": [], "reference": []}
        plans = {kernel: model.inference_plan.replace(kernel=kernel) for kernel in times}
        with torch.inference_mode():
            for round_ in range(args.runs + 2):  # 2 warm-up rounds
                for kernel, samples in times.items():
                    for module in attention:  # the Linears stay on the kernels in both rows
                        module.inference_plan = plans[kernel]
                    start = time.perf_counter()
                    model(input_ids=ids)
                    if round_ >= 2:
                        samples.append((time.perf_counter() - start) * 1e3)
        bitwise, eager = statistics.median(times["auto"]), statistics.median(times["reference"])
        lines.append(f"| {batch} | {bitwise:.1f} | {eager:.1f} | {eager / bitwise:.2f} |")
        print(lines[-1], flush=True)
    if args.markdown:
        write_markdown(args.markdown, __file__, argv, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
