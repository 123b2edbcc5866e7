#!/usr/bin/env python
"""Binarize a fine-tuned full-precision BERT and distil the 1-bit student on a GLUE task (or your own CSV/TSV/JSON
files), in the manner of transformers' `examples/pytorch/text-classification/run_glue.py`: the same flags where they
exist, `HfArgumentParser` over three dataclasses, `--do_train` / `--do_eval`, `train_results.json` /
`eval_results.json` / `all_results.json` / `trainer_state.json` in `--output_dir`.

The teacher (`--teacher_model_name_or_path`) must already be fine-tuned on the task (`hf-binary-bert finetune`).
The student is `BinaryBertForSequenceClassification.from_teacher(teacher, **binarization)`, trained with the
`DistillationTrainer` and saved packed (1 bit per binarized weight) with the tokenizer; it reloads with
`AutoModelForSequenceClassification.from_pretrained` after `import hf_binary_bert`. `flops.json` gets the analytic
operation count (one 128-token sequence) and packed size of the student next to the teacher's.

SST-2, W1A1 BiBERT-style (1-bit weights, activations and word embeddings, Bi-Attention, direction-matching
distillation):

    python examples/run_glue_distill.py \\
        --teacher_model_name_or_path ../shared/teachers/minilm-sst2 \\
        --task_name sst2 --data_dir data/glue/SST-2 --do_train --do_eval \\
        --activation_bits 1 --attention_type bi_attention --embedding_bits 1 --dmd_loss_weight 1 \\
        --max_seq_length 64 --per_device_train_batch_size 32 --learning_rate 5e-4 --num_train_epochs 1 \\
        --output_dir outputs/sst2-bibert --report_to none

SST-2, BiT multi-step distillation (elastic binarization; W1A4 taught by the teacher, W1A2 by the W1A4 student,
W1A1 by the W1A2 student; stages saved in `outputs/sst2-bit/stage<k>-W1A<bits>`, the last also in
`outputs/sst2-bit`):

    python examples/run_glue_distill.py \\
        --teacher_model_name_or_path ../shared/teachers/minilm-sst2 \\
        --task_name sst2 --data_dir data/glue/SST-2 --do_train --do_eval \\
        --activation_quantizer elastic --multi_step W1A4,W1A2,W1A1 --hidden_act relu \\
        --max_seq_length 64 --per_device_train_batch_size 32 --learning_rate 5e-4 --max_steps 500 \\
        --output_dir outputs/sst2-bit --report_to none

Like run_glue, a single `.json` argument is read as a file holding all the arguments.
Data: `--task_name` with `--data_dir` (GLUE release TSVs; default `data/glue/<TASK>` when it exists, else the Hub's
`nyu-mll/glue`), or `--dataset_name` (a Hub copy of GLUE), or `--train_file` / `--validation_file` (`.csv`, `.tsv`,
`.json` / `.jsonl`; with `--task_name` the task's columns are used, without it the columns are guessed as run_glue
does: `sentence1`/`sentence2`, else the first one or two non-`label` columns).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import torch
import transformers
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    HfArgumentParser,
    set_seed,
)

from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.data import (
    GLUE_TASKS,
    GlueTask,
    get_glue_task,
    keep_min_tokens,
    load_glue,
    select_glue_columns,
    tokenize_glue,
    tsv_quoting,
)
from hf_binary_bert.distillation import BinarizationArguments, DistillationTrainer, DistillationTrainingArguments
from hf_binary_bert.flops import count_operations, estimate_packed_size, format_operations
from hf_binary_bert.metrics import classification_compute_metrics
from hf_binary_bert.recipes import check_model, default_glue_dir

logger = logging.getLogger(__name__)

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".json": "json", ".jsonl": "json"}
FLOPS_SEQ_LEN = 128  # operation counts are for one 128-token sequence, as in BiBERT / BinaryBERT


# ----------------------------------------------------------------------------------------------------------------
# Arguments


@dataclass(kw_only=True)
class ModelArguments(BinarizationArguments):
    """The teacher, and how the student is binarized (`BinarizationArguments`: the `BinaryBertConfig` fields with the
    CLI's defaults, and the multi-step schedule)."""

    teacher_model_name_or_path: str = field(
        metadata={"help": "Fine-tuned full-precision BERT teacher: Hub id or local folder ('minilm': all-MiniLM-L6-v2 "
                          "from the demo extra; it must already be fine-tuned on the task)."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where to store the models (and JSON data files) downloaded from the Hub."}
    )


@dataclass
class DataTrainingArguments:
    """What data to distil and evaluate on."""

    task_name: str | None = field(
        default=None, metadata={"help": "The GLUE task to train on: " + ", ".join(GLUE_TASKS)}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Load the GLUE task from this Hub dataset (e.g. nyu-mll/glue); needs --task_name."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "A csv, tsv or json(l) file with the training data (columns: text(s), label)."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "A csv, tsv or json(l) file with the validation data."}
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with the GLUE release TSVs of the task (train.tsv, dev.tsv); default data/glue/<TASK> "
                          "when it exists, else the Hub's nyu-mll/glue."},
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "The maximum total input sequence length after tokenization (longer is truncated)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the number of training examples to this value (the first ones)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate the number of evaluation examples to this value (the first ones)."}
    )
    min_train_tokens: int | None = field(
        default=None,
        metadata={"help": "Train only on the examples of at least this many tokens (special tokens included, after "
                          "truncation to max_seq_length), before max_train_samples; the validation data is not "
                          "filtered. SST-2's training split is mostly short treebank phrases, its dev split whole "
                          "sentences."},
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every sequence to max_seq_length; by default batches are padded to their longest one."},
    )

    def __post_init__(self):
        if self.task_name is not None:
            self.task_name = get_glue_task(self.task_name).name  # ValueError: "Unknown GLUE task 'x'; known tasks: ..."
        elif self.dataset_name is not None:
            raise ValueError("--dataset_name is a Hub copy of GLUE: give the task with --task_name as well.")
        elif self.train_file is None and self.validation_file is None:
            raise ValueError("Need either a GLUE task (--task_name) or a training/validation file (--train_file, "
                             "--validation_file).")
        for flag, path in (("--train_file", self.train_file), ("--validation_file", self.validation_file)):
            if path is None:
                continue
            if _file_format(path) is None:
                raise ValueError(f"{flag} {path!r} should be a {', '.join(FILE_FORMATS)} file.")
            if not os.path.isfile(path):
                raise ValueError(f"{flag}: no such file: {path}")
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ValueError(f"--data_dir: no such folder: {self.data_dir}")
        if self.min_train_tokens is not None and self.min_train_tokens < 1:
            raise ValueError(f"--min_train_tokens must be a positive number of tokens, got {self.min_train_tokens}")


