"""`hf-binary-bert serve` (issue 13 §5, §6): the side-by-side page of a teacher and its binarized student.

Without a browser: `SideBySide.predict` / `page_outputs` against the models' own pipelines, the messages for bad
input, the task chosen from the architecture, and the command's errors before a server starts. In a browser (headless
Chromium from the Debian packages `chromium` and `chromium-driver`, driven by selenium): the page opens, a typed
sentence reaches both models, both predictions and latencies appear, clearing the text shows a message, and no
request leaves 127.0.0.1.
"""

import shutil
import socket
import time
from urllib.parse import urlparse

import pytest
import torch
from conftest import DATA, save_tiny_sst2_teacher, tiny_bert_config
from transformers import AutoTokenizer, BertForQuestionAnswering, BertForSequenceClassification, pipeline

from hf_binary_bert import BinaryBertForSequenceClassification
from hf_binary_bert.cli import main

gradio = pytest.importorskip("gradio", reason="the serve extra (Gradio) is not installed")
from hf_binary_bert.serve import InputError, SideBySide, build_app, pipeline_task, serve

SST2 = {0: "negative", 1: "positive"}
SENTENCE = "a gripping, beautifully acted film"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random SST-2 teacher with label names and its W1A1 (sign) student, saved packed."""
    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    save_tiny_sst2_teacher(root / "teacher")
    teacher = BertForSequenceClassification.from_pretrained(root / "teacher")
    teacher.config.id2label, teacher.config.label2id = SST2, {v: k for k, v in SST2.items()}
    teacher.save_pretrained(root / "teacher")
    student = BinaryBertForSequenceClassification.from_teacher(teacher, activation_bits=1)
    student.save_pretrained(root / "student")
    AutoTokenizer.from_pretrained(root / "teacher").save_pretrained(root / "student")
    return str(root / "teacher"), str(root / "student")


def _assert_same_scores(output, reference):
    assert [o["label"] for o in output] == [o["label"] for o in reference]
    assert [o["score"] for o in output] == pytest.approx([o["score"] for o in reference], abs=1e-6)


@pytest.fixture(scope="module")
def side(models):
    return SideBySide(*models, max_chars=300)


def test_predict_gives_each_models_pipeline_label_and_a_latency(side, models):
    results = side.predict(SENTENCE)
    assert set(results) == {"teacher", "student"}
    for role, path in zip(("teacher", "student"), models):
        reference = pipeline("text-classification", model=path)(SENTENCE, top_k=None)
        out = results[role]
        assert {o["label"] for o in out["output"]} == {"negative", "positive"}
        _assert_same_scores(out["output"], reference)
        best = max(reference, key=lambda o: o["score"])
        assert out["prediction"] == f"{best['label']} ({best['score']:.3f})"
        assert 0 < out["latency_ms"] < 10_000


def test_student_runs_on_the_native_runtime_and_sizes_are_from_disk(side, models):
    from hf_binary_bert.format import checkpoint_size_report
    from hf_binary_bert.kernels import available

    student = side.models["student"]
    assert student.model.training is False and side.models["teacher"].model.training is False
    if available():
        assert student.encoder == "native runtime (bitwise kernels)"
    assert side.models["teacher"].encoder == "PyTorch (full precision)"
    table = side.size_table()
    teacher_mb, student_mb = (checkpoint_size_report(p)["total"] for p in models)
    assert f"| on disk (total) (MB) | {teacher_mb:.3f} | {student_mb:.3f} |" in table
    assert checkpoint_size_report(models[1])["packed_weights"] > 0
    assert "| packed 1-bit weights (MB) | 0.000 |" in table


def test_pair_input_goes_to_the_pipeline_as_text_pair(side, models):
    results = side.predict("A man is dancing.", "Someone moves.")
    reference = pipeline("text-classification", model=models[0])({"text": "A man is dancing.",
                                                                  "text_pair": "Someone moves."}, top_k=None)
    _assert_same_scores(results["teacher"]["output"], reference)
    assert results["teacher"]["output"] != side.predict("A man is dancing.")["teacher"]["output"]  # the pair counts


@pytest.mark.parametrize("text, second, message", [
    ("", "", "The text is empty"),
    ("   \n", "", "The text is empty"),
    ("x" * 301, "", "The text is 301 characters long; this page takes at most 300"),
    ("ok", "y" * 301, "The second sentence is 301 characters long"),
    ("a " * 140, "", "The text is 142 tokens long; the teacher takes at most 128 tokens"),
])
def test_bad_input_is_a_message_on_the_page_not_an_exception(side, text, second, message):
    with pytest.raises(InputError, match=message):
        side.predict(text, second)
    status, *outputs = side.page_outputs(text, second)
    assert status.startswith("⚠️ ") and message in status
    assert outputs == [None, None, ""] * 2  # the previous predictions are cleared


def test_page_outputs_report_a_failing_model_instead_of_raising(side, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(side.models["student"].model, "forward", broken)
    status, *_ = side.page_outputs(SENTENCE)
    assert status == "⚠️ The models could not answer this input: RuntimeError: kernel exploded"


def test_page_outputs_of_a_good_request(side):
    status, t_pred, t_probs, t_latency, s_pred, s_probs, s_latency = side.page_outputs(SENTENCE)
    assert status == ""
    for pred, probs, latency in ((t_pred, t_probs, t_latency), (s_pred, s_probs, s_latency)):
        assert set(probs) == {"negative", "positive"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert pred.startswith(max(probs, key=probs.get) + " (")
        assert latency.endswith(" ms") and float(latency.removesuffix(" ms")) > 0


def _full_precision_pair(tmp_path, model_class, **config_kwargs):
    """A teacher and a "student" of one full-precision head class (the page's QA / NER paths do not depend on the
    head's class), saved with the BERT tokenizer; returns the page's SideBySide of the two."""
    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")
    config = tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, **config_kwargs)
    for name in ("teacher", "student"):
        torch.manual_seed(0)
        model_class(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    return SideBySide(str(tmp_path / "teacher"), str(tmp_path / "student"))


def test_question_answering_models_get_question_and_context(tmp_path, models):
    qa = _full_precision_pair(tmp_path, BertForQuestionAnswering)
    assert qa.task == "question-answering"
    context = "The binarized student was distilled from a MiniLM teacher on SST-2."
    results = qa.predict("What was the student distilled from?", context)
    for out in results.values():
        assert out["output"]["answer"] == context[out["output"]["start"]:out["output"]["end"]]
        assert out["latency_ms"] > 0
    with pytest.raises(InputError, match="The context is empty"):
        qa.predict("What?", " ")
    with pytest.raises(InputError, match="The question is empty"):
        qa.predict("", context)
    ids = {block.elem_id for block in build_app(qa).blocks.values()}
    assert {"text", "second", "teacher-prediction", "student-latency", "status"} <= ids
    with pytest.raises(ValueError, match="student: serves question-answering but the teacher serves text-classification"):
        SideBySide(models[0], str(tmp_path / "student"))


def test_answer_question_matches_a_brute_force_search_over_windows(tmp_path):
    from hf_binary_bert.serve import answer_question

    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer/bert-base-uncased")
    torch.manual_seed(1)
    model = BertForQuestionAnswering(tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128)).eval()
    question = "Which film won?"
    context = " ".join(f"film{i % 17} won prize{i % 5}." for i in range(40))  # ≈ 280 tokens: several 64-token windows
    got = answer_question(model, tokenizer, question, context, max_tokens=64, stride=16, max_answer_tokens=5)

    enc = tokenizer(question, context, truncation="only_second", max_length=64, stride=16,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    assert len(enc["input_ids"]) > 2
    best = (-1.0, None)
    for w, ids in enumerate(enc["input_ids"]):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([enc["token_type_ids"][w]]))
        ctx = [t for t, sid in enumerate(enc.sequence_ids(w)) if sid == 1]
        p_start = out.start_logits[0, ctx].softmax(-1)
        p_end = out.end_logits[0, ctx].softmax(-1)
        for a, i in enumerate(ctx):
            for b, j in enumerate(ctx):
                if i <= j < i + 5 and float(p_start[a] * p_end[b]) > best[0]:
                    best = (float(p_start[a] * p_end[b]), (enc["offset_mapping"][w][i][0], enc["offset_mapping"][w][j][1]))
    score, (begin, end) = best
    assert (got["start"], got["end"]) == (begin, end) and got["answer"] == context[begin:end]
    assert got["score"] == pytest.approx(score, rel=1e-5)


def test_token_classification_models_get_entities(tmp_path):
    from transformers import BertForTokenClassification

    names = {0: "O", 1: "B-PER", 2: "I-PER"}
    ner = _full_precision_pair(tmp_path, BertForTokenClassification, id2label=names,
                               label2id={v: k for k, v in names.items()})
    assert ner.task == "token-classification"
    text = "Ada Lovelace met Charles Babbage in London"
    reference = pipeline("token-classification", model=str(tmp_path / "teacher"), aggregation_strategy="simple")(text)
    assert reference, "the random model should tag something"
    got = ner.predict(text)["teacher"]
    assert [(e["entity_group"], e["start"], e["end"]) for e in got["output"]] == [
        (e["entity_group"], e["start"], e["end"]) for e in reference]
    status, _, details, *_ = ner.page_outputs(text)
    assert status == "" and details["text"] == text and len(details["entities"]) == len(reference)
    with pytest.raises(InputError, match="Token classification takes one sentence"):
        ner.predict(text, "a second sentence")


def test_pipeline_task_from_the_architecture():
    from transformers import BertConfig

    assert pipeline_task(BertConfig(architectures=["BinaryBertForQuestionAnswering"])) == "question-answering"
    assert pipeline_task(BertConfig(architectures=["BertForTokenClassification"])) == "token-classification"
    with pytest.raises(ValueError, match="teacher: architecture 'BertForMaskedLM' has no head the page serves"):
        pipeline_task(BertConfig(architectures=["BertForMaskedLM"]), "teacher")


def test_cli_errors_name_the_argument_before_a_server_starts(models, tmp_path, capsys):
    teacher, student = models
    assert main(["serve", teacher, str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"hf-binary-bert: error: student: no such model folder: {tmp_path / 'missing'}"
    assert main(["serve", str(tmp_path / "nope"), student]) == 2
    assert "error: teacher: no such model folder" in capsys.readouterr().err
    assert main(["serve", teacher, student, "--port", "70000"]) == 2
    assert "--port: 70000 is not a TCP port" in capsys.readouterr().err
    assert main(["serve", teacher, student, "--share"]) == 2  # no share links: the option does not exist
    assert "unrecognized arguments: --share" in capsys.readouterr().err
    with socket.socket() as taken:  # a port in use: a one-line error, no traceback
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", teacher, student, "--port", str(taken.getsockname()[1])]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("hf-binary-bert: error: --host/--port: Cannot find empty port")


# ----------------------------------------------------------------------------------------------------------------
# In a real browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra) is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def _value(driver, elem_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input").get_attribute("value")


def _wait(condition, timeout=60, what="the page"):
    from selenium.common.exceptions import WebDriverException

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except WebDriverException as err:  # elements may be re-rendered while we read them
            last = err
        else:
            last = None
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last!r})" if last else ""))


def test_page_in_headless_chromium(models, browser):
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    port = _free_port()
    app = serve(*models, port=port, block=False, max_chars=300)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#text textarea").is_displayed(), what="the text box")
        assert "Model size" in browser.find_element(By.ID, "sizes").text
        browser.find_element(By.CSS_SELECTOR, "#text textarea").send_keys(SENTENCE)
        expected = {role: pipeline("text-classification", model=path)(SENTENCE, top_k=None)
                    for role, path in zip(("teacher", "student"), models)}
        for role in ("teacher", "student"):
            best = max(expected[role], key=lambda o: o["score"])
            want = f"{best['label']} ({best['score']:.3f})"
            # the page answers as one types: the final text's prediction arrives after the intermediate ones
            _wait(lambda role=role, want=want: _value(browser, f"{role}-prediction") == want,
                  what=f"the {role}'s prediction {want!r}")
            latency = _value(browser, f"{role}-latency")
            assert latency.endswith(" ms") and float(latency.removesuffix(" ms")) > 0
            assert best["label"] in browser.find_element(By.ID, f"{role}-details").text
        assert browser.find_element(By.ID, "status").text.strip() == ""

        # a bad request: an empty text gives a message on the page and clears the outputs
        browser.find_element(By.CSS_SELECTOR, "#text textarea").send_keys(Keys.CONTROL, "a", Keys.DELETE)
        _wait(lambda: "The text is empty" in browser.find_element(By.ID, "status").text, what="the empty-text message")
        assert _value(browser, "teacher-prediction") == "" and _value(browser, "student-latency") == ""
        assert "Traceback" not in browser.page_source

        # offline: every request the page made went to this server (or is inline data)
        urls = []
        for entry in browser.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        assert urls, "the performance log recorded no request"
        outside = [u for u in urls if urlparse(u).scheme not in ("data", "blob")
                   and urlparse(u).hostname not in ("127.0.0.1", "localhost")]
        assert outside == []
    finally:
        app.close()


def test_served_html_and_css_name_no_external_host(models):
    """The same offline property without a browser: the page's HTML and the theme's CSS fetch nothing from outside."""
    import re

    import httpx

    port = _free_port()
    app = serve(*models, port=port, block=False)
    try:
        base = f"http://127.0.0.1:{port}"
        html = httpx.get(base + "/").text
        css = httpx.get(base + "/theme.css").text
        assert "fonts.googleapis" not in css and "@import url(" not in css
        external = set(re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", html))
        assert {u for u in external if urlparse(u).hostname not in ("127.0.0.1", "localhost")} == set()
        assert app.analytics_enabled is False and app.share is False
    finally:
        app.close()
