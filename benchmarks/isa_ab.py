"""Paired A/B of the kernels' instruction-set paths on the native runtime: the same model and inputs, the paths
alternating forward by forward in one process, their outputs compared bit for bit.

`benchmarks/latency.py --isa` runs one path per invocation, so two of its runs compare paths across time on a shared
machine whose speed drifts by up to ±30 %. Here each round times one forward per path back to back (after an
untimed forward that rebuilds the runtime's plan for the path: the plan is made per path), and the table gives each
path's median and its ratio to the first path's. Models: latency.py's BERT-base artifacts (random weights; the
runtime's time does not depend on their values), built into a temporary folder.

    python benchmarks/isa_ab.py --variants ours-W1A1,ours-W1A8,ours-W1A32-int8 --isas avx512_vpopcnt,avx512_amx \
        --markdown docs/measurements/isa-ab-amx.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import transformers
from latency import OURS, artifact_key, build_artifact, environment_header, geometry, load, make_inputs, parse_shape
from markdown_output import print_report

from hf_binary_bert import kernels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="ours-W1A1,ours-W1A8,ours-W1A32-int8",
                        help=f"latency.py's runtime variants: {', '.join(OURS)}")
    parser.add_argument("--isas", required=True, help="instruction-set paths (kernels.supported_isas()), the first "
                                                      "the baseline of the ratios")
    parser.add_argument("--shapes", default="1x128,8x128,1x32", help="BxT or BxTm (mixed lengths), comma-separated")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="latency.py's tiny geometry for a quick check")
    parser.add_argument("--markdown", metavar="PATH", help="also write the environment and the table as markdown")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    variants, isas, shapes = args.variants.split(","), args.isas.split(","), args.shapes.split(",")
    unknown = [v for v in variants if v not in OURS]
    if unknown:
        parser.error(f"unknown variants {unknown}: use {', '.join(OURS)}")
    missing = [i for i in isas if i not in kernels.supported_isas()]
    if missing:
        parser.error(f"--isas: {missing} not supported on this CPU (supported: {', '.join(kernels.supported_isas())})")
    if len(isas) < 2:
        parser.error("--isas: name at least two paths")
    torch.set_num_threads(args.threads)
    geo = geometry(args.small)
    seq_len = max(parse_shape(shape)[1] for shape in shapes)
    header = [*environment_header(args.threads),
              f"{'small' if args.small else 'BERT-base'} encoders of latency.py (random weights); median of "
              f"{args.rounds} rounds, one timed forward per path per round; ratio = the path's median / {isas[0]}'s"]
    rows = []
    previous = kernels.get_isa()
    try:
        with tempfile.TemporaryDirectory(prefix="hf_binary_bert_isa_ab_") as folder:
            for variant in variants:
                path = build_artifact(artifact_key(variant), "encoder", geo, seq_len, folder, {})
                forward = load(variant, "encoder", path, args.threads)
                for shape in shapes:
                    batch, seq, mixed = parse_shape(shape)
                    ids, mask = make_inputs(batch, seq, geo["vocab_size"], mixed)
                    times, outputs = {isa: [] for isa in isas}, {}
                    with torch.inference_mode():
                        for _ in range(args.rounds + 1):  # the first round is a warm-up
                            for isa in isas:
                                kernels.set_isa(isa)
                                outputs[isa] = forward(ids, mask).last_hidden_state  # rebuilds the plan on a change
                                start = time.perf_counter()
                                forward(ids, mask)
                                times[isa].append(time.perf_counter() - start)
                    base = statistics.median(times[isas[0]][1:])
                    for isa in isas:
                        median = statistics.median(times[isa][1:])
                        same = torch.equal(outputs[isa], outputs[isas[0]])
                        rows.append(f"| {variant} | {shape} | {isa} | {median * 1e3:.2f} | {median / base:.3f} | "
                                    f"{'yes' if same else 'NO'} |")
    finally:
        kernels.set_isa(previous)
    print_report(args.markdown, __file__, argv, header,
                 ["variant", "shape", "isa", "median ms", f"x {isas[0]}'s time", f"output = {isas[0]}'s"], rows)


if __name__ == "__main__":
    main()