def parse_arguments(argv: list[str] | None = None):
    """`(ModelArguments, DataTrainingArguments, DistillationTrainingArguments)` from the command line, or from a
    single `.json` file argument."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, DistillationTrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


# ----------------------------------------------------------------------------------------------------------------
# Data


def _file_format(path: str) -> str | None:
    return FILE_FORMATS.get(os.path.splitext(path)[1].lower())


def _read_file(path: str, cache_dir: str | None) -> datasets.Dataset:
    fmt = _file_format(path)
    if fmt == "json":
        return datasets.load_dataset("json", data_files={"split": path}, cache_dir=cache_dir)["split"]
    reader = {} if fmt == "csv" else {"delimiter": "\t", "quoting": tsv_quoting(path)}
    return datasets.load_dataset("csv", data_files={"split": path}, keep_default_na=False, cache_dir=cache_dir,
                                 **reader)["split"]


def _infer_task(split: datasets.Dataset, source: str) -> tuple[GlueTask, dict | None]:
    """A task for files without --task_name, as run_glue guesses it: the text columns are `sentence1`/`sentence2`,
    else the first two (or the only) non-`label` columns; float labels are a regression (pearson / spearmanr), other
    labels classes sorted by value (accuracy). Returns the task and the label → id map."""
    if "label" not in split.column_names:
        raise ValueError(f"{source} has no 'label' column (found {split.column_names}).")
    texts = [c for c in split.column_names if c != "label"]
    if not texts:
        raise ValueError(f"{source} has no text column besides 'label'.")
    if "sentence1" in texts and "sentence2" in texts:
        text_fields = ("sentence1", "sentence2")
    else:
        text_fields = (texts[0], texts[1] if len(texts) > 1 else None)
    if split.features["label"].dtype in ("float16", "float32", "float64"):
        task = GlueTask(name="custom", text_fields=text_fields, num_labels=1, metrics=("pearson", "spearmanr"),
                        main_metric="pearson", hub_config="")
        return task, None
    labels = sorted(split.unique("label"))
    task = GlueTask(name="custom", text_fields=text_fields, num_labels=len(labels), metrics=("accuracy",),
                    main_metric="accuracy", hub_config="", label_names=tuple(str(x) for x in labels))
    return task, {label: i for i, label in enumerate(labels)}


def load_raw_datasets(data_args: DataTrainingArguments, cache_dir: str | None = None):
    """The raw `DatasetDict` (`train` / `validation`, text fields + `label`) and the `GlueTask` describing it.

    GLUE tasks from TSV/CSV files and from the Hub go through `hf_binary_bert.data.load_glue`; JSON files and files
    without --task_name are read here (load_glue reads TSV and CSV only and needs a GLUE task).
    """
    task = get_glue_task(data_args.task_name) if data_args.task_name else None
    files = {name: path for name, path in (("train", data_args.train_file), ("validation", data_args.validation_file))
             if path is not None}
    if not files:
        if data_args.dataset_name is not None:
            return load_glue(task, dataset_name=data_args.dataset_name), task
        data_dir = data_args.data_dir or default_glue_dir(task.name)  # None: the Hub's nyu-mll/glue
        logger.info("GLUE %s from %s", task.name, data_dir or "the Hub (nyu-mll/glue)")
        return load_glue(task, data_dir), task
    if task is not None and all(_file_format(p) != "json" for p in files.values()):
        # explicit files take precedence; a split without a file comes from --data_dir when given
        return load_glue(task, data_args.data_dir, train_file=data_args.train_file,
                         validation_file=data_args.validation_file), task
    raw = {name: _read_file(path, cache_dir) for name, path in files.items()}
    label_to_id = None
    if task is None:
        task, label_to_id = _infer_task(raw.get("train", raw.get("validation")), files.get("train", files.get("validation")))
        logger.info("columns %s, %d label(s), metrics %s", task.text_fields, task.num_labels, task.metrics)
    return datasets.DatasetDict(
        {name: select_glue_columns(split, task, files[name], label_to_id) for name, split in raw.items()}
    ), task


def _first(dataset, n):
    return dataset if n is None else dataset.select(range(min(n, len(dataset))))


# ----------------------------------------------------------------------------------------------------------------
# Operation count


def write_flops_report(student_config, teacher_config, output_dir: str) -> dict:
    """`flops.json`: `count_operations` (one `FLOPS_SEQ_LEN`-token sequence) and `estimate_packed_size` (MB) of the
    student, with the full-precision teacher's FLOPs and float32 size for comparison; prints a one-line summary."""
    student = count_operations(student_config, seq_len=FLOPS_SEQ_LEN)
    teacher = count_operations(teacher_config, seq_len=FLOPS_SEQ_LEN)
    size, teacher_size = estimate_packed_size(student_config), estimate_packed_size(teacher_config)
    report = {
        **student,
        "packed_size_mb": size,
        "teacher_flops": teacher["flops"],
        "teacher_size_mb": teacher_size["total"],
        "flops_reduction": teacher["flops"] / student["flops"],
        "size_reduction": teacher_size["total"] / size["total"],
        "binarization": student_config.binarization,
    }
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "flops.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"W1A{student_config.activation_bits} student: {format_operations(student)} per {FLOPS_SEQ_LEN}-token "
          f"sequence vs teacher {teacher['flops'] / 1e9:.2f} GFLOPs ({report['flops_reduction']:.1f}x fewer); "
          f"packed {size['total']:.2f} MB vs {teacher_size['total']:.2f} MB fp32 ({report['size_reduction']:.1f}x smaller)")
    return report


