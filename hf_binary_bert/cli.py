"""`hf-binary-bert`: fine-tune a teacher, distil a binarized student, evaluate, report sizes, push, run the main job.

Bad arguments (a missing file, an unknown task, a teacher that is not a BERT, an invalid binarization setting) print
one line, `hf-binary-bert: error: ...`, and exit with code 2 before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys

from transformers import HfArgumentParser

from .distillation.arguments import BinarizationArguments, DistillationArguments
from .distributed import end_distributed

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command-line argument: reported in one line with exit code 2."""


class _Parser(HfArgumentParser):
    """`HfArgumentParser` (a subcommand's `dataclass_types` become its flags, with `-` and `_` spellings) whose
    errors are one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line instead of usage + error
        raise UsageError(f"{self.prog}: {message}")


# ----------------------------------------------------------------------------------------------------------------
# Arguments


def _add_data_args(p, *, train=True):
    p.add_argument("--task", required=True, help="'mlm' (masked LM on text files), 'squad' (SQuAD v1.1 extractive QA on SQuAD JSON files) or a GLUE task: sst2, rte, cola, mrpc, stsb, qqp, mnli, qnli, wnli")
    p.add_argument("--data-dir", help="folder with the GLUE task's TSV files (default: data/glue/<TASK> if present, else the Hub's nyu-mll/glue)")
    p.add_argument("--dataset-name", help="load the GLUE task from this Hub dataset (e.g. nyu-mll/glue) instead of TSV files")
    if train:
        p.add_argument("--train-files", nargs="+", help="text files for --task mlm, SQuAD JSON files for --task squad (training)")
    p.add_argument("--eval-files", nargs="+", help="text files for --task mlm, SQuAD JSON files for --task squad (evaluation)")
    p.add_argument("--max-seq-length", type=int, help="tokens per sequence / MLM block / SQuAD window (default 128; squad: 384)")
    p.add_argument("--doc-stride", type=int, help="squad: overlap in tokens of the windows of a long context (default min(128, window / 2))")
    p.add_argument("--max-answer-length", type=int, help="squad: longest answer decoded, in tokens (default 30)")
    p.add_argument("--max-eval-samples", type=int, help="evaluate on a random subset of this size")
    p.add_argument("--seed", type=int, default=42)


def _add_train_args(p, *, learning_rate):
    p.add_argument("--output-dir", required=True, help="where the model, tokenizer and reports are written")
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs; with --multi-step the total)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=learning_rate)
    p.add_argument("--warmup-ratio", type=float, default=0.1, help="linear warm-up over this fraction of the steps, then linear decay")
    p.add_argument("--max-train-samples", type=int, help="train on a random subset of this size")
    p.add_argument("--min-train-tokens", type=int, metavar="N",
                   help="GLUE tasks: train only on examples of at least N tokens (special tokens included, after "
                        "--max-seq-length truncation; the dev set is not filtered). SST-2's train is mostly short "
                        "treebank phrases, its dev whole sentences")
    p.add_argument("--whole-word-mask", action="store_true", help="MLM: mask whole words")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (Trainer's --bf16; without a GPU: bfloat16 autocast on the CPU)")
    p.add_argument("--fp16", action="store_true", help="fp16 mixed precision (Trainer's --fp16; needs a GPU)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each layer's forward in the backward pass (Trainer's gradient_checkpointing): "
                        "less memory, more time")
    p.add_argument("--logging-steps", type=int, default=50)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--save-steps", type=int, help="save a resumable checkpoint every N steps in OUTPUT_DIR.partial "
                   "(the run's working folder, renamed to OUTPUT_DIR when everything is written)")
    p.add_argument("--save-total-limit", type=int, metavar="N",
                   help="keep only the newest N checkpoints of --save-steps (Trainer's save_total_limit; default: all)")
    p.add_argument("--resume-from-checkpoint", metavar="CHECKPOINT",
                   help="continue a killed run: a checkpoint folder, or 'last' (the newest in OUTPUT_DIR.partial)")


def _add_schedule_args(p):
    """distill's multi-step budget and collapse handling (the schedule itself is `--multi-step`)."""
    p.add_argument("--stage-budget", default=None, metavar="SHARES",
                   help="--multi-step: how the total --max-steps / --epochs is shared, 'even' or relative shares per "
                        "stage such as 2,1,1 (default: see docs/distillation.md)")
    p.add_argument("--steps-per-stage", type=int, nargs="+", metavar="N",
                   help="--multi-step: optimizer steps of each stage (one number for all, or one per stage) instead "
                        "of a total --max-steps")
    p.add_argument("--stage-attention-loss-weights", type=float, nargs="+", metavar="W",
                   help="--multi-step: the attention loss's weight in each stage, one per stage (e.g. 1 1 0: the "
                        "W1A4 and W1A2 stages only), instead of one --attention-loss-weight for every stage")
    p.add_argument("--original-teacher-stages", type=int, nargs="+", metavar="K",
                   help="--multi-step: stages (numbered from 1) taught by the original teacher instead of the "
                        "previous stage's student, e.g. 3: the W1A1 stage of W1A4,W1A2,W1A1")
    p.add_argument("--on-collapse", default="original_teacher", choices=("original_teacher", "stop", "continue"),
                   help="--multi-step: when a stage collapses (no better than a constant answer against the original "
                        "teacher), the next stage restarts from the last healthy model taught by the original teacher "
                        "(default), the run stops, or it continues as BiT does")
    p.add_argument("--collapse-threshold", type=float, default=None,
                   help="skill against the original teacher below which a stage counts as collapsed (default 0.1)")


