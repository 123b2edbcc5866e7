"""Data for masked-LM distillation and GLUE fine-tuning, built on 🤗 `datasets` and the transformers data collators.

- GLUE: [`GLUE_TASKS`] / [`get_glue_task`] describe the nine tasks (text fields, number of labels, metrics) as
  transformers' `examples/pytorch/text-classification/run_glue.py` does; [`load_glue`] reads GLUE-format TSV files or
  the Hub copy `nyu-mll/glue`; [`tokenize_glue`] tokenizes without padding (pad per batch with
  `DataCollatorWithPadding`).
- Masked LM: [`load_text_blocks`] turns text files into fixed blocks of tokens as
  `examples/pytorch/language-modeling/run_mlm.py` does with `line_by_line=False`; [`mlm_collator`] masks them anew at
  every step (`DataCollatorForLanguageModeling`).

Example:

```python
>>> from transformers import AutoTokenizer, DataCollatorWithPadding
>>> from hf_binary_bert.data import load_glue, tokenize_glue, load_text_blocks, mlm_collator

>>> tokenizer = AutoTokenizer.from_pretrained("data/tokenizer/bert-base-uncased")
>>> sst2 = tokenize_glue(load_glue("sst2", "data/glue/SST-2"), tokenizer, "sst2")
>>> glue_collator = DataCollatorWithPadding(tokenizer)
>>> blocks = load_text_blocks("data/text/wikitext-2/valid.txt", tokenizer, block_size=128)
>>> mlm_batch = mlm_collator(tokenizer)([blocks[i] for i in range(8)])  # input_ids, labels: [8, 128]
```
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import datasets
from datasets.fingerprint import Hasher
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from .checks import check_count

__all__ = [
    "GLUE_TASKS",
    "GlueTask",
    "get_glue_task",
    "keep_min_tokens",
    "load_glue",
    "load_text_blocks",
    "mlm_collator",
    "select_glue_columns",
    "tokenize_glue",
    "tsv_quoting",
    "write_holdout_split",
]

PathLike = str | os.PathLike
logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its text is, how many labels it has, and how it is scored.

    Args:
        name (`str`): canonical lower-case name, e.g. `"sst2"`, `"stsb"`.
        text_fields (`tuple[str, str | None]`): the one or two text columns (second is `None` for single sentences),
            named as in the Hub dataset `nyu-mll/glue` and in transformers' `run_glue.py`.
        num_labels (`int`): classes; 1 for the regression task STS-B.
        metrics (`tuple[str, ...]`): the GLUE metrics of the task, named as `evaluate.load("glue", ...)` names them.
        main_metric (`str`): the metric used to pick checkpoints.
        hub_config (`str`): config name for `datasets.load_dataset("nyu-mll/glue", hub_config)`.
        label_names (`tuple[str, ...]`): class names in label-id order (the Hub `ClassLabel` names); empty for STS-B.
            Used to read TSV files whose labels are written as words (e.g. `entailment`).
        train_file / validation_file (`str`): file names of the splits inside a GLUE task folder.
        extra_validation_files: `(split name, file name)` of further dev sets read when present (MNLI mismatched).
        release_columns: `(column in the GLUE release file, column here)`, as transformers' legacy GLUE processors
            (`transformers/data/processors/glue.py`) read them: e.g. MRPC `#1 String` → `sentence1`, `Quality` →
            `label`; used when a file lacks the column here.
        headerless_columns: column names of a release file without a header line (CoLA).
    """

    name: str
    text_fields: tuple[str, str | None]
    num_labels: int
    metrics: tuple[str, ...]
    main_metric: str
    hub_config: str
    label_names: tuple[str, ...] = ()
    train_file: str = "train.tsv"
    validation_file: str = "dev.tsv"
    extra_validation_files: tuple[tuple[str, str], ...] = ()
    release_columns: tuple[tuple[str, str], ...] = ()
    headerless_columns: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        """True for STS-B (one float target per pair), False for the classification tasks."""
        return self.num_labels == 1

    @property
    def id2label(self) -> dict[int, str]:
        """Class id → name for a model's config (`{0: "negative", 1: "positive"}`); STS-B: `{0: "score"}`."""
        return dict(enumerate(self.label_names)) if self.label_names else {0: "score"}

    @property
    def label2id(self) -> dict[str, int]:
        """Name → class id, the inverse of [`id2label`]."""
        return {name: i for i, name in self.id2label.items()}


