"""SQuAD v1.1 extractive question answering: reading SQuAD JSON files, the standard preprocessing into model
features, decoding answer spans from start/end logits, and the official EM/F1.

The preprocessing and the span decoding follow transformers' `examples/pytorch/question-answering/run_qa.py` and
`utils_qa.py` (`postprocess_qa_predictions`, SQuAD v1.1: no null answer):

- a question and its context are tokenized as a pair, the context alone truncated (`truncation="only_second"`); a
  context longer than `max_seq_length` is split into several features (windows) that overlap by `doc_stride` tokens;
- training: each feature's label is the token span of the first reference answer, or the `[CLS]` position (0) when
  the answer is not wholly inside that window;
- evaluation: each feature keeps its `example_id` and the character `offset_mapping` of its context tokens (None
  for question and special tokens); the answer is the best-scoring span (start logit + end logit) over all windows of
  the example, among the `n_best_size` top start and end positions, with end ≥ start and at most
  `max_answer_length` tokens, cut from the context by the offsets.

EM / F1 are those of the official evaluation script `evaluate-v1.1.py` (Rajpurkar et al. 2016,
https://rajpurkar.github.io/SQuAD-explorer/, also the `squad` metric of 🤗 `evaluate`): answers are normalised (lower
case, punctuation removed, articles a/an/the removed, whitespace collapsed); EM = 1 when the normalised prediction
equals a normalised reference; F1 is the bag-of-tokens F1 of the normalised strings; each question takes its best
reference; both are averaged over questions and given in percent.
"""

from __future__ import annotations

import collections
import json
import os
import re
import string

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

__all__ = [
    "evaluate_squad",
    "exact_match_score",
    "f1_score",
    "load_squad",
    "normalize_answer",
    "postprocess_predictions",
    "prepare_eval_features",
    "prepare_train_features",
    "squad_metrics",
]

DEFAULT_DOC_STRIDE = 128
DEFAULT_N_BEST = 20
DEFAULT_MAX_ANSWER_LENGTH = 30
SQUAD_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "title": datasets.Value("string"),
    "context": datasets.Value("string"),
    "question": datasets.Value("string"),
    "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
})


# --------------------------------------------------------------------------------------------------------------------
# Reading SQuAD JSON


def _require(condition: bool, path: str, field: str, what: str) -> None:
    if not condition:
        raise ValueError(f"{path}: not SQuAD v1.1 JSON: field {field} {what}")


