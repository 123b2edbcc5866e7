"""The main job's latency comparison, re-measured on saved models: teacher against W1 student, interleaved.

`hf-binary-bert demo` measures each model once, one after the other (`recipes.measure_latency`), so a drift of a
shared machine's speed between the two can move their ratio. This script loads the main job's saved teacher and
student (`runs/main_job/{teacher,student}` by default), runs the student as the main job does (on the native runtime,
its float activations as dynamic int8), and times both with the same `measure_latency` in interleaved rounds
(teacher, student, teacher, …); it prints the median over rounds per model and batch size and the student/teacher
ratio (issue 11's goal: ≤ 1/3 at batch 1).

    python benchmarks/main_job_latency.py --markdown docs/measurements/main-job-latency.md
"""

from __future__ import annotations

import argparse
import statistics

import torch
import transformers
from latency import environment  # benchmarks/, on sys.path as the script's folder
from markdown_output import print_report
from transformers import AutoModelForSequenceClassification

import hf_binary_bert  # noqa: F401  (registers binary_bert with the Auto classes)
from hf_binary_bert.kernels import get_isa, set_isa, supported_isas
from hf_binary_bert.recipes import measure_latency


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default="runs/main_job/teacher")
    parser.add_argument("--student", default="runs/main_job/student")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (teacher, student) per batch size")
    parser.add_argument("--runs", type=int, default=20, help="timed forwards per model and round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", metavar="PATH", help="also write the environment and the table as markdown")
    parser.add_argument("--isa", help="run the student's kernels on this instruction-set path (kernels.set_isa), e.g. "
                                      "avx512_vpopcnt on an AMX CPU; PyTorch keeps its own")
    args = parser.parse_args(argv)
    if args.isa:
        try:
            set_isa(args.isa)
        except ValueError as exc:
            parser.error(f"--isa: {exc} (supported here: {', '.join(supported_isas())})")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher, dtype=torch.float32).eval()
    student = AutoModelForSequenceClassification.from_pretrained(args.student, dtype=torch.float32).eval()
    student.set_inference_kernel("auto", float_activations="int8")  # as the main job evaluates it
    env = environment(args.threads)
    header = [f"cpu: {env.get('cpu')}", f"hf_binary_bert instruction set: {get_isa()}",
              f"torch {env['torch']}, transformers {env['transformers']}, {args.threads} threads",
              f"{args.rounds} interleaved rounds × {args.runs} forwards of full 128-token sequences per model"]
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        times = {"teacher": [], "student": []}
        for _ in range(args.rounds):
            for name, model in (("teacher", teacher), ("student", student)):
                times[name].append(measure_latency(model, batch_sizes=(batch,), runs=args.runs)[f"latency_ms_b{batch}"])
        t, s = statistics.median(times["teacher"]), statistics.median(times["student"])
        rows.append(f"| {batch} | {t:.2f} | {s:.2f} | {s / t:.3f} |")
        print(f"batch {batch}: teacher {t:.2f} ms, student {s:.2f} ms, student/teacher {s / t:.3f}", flush=True)
    print_report(args.markdown, __file__, argv, header, ["batch", "teacher ms", "student ms", "student / teacher"], rows)


if __name__ == "__main__":
    main()
