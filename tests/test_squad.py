"""SQuAD v1.1 (issue 13 §2, §6): reading SQuAD JSON, windows and span labels on real examples, span decoding,
the official EM/F1 against hand-computed values, the start/end distillation loss, bad files, and a tiny end-to-end
`finetune` / `distill --task squad`."""

import json

import numpy as np
import pytest
import torch
from conftest import DATA, tiny_bert_config
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertForQuestionAnswering, TrainingArguments

from hf_binary_bert import BinaryBertForQuestionAnswering
from hf_binary_bert.cli import main
from hf_binary_bert.distillation import span_distillation_loss
from hf_binary_bert.recipes import TrainingOptions, _training_arguments
from hf_binary_bert.squad import (
    exact_match_score,
    f1_score,
    load_squad,
    normalize_answer,
    postprocess_predictions,
    prepare_eval_features,
    prepare_train_features,
    squad_metrics,
)

EXCERPT = DATA / "squad" / "dev-v1.1-excerpt.json"  # 3 real paragraphs of the dev set, 75 questions (SOURCES.md)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")


@pytest.fixture(scope="module")
def examples():
    return load_squad(EXCERPT)


def _features(examples, tokenizer, fn, **sizes):
    return examples.map(fn, batched=True, remove_columns=examples.column_names,
                        fn_kwargs={"tokenizer": tokenizer, **sizes})


def test_load_squad_reads_one_row_per_question(examples):
    assert len(examples) == 75 and examples.column_names == ["id", "title", "context", "question", "answers"]
    first = examples[0]
    assert first["id"] == "56be4db0acb8001400a502ec" and first["title"] == "Super_Bowl_50"
    assert first["answers"]["text"] == ["Denver Broncos", "Denver Broncos", "Denver Broncos"]
    assert first["answers"]["answer_start"] == [177, 177, 177]
    assert first["context"][177:177 + len("Denver Broncos")] == "Denver Broncos"


@pytest.mark.parametrize("max_seq_length, doc_stride", [(384, 128), (64, 16)])
def test_span_labels_recover_the_answers_from_the_offsets(examples, tokenizer, max_seq_length, doc_stride):
    """Every window that holds the first reference answer is labelled with tokens whose character offsets cut that
    answer out of the context again (up to the word pieces around it); the others point at [CLS]."""
    sizes = {"max_seq_length": max_seq_length, "doc_stride": doc_stride}
    train = _features(examples, tokenizer, prepare_train_features, **sizes)
    evals = _features(examples, tokenizer, prepare_eval_features, **sizes)
    assert len(train) == len(evals) and all(len(ids) <= max_seq_length for ids in train["input_ids"])
    index = {i: n for n, i in enumerate(examples["id"])}
    labelled = exact = 0
    for f in range(len(train)):
        example = examples[index[evals[f]["example_id"]]]
        start, end = train[f]["start_positions"], train[f]["end_positions"]
        offsets = evals[f]["offset_mapping"]
        answer, first_char = example["answers"]["text"][0], example["answers"]["answer_start"][0]
        context_tokens = [o for o in offsets if o is not None]
        inside = context_tokens[0][0] <= first_char and first_char + len(answer) <= context_tokens[-1][1]
        if not inside:
            assert start == end == 0
            continue
        labelled += 1
        assert 0 < start <= end and offsets[start] is not None and offsets[end] is not None
        span = example["context"][offsets[start][0]:offsets[end][1]]
        assert answer in span and len(span) - len(answer) <= 8  # whole word pieces: "gold" → "golden", "8" → "18"
        exact += span == answer
    assert exact >= 0.9 * labelled  # word pieces mostly begin and end at the answer (74 of 78 windows at 384)
    questions = len(set(evals["example_id"]))
    if max_seq_length == 64:  # long contexts: several overlapping windows per question
        assert len(train) > 2 * questions
        first_two = [i for i, e in enumerate(evals["example_id"]) if e == examples[0]["id"]][:2]
        a, b = (evals[i]["offset_mapping"] for i in first_two)
        a_ctx, b_ctx = [o for o in a if o is not None], [o for o in b if o is not None]
        assert a_ctx[-doc_stride:] == b_ctx[:doc_stride]  # consecutive windows share doc_stride context tokens
    else:
        assert questions == 75 and labelled >= 74


