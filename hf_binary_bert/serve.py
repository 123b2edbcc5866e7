"""`hf-binary-bert serve TEACHER STUDENT`: a local web page that runs what one types through a full-precision teacher
and its binarized student side by side, and shows both predictions, each request's latency and each model's size.

The page is a Gradio app (the `serve` extra) bound to 127.0.0.1 by default, with no share link, no analytics and no
external assets (a theme with system fonts only). The pipeline task of the page follows the models' architecture
(`config.architectures[0]`):

| architecture | pipeline | inputs on the page |
|---|---|---|
| `…ForSequenceClassification` | `text-classification` | a sentence, and an optional second sentence (pair tasks) |
| `…ForTokenClassification` | `token-classification` (`aggregation_strategy="simple"`) | a sentence |
| `…ForQuestionAnswering` | `answer_question` below (transformers 5 removed its `question-answering` pipeline) | a question and a context |

The models load with transformers' Auto classes (this package registers `binary_bert` on import) in eval mode; a
binarized student runs its encoder on the native runtime (`hf_binary_bert.runtime`) where it applies.

`SideBySide` holds the two models and does the work without a browser (`predict`); `build_app` wraps it in a page.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import torch

from .format import checkpoint_size_report

ARCHITECTURE_TASKS = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}
AUTO_CLASSES = {
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
DEFAULT_MAX_CHARS = 2000
ROLES = ("teacher", "student")
logger = logging.getLogger(__name__)


class InputError(ValueError):
    """A request the page answers with a message instead of predictions (empty or over-long input)."""


def pipeline_task(config, name: str = "model") -> str:
    """The pipeline task of a model, from `config.architectures[0]` (table in the module docstring).

    Raises:
        ValueError: naming `name`, when the config has no architecture or a head the page does not serve.
    """
    architecture = (getattr(config, "architectures", None) or [None])[0]
    for suffix, task in ARCHITECTURE_TASKS.items():
        if architecture and architecture.endswith(suffix):
            return task
    raise ValueError(f"{name}: architecture {architecture!r} has no head the page serves "
                     f"(expected one ending in {', '.join(ARCHITECTURE_TASKS)})")


def encoder_path(model) -> str:
    """How the model's encoder runs on CPU float32 inputs in eval mode: the native runtime, or why not."""
    encoder = getattr(model.base_model, "encoder", None)
    if encoder is None or not hasattr(encoder, "runtime"):
        return "PyTorch (full precision)"
    if getattr(encoder, "inference_kernel", "auto") != "auto":
        return f"{encoder.inference_kernel} kernels"
    if encoder.runtime().plan() is not None:
        return "native runtime (bitwise kernels)"
    return f"PyTorch / per-Linear kernels ({encoder.runtime().unsupported_reason})"