def _add_pruning_args(p, *, flag: bool):
    from .configuration_binary_bert import ENCODER_MODULES

    if flag:
        p.add_argument("--prune", action="store_true",
                       help="block-structured pruning during training: the group-lasso penalty, then the zero heads and "
                       "FFN neurons removed (docs/pruning.md)")
    p.add_argument("--group-lasso-weight", type=float, default=1e-4, help="λ₁ of the group lasso (default 1e-4)")
    p.add_argument("--binarizing-weight", type=float, default=0.0, help="λ₂ of the θ(1−θ) term (default 0)")
    p.add_argument("--num-blocks", type=int, default=1, help="K blocks per weight matrix (default 1)")
    p.add_argument("--direction", default="row", choices=("row", "column", "both"), help="group rows, columns or both")
    p.add_argument("--prune-modules", nargs="+", default=list(ENCODER_MODULES), choices=ENCODER_MODULES,
                   metavar="MODULE", help="encoder Linears the penalty applies to (default: all six)")
    p.add_argument("--epsilon", type=float, default=1e-2, help="groups with L2 norm ≤ ε are zeroed (default 1e-2)")
    p.add_argument("--penalty-form", default="auto", choices=("auto", "weight", "gate"),
                   help="θ(1−θ) on the weights (the seed) or on per-group gates (default auto: gates when "
                   "--binarizing-weight > 0 without --proximal, else no gates)")
    p.add_argument("--threshold-every", type=int, default=0, help="also zero groups ≤ ε every N steps (default 0)")
    p.add_argument("--ffn-keep-share", type=float, default=None, metavar="SHARE",
                   help="target width: also keep only this share of each layer's FFN neurons, those of largest norm "
                   "(in (0, 1]; default: ε alone)")
    p.add_argument("--heads-keep-share", type=float, default=None, metavar="SHARE",
                   help="the same for attention heads (in (0, 1]; default: ε alone)")
    p.add_argument("--proximal", action="store_true",
                   help="apply the group lasso as a proximal step (group soft-threshold by lr·λ₁) after every optimizer "
                   "step instead of through the loss (docs/pruning.md)")
    p.add_argument("--proximal-outside-target", action="store_true",
                   help="with --proximal and a keep share: shrink only the groups outside each layer's current top k")