def _task(name, text_fields, metrics, label_names=(), **kwargs) -> GlueTask:
    return GlueTask(
        name=name,
        text_fields=text_fields,
        num_labels=len(label_names) or 1,
        metrics=metrics,
        main_metric=metrics[0],
        hub_config=name,
        label_names=label_names,
        **kwargs,
    )


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        _task(
            "cola",
            ("sentence", None),
            ("matthews_correlation",),
            ("unacceptable", "acceptable"),
            headerless_columns=("source", "label", "original_label", "sentence"),
        ),
        _task("sst2", ("sentence", None), ("accuracy",), ("negative", "positive")),
        _task(
            "mrpc",
            ("sentence1", "sentence2"),
            ("accuracy", "f1"),
            ("not_equivalent", "equivalent"),
            release_columns=(("#1 String", "sentence1"), ("#2 String", "sentence2"), ("Quality", "label")),
        ),
        _task("stsb", ("sentence1", "sentence2"), ("pearson", "spearmanr"), release_columns=(("score", "label"),)),
        _task(
            "qqp",
            ("question1", "question2"),
            ("accuracy", "f1"),
            ("not_duplicate", "duplicate"),
            release_columns=(("is_duplicate", "label"),),
        ),
        _task(
            "mnli",
            ("premise", "hypothesis"),
            ("accuracy",),
            ("entailment", "neutral", "contradiction"),
            validation_file="dev_matched.tsv",
            extra_validation_files=(("validation_mismatched", "dev_mismatched.tsv"),),
            release_columns=(("sentence1", "premise"), ("sentence2", "hypothesis"), ("gold_label", "label")),
        ),
        _task("qnli", ("question", "sentence"), ("accuracy",), ("entailment", "not_entailment")),
        _task("rte", ("sentence1", "sentence2"), ("accuracy",), ("entailment", "not_entailment")),
        _task("wnli", ("sentence1", "sentence2"), ("accuracy",), ("not_entailment", "entailment")),
    )
}
"""The nine GLUE tasks by canonical name (text fields as in transformers' `run_glue.py`, metrics as in the GLUE paper,
Wang et al. 2019, https://arxiv.org/abs/1804.07461)."""


def get_glue_task(name: str | GlueTask) -> GlueTask:
    """The [`GlueTask`] called `name`, case-insensitively and with or without `-`/`_` (`"SST-2"`, `"sts-b"`, `"MNLI"`).

    Raises:
        ValueError: `name` is not one of the nine GLUE tasks (the message lists them).
    """
    if isinstance(name, GlueTask):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"Unknown GLUE task {name!r}; known tasks: {', '.join(GLUE_TASKS)}.")
    return GLUE_TASKS[key]


def tsv_quoting(path: PathLike) -> int:
    """How a GLUE TSV file quotes its fields: `csv.QUOTE_MINIMAL` if it was written by a CSV writer, else
    `csv.QUOTE_NONE`.

    The GLUE release writes text raw (`"Yes," he said .` is a field; transformers' GLUE processors read it with
    `quotechar=None`), while exports through pandas/`csv` (e.g. the RTE files shipped in `data/glue/RTE`) wrap every
    field that contains `"` in quotes and double the inner ones (`"found ""extensive"" damage"`). A file counts as
    CSV-quoted when at least one field contains `"` and every such field has that form; fields are split at tabs
    line by line, so a quoted field holding a tab or a newline makes the file count as raw.
    """
    quoted = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            for field in line.rstrip("\r\n").split("\t"):
                if '"' not in field:
                    continue
                if len(field) >= 2 and field[0] == field[-1] == '"' and '"' not in field[1:-1].replace('""', ""):
                    quoted = True
                else:
                    return csv.QUOTE_NONE
    return csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE


def _read_table(path: PathLike, quoting: int | None = None, task: GlueTask | None = None) -> datasets.Dataset:
    """One GLUE split file as a `Dataset`: `.csv` with the CSV reader, anything else as TSV with `quoting` (default:
    [`tsv_quoting`] of the file).

    Text is kept verbatim: `keep_default_na=False` stops pandas from turning sentences such as `null` or `NA` into NaN.

    Raises:
        FileNotFoundError: `path` is not a file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GLUE data file not found: {path}")
    if path.endswith((".json", ".jsonl")):
        return datasets.load_dataset("json", data_files={"split": path})["split"]
    if path.endswith(".csv"):
        reader_kwargs = {}
    else:
        reader_kwargs = {"delimiter": "\t", "quoting": tsv_quoting(path) if quoting is None else quoting}
        if task is not None and task.headerless_columns and _is_headerless(path, task):
            reader_kwargs["column_names"] = list(task.headerless_columns)
    return datasets.load_dataset("csv", data_files={"split": path}, keep_default_na=False, **reader_kwargs)["split"]


def _is_headerless(path: str, task: GlueTask) -> bool:
    """True when the first line of `path` is a row of the headerless release format (CoLA: its fields do not name the
    task's text column and there are as many as `task.headerless_columns`)."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().rstrip("\r\n").split("\t")
    return len(first) == len(task.headerless_columns) and task.text_fields[0] not in first


def select_glue_columns(
    dataset: datasets.Dataset, task: GlueTask, source: str, label_ids: dict | None = None
) -> datasets.Dataset:
    """Keep the task's text fields + `label`; labels as int64 class ids (float32 for STS-B / a regression).

    Args:
        label_ids: label value → class id (e.g. for a task inferred from files); by default word labels map
            through `task.label_names` and numeric labels are taken as class ids.

    Raises:
        ValueError: a text field or `label` is missing, or a label is not in `label_ids` / `task.label_names`.
    """
    keep = [f for f in task.text_fields if f is not None] + ["label"]
    renames = {
        release: ours
        for release, ours in task.release_columns
        if ours not in dataset.column_names and release in dataset.column_names
    }
    if renames:  # a GLUE release file (MRPC's MSR format, STS-B `score`, QQP `is_duplicate`, MNLI `gold_label`)
        dataset = dataset.remove_columns([c for c in renames.values() if c in dataset.column_names])
        dataset = dataset.rename_columns(renames)
    for column in keep:
        if column not in dataset.column_names:
            release = [r for r, ours in task.release_columns if ours == column]
            alias = f" or {release[0]!r} (GLUE release)" if release else ""
            raise ValueError(
                f"{source} has no column {column!r}{alias}, needed by GLUE task {task.name!r} "
                f"(expected columns {keep}, found {dataset.column_names})."
            )
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep])
    label_feature = dataset.features["label"]
    if task.is_regression:
        return dataset.cast_column("label", datasets.Value("float32"))
    if label_ids is None and isinstance(label_feature, datasets.ClassLabel):
        return dataset
    if label_ids is None and label_feature.dtype in ("string", "large_string"):
        label_ids = {name: i for i, name in enumerate(task.label_names)}
    if label_ids is not None:
        unknown = sorted(set(dataset.unique("label")) - set(label_ids), key=str)
        if unknown:
            raise ValueError(
                f"{source}: labels {unknown} are not class ids nor class names of GLUE task {task.name!r} "
                f"({list(label_ids)})."
            )
        dataset = dataset.map(lambda batch: {"label": [label_ids[x] for x in batch["label"]]}, batched=True)
    return dataset.cast_column("label", datasets.Value("int64"))


