"""The main job (`hf-binary-bert demo`): fine-tune the real all-MiniLM-L6-v2 teacher on SST-2, binarize it into a W1
student (1-bit encoder weights), distil the student with the `DistillationTrainer`, evaluate both on the SST-2 dev set
(872 sentences), save the packed student and print the teacher-vs-student table (accuracy, size, CPU latency).

The default budget (300 teacher steps, 500 student steps, batch 32, sequences ≤ 64 tokens) finished in 19.8 min
on 2 CPU cores; `--teacher-steps 0 --student-steps 0` trains each for one full epoch of SST-2 train.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from .recipes import comparison_rows, distill, evaluate_model, finetune, write_report


def run_main_job(args, binarization: dict) -> list[dict]:
    """Run the main job with the parsed `hf-binary-bert demo` arguments; returns the table rows."""
    out = args.output_dir
    teacher_dir, student_dir = os.path.join(out, "teacher"), os.path.join(out, "student")
    # step 3 scores both models, so the training steps do not evaluate
    common = dict(data_dir=args.data_dir, max_seq_length=args.max_seq_length, seed=args.seed,
                  progress=not args.no_progress, batch_size=32, logging_steps=25)
    start = time.perf_counter()

    print(f"[1/3] fine-tuning the teacher ({args.teacher_model}) on SST-2 → {teacher_dir}", flush=True)
    teacher_run = finetune(args.teacher_model, "sst2", teacher_dir, max_steps=args.teacher_steps or None,
                           learning_rate=5e-5, evaluate=False, **common)

    print(f"[2/3] binarizing ({binarization['weight_scale']}, per {binarization['scale_granularity']}) and distilling "
          f"the W1 student → {student_dir}", flush=True)
    student_run = distill(teacher_dir, "sst2", student_dir, binarization=binarization,
                          max_steps=args.student_steps or None, learning_rate=args.student_learning_rate,
                          evaluate=False, **common)

    print("[3/3] evaluating both on the SST-2 dev set (872 sentences) and timing them (batch 1 and 8, seq 128)", flush=True)
    eval_kwargs = dict(data_dir=args.data_dir, max_seq_length=args.max_seq_length, progress=not args.no_progress)
    # the W1 student has float activations: it runs on the native runtime with dynamic int8 activations, and its
    # accuracy is measured on that same path
    student_kwargs = dict(eval_kwargs, float_activations="int8") if binarization.get("activation_bits", 32) >= 32 \
        else eval_kwargs
    results = {"teacher (FP32)": evaluate_model(teacher_dir, "sst2", **eval_kwargs),
               "student (W1, packed, native runtime)": evaluate_model(student_dir, "sst2", **student_kwargs)}
    rows = comparison_rows(results)
    table = write_report(rows, out)
    shutil.copy(os.path.join(student_dir, "losses.png"), os.path.join(out, "losses.png"))
    summary = {"rows": rows, "binarization": binarization, "teacher_steps": args.teacher_steps,
               "student_steps": args.student_steps, "teacher_train_seconds": teacher_run["train_seconds"],
               "student_train_seconds": student_run["train_seconds"], "wall_seconds": time.perf_counter() - start}
    with open(os.path.join(out, "main_job.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("\n" + table)
    print(f"\nteacher: {teacher_dir}\nstudent (packed safetensors): {student_dir}\n"
          f"table: {out}/comparison.md, {out}/comparison.json; losses: {out}/losses.png; "
          f"wall time {summary['wall_seconds'] / 60:.1f} min")
    return rows