# ----------------------------------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> dict:
    """Run the script with `argv` (default `sys.argv[1:]`); returns `{"train": ..., "eval": ..., "flops": ...}`."""
    model_args, data_args, training_args = parse_arguments(argv)

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(f"Process rank: {training_args.local_rank}, device: {training_args.device}, n_gpu: "
                   f"{training_args.n_gpu}, 16-bits training: {training_args.fp16 or training_args.bf16}")
    logger.info(f"Training/evaluation parameters {training_args}")

    stage_bits = model_args.stage_bits()
    multi_step = model_args.multi_step is not None
    if multi_step and training_args.resume_from_checkpoint is not None:
        raise ValueError("--resume_from_checkpoint is not supported with --multi_step (run the stages again).")
    set_seed(training_args.seed)

    # Teacher and tokenizer
    teacher_path = check_model(model_args.teacher_model_name_or_path, allow_binary=False)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path, cache_dir=model_args.cache_dir)
    teacher = BertForSequenceClassification.from_pretrained(teacher_path, dtype=torch.float32,
                                                            cache_dir=model_args.cache_dir)

    # Data
    raw_datasets, task = load_raw_datasets(data_args, model_args.cache_dir)
    if teacher.config.num_labels != task.num_labels:
        raise ValueError(f"teacher {model_args.teacher_model_name_or_path!r} has {teacher.config.num_labels} labels, "
                         f"task {task.name!r} has {task.num_labels}: fine-tune it on the task first.")
    if training_args.do_train and "train" not in raw_datasets:
        raise ValueError("--do_train requires a train dataset")
    if training_args.do_eval and "validation" not in raw_datasets:
        raise ValueError("--do_eval requires a validation dataset")
    splits = {}
    if training_args.do_train:
        # with min_train_tokens the sample is drawn after the filter, below
        n = None if data_args.min_train_tokens else data_args.max_train_samples
        splits["train"] = _first(raw_datasets["train"], n)
    if training_args.do_eval:
        splits["validation"] = _first(raw_datasets["validation"], data_args.max_eval_samples)
    max_seq_length = data_args.max_seq_length
    if max_seq_length > tokenizer.model_max_length:
        logger.warning(f"The max_seq_length passed ({max_seq_length}) is larger than the maximum length for the model "
                       f"({tokenizer.model_max_length}). Using max_seq_length={tokenizer.model_max_length}.")
        max_seq_length = tokenizer.model_max_length
    with training_args.main_process_first(desc="dataset map pre-processing"):
        tokenized = tokenize_glue(datasets.DatasetDict(splits), tokenizer, task, max_seq_length=max_seq_length)
    train_dataset, eval_dataset = tokenized.get("train"), tokenized.get("validation")
    if train_dataset is not None and data_args.min_train_tokens is not None:
        train_dataset = _first(keep_min_tokens(train_dataset, data_args.min_train_tokens), data_args.max_train_samples)
    if train_dataset is not None and len(train_dataset):
        logger.info(f"Sample 0 of the training set: {train_dataset[0]}.")
    if data_args.pad_to_max_length:
        collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_seq_length)
    else:
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if training_args.fp16 else None)

    # Distillation: one stage, or one per multi-step entry (each taught by the previous stage's student). The last
    # stage runs in --output_dir; with --multi_step every stage is also saved in output_dir/stage<k>-W1A<bits>.
    # Without --do_train only the last stage's student is built (binarized from the teacher) and evaluated.
    results = {}
    stage_teacher = teacher
    stages = list(enumerate(stage_bits, start=1)) if training_args.do_train else [(len(stage_bits), stage_bits[-1])]
    for k, bits in stages:
        last = k == len(stage_bits)
        stage_dir = os.path.join(training_args.output_dir, f"stage{k}-W1A{bits}") if multi_step else None
        args = training_args if last else dataclasses.replace(training_args, output_dir=stage_dir)
        student = BinaryBertForSequenceClassification.from_teacher(stage_teacher, **model_args.binarization(bits))
        if multi_step:
            logger.info(f"*** Stage {k}/{len(stage_bits)}: W1A{bits} → {stage_dir} ***")
        trainer = DistillationTrainer(
            teacher_model=stage_teacher,
            model=student,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=collator,
            compute_metrics=classification_compute_metrics(task),
            processing_class=tokenizer,
        )
        if training_args.should_save:
            flops = write_flops_report(student.config, teacher.config, args.output_dir)
            if last:
                results["flops"] = flops
                if stage_dir is not None:
                    os.makedirs(stage_dir, exist_ok=True)
                    with open(os.path.join(stage_dir, "flops.json"), "w") as f:
                        json.dump(flops, f, indent=1)

        if training_args.do_train:
            train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
            metrics = train_result.metrics
            metrics["train_samples"] = len(train_dataset)
            trainer.save_model()  # packed, with the tokenizer
            if last and stage_dir is not None:  # the last stage also in its stage folder, like the others
                trainer.save_model(stage_dir)
                if trainer.is_world_process_zero():
                    with open(os.path.join(stage_dir, "train_results.json"), "w") as f:
                        json.dump(metrics, f, indent=4, sort_keys=True)
            trainer.log_metrics("train", metrics)
            trainer.save_metrics("train", metrics)
            trainer.save_state()
            results.setdefault("stages", []).append({"activation_bits": bits, **metrics})
            if last:
                results["train"] = metrics
        stage_teacher = student

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = trainer.evaluate(eval_dataset=eval_dataset)
        metrics["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results["eval"] = metrics
    if training_args.do_train:  # as run_glue: push the student, or write its model card next to it
        card = {"finetuned_from": model_args.teacher_model_name_or_path}
        if data_args.task_name is not None:
            card["task"] = data_args.task_name
        if training_args.push_to_hub:
            trainer.push_to_hub(**card)
        else:
            trainer.create_model_card(**card)
    if not multi_step:
        results.pop("stages", None)
    return results


if __name__ == "__main__":
    main()
