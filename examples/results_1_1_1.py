"""The 1-1-1 result tables (issue 16 §4): SST-2, RTE and STS-B, 3 seeds each, mean ± standard deviation.

One command regenerates everything, through the `hf-binary-bert` command line (each command is printed before it
runs and kept in `OUT/commands.txt`):

    python examples/results_1_1_1.py --out runs/results_1_1_1                  # everything (hours on a CPU)
    python examples/results_1_1_1.py --out runs/r --tasks stsb --seeds 42      # one task, one seed
    python examples/results_1_1_1.py --out runs/r --dry-run                    # print the commands only
    python examples/results_1_1_1.py --out runs/r --archive DIR --table-only   # the table of what is finished

Per task:
1. data: SST-2 and RTE from `data/glue/<TASK>` (official dev as evaluation split); STS-B from the GLUE release's
   `train.tsv` (`--stsb-release`, default `../shared/data/glue/STS-B`) with a fixed 10 % held out as validation
   (`hf_binary_bert.data.write_holdout_split`, seed 0) — the release's dev split is not shared.
2. teacher: all-MiniLM-L6-v2 (`minilm`) fine-tuned once (seed 42, the epochs and learning rate of `BUDGETS`), or
   `--teacher TASK=FOLDER` for one already there.
3. students, one per seed: W1A1 BiT (elastic activations, 1-bit embeddings, learned α/γ per head) through the
   multi-step schedule W1A4,W1A2,W1A1 with the total budget of `BUDGETS` and W1A8 in one stage (on SST-2 also
   `W1A1-fp32`, the W1A1 student saved with `--fp-dtype float32`; on SST-2 and STS-B `W1A1-E16-fp32`, the same
   with a 16-bit word table, and `W1A8-E16-kl-fp32`, the W1A8 student with a 16-bit word table, the attention KL and
   float32 full-precision parts; on STS-B also `W1A8-E16-kl-fp32-nodrop`, that student without dropout), as
   `hf-binary-bert distill`, which scores teacher and student on the evaluation split (`comparison.json`) and
   every stage against the original teacher (`stages.json`).
4. `OUT/results.md`: per task and model the metric's mean ± sample standard deviation over the seeds, the share of
   the teacher's (the teacher each run scored: a teacher fine-tuned again elsewhere may score differently), the
   student's size on disk, whether any saved student collapsed; and the commands.

With `--archive DIR` (e.g. docs/measurements/results-1-1-1, committed), each finished student run's result files
(`comparison.json`, `distill_results.json`, `stages.json`, and `run.json`: its command, the git commit it ran on and
the CPU) are copied to `DIR/<task>/<run>/`, and a run found there counts as finished: the machines of this project
can change between sessions (and `OUT` with them), so a table can be completed over several sessions from the
committed archive, and `OUT/results.md` is written from it.

Runs already finished (their `comparison.json` exists) are not run again, and a run that was killed continues
from its newest checkpoint (each student and teacher saves one every 50 steps, `--save-steps 50 --save-total-limit
1`, in `<run>.partial`), so an interrupted call continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from machine import cpu_model_and_flags  # "AMD EPYC (family 23, model 1)": the generation, not just the name

# budgets of issue 16's goals: batch 32; SST-2 1000 steps at 64 tokens; STS-B and RTE 3 epochs at 128 tokens
BUDGETS = {
    "sst2": {"data_dir": "data/glue/SST-2", "metric": "accuracy",
             "teacher_args": ["--epochs", "1", "--learning-rate", "5e-5", "--max-seq-length", "64"],
             "student_args": ["--max-steps", "1000", "--max-seq-length", "64"]},
    # RTE's MiniLM teacher stays near chance (dev majority class 0.527): 3 epochs at 5e-5 score 0.563; 6 epochs at
    # 1e-4 overfit (training loss 0.10, dev 0.552) at twice the cost
    "rte": {"data_dir": "data/glue/RTE", "metric": "accuracy",
            "teacher_args": ["--epochs", "3", "--learning-rate", "5e-5", "--max-seq-length", "128"],
            "student_args": ["--epochs", "3", "--max-seq-length", "128"]},
    "stsb": {"data_dir": None, "metric": "pearson",
             "teacher_args": ["--epochs", "3", "--learning-rate", "5e-5", "--max-seq-length", "128"],
             "student_args": ["--epochs", "3", "--max-seq-length", "128"]},
}
BIT = ["--weight-scale", "learned_offset", "--scale-granularity", "head", "--embedding-bits", "1",
       "--activation-quantizer", "elastic", "--batch-size", "32", "--learning-rate", "5e-4"]
# a resumable checkpoint every 50 steps, only the newest kept: a killed call continues where its run (a student or
# a teacher) stopped
CHECKPOINTS = ["--save-steps", "50", "--save-total-limit", "1"]
STUDENTS = {"W1A1": ["--activation-bits", "1", "--multi-step", "W1A4,W1A2,W1A1"], "W1A8": ["--activation-bits", "8"]}
# the W1A1 student saved with its full-precision parts in float32 instead of float16 (0.75 MB more for MiniLM): the
# same training, 0.6 points more on SST-2 over three seeds (docs/results.md); run on SST-2 only
STUDENTS["W1A1-fp32"] = [*STUDENTS["W1A1"], "--fp-dtype", "float32"]
# the W1A8 student with its word table in float16 (16-bit embeddings: 25.68 MB instead of 3.94), MiniLM's attention KL
# and float32 full-precision parts: 98.0 % of the teacher on SST-2 over three seeds, the only W1A8 recipe at the
# goal so far (docs/results.md); run on SST-2 and STS-B (where the attention KL is the default already)
STUDENTS["W1A8-E16-kl-fp32"] = [*STUDENTS["W1A8"], "--embedding-bits", "16", "--attention-loss-weight", "1",
                                "--attention-loss", "kl", "--fp-dtype", "float32"]
# the same W1A8 student without dropout (hidden states and attention probabilities): with the teacher's 0.1 the
# attention KL is taken on dropped-out maps (about 2.5 nats of it are the dropped entries) and the student fits more
# slowly; 0.959 x the teacher on STS-B at 3 epochs over seeds 42-44 (docs/results.md#stsb-w1a8-no-dropout); run on STS-B
STUDENTS["W1A8-E16-kl-fp32-nodrop"] = [*STUDENTS["W1A8-E16-kl-fp32"], "--hidden-dropout-prob", "0",
                                       "--attention-probs-dropout-prob", "0"]
# the W1A1 student of `W1A1-fp32` with its word table in float16 (16-bit embeddings, as the blog series keeps them):
# what the 1-bit word table costs at W1A1 (docs/results.md); run on SST-2 and STS-B
STUDENTS["W1A1-E16-fp32"] = [*STUDENTS["W1A1"], "--embedding-bits", "16", "--fp-dtype", "float32"]
# the W1A1 student of `W1A1-fp32` distilled on the training examples of at least 11 tokens only (SST-2's train is
# mostly treebank phrases, its dev whole sentences; docs/results.md#sst2-w1a1-long-examples); run on SST-2
STUDENTS["W1A1-fp32-min11"] = [*STUDENTS["W1A1-fp32"], "--min-train-tokens", "11"]
# the same data with the two-step schedule W1A4 -> W1A1 (500 + 500 steps, no W1A2 stage): 90.8 % of the teacher on
# SST-2 over seeds 42-44 (docs/results.md#sst2-w1a1-two-steps-long-examples); run on SST-2
STUDENTS["W1A1-2step-fp32-min11"] = ["--activation-bits", "1", "--multi-step", "W1A4,W1A1", "--fp-dtype", "float32",
                                     "--min-train-tokens", "11"]
# some students on some tasks only (default: every task)
STUDENT_TASKS = {"W1A1-fp32": ("sst2",), "W1A8-E16-kl-fp32": ("sst2", "stsb"), "W1A1-E16-fp32": ("sst2", "stsb"),
                 "W1A1-fp32-min11": ("sst2",), "W1A1-2step-fp32-min11": ("sst2",),
                 "W1A8-E16-kl-fp32-nodrop": ("stsb",)}


def _command_line(command: list[str]) -> str:
    """`command` as one shell line, `python -m …` for the interpreter (commands.txt, run.json)."""
    return " ".join(["python", *(shlex.quote(c) for c in command[1:])])


def _run(command: list[str], log: Path, args, done: bool = False, resume: bool = False) -> None:
    """Print and record `command` (with `python -m` for the interpreter); run it unless `done` or a dry run. With
    `resume`, it runs with `--resume-from-checkpoint last` added (the same result: the Trainer restores the
    optimizer, scheduler and random states) and its log is appended to."""
    line = _command_line(command)
    print(("# done: " if done else "# resumed: " if resume and not args.dry_run else "") + line, flush=True)
    with open(Path(args.out) / "commands.txt", "a") as f:
        f.write(line + "\n")
    if args.dry_run or done:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        command = [*command, "--resume-from-checkpoint", "last"]
    with open(log, "a" if resume else "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if code:
        sys.exit(f"failed (exit {code}), see {log}: {line}")


def _resumable(output_dir: str | Path) -> bool:
    """Whether a killed run writing `output_dir` left a checkpoint in its working folder (`<output_dir>.partial`; a
    multi-step run's in its stage folders)."""
    return any(Path(f"{output_dir}.partial").glob("**/checkpoint-*"))


def _drop_checkpoints(run_dir: Path) -> None:
    """Remove a finished run's resumable checkpoints (the latent weights and optimizer state, about 260 MB each for
    MiniLM): the saved model beside them is the result."""
    for checkpoint in sorted(run_dir.glob("**/checkpoint-*")):
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)