def _pruning(args):
    """The `BlockPruningConfig` of the arguments (validated), or None without --prune."""
    if hasattr(args, "prune") and not args.prune:
        return None
    from .pruning import BlockPruningConfig

    try:
        return BlockPruningConfig(group_lasso_weight=args.group_lasso_weight, binarizing_weight=args.binarizing_weight,
                                  num_blocks=args.num_blocks, direction=args.direction, modules=args.prune_modules,
                                  epsilon=args.epsilon, penalty_form=args.penalty_form,
                                  threshold_every=args.threshold_every, ffn_keep_share=args.ffn_keep_share,
                                  heads_keep_share=args.heads_keep_share, proximal=args.proximal,
                                  proximal_outside_target=args.proximal_outside_target)
    except ValueError as err:
        raise UsageError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hf-binary-bert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("finetune", help="fine-tune a full-precision BERT teacher (masked LM, SQuAD or GLUE)")
    p.add_argument("--model", default="minilm", help="Hub id or local folder of a BERT ('minilm': all-MiniLM-L6-v2 from the demo extra)")
    _add_data_args(p)
    _add_train_args(p, learning_rate=5e-5)
    _add_pruning_args(p, flag=True)

    p = sub.add_parser("distill", help="binarize a fine-tuned teacher and distil the student",
                       dataclass_types=[BinarizationArguments, DistillationArguments])
    p.add_argument("--teacher", required=True, help="Hub id or local folder of the fine-tuned full-precision BERT")
    _add_data_args(p)
    _add_train_args(p, learning_rate=2e-4)
    p.add_argument("--no-latency", action="store_true", help="skip the latency columns of the final table")
    p.add_argument("--student-init", metavar="MODEL",
                   help="Hub id or folder of the full-precision BERT the student is binarized from (default: the "
                        "teacher), e.g. a pruned copy of it (`prune`): prune, then binarize, taught by the dense "
                        "teacher; same hidden size, layers, vocabulary and labels as the teacher")
    _add_schedule_args(p)
    _add_pruning_args(p, flag=True)

    p = sub.add_parser("prune", help="block-structured pruning of a fine-tuned full-precision BERT (heads, FFN neurons)",
                       dataclass_types=[DistillationArguments])
    p.add_argument("--model", required=True, help="Hub id or local folder of the fine-tuned full-precision BERT")
    _add_data_args(p)
    _add_train_args(p, learning_rate=5e-5)
    p.add_argument("--multi-step", default=None, metavar="SCHEDULE", help="not for prune (distill --multi-step)")
    _add_pruning_args(p, flag=False)
    p.add_argument("--no-latency", action="store_true", help="skip the latency columns of the final table")

    p = sub.add_parser("evaluate", help="task metric, size per component and CPU latency of one or more models")
    p.add_argument("--model", nargs="+", required=True, help="Hub ids or local folders (BERT or binarized BERT)")
    _add_data_args(p, train=False)
    p.add_argument("--output-dir", help="also write comparison.json / comparison.md here")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--float-activations", choices=["float32", "int8"],
                   help="binarized models with float activations (W1A32): run them on dynamic int8 activations "
                        "(the native runtime) or float32 (exact); default: the model's own setting (float32)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("size", help="size of a checkpoint on disk per component (MB = 10^6 bytes)")
    p.add_argument("model", help="Hub id or local folder")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("push", help="upload a saved binarized model (packed weights, config, code, tokenizer, model card) to the Hub")
    p.add_argument("model", help="folder of a saved binarized model, e.g. the --output-dir of distill")
    p.add_argument("repo_id", help="Hub repository, 'user/name' (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", help="branch to push to (created from the default branch when missing)")
    p.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the stored `hf auth login`)")
    p.add_argument("--commit-message")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--base-model", help="Hub id of the teacher for the card (default: the config's teacher_name_or_path when it is a Hub id)")
    p.add_argument("--task", help="what the metrics of MODEL/comparison.json were measured on (default: the task in MODEL/distill_results.json)")
    p.add_argument("--license", help="Hub license id for the card, e.g. apache-2.0")
    p.add_argument("--dry-run", metavar="DIR", help="write the files that would be uploaded (model card included) into DIR instead of pushing")

    p = sub.add_parser("serve", help="a local web page: type a sentence, see a teacher's and its binarized student's "
                       "predictions, latency and size side by side (needs the serve extra: Gradio)")
    p.add_argument("teacher", help="folder of the full-precision model (a saved BERT with a classification or QA head)")
    p.add_argument("student", help="folder of the binarized student (same kind of head)")
    p.add_argument("--host", default="127.0.0.1", help="address the server listens on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default: Gradio's, the first free one from 7860)")
    p.add_argument("--max-chars", type=int, default=2000, help="longest input per field in characters; longer requests get a message on the page (default 2000)")

    p = sub.add_parser("demo", help="the main job: fine-tune MiniLM on SST-2, distil a W1 student, compare (≈ 20 min on 2 CPU cores)",
                       dataclass_types=[BinarizationArguments])
    p.add_argument("--output-dir", default="outputs/main_job")
    p.add_argument("--teacher-model", default="minilm", help="full-precision BERT to fine-tune (default: all-MiniLM-L6-v2 from the demo extra)")
    p.add_argument("--data-dir", default="data/glue/SST-2")
    p.add_argument("--teacher-steps", type=int, default=300, help="teacher fine-tuning steps, batch 32 (default 300; 0 = one epoch)")
    p.add_argument("--student-steps", type=int, default=500, help="student distillation steps, batch 32 (default 500; 0 = one epoch)")
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--student-learning-rate", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-progress", action="store_true")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# Validation (nothing is written before it passes)


def _check_files(paths, what):
    for path in paths or ():
        if not os.path.isfile(path):
            raise UsageError(f"{what}: no such file: {path}")


def _task_name(task: str) -> str:
    """`"mlm"`, `"squad"`, or the canonical name of a GLUE task (`"SST-2"` → `"sst2"`)."""
    from .data import get_glue_task

    if task.lower() in ("mlm", "squad"):
        return task.lower()
    try:
        return get_glue_task(task).name
    except ValueError as err:
        raise UsageError(f"--task: {err}") from None


