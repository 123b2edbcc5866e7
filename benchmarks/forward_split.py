"""Where a native-runtime forward's time goes: the native encoder call against the Python and PyTorch around it.

`benchmarks/latency.py` times whole forwards. This script times, over the same forwards, the parts of one: the
native calls of `hf_binary_bert.kernels._bitgemm` the runtime makes (`encoder_forward`: every layer of the encoder;
`unchanged`: the per-forward plan check; `embeddings_sum`; `dense_rows`: the pooler), the encoder runtime's `plan`
and `_run_rows` (the plan check and the native encoder call with the Python around them) and the `forward` of the
embeddings and pooler modules, each by wrapping it with a timer; the rest of the model's forward (the model's own
forward: `runtime.BinaryBertModelForward` where it applies, else transformers' `BertModel.forward` with the
encoder module around the runtime) is the total minus those. Everything but
`encoder_forward` runs while the other threads wait, so it bounds how far the forward can shrink by the kernels
alone. Model: a saved binary_bert folder (`--model`), or by default latency.py's BiT W1A1 BERT-base encoder
(random weights, built into a temporary folder; latency does not depend on the weights' values). The forwards run
back to back unless `--idle SECONDS` puts a sleep (not timed) before each, as between a server's sporadic requests
and as in latency.py, whose rows each wait at least 50 ms for the threads to go idle: the two runs side by side show
what the idle costs each part of a forward on the machine at hand.

    python benchmarks/forward_split.py --shapes 1x128,1x32,8x128 --markdown docs/measurements/forward-split-avx512.md
    python benchmarks/forward_split.py --shapes 1x128,1x32 --idle 0.05
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time

import torch
import transformers
from latency import build_artifact, environment, geometry, make_inputs  # benchmarks/, on sys.path
from markdown_output import print_report

from hf_binary_bert import BinaryBertModel
from hf_binary_bert.kernels import get_isa, ops

NATIVE_CALLS = ("encoder_forward", "unchanged", "embeddings_sum", "dense_rows")


def split(model, shape: str, forwards: int, rounds: int, idle: float = 0.0) -> dict[str, float]:
    """Median over `rounds` of each part's ms per forward (`forwards` forwards per round) at `shape` ("BxT"). With
    `idle` > 0, the process sleeps `idle` seconds before each forward (not timed), as a server between sporadic
    requests and as `benchmarks/latency.py`, which lets the threads go idle for at least 50 ms before each forward."""
    batch, seq = (int(v) for v in shape.split("x"))
    ids, mask = make_inputs(batch, seq, model.config.vocab_size)
    spent = collections.defaultdict(float)

    def timed(function, label):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - start
        return call

    saved = {name: getattr(ops._bitgemm, name) for name in NATIVE_CALLS}
    runtime = model.encoder.runtime()
    wrapped = [(model.embeddings, "forward", "embeddings module"), (model.pooler, "forward", "pooler module"),
               (runtime, "plan", "encoder runtime"), (runtime, "_run_rows", "encoder runtime")]
    try:
        for name in NATIVE_CALLS:
            setattr(ops._bitgemm, name, timed(saved[name], name))
        for owner, name, label in wrapped:
            if owner is not None:  # an instance attribute: nn.Module (and the model's forward) call it
                setattr(owner, name, timed(getattr(owner, name), label))
        per_round = collections.defaultdict(list)
        with torch.inference_mode():
            for _ in range(3):
                model(input_ids=ids, attention_mask=mask)
            for _ in range(rounds):
                spent.clear()
                for _ in range(forwards):
                    if idle > 0:
                        time.sleep(idle)
                    start = time.perf_counter()
                    model(input_ids=ids, attention_mask=mask)
                    spent["whole forward"] += time.perf_counter() - start
                for label, seconds in spent.items():
                    per_round[label].append(seconds / forwards * 1e3)
    finally:
        for name, function in saved.items():
            setattr(ops._bitgemm, name, function)
        for owner, name, _ in wrapped:
            if owner is not None:
                owner.__dict__.pop(name, None)
    return {label: statistics.median(ms) for label, ms in per_round.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a saved binary_bert folder (default: latency.py's BiT W1A1 BERT-base)")
    parser.add_argument("--shapes", default="1x128,1x32,8x128", help="batch x sequence length, comma-separated")
    parser.add_argument("--forwards", type=int, default=50, help="forwards per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="sleep this long before each forward (not timed; latency.py waits at least 0.05 s)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the environment and the table as markdown")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = args.model or build_artifact("ours-A1-E1-softmax", "encoder", geometry(False), 128, folder, {})
        model = BinaryBertModel.from_pretrained(path).eval()
    env = environment(args.threads)
    header = [f"cpu: {env.get('cpu')}", f"hf_binary_bert instruction set: {get_isa()}",
              f"torch {env['torch']}, transformers {env['transformers']}, {args.threads} threads",
              f"OpenMP environment: {env['openmp_env']}",
              f"model: {args.model or 'BiT W1A1 BERT-base encoder (latency.py ours-W1A1, random weights)'}",
              f"median over {args.rounds} rounds of {args.forwards} forwards; ms per forward",
              f"idle before each forward: {args.idle:g} s" + (" (back to back)" if args.idle <= 0 else "")]
    rows = []
    for shape in args.shapes.split(","):
        ms = split(model, shape, args.forwards, args.rounds, args.idle)
        whole, encoder, check = ms["whole forward"], ms.get("encoder_forward", 0.0), ms.get("unchanged", 0.0)
        runtime, embeddings, pooler = (ms.get(k, 0.0) for k in ("encoder runtime", "embeddings module",
                                                                 "pooler module"))
        outside = {"native encoder (encoder_forward)": encoder, "plan check (unchanged)": check,
                   "rest of the encoder runtime": runtime - encoder - check, "embeddings module": embeddings,
                   "pooler module": pooler, "rest of the model's forward": whole - runtime - embeddings - pooler}
        for part, value in outside.items():
            rows.append(f"| {shape} | {part} | {value:.3f} | {value / whole:.3f} |")
        rows.append(f"| {shape} | **whole forward** | **{whole:.3f}** | 1.000 |")
        print(f"{shape}: whole {whole:.3f} ms, native encoder {encoder:.3f} ms ({encoder / whole:.3f})", flush=True)
    print_report(args.markdown, __file__, argv, header, ["shape", "part", "ms", "share"], rows)


if __name__ == "__main__":
    main()