def load_glue(
    task: str | GlueTask,
    data_dir: PathLike | None = None,
    *,
    train_file: PathLike | None = None,
    validation_file: PathLike | None = None,
    dataset_name: str | None = None,
    quoting: int | None = None,
) -> datasets.DatasetDict:
    """Load a GLUE task as a `DatasetDict` with splits `"train"` and `"validation"`.

    From files when `data_dir`, `train_file` or `validation_file` is given: the task's standard file names inside
    `data_dir` (`train.tsv`, `dev.tsv`; MNLI `dev_matched.tsv`), or the explicit files (which take precedence). A split
    with no file (only `validation_file` given, no `data_dir`) is left out. Files are read with
    `datasets.load_dataset("csv", ...)`: `.json`/`.jsonl` files as JSON lines, `.csv` files as CSV, others as TSV with `quoting` (a `csv.QUOTE_*`
    constant); by default each TSV gets [`tsv_quoting`]: `csv.QUOTE_NONE` (as transformers' GLUE processors, for the
    raw GLUE release) unless the file is CSV-quoted. The header must name the task's text fields (see
    [`GLUE_TASKS`]) and `label` (ids, or class names such as `entailment`), or be the GLUE release's own file,
    read by column as transformers' legacy GLUE processors do: MRPC's MSR paraphrase format (`Quality`, `#1 String`,
    `#2 String`), STS-B `score`, QQP `is_duplicate`, MNLI `sentence1` / `sentence2` / `gold_label` (and
    `dev_mismatched.tsv` as split `"validation_mismatched"` when present), CoLA without a header line.

    Otherwise from the Hub: `datasets.load_dataset(dataset_name or "nyu-mll/glue", task.hub_config)` (MNLI's
    `validation_matched` becomes `"validation"`).

    Returns:
        `DatasetDict` whose splits hold only the task's text fields and `label` (int64 class id; float32 for STS-B).

    Raises:
        ValueError: unknown task name; a file lacks a text field or the `label` column (the message names both).
        FileNotFoundError: a file does not exist (the message names the path).
    """
    task = get_glue_task(task)
    if data_dir is None and train_file is None and validation_file is None:
        hub = datasets.load_dataset(dataset_name or "nyu-mll/glue", task.hub_config)
        validation_split = "validation_matched" if task.name == "mnli" else "validation"
        splits = {"train": hub["train"], "validation": hub[validation_split]}
        if "validation_mismatched" in hub and task.name == "mnli":
            splits["validation_mismatched"] = hub["validation_mismatched"]
        source = f"{dataset_name or 'nyu-mll/glue'} ({task.hub_config})"
        return datasets.DatasetDict(
            {name: select_glue_columns(split, task, f"{source} split {name!r}") for name, split in splits.items()}
        )

    files = {
        "train": train_file if train_file is not None else _join(data_dir, task.train_file),
        "validation": validation_file if validation_file is not None else _join(data_dir, task.validation_file),
    }
    if data_dir is not None and validation_file is None:
        for split, file_name in task.extra_validation_files:  # MNLI dev_mismatched.tsv, when the folder has it
            if os.path.isfile(os.path.join(data_dir, file_name)):
                files[split] = os.path.join(data_dir, file_name)
    return datasets.DatasetDict(
        {
            name: select_glue_columns(_read_table(path, quoting, task), task, os.fspath(path))
            for name, path in files.items()
            if path is not None
        }
    )


def write_holdout_split(
    task: str | GlueTask, source_dir: PathLike, output_dir: PathLike, *, fraction: float = 0.1, seed: int = 0
) -> dict[str, int]:
    """Hold out a fixed, seeded part of a GLUE task's training file as its validation split, for tasks whose dev set
    is not at hand (e.g. only the release's STS-B `train.tsv`).

    The lines of `source_dir/<train file>` (after the header) are shuffled with `random.Random(seed)`; the first
    `round(fraction · N)` go to `output_dir/<validation file>` (`dev.tsv`), the rest to `output_dir/<train file>`,
    each with the original header and bytes, so that `load_glue(task, output_dir)` reads them as the release. Files
    are written to temporary names and renamed, so a folder never holds a half-written split.

    Returns:
        `{"train": lines, "validation": lines}` written.

    Raises:
        FileNotFoundError: naming the training file when it is missing.
        ValueError: when `fraction` is not in (0, 1), or either part would be empty.
    """
    import random

    task = get_glue_task(task)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    source = os.path.join(source_dir, task.train_file)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"GLUE training file not found: {source}")
    with open(source, encoding="utf-8", newline="") as f:
        lines = f.readlines()
    header, rows = lines[0], lines[1:]
    if task.headerless_columns and _is_headerless(source, task):
        header, rows = "", lines
    rows = [r if r.endswith("\n") else r + "\n" for r in rows if r.strip()]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = round(fraction * len(rows))
    if n_val == 0 or n_val == len(rows):
        raise ValueError(f"{source}: holding out {fraction} of {len(rows)} rows leaves an empty split")
    held = sorted(order[:n_val])
    kept = sorted(order[n_val:])
    os.makedirs(output_dir, exist_ok=True)
    for name, indices in ((task.validation_file, held), (task.train_file, kept)):
        path = os.path.join(output_dir, name)
        # a temporary file of its own: two runs writing the same split at once do not collide
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(header)
            f.writelines(rows[i] for i in indices)
        os.replace(tmp, path)
    return {"train": len(kept), "validation": len(held)}


def _join(data_dir: PathLike | None, file_name: str) -> str | None:
    return None if data_dir is None else os.path.join(data_dir, file_name)