def test_decoding_gold_spans_scores_full_marks_and_respects_the_limits(examples, tokenizer):
    sizes = {"max_seq_length": 64, "doc_stride": 16}
    train = _features(examples, tokenizer, prepare_train_features, **sizes)
    evals = _features(examples, tokenizer, prepare_eval_features, **sizes)
    width = max(len(ids) for ids in train["input_ids"])
    start_logits = np.full((len(train), width), -5.0, dtype=np.float32)
    end_logits = start_logits.copy()
    for f, (s, e) in enumerate(zip(train["start_positions"], train["end_positions"])):
        if s:  # the window holds the answer: its span gets the highest score
            start_logits[f, s] = end_logits[f, e] = 10.0
    predictions = postprocess_predictions(examples, evals, start_logits, end_logits)
    references = {i: a["text"] for i, a in zip(examples["id"], examples["answers"])}
    metrics = squad_metrics(predictions, references)
    # the labelled spans of 71 questions are their answers; 4 are whole word pieces around it ("gold" in "golden")
    assert metrics == pytest.approx({"exact_match": 100 * 71 / 75, "f1": 100 * 71 / 75})
    # the question's own best span is skipped when it is longer than max_answer_length
    question = examples[0]["id"]
    f = evals["example_id"].index(question)
    offsets = evals[f]["offset_mapping"]
    ctx = [t for t, o in enumerate(offsets) if o is not None]
    one = {"example_id": [question], "offset_mapping": [offsets]}
    start, end = np.full((1, len(offsets)), -5.0), np.full((1, len(offsets)), -5.0)
    start[0, ctx[0]], end[0, ctx[5]], end[0, ctx[2]] = 10.0, 10.0, 3.0
    context = examples[0]["context"]
    rows = {"id": [question], "context": [context]}
    assert postprocess_predictions(rows, one, start, end)[question] == context[offsets[ctx[0]][0]:offsets[ctx[5]][1]]
    assert postprocess_predictions(rows, one, start, end, max_answer_length=3)[question] == \
        context[offsets[ctx[0]][0]:offsets[ctx[2]][1]]
    # the question tokens (offset None) are never an answer, however high their logits
    start[0, 1] = end[0, 1] = 100.0
    assert postprocess_predictions(rows, one, start, end)[question] == context[offsets[ctx[0]][0]:offsets[ctx[5]][1]]