@torch.inference_mode()
def answer_question(model, tokenizer, question: str, context: str, *, max_tokens: int = 384, stride: int = 128,
                    max_answer_tokens: int = 30) -> dict:
    """The best answer span of an extractive question-answering model (a BERT `…ForQuestionAnswering`).

    The context is split into windows of `max_tokens` (question included) overlapping by `stride` tokens; in each
    window, a span (i, j) of context tokens with i ≤ j < i + `max_answer_tokens` scores p_start(i)·p_end(j), the
    softmaxes of the start and end logits over the window's context tokens. The same decoding as transformers 4's
    `QuestionAnsweringPipeline` (removed in transformers 5) with `top_k=1`, `handle_impossible_answer=False`.

    Returns:
        `{"answer": str, "score": float, "start": int, "end": int}`: `context[start:end]` is the answer
        (character offsets).
    """
    enc = tokenizer(question, context, truncation="only_second", max_length=max_tokens, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")
    enc.pop("overflow_to_sample_mapping", None)
    is_context = torch.tensor([[sid == 1 for sid in enc.sequence_ids(w)] for w in range(len(offsets))])
    out = model(**enc)
    start = out.start_logits.masked_fill(~is_context, float("-inf")).softmax(-1)  # [windows, tokens]
    end = out.end_logits.masked_fill(~is_context, float("-inf")).softmax(-1)
    scores = start[:, :, None] * end[:, None, :]  # [windows, i, j]
    n = scores.shape[-1]
    allowed = torch.ones(n, n, dtype=torch.bool).triu().tril(max_answer_tokens - 1)  # i ≤ j < i + max_answer_tokens
    scores = scores.masked_fill(~allowed, 0.0)
    best = int(scores.flatten().argmax())
    window, i, j = best // (n * n), best % (n * n) // n, best % n
    begin, finish = int(offsets[window, i, 0]), int(offsets[window, j, 1])
    return {"answer": context[begin:finish], "score": float(scores[window, i, j]), "start": begin, "end": finish}


@dataclass
class ServedModel:
    """One side of the page: a loaded model (eval mode), its tokenizer and pipeline (None for question answering:
    `answer_question`), its size on disk and how its encoder runs."""

    role: str
    path: str
    task: str
    model: object
    tokenizer: object
    pipeline: object | None
    size: dict = field(repr=False)
    max_tokens: int = 512
    encoder: str = ""


def load_served_model(role: str, path: str) -> ServedModel:
    """Load `path` (a saved model folder) for the page: the Auto class of its architecture, in float32 and eval mode,
    its tokenizer, a pipeline, its size on disk (`checkpoint_size_report`: MB = 10⁶ bytes).

    Raises:
        ValueError: naming `role`, when the folder does not exist, has no model/tokenizer, or a head the page does
            not serve.
    """
    import transformers

    from . import recipes

    try:
        path = recipes.check_model(path, allow_binary=True)
    except ValueError as err:
        raise ValueError(f"{role}: {err}") from None
    config = transformers.AutoConfig.from_pretrained(path)
    task = pipeline_task(config, role)
    try:
        # float32 on the CPU: the kernels and the native runtime take float32 (an fp16 checkpoint is upcast)
        model = getattr(transformers, AUTO_CLASSES[task]).from_pretrained(path, dtype=torch.float32).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        size = checkpoint_size_report(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{role}: cannot load {path}: {str(err).splitlines()[0]}") from None
    kwargs = {"aggregation_strategy": "simple"} if task == "token-classification" else {}
    pipe = None
    if task != "question-answering":
        pipe = transformers.pipeline(task, model=model, tokenizer=tokenizer, device="cpu", **kwargs)
    limits = [config.max_position_embeddings]
    if tokenizer.model_max_length and tokenizer.model_max_length < 10**9:  # "no limit" is stored as a huge int
        limits.append(tokenizer.model_max_length)
    return ServedModel(role, path, task, model, tokenizer, pipe, size, max_tokens=min(limits))


class SideBySide:
    """A teacher and a student that answer the same input; `predict` times each model's call.

    Args:
        teacher, student: saved model folders (any BERT or binarized BERT with one of the heads in the module
            docstring; both the same task).
        max_chars: longest input (each field) in characters; longer requests are refused with a message.

    Raises:
        ValueError: naming the argument (`teacher` / `student`) when a model cannot be loaded, or when the two
            models serve different tasks.
    """

    def __init__(self, teacher: str, student: str, *, max_chars: int = DEFAULT_MAX_CHARS):
        if max_chars < 1:
            raise ValueError(f"max_chars: must be at least 1, got {max_chars}")
        self.models = {role: load_served_model(role, path) for role, path in zip(ROLES, (teacher, student))}
        tasks = {m.task for m in self.models.values()}
        if len(tasks) > 1:
            raise ValueError("student: serves " + self.models["student"].task + " but the teacher serves "
                             + self.models["teacher"].task + " (the two models need the same kind of head)")
        self.task = tasks.pop()
        self.max_chars = max_chars
        warm_up = {"question-answering": ("What is this?", "This is a warm-up.")}.get(self.task, ("A warm-up.", ""))
        self.predict(*warm_up)  # the first call of a model is slower (allocations, kernel layouts): not a request's
        for served in self.models.values():
            served.encoder = encoder_path(served.model)

    # ------------------------------------------------------------------------------------------------------------

    def check_input(self, text: str, second: str = "") -> None:
        """Raise `InputError` with a message for the page when the request cannot be answered.

        `text` is the sentence (the question for question answering); `second` the optional second sentence of a
        pair (the context for question answering, where it is required).
        """
        text, second = text or "", second or ""
        qa = self.task == "question-answering"
        first_name, second_name = ("question", "context") if qa else ("text", "second sentence")
        if not text.strip():
            raise InputError(f"The {first_name} is empty: type something to see both models' predictions.")
        if qa and not second.strip():
            raise InputError("The context is empty: paste a paragraph that contains the answer.")
        for name, value in ((first_name, text), (second_name, second)):
            if len(value) > self.max_chars:
                raise InputError(f"The {name} is {len(value):,} characters long; this page takes at most "
                                 f"{self.max_chars:,} (--max-chars).")
        if self.task == "token-classification" and second.strip():
            raise InputError("Token classification takes one sentence: leave the second field empty.")
        for served in self.models.values():
            if qa:  # the context is split into windows (doc stride); the question must fit in one with room to spare
                n = len(served.tokenizer(text)["input_ids"])
                limit, what = served.max_tokens // 2, "question"
            else:
                n = len(served.tokenizer(text, second if second.strip() else None)["input_ids"])
                limit, what = served.max_tokens, "text pair" if second.strip() else first_name
            if n > limit:
                raise InputError(f"The {what} is {n} tokens long; the {served.role} takes at most {limit} tokens.")

    def predict(self, text: str, second: str = "") -> dict[str, dict]:
        """Run one input through both models.

        Returns:
            `{"teacher": result, "student": result}`; each result holds `prediction` (a one-line summary: the label
            name and its probability, the entities, or the answer span and its score), `output` (the pipeline's own
            output; `answer_question`'s for question answering) and `latency_ms` (wall-clock time of the call:
            tokenization, forward, post-processing, in milliseconds, measured with `time.perf_counter`).

        Raises:
            InputError: an empty or over-long input (`check_input`).
        """
        self.check_input(text, second)
        results = {}
        for role, served in self.models.items():
            start = time.perf_counter()
            with torch.inference_mode():
                if self.task == "question-answering":
                    output = answer_question(served.model, served.tokenizer, text, second,
                                             max_tokens=served.max_tokens, stride=served.max_tokens // 4)
                elif self.task == "text-classification":
                    output = served.pipeline({"text": text, "text_pair": second} if second.strip() else text, top_k=None)
                else:
                    output = served.pipeline(text)
            latency_ms = (time.perf_counter() - start) * 1e3
            results[role] = {"prediction": self._summary(output), "output": output, "latency_ms": latency_ms}
        return results

    def _summary(self, output) -> str:
        if self.task == "text-classification":
            best = max(output, key=lambda o: o["score"])
            return f"{best['label']} ({best['score']:.3f})"
        if self.task == "question-answering":
            return f"{output['answer']} ({output['score']:.3f})"
        return ", ".join(f"{e['word']}: {e['entity_group']}" for e in output) or "(no entities)"

    # ------------------------------------------------------------------------------------------------------------

    def size_table(self) -> str:
        """A markdown table of both models' checkpoint sizes (MB = 10⁶ bytes) and how their encoders run."""
        rows = [("on disk (total)", "total"), ("packed 1-bit weights", "packed_weights"), ("weight scales", "scales"),
                ("embeddings", "embeddings"), ("other tensors", "other")]
        teacher, student = self.models["teacher"], self.models["student"]
        lines = ["| | teacher | student |", "|---|---:|---:|"]
        for title, key in rows:
            lines.append(f"| {title} (MB) | {teacher.size[key]:.3f} | {student.size[key]:.3f} |")
        ratio = teacher.size["total"] / student.size["total"]
        lines.append(f"| teacher / student size | | {ratio:.1f}× |")
        lines.append(f"| encoder runs on | {teacher.encoder} | {student.encoder} |")
        return "\n".join(lines)

    def page_outputs(self, text: str, second: str = "") -> tuple:
        """What the page's event handler returns: status, then per model (teacher, student) the prediction text,
        the details component's value and the latency text. A bad request gives a status message and empty outputs
        (never a traceback)."""
        try:
            results = self.predict(text, second)
        except InputError as err:
            return (f"⚠️ {err}", *[None, None, ""] * 2)
        except Exception as err:  # the page reports it instead of a traceback; the log keeps it
            logger.exception("request failed")
            return (f"⚠️ The models could not answer this input: {type(err).__name__}: {err}", *[None, None, ""] * 2)
        outputs = []
        for role in ROLES:
            result = results[role]
            outputs += [result["prediction"], self._details(result["output"], text, second),
                        f"{result['latency_ms']:.1f} ms"]
        return ("", *outputs)

    def _details(self, output, text, second):
        if self.task == "text-classification":
            return {o["label"]: float(o["score"]) for o in output}
        if self.task == "question-answering":
            return {"text": second, "entities": [{"entity": "answer", "start": output["start"], "end": output["end"]}]}
        return {"text": text, "entities": [{"entity": e["entity_group"], "start": e["start"], "end": e["end"]}
                                           for e in output]}


# ----------------------------------------------------------------------------------------------------------------
# The page


def offline_theme():
    """Gradio's default theme with system fonts only (no font files fetched from anywhere)."""
    import gradio as gr

    return gr.themes.Default(font=("ui-sans-serif", "system-ui", "sans-serif"),
                             font_mono=("ui-monospace", "Consolas", "monospace"))


def build_app(side: SideBySide):
    """The Gradio `Blocks` of the page (not launched). Element ids for scripts and tests: `text`, `second` (the
    inputs: sentence and second sentence, or question and context), `status`, and per role (`teacher`, `student`)
    `<role>-prediction`, `<role>-details`, `<role>-latency`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    qa = side.task == "question-answering"
    with gr.Blocks(title="hf_binary_bert: teacher vs binarized student", analytics_enabled=False) as app:
        gr.Markdown("## Teacher vs binarized student\n"
                    f"`{side.models['teacher'].path}` and `{side.models['student'].path}` ({side.task}). Both "
                    "answer as you type; latency is the wall-clock time of each model's call (tokenize, run, decode) on this "
                    "machine's CPU (one request at a time).")
        if qa:
            text = gr.Textbox(label="Question", elem_id="text", lines=1)
            second = gr.Textbox(label="Context", elem_id="second", lines=5)
        else:
            text = gr.Textbox(label="Sentence", elem_id="text", lines=2,
                              placeholder="Type a sentence…")
            second = gr.Textbox(label="Second sentence (pair tasks such as RTE or MRPC; leave empty otherwise)",
                                elem_id="second", lines=1,
                                visible=side.task == "text-classification")
        status = gr.Markdown(elem_id="status")
        outputs = [status]
        with gr.Row():
            for role in ROLES:
                with gr.Column():
                    gr.Markdown(f"### {role}")
                    with gr.Row():
                        prediction = gr.Textbox(label="answer" if qa else "prediction", elem_id=f"{role}-prediction",
                                                interactive=False, scale=3)
                        latency = gr.Textbox(label="latency", elem_id=f"{role}-latency",
                                             interactive=False, scale=1, min_width=120)
                    if side.task == "text-classification":
                        details = gr.Label(label="probabilities", elem_id=f"{role}-details")
                    else:
                        details = gr.HighlightedText(label="answer in the context" if qa else "entities",
                                                     elem_id=f"{role}-details")
                    outputs += [prediction, details, latency]
        gr.Markdown("### Model size (MB = 10⁶ bytes)\n" + side.size_table(), elem_id="sizes")
        # typing fires .change on every keystroke; "always_last" runs at most one pending request after the one in
        # flight (the latest text), which debounces the models to the speed they answer at
        for component in (text, second):
            component.change(side.page_outputs, [text, second], outputs, trigger_mode="always_last",
                             show_progress="hidden", concurrency_limit=1, api_visibility="private")
            component.submit(side.page_outputs, [text, second], outputs, trigger_mode="always_last",
                             show_progress="hidden", concurrency_limit=1, api_visibility="private")
    return app


def launch(side: SideBySide, *, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Build the page of `side` and start the local server: one request at a time (so latencies are not measured
    under each other's load), no share link, no server-side rendering, no MCP server, the offline theme.

    Returns:
        the launched `Blocks` (with `block=False`; `.local_url` is the page's address, `.close()` stops it).

    Raises:
        OSError: when the address cannot be bound (e.g. the port is taken).
    """
    app = build_app(side)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False, pwa=False,
               mcp_server=False, theme=offline_theme(), prevent_thread_lock=True, quiet=True,
               footer_links=["gradio", "settings"])  # no "Use via API": the page's endpoint is private
    print(f"* The page is at {app.local_url} (Ctrl+C stops the server)", flush=True)
    if block:
        app.block_thread()
    return app


def serve(teacher: str, student: str, *, host: str = "127.0.0.1", port: int | None = None,
          max_chars: int = DEFAULT_MAX_CHARS, block: bool = True):
    """Load both models (`SideBySide`), then `launch` the page.

    Raises:
        ValueError: naming `teacher` / `student` when a model cannot be loaded (before the server starts).
    """
    return launch(SideBySide(teacher, student, max_chars=max_chars), host=host, port=port, block=block)