def load_squad(path: str | os.PathLike) -> datasets.Dataset:
    """Read a SQuAD v1.1 JSON file (`{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id",
    "question", "answers": [{"text", "answer_start"}]}]}]}]}`) into one row per question.

    Returns:
        A `Dataset` with the Hub `squad` dataset's columns: `id`, `title`, `context`, `question`, `answers`
        (`{"text": [...], "answer_start": [...]}`, character offsets into `context`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file and the field (e.g. `data[3].paragraphs[0].context`), when the file is not JSON,
            a field is missing or of the wrong type, a context or question is empty, a question has no answer, or an
            answer's text is not the context at its `answer_start`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SQuAD file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not SQuAD v1.1 JSON: the file is not JSON ({err})") from None
    _require(isinstance(raw, dict) and isinstance(raw.get("data"), list), path, "data",
             "must be a list of articles (the top level must be an object with 'data')")
    rows = {name: [] for name in SQUAD_FEATURES}
    for a, article in enumerate(raw["data"]):
        where = f"data[{a}]"
        _require(isinstance(article, dict) and isinstance(article.get("paragraphs"), list), path,
                 f"{where}.paragraphs", "must be a list")
        title = article.get("title", "")
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            _require(isinstance(paragraph, dict), path, where, "must be an object")
            context = paragraph.get("context")
            _require(isinstance(context, str), path, f"{where}.context", "must be a string")
            _require(bool(context.strip()), path, f"{where}.context", "is empty")
            _require(isinstance(paragraph.get("qas"), list), path, f"{where}.qas", "must be a list")
            for q, qa in enumerate(paragraph["qas"]):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                _require(isinstance(qa, dict), path, where, "must be an object")
                _require(isinstance(qa.get("id"), str) and qa["id"] != "", path, f"{where}.id",
                         "must be a non-empty string")
                _require(isinstance(qa.get("question"), str) and bool(qa["question"].strip()), path,
                         f"{where}.question", "must be a non-empty string")
                answers = qa.get("answers")
                _require(isinstance(answers, list) and len(answers) > 0, path, f"{where}.answers",
                         "must be a non-empty list (SQuAD v1.1 has no unanswerable questions)")
                texts, starts = [], []
                for k, answer in enumerate(answers):
                    field = f"{where}.answers[{k}]"
                    _require(isinstance(answer, dict) and isinstance(answer.get("text"), str)
                             and isinstance(answer.get("answer_start"), int), path, field,
                             "must have 'text' (string) and 'answer_start' (integer)")
                    start, text = answer["answer_start"], answer["text"]
                    _require(0 <= start and context[start:start + len(text)] == text, path, f"{field}.answer_start",
                             f"({start}) does not point at the answer text {text!r} in the context")
                    texts.append(text)
                    starts.append(start)
                for name, value in (("id", qa["id"]), ("title", title), ("context", context),
                                    ("question", qa["question"]), ("answers", {"text": texts, "answer_start": starts})):
                    rows[name].append(value)
    _require(len(rows["id"]) > 0, path, "data", "holds no question")
    duplicates = [i for i, n in collections.Counter(rows["id"]).items() if n > 1]
    _require(not duplicates, path, "qas[].id", f"must be unique; repeated: {duplicates[:3]}")
    return datasets.Dataset.from_dict(rows, features=SQUAD_FEATURES)


# --------------------------------------------------------------------------------------------------------------------
# Preprocessing


def _tokenize(examples, tokenizer, max_seq_length, doc_stride):
    if not tokenizer.is_fast:
        raise ValueError("SQuAD preprocessing needs a fast tokenizer (character offsets of the tokens)")
    if doc_stride >= max_seq_length - 2:
        raise ValueError(f"doc_stride ({doc_stride}) must be smaller than max_seq_length ({max_seq_length}) minus "
                         "the question and special tokens")
    # leading spaces of some questions only waste room in the window (as run_qa.py)
    questions = [q.lstrip() for q in examples["question"]]
    return tokenizer(questions, examples["context"], truncation="only_second", max_length=max_seq_length,
                     stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)


def prepare_train_features(examples: dict, tokenizer: PreTrainedTokenizerBase, max_seq_length: int = 384,
                           doc_stride: int = DEFAULT_DOC_STRIDE) -> dict:
    """Training features of a batch of SQuAD rows (`Dataset.map(..., batched=True)`): one or more windows per
    question, each labelled with the token span of the first reference answer (`start_positions`,
    `end_positions`; both 0, the `[CLS]` position, when that answer is not wholly inside the window).

    Returns:
        `input_ids`, `token_type_ids`, `attention_mask` (not padded) and `start_positions` / `end_positions` (ints).

    Raises:
        ValueError: a slow tokenizer, or `doc_stride` too large for `max_seq_length`.
    """
    enc = _tokenize(examples, tokenizer, max_seq_length, doc_stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offsets_all):
        answers = examples["answers"][sample_map[i]]
        first_char = answers["answer_start"][0]
        last_char = first_char + len(answers["text"][0])  # exclusive
        sequence_ids = enc.sequence_ids(i)
        context = [t for t, s in enumerate(sequence_ids) if s == 1]
        cls_index = enc["input_ids"][i].index(tokenizer.cls_token_id)
        if not context or offsets[context[0]][0] > first_char or offsets[context[-1]][1] < last_char:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        # first context token ending after the answer's first character; last one starting before its end
        start = next(t for t in context if offsets[t][1] > first_char)
        end = next(t for t in reversed(context) if offsets[t][0] < last_char)
        starts.append(start)
        ends.append(end)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    return dict(enc)


def prepare_eval_features(examples: dict, tokenizer: PreTrainedTokenizerBase, max_seq_length: int = 384,
                          doc_stride: int = DEFAULT_DOC_STRIDE) -> dict:
    """Evaluation features of a batch of SQuAD rows: the windows of `prepare_train_features`, each with the `id` of
    its question (`example_id`) and its `offset_mapping` (`[start, end)` characters in the context for context
    tokens, None for question and special tokens), which `postprocess_predictions` needs.

    Raises:
        ValueError: a slow tokenizer, or `doc_stride` too large for `max_seq_length`.
    """
    enc = _tokenize(examples, tokenizer, max_seq_length, doc_stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = [examples["id"][s] for s in sample_map]
    enc["offset_mapping"] = [
        [tuple(o) if s == 1 else None for o, s in zip(offsets, enc.sequence_ids(i))]
        for i, offsets in enumerate(enc["offset_mapping"])
    ]
    return dict(enc)


# --------------------------------------------------------------------------------------------------------------------
# Span decoding


def postprocess_predictions(examples, features, start_logits, end_logits, *, n_best_size: int = DEFAULT_N_BEST,
                            max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH) -> dict[str, str]:
    """The answer text of every question from its features' start/end logits (SQuAD v1.1: always a non-empty span).

    Args:
        examples: SQuAD rows (`load_squad`; or a dict of columns), with `id` and `context`.
        features: their evaluation features (`prepare_eval_features`; a `Dataset` or a dict of columns), with
            `example_id` and `offset_mapping`.
        start_logits, end_logits: [num_features, seq] arrays (rows may be longer than a feature: padding).
        n_best_size: how many of the top start and of the top end positions of each window are paired.
        max_answer_length: longest answer, in tokens.

    Returns:
        `{question id: answer text}`; a question whose windows give no valid span gets "" (counted wrong).

    Raises:
        ValueError: when the logit rows do not match the features.
    """
    count = len(features["example_id"])
    if len(start_logits) != count or len(end_logits) != count:
        raise ValueError(f"{len(start_logits)} start / {len(end_logits)} end logit rows for {count} features")
    by_example = collections.defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        by_example[example_id].append(i)
    all_offsets = features["offset_mapping"]
    predictions = {}
    for example_id, context in zip(examples["id"], examples["context"]):
        best_score, best_span = -np.inf, None
        for i in by_example.get(example_id, ()):
            offsets = all_offsets[i]
            start, end = np.asarray(start_logits[i])[: len(offsets)], np.asarray(end_logits[i])[: len(offsets)]
            top_starts = np.argsort(start)[::-1][:n_best_size]
            top_ends = np.argsort(end)[::-1][:n_best_size]
            for s in top_starts:
                if offsets[s] is None:
                    continue
                for e in top_ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = start[s] + end[e]
                    if score > best_score:
                        best_score, best_span = score, (offsets[s][0], offsets[e][1])
        predictions[example_id] = context[best_span[0]:best_span[1]] if best_span else ""
    return predictions


# --------------------------------------------------------------------------------------------------------------------
# Official EM / F1 (evaluate-v1.1.py)


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation (evaluate-v1.1.py): lower case, drop ASCII punctuation (`string.punctuation`),
    drop the articles a/an/the as whole words, collapse whitespace. `"The  Broncos!"` → `"broncos"`."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1_score(prediction: str, reference: str) -> float:
    """Token F1 of the normalised strings: with c the common tokens (as a multiset), precision c/|prediction|,
    recall c/|reference|, F1 = 2PR/(P+R); 0.0 when nothing is shared."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """`{"exact_match", "f1"}` in percent over the questions of `references` (`{id: [reference texts]}`), each
    question scored against its best reference (evaluate-v1.1.py).

    Raises:
        ValueError: when a question of `references` has no prediction, or `references` is empty.
    """
    if not references:
        raise ValueError("squad_metrics: no references")
    missing = [i for i in references if i not in predictions]
    if missing:
        raise ValueError(f"squad_metrics: no prediction for {len(missing)} question(s), e.g. {missing[0]!r}")
    em = sum(max(exact_match_score(predictions[i], r) for r in refs) for i, refs in references.items())
    f1 = sum(max(f1_score(predictions[i], r) for r in refs) for i, refs in references.items())
    return {"exact_match": 100.0 * em / len(references), "f1": 100.0 * f1 / len(references)}


# --------------------------------------------------------------------------------------------------------------------
# Evaluation of a model


@torch.inference_mode()
def predict_logits(model, features, tokenizer, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits [num_features, longest feature] of a question-answering `model` on `features`
    (padded per batch; padding positions are -inf)."""
    columns = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in features.column_names]
    longest = max(len(ids) for ids in features["input_ids"])
    starts = np.full((len(features), longest), -np.inf, dtype=np.float32)
    ends = np.full_like(starts, -np.inf)
    model.eval()
    device = next(model.parameters()).device
    for first in range(0, len(features), batch_size):
        rows = features.select_columns(columns)[first:first + batch_size]
        batch = tokenizer.pad(rows, return_tensors="pt")
        out = model(**{k: v.to(device) for k, v in batch.items()})
        n = out.start_logits.shape[1]
        starts[first:first + len(batch["input_ids"]), :n] = out.start_logits.float().cpu().numpy()
        ends[first:first + len(batch["input_ids"]), :n] = out.end_logits.float().cpu().numpy()
    return starts, ends


def evaluate_squad(model, tokenizer, examples, *, max_seq_length: int = 384, doc_stride: int = DEFAULT_DOC_STRIDE,
                   n_best_size: int = DEFAULT_N_BEST, max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH,
                   batch_size: int = 64, features=None) -> dict:
    """EM / F1 (percent) of a question-answering model on SQuAD rows (`load_squad`).

    Returns:
        `{"exact_match", "f1", "predictions": {id: text}}`.
    """
    if features is None:
        features = examples.map(prepare_eval_features, batched=True, remove_columns=examples.column_names,
                                fn_kwargs={"tokenizer": tokenizer, "max_seq_length": max_seq_length,
                                           "doc_stride": doc_stride}, desc="SQuAD eval features")
    starts, ends = predict_logits(model, features, tokenizer, batch_size)
    predictions = postprocess_predictions(examples, features, starts, ends, n_best_size=n_best_size,
                                          max_answer_length=max_answer_length)
    references = {i: answers["text"] for i, answers in zip(examples["id"], examples["answers"])}
    return {**squad_metrics(predictions, references), "predictions": predictions}