def tokenize_glue(
    dataset: datasets.Dataset | datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    task: str | GlueTask,
    max_seq_length: int = 128,
) -> datasets.Dataset | datasets.DatasetDict:
    """Tokenize a GLUE split (or all splits) for `AutoModelForSequenceClassification`.

    Sentences (pairs) are truncated to `max_seq_length` tokens and not padded: pad per batch with
    `transformers.DataCollatorWithPadding(tokenizer)`. The text columns are removed and `label` is renamed `labels`.

    Returns:
        The same container type with columns `input_ids`, `token_type_ids` (BERT), `attention_mask` (lists of ints,
        ≤ `max_seq_length` long) and `labels`.
    """
    task = get_glue_task(task)
    first, second = task.text_fields

    def tokenize(batch):
        texts = (batch[first],) if second is None else (batch[first], batch[second])
        return tokenizer(*texts, truncation=True, max_length=max_seq_length)

    text_columns = [f for f in task.text_fields if f is not None]
    dataset = dataset.map(tokenize, batched=True, remove_columns=text_columns, desc=f"Tokenizing {task.name}")
    splits = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    if all("label" in split.column_names for split in splits):
        dataset = dataset.rename_column("label", "labels")
    return dataset


def keep_min_tokens(dataset: datasets.Dataset, n: int) -> datasets.Dataset:
    """The rows of a tokenized dataset (`tokenize_glue`'s output) whose `input_ids` hold at least `n` tokens, special
    tokens included, in their order. SST-2's training split is mostly Stanford Sentiment Treebank phrases (58 % of
    its rows have at most 8 words) while its dev split holds whole sentences: `n` keeps the sentence-like rows.

    Raises:
        ValueError: `n` is not a positive integer, or no row is that long (the message gives the longest).
    """
    check_count("min_train_tokens", n, "tokens", optional=False)
    kept = dataset.filter(lambda batch: [len(ids) >= n for ids in batch["input_ids"]], batched=True,
                          desc=f"Examples of >= {n} tokens")
    if len(kept) == 0:
        longest = max((len(ids) for ids in dataset["input_ids"]), default=0)
        raise ValueError(f"min_train_tokens={n} keeps none of the {len(dataset)} training examples (the longest has "
                         f"{longest} tokens)")
    logger.info("min_train_tokens=%d: %d of %d training examples kept", n, len(kept), len(dataset))
    return kept


# --------------------------------------------------------------------------------------------------------------------
# Masked language modeling
# --------------------------------------------------------------------------------------------------------------------


def _token_blocks(dataset: datasets.Dataset, block_size: int) -> Iterator[dict[str, list]]:
    """Concatenate all rows of a tokenized dataset and yield consecutive `block_size`-long slices of every column.

    The tail shorter than `block_size` at the end of the stream is dropped. Memory: one block plus one read batch.
    """
    columns = dataset.column_names
    buffer = {c: [] for c in columns}
    for batch in dataset.iter(batch_size=1000):
        for c in columns:
            for row in batch[c]:
                buffer[c].extend(row)
        usable = len(buffer[columns[0]]) // block_size * block_size
        for start in range(0, usable, block_size):
            yield {c: buffer[c][start : start + block_size] for c in columns}
        for c in columns:
            del buffer[c][:usable]