def _usage_from_value_error(err: ValueError) -> UsageError:
    """`recipes`' "field_name must be …" as "--field-name must be …"."""
    name, _, rest = str(err).partition(" ")
    return UsageError(f"--{name.replace('_', '-')} {rest}")


def _check_task(args):
    from .checks import check_count

    args.task = _task_name(args.task)
    if args.max_seq_length is None:
        args.max_seq_length = 384 if args.task == "squad" else 128
    try:  # the commands' shared data values (training values: `_train_kwargs`)
        check_count("max_seq_length", args.max_seq_length, "tokens")
        check_count("max_eval_samples", args.max_eval_samples, "examples")
    except ValueError as err:
        raise _usage_from_value_error(err) from None
    if args.task not in ("mlm", "squad"):
        if args.data_dir is not None and not os.path.isdir(args.data_dir):
            raise UsageError(f"--data-dir: no such folder: {args.data_dir}")
    else:
        _check_files(getattr(args, "train_files", None), "--train-files")
        _check_files(args.eval_files, "--eval-files")
        if not getattr(args, "train_files", None) and not args.eval_files:
            raise UsageError(f"--task {args.task} needs --train-files and/or --eval-files")
        if args.task == "squad":  # a file that is not SQuAD JSON stops here, before anything is trained or written
            from .squad import load_squad

            for flag, files in (("--train-files", getattr(args, "train_files", None)), ("--eval-files", args.eval_files)):
                for path in files or ():
                    try:
                        load_squad(path)
                    except ValueError as err:
                        raise UsageError(f"{flag}: {err}") from None
    if args.task != "squad" and (args.doc_stride is not None or args.max_answer_length is not None):
        raise UsageError("--doc-stride / --max-answer-length apply to --task squad only")
    if args.doc_stride is not None and not 0 < args.doc_stride < args.max_seq_length // 2 + 1:
        raise UsageError(f"--doc-stride must be between 1 and half of --max-seq-length ({args.max_seq_length}), "
                         f"got {args.doc_stride}")
    if args.max_answer_length is not None and args.max_answer_length < 1:
        raise UsageError(f"--max-answer-length must be a positive number of tokens, got {args.max_answer_length}")


def _check_model(name, flag, *, allow_binary, max_seq_length=None):
    from .recipes import check_model

    try:
        return check_model(name, allow_binary=allow_binary, max_seq_length=max_seq_length)
    except ValueError as err:
        message = str(err)
        if message.startswith("max_seq_length="):
            raise UsageError(f"--max-seq-length: {message}") from None
        raise UsageError(f"{flag}: {message}") from None


# `recipes.distill`'s multi-step keywords, each a flag of `distill`
_SCHEDULE_KEYWORDS = ("stage_budget", "steps_per_stage", "stage_attention_loss_weights", "original_teacher_stages",
                      "on_collapse", "collapse_threshold")


def _with_flags(message: str) -> str:
    """A library message with every `BinarizationArguments` / `DistillationArguments` field and multi-step keyword it
    names written as the command-line flag (`attention_loss_weight` → `--attention-loss-weight`), so each error names
    what the user typed."""
    names = {f.name for cls in (BinarizationArguments, DistillationArguments) for f in dataclasses.fields(cls)}
    names = sorted(names | set(_SCHEDULE_KEYWORDS), key=len, reverse=True)
    pattern = r"(?<![\w.-])(" + "|".join(map(re.escape, names)) + r")(?!\w)"
    return re.sub(pattern, lambda m: "--" + m.group(1).replace("_", "-"), message)


