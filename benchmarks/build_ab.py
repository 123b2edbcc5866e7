"""Paired A/B of builds of the kernels on the native runtime: checkouts with their kernels built, each in worker
processes of its own, timed forward by forward in turn on the same model and inputs, their outputs compared bit for
bit.

A kernel change is measured against the build before it side by side, because two runs of latency.py compare builds
across time on a shared machine whose speed drifts by up to ±30 %. Build the baseline in another checkout and pass
both source trees, the baseline first:

    git worktree add /tmp/base REV && (cd /tmp/base && python setup.py -q build_ext --inplace)
    python benchmarks/build_ab.py --trees /tmp/base,. --labels before,after --variants ours-W1A8

Each tree runs in `--processes` worker processes (`PYTHONPATH` = the tree, so `hf_binary_bert` and its kernels come
from there). Loading two builds into one process and swapping the module between forwards is not a fair A/B: on an
Intel Xeon with AMX (BERT-base W1A8, 2 threads) two byte-identical copies of one build loaded side by side differed
by up to 9 % in median time, and copies of one build also differ by a few per cent from process to process — a
placement effect of the buffers each module allocates. Several processes per tree average over it, and the table
gives the spread of the per-process medians beside each tree's overall median. A round gives every worker a burst
of forwards (`--burst` timed ones back to back after an untimed one, as latency.py times them; with `--idle SECONDS`
each timed one after that long a sleep instead, the cost of a forward after an idle wait), one worker after
another in an order that rotates by one each round and reverses every other cycle, each worker's threads idle before
the next one starts; the first round is a warm-up.
Models: latency.py's BERT-base artifacts (random weights), built once into a temporary folder by this process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from latency import (
    OURS,
    artifact_key,
    build_artifact,
    environment_header,
    geometry,
    load,
    make_inputs,
    parse_shape,
    settle,
)
from markdown_output import print_report


def round_order(n: int, r: int) -> list[int]:
    """The workers' order in round r: rotated by r, reversed on every other cycle of n rounds."""
    order = [(r + i) % n for i in range(n)]
    return order if (r // n) % 2 == 0 else order[::-1]


def worker(args) -> None:
    """Load one saved variant with this process's `hf_binary_bert`; for each request (a shape and a count, one line
    on stdin) run one untimed forward and then `count` timed ones back to back (with `--idle`: each timed one after a
    sleep, no untimed one), and answer their times and the SHA-256 of the last one's last hidden state (one JSON line
    on stdout), once
    this process's threads have gone idle (latency.py's `settle`: without it the next worker's forward ran beside
    this one's spinning OpenMP threads, up to twice as slow)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    import hf_binary_bert.kernels.ops as ops

    if args.isa:
        ops.set_isa(args.isa)
    forward = load(args.variant, "encoder", args.path, args.threads)

    inputs = {}
    print(json.dumps({"ready": ops._bitgemm.__file__ if ops._bitgemm is not None else None,
                      "isa": ops.get_isa() if ops._bitgemm is not None else None}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        shape, burst = line.split()
        if shape not in inputs:
            batch, seq, mixed = parse_shape(shape)
            inputs[shape] = make_inputs(batch, seq, args.vocab_size, mixed)
        ids, mask = inputs[shape]
        seconds = []
        with torch.inference_mode():
            if args.idle <= 0:
                forward(ids, mask)  # untimed: the threads wake, the caches fill
            for _ in range(int(burst)):
                if args.idle > 0:  # each timed forward after a sleep, as a server's sporadic requests
                    time.sleep(args.idle)
                start = time.perf_counter()
                result = forward(ids, mask)
                seconds.append(time.perf_counter() - start)
        digest = hashlib.sha256(result.last_hidden_state.contiguous().numpy().tobytes()).hexdigest()
        settle()  # this process's threads idle (OpenMP spins after a region) before the next worker runs
        print(json.dumps({"seconds": seconds, "sha": digest}), flush=True)


class Worker:
    """One worker process on `tree`'s package (see `worker`)."""

    def __init__(self, tree: str, variant: str, path: str, vocab_size: int, threads: int, isa: str | None = None,
                 idle: float = 0.0):
        self.tree = tree
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.path.dirname(os.path.abspath(__file__))]))
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", "--variant", variant, "--path", path,
             "--vocab-size", str(vocab_size), "--threads", str(threads), *(["--isa", isa] if isa else []),
             *(["--idle", str(idle)] if idle > 0 else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
        ready = self._read()
        if not ready.get("ready") or not os.path.abspath(ready["ready"]).startswith(os.path.abspath(tree)):
            self.close()
            raise SystemExit(f"build_ab.py: {tree} has no built kernels of its own (python setup.py build_ext "
                             f"--inplace there); its worker loaded {ready.get('ready')}")
        if isa and ready.get("isa") != isa:
            self.close()
            raise SystemExit(f"build_ab.py: the worker on {tree} runs {ready.get('isa')}, not --isa {isa}")

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"build_ab.py: the worker on {self.tree} exited (status {self.process.wait()})")
        return json.loads(line)

    def run(self, shape: str, burst: int) -> dict:
        self.process.stdin.write(f"{shape} {burst}\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", help="source trees with their kernels built in place, comma-separated, the "
                                        "baseline first")
    parser.add_argument("--labels", help="a name per tree for the table (default: the paths)")
    parser.add_argument("--variants", default="ours-W1A1,ours-W1A8,ours-W1A32-int8",
                        help=f"latency.py's runtime variants: {', '.join(OURS)}")
    parser.add_argument("--shapes", default="1x128,8x128,1x32", help="BxT or BxTm (mixed lengths), comma-separated")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2, help="worker processes per tree")
    parser.add_argument("--burst", type=int, default=5, help="timed forwards per worker per round, back to back "
                                                             "after an untimed one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="sleep this long before each timed forward instead of timing a burst back to back "
                        "(the cost of a forward after an idle wait: latency.py waits at least 0.05 s)")
    parser.add_argument("--isa", help="run every worker on this instruction-set path (kernels.supported_isas(); "
                        "default: the CPU's best), e.g. avx2 to measure the AVX2 path on an AVX-512 machine")
    parser.add_argument("--small", action="store_true", help="latency.py's tiny geometry for a quick check")
    parser.add_argument("--markdown", metavar="PATH", help="also write the environment and the table as markdown")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--vocab-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if not args.trees:
        parser.error("--trees is required")
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    if len(trees) < 2:
        parser.error("--trees: name at least two trees")
    missing = [t for t in trees if not os.path.isdir(os.path.join(t, "hf_binary_bert"))]
    if missing:
        parser.error(f"--trees: {missing} hold no hf_binary_bert package")
    labels = args.labels.split(",") if args.labels else trees
    if len(labels) != len(trees):
        parser.error(f"--labels: {len(labels)} labels for {len(trees)} trees")
    variants, shapes = args.variants.split(","), args.shapes.split(",")
    unknown = [v for v in variants if v not in OURS]
    if unknown:
        parser.error(f"unknown variants {unknown}: use {', '.join(OURS)}")
    if args.processes < 1:
        parser.error("--processes: at least 1")
    if args.isa:
        from hf_binary_bert import kernels

        if args.isa not in kernels.supported_isas():
            parser.error(f"--isa: {args.isa} is not supported on this CPU (supported: "
                         f"{', '.join(kernels.supported_isas())})")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    geo = geometry(args.small)
    seq_len = max(parse_shape(shape)[1] for shape in shapes)
    header = [*environment_header(args.threads),
              *[f"tree {label}: {tree}" for label, tree in zip(labels, trees)],
              *([f"instruction-set path: {args.isa} (--isa)"] if args.isa else []),
              f"{'small' if args.small else 'BERT-base'} encoders of latency.py (random weights); {args.processes} "
              f"worker processes per tree, {args.rounds} rounds of {args.burst} timed forwards per worker "
              f"({f'each after {args.idle:g} s of sleep' if args.idle > 0 else 'back to back'}); median "
              f"over the tree's forwards, its ratio to {labels[0]}'s, and the lowest and highest per-process medians"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hf_binary_bert_build_ab_") as folder:
        for variant in variants:
            path = build_artifact(artifact_key(variant), "encoder", geo, seq_len, folder, {})
            workers = []
            try:
                for t, tree in enumerate(trees):
                    for _ in range(args.processes):
                        workers.append((t, Worker(tree, variant, path, geo["vocab_size"], args.threads, args.isa,
                                                              args.idle)))
                for shape in shapes:
                    times = [[] for _ in workers]
                    digests = [set() for _ in trees]
                    for r in range(args.rounds + 1):  # the first round is a warm-up
                        for w in round_order(len(workers), r):
                            t, process = workers[w]
                            answer = process.run(shape, args.burst)
                            digests[t].add(answer["sha"])
                            if r:
                                times[w].extend(answer["seconds"])
                    medians = {t: statistics.median([s for w, (tw, _) in enumerate(workers) if tw == t
                                                     for s in times[w]]) for t in range(len(trees))}
                    for t, label in enumerate(labels):
                        per_process = [statistics.median(times[w]) for w, (tw, _) in enumerate(workers) if tw == t]
                        same = digests[t] == digests[0] and len(digests[t]) == 1
                        rows.append(f"| {variant} | {shape} | {label} | {medians[t] * 1e3:.2f} | "
                                    f"{medians[t] / medians[0]:.3f} | {min(per_process) * 1e3:.2f} – "
                                    f"{max(per_process) * 1e3:.2f} | {'yes' if same else 'NO'} |")
            finally:
                for _, process in workers:
                    process.close()
    print_report(args.markdown, __file__, argv, header,
                 ["variant", "shape", "tree", "median ms", f"x {labels[0]}'s", "per-process medians, ms",
                  f"output = {labels[0]}'s"], rows)


if __name__ == "__main__":
    main()
