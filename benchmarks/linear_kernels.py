"""Kernel-level benchmark: one binarized Linear on the compiled kernels against PyTorch's FP32 and int8 Linears.

For the BERT-base Linear shapes (768 → 768, 768 → 3072, 3072 → 768) and M = batch × tokens rows, it times in one
process, interleaved round by round (median of `--runs`):

    torch-fp32          torch.nn.functional.linear (MKL / oneDNN sgemm)
    torch-int8-dynamic  torch.ao.nn.quantized.dynamic.Linear (fbgemm, int8 weights and dynamic int8 activations)
    ours-w1a1           hf_binary_bert's XNOR-popcount kernel, input sign-binarization fused in
    ours-w1a8           hf_binary_bert's W1 × u8 kernel (VNNI where present), input quantization fused in

on every instruction-set path this CPU runs (`--isas`), with the same bound calls the models use (no dispatcher in
the loop). It prints milliseconds and speed-ups over torch-fp32. Whole-model numbers: benchmarks/latency.py.

    python benchmarks/linear_kernels.py            # 2 threads, M = 1, 8, 128, 1024
    python benchmarks/linear_kernels.py --threads 1 --m 128

It also times one layer's call through the dispatcher against the bound call the model layers make. (The file is
not named kernels.py: transformers imports a `kernels` package when there is one, and a script's folder is on
sys.path.)
"""

import argparse
import statistics
import time
import warnings

import torch
from markdown_output import write_markdown  # benchmarks/, on sys.path as the script's folder
from torch.utils.benchmark import Timer

from hf_binary_bert import kernels
from hf_binary_bert.format import pack_bits
from hf_binary_bert.kernels import ops

SHAPES = [(768, 768), (768, 3072), (3072, 768)]  # (in_features, out_features)


def bound_calls(k, n, generator):
    """The four Linears of one shape, as callables of x [M, k]."""
    weight = torch.randn(n, k, generator=generator)
    packed = pack_bits(weight >= 0)
    alpha, bias, step = weight.abs().mean(1), torch.randn(n, generator=generator), torch.tensor(0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        dynamic = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(k, n)),
                                                         {torch.nn.Linear}, dtype=torch.qint8)[0]
    # the bound calls hold only data pointers: the kernel-layout weights (and sums) are kept alive with them
    bits, nib, sums = ops.repack_weight(packed, k, "bits"), ops.repack_weight(packed, k, "nib"), ops.row_sums(packed, k)
    w1a1 = ops.bind_w1a1(k, packed, bits, alpha, None, bias, None, torch.tensor(1.0), 0.0, 0, False)
    w1a8 = ops.bind_w1a8(k, packed, nib, sums, alpha, None, bias, None, step, -128, 127, False)
    w1a1.tensors, w1a8.tensors = (bits,), (nib, sums)
    return {"torch-fp32": lambda x: torch.nn.functional.linear(x, weight, bias), "torch-int8-dynamic": dynamic,
            "ours-w1a1": w1a1, "ours-w1a8": w1a8}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--m", default="1,8,128,1024", help="comma list of rows (batch × tokens)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--isas", default=",".join(kernels.supported_isas()))
    parser.add_argument("--markdown", metavar="PATH", help="also write the table (with the command) as markdown")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [f"threads {args.threads}, cpu_features {kernels.cpu_features()}", "",
             "| in → out | M | isa | torch-fp32 ms | torch-int8-dynamic ms | ours-w1a1 ms (x fp32) | ours-w1a8 ms (x fp32) |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines))
    generator = torch.Generator().manual_seed(0)
    for k, n in SHAPES:
        calls = bound_calls(k, n, generator)
        for m in (int(v) for v in args.m.split(",")):
            x = torch.randn(m, k, generator=generator)
            for isa in args.isas.split(","):
                previous = kernels.set_isa(isa)
                times = {name: [] for name in calls}
                with torch.inference_mode():
                    for call in calls.values():
                        call(x)
                    for _ in range(args.runs):
                        for name, call in calls.items():
                            start = time.perf_counter()
                            call(x)
                            times[name].append((time.perf_counter() - start) * 1e3)
                kernels.set_isa(previous)
                med = {name: statistics.median(t) for name, t in times.items()}
                fp32 = med["torch-fp32"]
                lines.append(f"| {k} → {n} | {m} | {isa} | {fp32:.3f} | {med['torch-int8-dynamic']:.3f} | "
                             f"{med['ours-w1a1']:.3f} ({fp32 / med['ours-w1a1']:.1f}x) | "
                             f"{med['ours-w1a8']:.3f} ({fp32 / med['ours-w1a8']:.1f}x) |")
                print(lines[-1], flush=True)
    # what the model layers avoid by binding their call once: the same kernel through the dispatcher
    k, n = SHAPES[0]
    x = torch.randn(1, k, generator=generator)
    packed = pack_bits(torch.randn(n, k, generator=generator) >= 0)
    args_op = (x, packed, ops.repack_weight(packed, k, "bits"), torch.rand(n, generator=generator), None, None, None,
               torch.tensor(1.0), 0.0, 0, False)
    bound = ops.bind_w1a1(k, *args_op[1:])
    times = {}
    with torch.inference_mode():  # microseconds per call: torch.utils.benchmark.Timer picks the number of calls per block
        for name, stmt in (("dispatcher", "torch.ops.hf_binary_bert.w1a1_linear(*args_op)"), ("bound", "bound(x)")):
            timer = Timer(stmt, globals={"torch": torch, "args_op": args_op, "bound": bound, "x": x},
                          num_threads=torch.get_num_threads())
            times[name] = timer.blocked_autorange(min_run_time=0.2).median * 1e6
    lines += ["", (f"w1a1 {k} → {n}, M = 1: {times['dispatcher']:.1f} µs through the dispatcher "
                   f"(`torch.ops.hf_binary_bert.w1a1_linear`), {times['bound']:.1f} µs as the bound "
                   "call the layers make in eager mode (medians of torch.utils.benchmark.Timer blocks)")]
    print(lines[-1])
    if args.markdown:
        write_markdown(args.markdown, __file__, argv, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