def _from_args(cls, args):
    """The `cls` dataclass of the parsed arguments."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _binarization(args) -> tuple[dict, list[int]]:
    """The binarization fields of the arguments and the activation bits of each stage, validated
    (`BinarizationArguments`, for every multi-step stage's activation bits)."""
    try:
        binarization = _from_args(BinarizationArguments, args)
    except ValueError as err:
        raise UsageError(_with_flags(str(err))) from None
    return binarization.binarization(), binarization.stage_bits()


def _train_kwargs(args) -> dict:
    kwargs = dict(max_steps=args.max_steps, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, warmup_ratio=args.warmup_ratio, max_seq_length=args.max_seq_length,
                  max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
                  min_train_tokens=args.min_train_tokens, whole_word_mask=args.whole_word_mask, seed=args.seed,
                  logging_steps=args.logging_steps,
                  progress=not args.no_progress, data_dir=args.data_dir, dataset_name=args.dataset_name,
                  train_files=args.train_files, doc_stride=args.doc_stride, max_answer_length=args.max_answer_length,
                  eval_files=args.eval_files, save_steps=args.save_steps, save_total_limit=args.save_total_limit,
                  resume_from_checkpoint=args.resume_from_checkpoint)
    from .recipes import OTHER_TASKS, TrainingOptions

    try:  # each value checked once, by TrainingOptions; the message names the flag
        TrainingOptions(**{k: v for k, v in kwargs.items() if k in TrainingOptions.__dataclass_fields__})
    except ValueError as err:
        raise _usage_from_value_error(err) from None
    if args.min_train_tokens is not None and args.task in OTHER_TASKS:
        raise UsageError(f"--min-train-tokens filters GLUE training examples, not --task {args.task}")
    if args.resume_from_checkpoint is not None and getattr(args, "multi_step", None):
        if args.resume_from_checkpoint.lower() != "last":
            raise UsageError("--resume-from-checkpoint: with --multi-step only 'last' (each stage resumes from its "
                             f"own newest checkpoint), not {args.resume_from_checkpoint}")
    elif args.resume_from_checkpoint is not None:
        from .recipes import _resume_checkpoint, partial_dir

        try:
            _resume_checkpoint(TrainingOptions(resume_from_checkpoint=args.resume_from_checkpoint),
                               partial_dir(args.output_dir))
        except ValueError as err:
            raise UsageError("--resume-from-checkpoint" + str(err).removeprefix("resume_from_checkpoint")) from None
    if args.gradient_checkpointing:
        kwargs["gradient_checkpointing"] = True
    if args.bf16:
        kwargs["bf16"] = True
    if args.fp16:
        kwargs["fp16"] = True
    return kwargs


def _schedule_kwargs(args, stage_bits) -> dict:
    """`distill`'s multi-step keywords, validated (the budget split is computed once here to check it)."""
    from .distillation.stages import check_collapse_threshold

    if args.collapse_threshold is not None:
        try:
            check_collapse_threshold(args.collapse_threshold)
        except ValueError as err:
            raise _usage_from_value_error(err) from None
    weights = args.stage_attention_loss_weights
    if not stage_bits:
        for flag, value in (("--stage-budget", args.stage_budget), ("--steps-per-stage", args.steps_per_stage),
                            ("--stage-attention-loss-weights", weights),
                            ("--original-teacher-stages", args.original_teacher_stages)):
            if value is not None:
                raise UsageError(f"{flag} needs --multi-step")
        return {"collapse_threshold": args.collapse_threshold}
    from .recipes import _original_teacher_stages, _stage_loss_extras, stage_steps

    try:  # the recipe's own check, before anything is written
        _stage_loss_extras({"attention_loss_weight": getattr(args, "attention_loss_weight", None)}, stage_bits,
                           weights)
    except ValueError as err:
        raise UsageError(f"--stage-attention-loss-weights: {_with_flags(str(err))}") from None
    try:
        _original_teacher_stages(args.original_teacher_stages, stage_bits)
    except ValueError as err:
        raise UsageError(_with_flags(str(err))) from None

    steps = args.steps_per_stage
    steps = steps[0] if steps is not None and len(steps) == 1 else steps
    try:
        stage_steps(len(stage_bits), max_steps=args.max_steps, epochs=args.epochs, stage_budget=args.stage_budget,
                    steps_per_stage=steps)
    except ValueError as err:
        raise UsageError(f"--multi-step budget: {err}") from None
    return {"stage_budget": args.stage_budget, "steps_per_stage": steps, "on_collapse": args.on_collapse,
            "collapse_threshold": args.collapse_threshold, "stage_attention_loss_weights": weights,
            "original_teacher_stages": args.original_teacher_stages}


def _loss_kwargs(args) -> dict:
    try:
        return dataclasses.asdict(_from_args(DistillationArguments, args))
    except ValueError as err:
        raise UsageError(_with_flags(str(err))) from None


# ----------------------------------------------------------------------------------------------------------------
# Commands


def _print_table(rows, output_dir):
    from .recipes import write_report

    table = write_report(rows, output_dir)
    print("\n" + table)
    print(f"\n(written to {os.path.join(output_dir, 'comparison.md')} and comparison.json)")


def _compare(named_models: dict, args, float_activations=None) -> list[dict]:
    """Each of `named_models` ({row name: model path}) scored on the evaluation split of `args.task` with the data,
    sequence, seed, SQuAD and latency options of the command line `args`; `float_activations` only for binarized
    models. Returns the comparison rows (`recipes.comparison_rows`)."""
    from transformers import AutoConfig

    from .configuration_binary_bert import BinaryBertConfig
    from .recipes import comparison_rows, evaluate_model

    data = {"data_dir": args.data_dir, "dataset_name": args.dataset_name, "eval_files": args.eval_files,
            "max_seq_length": args.max_seq_length, "max_eval_samples": args.max_eval_samples, "seed": args.seed,
            "doc_stride": args.doc_stride, "max_answer_length": args.max_answer_length}
    results = {}
    for name, path in named_models.items():
        binary = float_activations and isinstance(AutoConfig.from_pretrained(path), BinaryBertConfig)
        results[name] = evaluate_model(path, args.task, latency=not args.no_latency, progress=not args.no_progress,
                                       float_activations=float_activations if binary else None, **data)
    return comparison_rows(results)


def cmd_finetune(args):
    _check_task(args)
    _check_model(args.model, "--model", allow_binary=False, max_seq_length=args.max_seq_length)
    from .recipes import finetune

    pruning = _pruning(args)
    try:
        result = finetune(args.model, args.task, args.output_dir, pruning=pruning, **_train_kwargs(args))
    except ValueError as err:
        if pruning is None:
            raise
        raise UsageError(str(err)) from None  # e.g. ε would remove every head of a layer (nothing published)
    print(json.dumps(result["metrics"], indent=1))
    if pruning is not None:
        from .pruning.report import markdown_table

        with open(os.path.join(args.output_dir, "sparsity.json")) as f:
            print("\npruned (heads, FFN width and encoder weights kept per layer):\n" + markdown_table(json.load(f)))


def cmd_distill(args):
    _check_task(args)
    _check_model(args.teacher, "--teacher", allow_binary=False, max_seq_length=args.max_seq_length)
    if args.student_init is not None:
        _check_model(args.student_init, "--student-init", allow_binary=False)
    from .recipes import distill, parse_schedule

    binarization, _ = _binarization(args)
    losses = _loss_kwargs(args)
    schedule_kwargs = _schedule_kwargs(args, parse_schedule(args.multi_step))
    # the comparison below scores teacher and student; no separate evaluation after training
    pruning = _pruning(args)
    from .distillation.stages import StageCollapseError

    try:
        result = distill(args.teacher, args.task, args.output_dir, binarization=binarization,
                         schedule=args.multi_step, evaluate=False, pruning=pruning,
                         student_init=args.student_init, **schedule_kwargs, **_train_kwargs(args), **losses)
    except StageCollapseError as err:
        print(f"hf-binary-bert: error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        if pruning is None and args.student_init is None:
            raise
        # e.g. ε would remove every head of a layer, a --student-init of another shape (nothing saved)
        raise UsageError(str(err)) from None
    if os.path.isfile(os.path.join(args.output_dir, "stages.md")):
        with open(os.path.join(args.output_dir, "stages.md")) as f:
            print("\nstages, each measured against the original teacher on the evaluation split:\n" + f.read())
    for row in result.get("stages", []):
        if row.get("collapsed"):
            print(f"WARNING: stage {row['stage']} collapsed: {row['collapse_reason']}")
    rows = _compare({"teacher": args.teacher, "student": args.output_dir}, args)
    _print_table(rows, args.output_dir)
    print(f"losses plot: {os.path.join(args.output_dir, 'losses.png')}")


def cmd_prune(args):
    if args.resume_from_checkpoint is not None:
        raise UsageError("--resume-from-checkpoint: prune does not resume (finetune and distill do)")
    _check_task(args)
    if args.task == "squad":
        raise UsageError("--task squad: prune works on masked LM and GLUE tasks")
    _check_model(args.model, "--model", allow_binary=False, max_seq_length=args.max_seq_length)
    if args.multi_step:
        raise UsageError("--multi-step: prune distils one full-precision model; use distill --prune for a student")
    pruning = _pruning(args)
    losses = _loss_kwargs(args)
    from .pruning.recipe import prune

    try:
        result = prune(args.model, args.task, args.output_dir, pruning=pruning, evaluate=False, **_train_kwargs(args),
                       **losses)
    except ValueError as err:
        raise UsageError(str(err)) from None
    from .pruning.report import markdown_table

    print("\n" + markdown_table(result["sparsity"]))
    print(f"\n(sparsity report: {os.path.join(args.output_dir, 'sparsity.md')} and sparsity.png)")
    rows = _compare({"dense": args.model, "pruned": args.output_dir}, args)
    _print_table(rows, args.output_dir)


def cmd_evaluate(args):
    _check_task(args)
    for model in args.model:
        _check_model(model, "--model", allow_binary=True, max_seq_length=args.max_seq_length)
    rows = _compare({m: m for m in args.model}, args, float_activations=args.float_activations)
    if args.output_dir:
        _print_table(rows, args.output_dir)
    else:
        from .recipes import markdown_table

        print(markdown_table(rows))


def cmd_size(args):
    from .format import checkpoint_size_report, format_size_report
    from .recipes import resolve_model

    try:
        report = checkpoint_size_report(resolve_model(args.model))
    except (OSError, ValueError) as err:
        raise UsageError(f"{args.model}: {str(err).splitlines()[0]}") from None
    from .pruning.report import checkpoint_sparsity_report, markdown_table

    sparsity = checkpoint_sparsity_report(resolve_model(args.model))  # None unless pruned
    if args.json:
        print(json.dumps({**report, "sparsity": sparsity} if sparsity else report, indent=1))
        return
    print(format_size_report(report))
    if sparsity:
        print("\npruned (heads, FFN width and encoder weights kept per layer):\n" + markdown_table(sparsity))


def _card_inputs(folder: str, task: str | None) -> dict:
    """Model-card keywords from what `distill` left in `folder`: the student's and teacher's rows of
    `comparison.json` (metrics, latency) and the task of `distill_results.json`."""
    card: dict = {}
    results = os.path.join(folder, "distill_results.json")
    if task is None and os.path.isfile(results):
        with open(results) as f:
            task = json.load(f).get("task")
    comparison = os.path.join(folder, "comparison.json")
    rows = {}
    if os.path.isfile(comparison):
        with open(comparison) as f:
            rows = {row.get("model"): row for row in json.load(f)}
    for prefix, name in (("", "student"), ("teacher_", "teacher")):
        row = rows.get(name, {})
        metrics = {k: v for k, v in row.items() if k != "model" and not k.endswith("_mb") and not k.startswith("latency_ms_b")}
        latency = {int(k.removeprefix("latency_ms_b")): v for k, v in row.items() if k.startswith("latency_ms_b")}
        if metrics and task is None:
            print(f"note: the {name}'s metrics in {comparison} are left out of the model card: pass --task",
                  file=sys.stderr)
        elif metrics:
            card[f"{prefix}metrics"] = metrics
        if latency:
            card[f"{prefix}latency_ms"] = latency
    if "metrics" in card:
        card["task"] = task
    return card


def cmd_push(args):
    from transformers import AutoConfig, AutoTokenizer

    from . import modeling_binary_bert
    from .hub import PushToHubError

    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise UsageError(f"model: {args.model} is not a folder with a saved model (no config.json)")
    if args.task is not None:
        args.task = _task_name(args.task)
    config = AutoConfig.from_pretrained(args.model)
    architecture = (config.architectures or ["BinaryBertModel"])[0]
    if config.model_type != "binary_bert" or not hasattr(modeling_binary_bert, architecture):
        raise UsageError(f"model: {args.model} is not a binarized BERT (model_type {config.model_type!r}); distill one first")
    try:
        model = getattr(modeling_binary_bert, architecture).from_pretrained(args.model)
    except ValueError as err:
        raise UsageError(f"model: {str(err).splitlines()[0]}") from None
    has_tokenizer = any(os.path.isfile(os.path.join(args.model, f)) for f in ("tokenizer.json", "vocab.txt"))
    tokenizer = AutoTokenizer.from_pretrained(args.model) if has_tokenizer else None
    card = {**_card_inputs(args.model, args.task), "tokenizer": tokenizer, "base_model": args.base_model,
            "license": args.license}
    if args.dry_run:
        if os.path.exists(args.dry_run) and os.listdir(args.dry_run):
            raise UsageError(f"--dry-run: {args.dry_run} is not empty")
        model.save_for_hub(args.dry_run, repo_id=args.repo_id, **card)
        print(f"wrote what would be pushed to {args.repo_id} into {args.dry_run}: {', '.join(sorted(os.listdir(args.dry_run)))}")
        return
    try:
        commit = model.push_to_hub(args.repo_id, private=args.private or None, token=args.token, revision=args.revision,
                                   commit_message=args.commit_message, create_pr=args.create_pr, **card)
    except PushToHubError as err:
        raise UsageError(str(err)) from None
    print(f"pushed {args.model} to {args.repo_id}: {commit.commit_url} (revision {commit.oid})")


def cmd_serve(args):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("serve needs Gradio: pip install 'hf-binary-bert[serve]'") from None
    from .serve import serve

    for name in ("teacher", "student"):
        _check_model(getattr(args, name), name, allow_binary=True)
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port: {args.port} is not a TCP port (1-65535)")
    if args.max_chars < 1:
        raise UsageError(f"--max-chars: must be at least 1, got {args.max_chars}")
    try:
        serve(args.teacher, args.student, host=args.host, port=args.port, max_chars=args.max_chars)
    except ValueError as err:  # a model the page cannot serve (its head, its files): before the server starts
        raise UsageError(str(err).splitlines()[0]) from None
    except OSError as err:  # the address is taken or cannot be bound
        raise UsageError(f"--host/--port: {str(err).splitlines()[0]}") from None


def cmd_demo(args):
    from .main_job import run_main_job

    if not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir: no such folder: {args.data_dir} (run from the repository root)")
    for name in ("train.tsv", "dev.tsv"):
        if not os.path.isfile(os.path.join(args.data_dir, name)):
            raise UsageError(f"--data-dir: {args.data_dir} has no {name} (it should be GLUE's SST-2 folder)")
    for flag, steps in (("--teacher-steps", args.teacher_steps), ("--student-steps", args.student_steps)):
        if steps < 0:
            raise UsageError(f"{flag} must be a number of steps >= 0 (0 = one epoch), got {steps}")
    if not args.student_learning_rate > 0:
        raise UsageError(f"--student-learning-rate must be positive, got {args.student_learning_rate}")
    from .checks import check_count

    try:
        check_count("max_seq_length", args.max_seq_length, "tokens")
    except ValueError as err:
        raise _usage_from_value_error(err) from None
    _check_model(args.teacher_model, "--teacher-model", allow_binary=False, max_seq_length=args.max_seq_length)
    if args.multi_step:
        raise UsageError("--multi-step: the demo distils one W1 student; use distill --multi-step")
    run_main_job(args, _binarization(args)[0])


COMMANDS = {"finetune": cmd_finetune, "distill": cmd_distill, "prune": cmd_prune, "evaluate": cmd_evaluate, "size": cmd_size, "push": cmd_push,
            "serve": cmd_serve, "demo": cmd_demo}


TRAINING_COMMANDS = ("finetune", "distill", "prune", "demo")
MMAP_THRESHOLD = 1 << 17  # bytes


def limit_heap_growth(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve every allocation of `threshold` bytes or more (128 KiB) from its own memory map, returned to the
    system when freed (glibc `mallopt(M_MMAP_THRESHOLD)`; the environment's `MALLOC_MMAP_THRESHOLD_` wins).

    glibc raises its threshold to the largest block freed so far, up to 32 MiB; after the first training step the
    activation tensors (a few MiB each) then come from the heap, which fragments and is not given back: a W1A1
    MiniLM distillation step at batch 32 × 128 peaks about 0.7 GiB higher without this setting. The price: each
    such allocation is a fresh map whose pages fault on first touch, so a step takes more CPU time (docs/
    distillation.md, Training memory and step time). Returns whether the setting was applied (False on a C library
    without `mallopt`).
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD = -3 (malloc.h)
    except (OSError, AttributeError):
        return False


def use_huge_pages() -> bool:
    """Have PyTorch back every CPU tensor of 2 MiB or more with transparent huge pages: set `THP_MEM_ALLOC_ENABLE=1`,
    PyTorch's own switch (c10's CPU allocator then aligns such a tensor to a page and `madvise(MADV_HUGEPAGE)`s it),
    unless the environment sets it already.

    With `limit_heap_growth` every such tensor is a fresh memory map whose pages fault on first touch; huge pages make
    that one fault per 2 MiB instead of one per 4 KiB. Measured (`benchmarks/distill_memory.py --huge-pages both`,
    docs/distillation.md): the same peak memory, fewer page faults and shorter training steps. PyTorch reads the
    variable once, at its first CPU allocation in the process, so this only takes effect before any tensor exists:
    true for the command line, as importing `hf_binary_bert` allocates no tensor (tested), and not for a Python session
    that has made tensors already (set the variable before starting Python there). Linux only, where the kernel's
    transparent huge pages are not `never` (/sys/kernel/mm/transparent_hugepage/enabled). Returns whether it set it.
    """
    if "THP_MEM_ALLOC_ENABLE" in os.environ or not transparent_huge_pages_available():
        return False
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
    return True


def transparent_huge_pages_available() -> bool:
    """Whether this is Linux with the kernel's transparent huge pages not `never`
    (/sys/kernel/mm/transparent_hugepage/enabled: `always` or `madvise`)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in TRAINING_COMMANDS:
            limit_heap_growth()
            use_huge_pages()
        code = COMMANDS[args.command](args)
    except UsageError as err:
        message = str(err)
        print(message if message.startswith("hf-binary-bert") else f"hf-binary-bert: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        end_distributed()
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