ARCHIVED = ("comparison.json", "distill_results.json", "stages.json")


def _archive(run_dir: Path, archive: Path, command: str) -> None:
    """Copy a finished run's result files to `archive` with a `run.json` (command, git commit, CPU)."""
    archive.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVED:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, archive / name)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    cpu = cpu_model_and_flags()[0]
    (archive / "run.json").write_text(json.dumps({"command": command, "commit": commit or None, "cpu": cpu},
                                                 indent=1) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tasks", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--teacher", action="append", default=[], metavar="TASK=FOLDER",
                        help="use this fine-tuned teacher for TASK instead of fine-tuning one")
    parser.add_argument("--stsb-release", default="../shared/data/glue/STS-B")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--archive", metavar="DIR", help="copy each finished run's results here (and count runs "
                        "found here as finished)")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: write results.md from the runs already finished (OUT and --archive) "
                        "and list the missing ones under it")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "commands.txt").write_text("")
    cli = [sys.executable, "-m", "hf_binary_bert.cli"]
    given = dict(item.split("=", 1) for item in args.teacher)
    sections, missing = [], []
    for task in args.tasks:
        names = [name for name in args.students if task in STUDENT_TASKS.get(name, BUDGETS)]
        if not names:  # no student asked for runs on this task
            continue
        budget = BUDGETS[task]
        data_dir = budget["data_dir"]
        if task == "stsb":
            data_dir = str(out / "data" / "STS-B")
            print(f"# STS-B: 10 % of {args.stsb_release}/train.tsv held out (seed 0) into {data_dir}")
            if not args.dry_run and not args.table_only:
                from hf_binary_bert.data import write_holdout_split

                write_holdout_split("stsb", args.stsb_release, data_dir, fraction=0.1, seed=0)
        teacher = given.get(task, str(out / task / "teacher"))
        # every student run of the task already in the archive: no teacher to fine-tune first
        all_archived = bool(args.archive) and all(
            (Path(args.archive) / task / f"{name}-seed{seed}" / "comparison.json").exists()
            for name in names for seed in args.seeds)
        if task not in given:
            _run([*cli, "finetune", "--model", "minilm", "--task", task, "--data-dir", data_dir, "--output-dir",
                  teacher, "--batch-size", "32", "--seed", "42", "--no-progress",
                  *budget["teacher_args"], *CHECKPOINTS], out / task / "teacher.log", args,
                 done=all_archived or args.table_only or (Path(teacher) / "config.json").exists(),
                 resume=_resumable(teacher))
            if not args.dry_run and not all_archived and not args.table_only:
                _drop_checkpoints(Path(teacher))
        rows = {}
        for name in names:
            for seed in args.seeds:
                run_dir = out / task / f"{name}-seed{seed}"
                archived = Path(args.archive) / task / run_dir.name if args.archive else None
                command = [*cli, "distill", "--teacher", teacher, "--task", task, "--data-dir", data_dir,
                           "--output-dir", str(run_dir), "--seed", str(seed), "--no-progress", "--no-latency",
                           *BIT, *STUDENTS[name], *budget["student_args"], *CHECKPOINTS]
                in_archive = archived is not None and (archived / "comparison.json").exists()
                if args.table_only and not in_archive and not (run_dir / "comparison.json").exists():
                    missing.append(f"{task} {name} seed {seed}")
                    continue
                _run(command, out / task / f"{name}-seed{seed}.log", args,
                     done=in_archive or (run_dir / "comparison.json").exists(), resume=_resumable(run_dir))
                if args.dry_run:
                    continue
                if not in_archive:
                    _drop_checkpoints(run_dir)
                    if archived is not None:
                        _archive(run_dir, archived, _command_line(command))
                source = archived if in_archive else run_dir
                teacher_row, student_row = json.loads((source / "comparison.json").read_text())
                result = json.loads((source / "distill_results.json").read_text())
                rows.setdefault("teacher", []).append((teacher_row, False, teacher_row))
                rows.setdefault(name, []).append((student_row, result.get("collapsed", False), teacher_row))
        if rows:
            sections.append(_section(task, budget["metric"], rows))
    if sections:
        commands = (out / "commands.txt").read_text()
        text = "\n\n".join(sections)
        if missing:
            text += "\n\nNot finished yet (not in the tables): " + ", ".join(missing) + "."
        text += "\n\nCommands:\n\n```\n" + commands + "```\n"
        (out / "results.md").write_text(text)
        print(text)