def load_text_blocks(
    files: PathLike | Sequence[PathLike],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int = 128,
    *,
    whole_word_mask: bool = False,
) -> datasets.Dataset:
    """Masked-LM training data from plain-text files: every line tokenized, all concatenated, cut into equal blocks.

    As transformers' `examples/pytorch/language-modeling/run_mlm.py` with `line_by_line=False`: each line is tokenized
    with its special tokens (`[CLS] … [SEP]` for BERT) and `return_special_tokens_mask=True`, the token streams of all
    lines are concatenated, and the concatenation is cut into blocks of exactly `block_size` tokens. Two differences:
    blank (whitespace-only) lines are dropped, and only the tail of the whole stream (< `block_size` tokens) is
    dropped, where `run_mlm.py` drops one tail per 1,000 lines.

    Args:
        files: one text file or several, read in order with `datasets.load_dataset("text", ...)`.
        tokenizer: a (fast) tokenizer.
        block_size: tokens per block.
        whole_word_mask: also store `offset_mapping` (character span `[start, end)` of every token in its line), which
            `DataCollatorForLanguageModeling(whole_word_mask=True)` (transformers ≥ 5) needs to find word boundaries;
            requires a fast tokenizer. With the `Trainer`, pass `remove_unused_columns=False` in `TrainingArguments`,
            or the Trainer drops `offset_mapping` (it is no argument of the model's `forward`) before the collator.

    Returns:
        `Dataset` with columns `input_ids`, `token_type_ids`, `attention_mask`, `special_tokens_mask` (all lists of
        `block_size` ints) and, with `whole_word_mask`, `offset_mapping` (`block_size` × 2 ints).

    Raises:
        FileNotFoundError: a file does not exist (the message names it).
        ValueError: `block_size` < 1, or `whole_word_mask` with a slow tokenizer.
    """
    paths = [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else [os.fspath(f) for f in files]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Text file not found: {path}")
    if block_size < 1:
        raise ValueError(f"block_size must be a positive number of tokens, got {block_size}.")
    if whole_word_mask and not tokenizer.is_fast:
        raise ValueError("whole_word_mask=True needs token offsets, which only fast tokenizers return.")

    text = datasets.load_dataset("text", data_files={"train": paths})["train"]
    text = text.filter(lambda batch: [bool(line.strip()) for line in batch["text"]], batched=True)

    def tokenize(batch):
        return tokenizer(
            batch["text"], return_special_tokens_mask=True, return_offsets_mapping=whole_word_mask, verbose=False
        )

    tokenized = text.map(tokenize, batched=True, remove_columns=["text"], desc="Tokenizing text")
    return datasets.Dataset.from_generator(
        _token_blocks,
        features=tokenized.features,
        gen_kwargs={"dataset": tokenized, "block_size": block_size},
        # The blocks depend only on the tokenized rows and block_size; hashing these is cheap and stable.
        fingerprint=Hasher.hash(["load_text_blocks", tokenized._fingerprint, block_size]),
    )


class _WholeWordMaskCollator(DataCollatorForLanguageModeling):
    """`DataCollatorForLanguageModeling(whole_word_mask=True)` that says what is missing instead of an `IndexError`."""

    def __call__(self, features, return_tensors=None):
        if not (isinstance(features[0], Mapping) and "offset_mapping" in features[0]):
            raise ValueError(
                "Whole-word masking needs an 'offset_mapping' in every example (load_text_blocks(..., "
                "whole_word_mask=True)). With the Trainer, set TrainingArguments(remove_unused_columns=False): "
                "otherwise it drops that column before the collator sees it."
            )
        return super().__call__(features, return_tensors)


def mlm_collator(
    tokenizer: PreTrainedTokenizerBase,
    mlm_probability: float = 0.15,
    whole_word_mask: bool = False,
    seed: int | None = None,
) -> DataCollatorForLanguageModeling:
    """`DataCollatorForLanguageModeling` for BERT-style dynamic masking: every call draws a new mask.

    Each non-special token is selected with probability `mlm_probability` (with `whole_word_mask`, each word, and then
    all its tokens); selected tokens get their id in `labels` (-100 elsewhere) and in `input_ids` are replaced by
    `[MASK]` 80% of the time, by a random token 10%, and kept 10% (Devlin et al. 2019). With `whole_word_mask`,
    transformers 5 always uses `[MASK]` (it sets `mask_replace_prob=1`) and needs `offset_mapping` in the examples (see
    [`load_text_blocks`]; `ValueError` without it); it finds words from gaps between token offsets, so punctuation
    written against a word (`"hello,"`) is part of that word. Its examples must all have the same length
    (`tokenizer.pad` does not pad `offset_mapping`), which the blocks of [`load_text_blocks`] do.

    Args:
        seed: seeds the collator's own `torch.Generator` (masks still differ from call to call); `None` uses the
            global torch RNG.

    Returns:
        A collator mapping a list of examples to `{"input_ids", "labels", ...}` tensors of shape `[batch, seq]`.
    """
    # transformers would set these itself under whole_word_mask, with a warning; say it here instead.
    replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word_mask else {}
    collator_class = _WholeWordMaskCollator if whole_word_mask else DataCollatorForLanguageModeling
    return collator_class(
        tokenizer=tokenizer,
        mlm=True,
        mlm_probability=mlm_probability,
        whole_word_mask=whole_word_mask,
        seed=seed,
        **replace,
    )
