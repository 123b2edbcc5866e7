"""Peak resident memory and step time of a W1A1 distillation step against the teacher's own fine-tuning step.

Each mode runs in a fresh subprocess (so that its peak is its own) a few optimizer steps of the real training loop on
one fixed batch shape, `--batch-size` sequences of `--seq-len` tokens (random token ids, no padding):

    teacher-finetune   transformers `Trainer` fine-tuning the full-precision teacher (`BertForSequenceClassification`)
    distill-w1a1       `DistillationTrainer`: the teacher under no_grad and a BiT W1A1 student (elastic activation
                       quantizer, learned α/γ per head, 1-bit embeddings), loss = hidden-state MSE + prediction KD
                       (the CLI's defaults), or the losses given with `--losses`
    distill-w1a1-checkpointing   the same with `gradient_checkpointing=True` (transformers' activation
                       checkpointing per layer: each layer's forward is run again in the backward pass)

Reported per mode: the peak resident set size of the process (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, MiB =
2²⁰ bytes), the RSS after the models are built (before the first step), and the median wall time and CPU time of the
steps after the first (`--steps` − 1 of them; `time.perf_counter` and `time.process_time` around each optimizer step
through a `TrainerCallback`). The CPU time (user + system, one thread) is the steadier of the two on a shared machine:
it leaves out the time the process waits for a core, and keeps the page faults of its allocations. The median
count of those page faults per step (`ru_minflt`: each a fresh page touched for the first time, 4 KiB unless huge
pages are on) shows what the malloc setting costs. `--huge-pages on` runs each mode with PyTorch's transparent huge pages
for tensors of 2 MiB or more (`THP_MEM_ALLOC_ENABLE=1`, which the training commands set: `cli.use_huge_pages`),
`both` runs each mode without and with them in turns (rows compared with the teacher's row of the same setting).
With `--profile`, one more subprocess records one distillation step with `torch.profiler` (`profile_memory=True`)
and prints the operators that allocate the most CPU memory.

    python benchmarks/distill_memory.py --teacher ../shared/teachers/minilm-sst2
    python benchmarks/distill_memory.py --teacher ../shared/teachers/minilm-sst2 --steps 3 --profile
    python benchmarks/distill_memory.py --teacher ../shared/teachers/minilm-sst2 --limit-heap-growth --huge-pages both
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODES = ("teacher-finetune", "distill-w1a1", "distill-w1a1-checkpointing")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run_mode(args) -> dict:
    import datasets
    import torch
    from transformers import BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification.from_pretrained(args.teacher, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    n = args.batch_size * args.steps
    ids = torch.randint(1000, 20000, (n, args.seq_len), generator=g)
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * args.seq_len] * n,
                                       "labels": torch.randint(0, teacher.config.num_labels, (n,), generator=g).tolist()})
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        def on_step_end(self, *a, **k):
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.start[2]
            times.append((time.perf_counter() - self.start[0], time.process_time() - self.start[1], faults))

    common = {"output_dir": os.path.join(args.work_dir, args.mode), "per_device_train_batch_size": args.batch_size,
              "max_steps": args.steps, "report_to": [], "save_strategy": "no", "disable_tqdm": True,
              "logging_steps": 10**6, "dataloader_num_workers": 0, "use_cpu": True}
    if args.mode == "teacher-finetune":
        trainer = Trainer(model=teacher, args=TrainingArguments(learning_rate=5e-5, **common), train_dataset=data,
                          callbacks=[Timer()])
    else:
        from hf_binary_bert import BinaryBertForSequenceClassification
        from hf_binary_bert.distillation import DistillationTrainer, DistillationTrainingArguments

        student = BinaryBertForSequenceClassification.from_teacher(
            teacher, weight_scale="learned_offset", scale_granularity="head", activation_bits=args.activation_bits,
            activation_quantizer="elastic", embedding_bits=1,
            **({} if args.student_dropout is None else {"hidden_dropout_prob": args.student_dropout,
                                                         "attention_probs_dropout_prob": args.student_dropout}))
        weights = {f"{k}_loss_weight": 0.0 for k in ("prediction", "hidden", "attention", "cosine", "dmd")}
        weights.update({f"{k}_loss_weight": 1.0 for k in args.losses})
        if args.mode.endswith("checkpointing"):
            common["gradient_checkpointing"] = True
        trainer = DistillationTrainer(teacher_model=teacher, model=student,
                                      args=DistillationTrainingArguments(learning_rate=2e-4, **weights, **common),
                                      train_dataset=data, callbacks=[Timer()])
    rss_built = _rss_mib()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        trainer.args.max_steps = 1
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            trainer.train()
        print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=args.profile_rows))
    else:
        trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"mode": args.mode, "peak_rss_mib": peak, "rss_after_build_mib": rss_built,
            "step_seconds_median": statistics.median(t[0] for t in times[1:]) if len(times) > 1 else float("nan"),
            "step_cpu_seconds_median": statistics.median(t[1] for t in times[1:]) if len(times) > 1 else float("nan"),
            "step_page_faults_median": statistics.median(t[2] for t in times[1:]) if len(times) > 1 else float("nan"),
            "steps_timed": max(len(times) - 1, 0)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a fine-tuned BertForSequenceClassification folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per mode (the first is not timed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--losses", nargs="+", default=["prediction", "hidden"],
                        choices=("prediction", "hidden", "attention", "cosine", "dmd"))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--activation-bits", type=int, default=1, choices=(1, 2, 4, 8),
                        help="the student's activation bits (default 1; 4 and 2 are the multi-step recipe's first "
                             "stages, W1A4,W1A2,W1A1; the mode names keep saying w1a1)")
    parser.add_argument("--limit-heap-growth", action="store_true",
                        help="call hf_binary_bert.cli.limit_heap_growth() first, as the training commands do")
    parser.add_argument("--huge-pages", choices=("off", "on", "both"), default="off",
                        help="THP_MEM_ALLOC_ENABLE=1 in the mode's process (on), not (off), or each mode both ways")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's memory view of one step")
    parser.add_argument("--profile-rows", type=int, default=15)
    parser.add_argument("--work-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "distill_memory"))
    parser.add_argument("--markdown", help="write the table to this file (docs/measurements/)")
    parser.add_argument("--student-dropout", type=float, metavar="P",
                        help="the student's hidden and attention dropout (default: the teacher's)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:  # the subprocess
        if args.limit_heap_growth:
            from hf_binary_bert.cli import limit_heap_growth

            limit_heap_growth()
        print("RESULT " + json.dumps(_run_mode(args)))
        return
    base = [sys.executable, os.path.abspath(__file__), "--teacher", args.teacher, "--batch-size", str(args.batch_size),
            "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--threads", str(args.threads),
            "--work-dir", args.work_dir, *(["--limit-heap-growth"] if args.limit_heap_growth else []),
            "--losses", *args.losses, "--activation-bits", str(args.activation_bits),
            *([] if args.student_dropout is None else ["--student-dropout", str(args.student_dropout)])]
    rows = []
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.huge_pages]
    for mode in args.modes:
        for huge in settings:
            env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
            if huge:
                env["THP_MEM_ALLOC_ENABLE"] = "1"
            out = subprocess.run([*base, "--mode", mode], capture_output=True, text=True, check=False, env=env)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode or not lines:
                sys.exit(f"{mode} failed:\n{out.stderr[-3000:]}")
            rows.append({**json.loads(lines[-1].removeprefix("RESULT ")), "huge_pages": huge})
    if args.profile:
        out = subprocess.run([*base, "--mode", "distill-w1a1", "--profile", "--profile-rows", str(args.profile_rows)],
                             capture_output=True, text=True, check=False)
        print(out.stdout if out.returncode == 0 else out.stderr[-3000:])
    lines = [("| mode | peak RSS (MiB) | RSS after build (MiB) | step, wall (s, median) | wall / teacher's | "
              "step, CPU (s, median) | CPU / teacher's | page faults per step (10⁶, median) |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        teacher = next((t for t in rows if t["mode"] == "teacher-finetune" and t["huge_pages"] == r["huge_pages"]),
                       None)
        wall = r["step_seconds_median"] / teacher["step_seconds_median"] if teacher else float("nan")
        cpu_ratio = r["step_cpu_seconds_median"] / teacher["step_cpu_seconds_median"] if teacher else float("nan")
        name = r["mode"] + (", huge pages" if r["huge_pages"] else "") if args.huge_pages == "both" else r["mode"]
        lines.append(f"| {name} | {r['peak_rss_mib']:.0f} | {r['rss_after_build_mib']:.0f} | "
                     f"{r['step_seconds_median']:.2f} | {wall:.2f} | {r['step_cpu_seconds_median']:.2f} | "
                     f"{cpu_ratio:.2f} | {r['step_page_faults_median'] / 1e6:.2f} |")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine import cpu_model_and_flags

    cpu = cpu_model_and_flags()[0]
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):  # glibc reads it at start-up; limit_heap_growth then leaves it
        malloc = f"mmap threshold {os.environ['MALLOC_MMAP_THRESHOLD_']} bytes (MALLOC_MMAP_THRESHOLD_)"
    elif args.limit_heap_growth:
        malloc = "mmap threshold 128 KiB (limit_heap_growth)"
    else:
        malloc = "glibc malloc defaults"
    huge = {"off": "", "on": ", PyTorch's huge pages for tensors ≥ 2 MiB (THP_MEM_ALLOC_ENABLE=1)",
            "both": ", each mode without and with PyTorch's huge pages for tensors ≥ 2 MiB (THP_MEM_ALLOC_ENABLE=1), in "
                    "turns"}[args.huge_pages]
    body = (f"Batch {args.batch_size} × {args.seq_len} tokens, {args.steps} steps per mode ({args.steps - 1} timed), "
            f"{args.threads} torch thread(s), losses {' + '.join(args.losses)}, "
            + ("" if args.activation_bits == 1 else f"student W1A{args.activation_bits} (the distill-w1a1 rows), ")
            + ("" if args.student_dropout is None else f"student dropout {args.student_dropout}, ") +
            f"{malloc}{huge}; "
            f"CPU: {cpu}, {os.cpu_count()} cores.\n\n"
            + "\n".join(lines) + "\n")
    print(body)
    if args.markdown:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from markdown_output import write_markdown

        write_markdown(args.markdown, __file__, None, body)


if __name__ == "__main__":
    main()