def _section(task: str, metric: str, rows: dict) -> str:
    """One task's table. Each run scored its own teacher (`comparison.json`): a student's "% of teacher" is against
    the mean of its runs' teacher scores, and the teacher row lists each distinct score (runs on other machines or
    dates may have fine-tuned the teacher again, not always to the same weights)."""
    lines = [f"### {task}", "", f"| model | {metric} (mean ± std) | seeds | % of teacher | size (MB) | collapsed |",
             "|---|---|---|---|---|---|"]
    for name, entries in rows.items():
        values = [r[metric] for r, _, _ in entries]
        teachers = [t[metric] for _, _, t in entries]
        if name == "teacher":  # the same teacher scored once per run: one value per distinct teacher
            distinct = list(dict.fromkeys(values))
            score = (f"{distinct[0]:.4f} (one seed: no std)" if len(distinct) == 1 else
                     " / ".join(f"{v:.4f}" for v in distinct) + " (teachers of different runs; each row's % is "
                     "against its own runs' teacher)")
            lines.append(f"| {name} | {score} | {len(distinct)} | 100.0 | {entries[0][0]['size_mb']:.2f} |  |")
            continue
        spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else " (one seed: no std)"
        collapsed = f"{sum(c for _, c, _ in entries)} of {len(entries)}"
        lines.append(f"| {name} | {statistics.mean(values):.4f}{spread} | {len(values)} | "
                     f"{100 * statistics.mean(values) / statistics.mean(teachers):.1f} | "
                     f"{entries[0][0]['size_mb']:.2f} | {collapsed} |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