def test_official_normalisation_and_scores_by_hand():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an Athenian theatre") == "athenian theatre"  # articles only as whole words
    assert normalize_answer("U.S.") == "us" and normalize_answer("x—y") == "x—y"  # ASCII punctuation only
    assert exact_match_score("the Broncos.", "Broncos") == 1.0 and exact_match_score("Broncos", "Denver") == 0.0
    # prediction {cat, sat, on, mat}, reference {cat, on, mat}: P = 3/4, R = 1, F1 = 2·(3/4)/(7/4) = 6/7
    assert f1_score("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)
    assert f1_score("", "cat") == 0.0 and f1_score("dog", "cat") == 0.0
    # repeated tokens count as a multiset: {a... } → "go go go" vs "go": common 1, P = 1/3, R = 1, F1 = 1/2
    assert f1_score("go go go", "go") == pytest.approx(0.5)
    predictions = {"q1": "Denver Broncos", "q2": "in 1990s"}
    references = {"q1": ["Denver Broncos", "The Denver Broncos"], "q2": ["1990s", "the 1990s decade"]}
    # q1: EM 1, F1 1; q2: EM 0, F1 = max(2·(1/2)·1/(3/2), 2·(1/2)·(1/2)/1) = 2/3
    assert squad_metrics(predictions, references) == pytest.approx({"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2})
    with pytest.raises(ValueError, match="no prediction for 1 question"):
        squad_metrics({"q1": "x"}, references)


def test_span_distillation_loss_is_the_mean_soft_cross_entropy_without_padding():
    g = torch.Generator().manual_seed(0)
    s_start, s_end, t_start, t_end = (torch.randn(2, 6, generator=g) for _ in range(4))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    tau = 2.0

    def soft_ce(s, t):
        return -(torch.softmax(t / tau, -1) * torch.log_softmax(s / tau, -1)).sum(-1)

    expected = tau**2 * sum(
        (soft_ce(s[0], t[0]) + soft_ce(s[1, :4], t[1, :4])) / 2 for s, t in ((s_start, t_start), (s_end, t_end))) / 2
    loss = span_distillation_loss(s_start, s_end, t_start, t_end, tau, mask)
    torch.testing.assert_close(loss, expected)
    s_start[1, 4:] = 50.0  # padding does not count
    torch.testing.assert_close(span_distillation_loss(s_start, s_end, t_start, t_end, tau, mask), expected)


# ------------------------------------------------------------------------------------------------------------------
# Bad input (§6)


def _write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _squad(context="Denver won.", answer_start=0, text="Denver"):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q", "question": "Who won?", "answers": [{"text": text, "answer_start": answer_start}]}]}]}]}


@pytest.mark.parametrize("content, field", [
    ("Who won?\tDenver\n", "the file is not JSON"),
    ([{"context": "x"}], "field data must be a list"),
    ({"version": "1.1", "data": [{"title": "t"}]}, r"field data\[0\]\.paragraphs must be a list"),
    (_squad(context="   "), r"field data\[0\]\.paragraphs\[0\]\.context is empty"),
    (_squad(context=None), r"field data\[0\]\.paragraphs\[0\]\.context must be a string"),
    (_squad(answer_start=3), (r"field data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]\.answer_start \(3\) "
                              r"does not point at the answer text 'Denver'")),
    ({"version": "1.1", "data": []}, "field data holds no question"),
])
def test_bad_squad_files_name_the_file_and_field(tmp_path, content, field):
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'bad.json'}: not SQuAD v1.1 JSON: {field}"):
        load_squad(path)


def test_cli_reports_a_bad_squad_file_in_one_line_before_training(tmp_path, capsys):
    good, bad = _write(tmp_path / "good.json", _squad()), _write(tmp_path / "empty-context.json", _squad(context=""))
    out = tmp_path / "out"
    code = main(["finetune", "--model", str(tmp_path / "no-model"), "--task", "squad", "--train-files", str(good),
                 "--eval-files", str(bad), "--output-dir", str(out)])
    assert code == 2 and not out.exists() and not (tmp_path / "out.partial").exists()
    err = capsys.readouterr().err
    assert err == f"hf-binary-bert: error: --eval-files: {bad}: not SQuAD v1.1 JSON: field " \
                  "data[0].paragraphs[0].context is empty\n"
    code = main(["evaluate", "--model", "x", "--task", "squad", "--eval-files", str(tmp_path / "missing.json")])
    assert code == 2 and "no such file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory, examples):
    """Train on the first two paragraphs, evaluate on the long third one (both real SQuAD excerpts)."""
    folder = tmp_path_factory.mktemp("squad")
    raw = json.loads(EXCERPT.read_text())
    paragraphs = raw["data"][0]["paragraphs"]
    for name, part in (("train.json", paragraphs[:2]), ("eval.json", paragraphs[2:])):
        _write(folder / name, {"version": "1.1", "data": [{"title": "Super_Bowl_50", "paragraphs": part}]})
    return folder / "train.json", folder / "eval.json"


def _tiny_qa_base(folder, tokenizer):
    """A tiny random BertForQuestionAnswering (seed 0) and the tokenizer, saved to `folder`."""
    torch.manual_seed(0)
    BertForQuestionAnswering(tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128)
                             ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _squad_cli_args(squad_files):
    train, evals = map(str, squad_files)
    return ["--task", "squad", "--train-files", train, "--eval-files", evals, "--max-seq-length", "96",
            "--doc-stride", "32", "--batch-size", "8", "--no-progress", "--logging-steps", "1"]


def test_cli_finetune_then_distill_squad(tmp_path, tokenizer, squad_files):
    base = tmp_path / "base"
    _tiny_qa_base(base, tokenizer)
    common = _squad_cli_args(squad_files)
    assert main(["finetune", "--model", str(base), "--output-dir", str(tmp_path / "teacher"), "--max-steps", "3",
                 *common]) == 0
    result = json.loads((tmp_path / "teacher" / "finetune_results.json").read_text())
    assert set(result["metrics"]) == {"eval_exact_match", "eval_f1"}
    assert all(0.0 <= v <= 100.0 for v in result["metrics"].values())
    assert main(["distill", "--teacher", str(tmp_path / "teacher"), "--output-dir", str(tmp_path / "student"),
                 "--max-steps", "2", "--activation-bits", "1", "--activation-quantizer", "elastic", "--no-latency",
                 *common]) == 0
    history = json.loads((tmp_path / "student" / "distill_results.json").read_text())["log_history"]
    assert any("loss_prediction" in entry for entry in history)  # the start/end distillation term ran
    rows = json.loads((tmp_path / "student" / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["teacher", "student"]
    assert all({"exact_match", "f1"} <= set(r) for r in rows)
    assert rows[0]["exact_match"] == pytest.approx(result["metrics"]["eval_exact_match"])
    student = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "student")
    assert type(student) is BinaryBertForQuestionAnswering and student.config.packed_weights
    assert student.config.activation_bits == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path of --bf16")
def test_cli_finetune_squad_bf16_on_a_cpu(tmp_path, tokenizer, squad_files):
    """--bf16 without a GPU trains under bfloat16 autocast on the CPU (TrainingArguments alone refuses bf16 there)."""
    args = _training_arguments(TrainingArguments, str(tmp_path / "args"), TrainingOptions(), 5e-5, {"bf16": True})
    assert args.bf16 and args.use_cpu and args.device.type == "cpu"
    base = tmp_path / "base"
    _tiny_qa_base(base, tokenizer)
    assert main(["finetune", "--model", str(base), "--output-dir", str(tmp_path / "teacher"), "--max-steps", "2",
                 *_squad_cli_args(squad_files), "--bf16"]) == 0
    result = json.loads((tmp_path / "teacher" / "finetune_results.json").read_text())
    assert all(0.0 <= v <= 100.0 for v in result["metrics"].values())
    losses = [entry["loss"] for entry in result["log_history"] if "loss" in entry]
    assert len(losses) == 2 and all(np.isfinite(losses))
    saved = BertForQuestionAnswering.from_pretrained(tmp_path / "teacher")
    assert saved.dtype == torch.float32  # autocast only: the weights stay float32
