"""The model card `push_to_hub` writes: huggingface_hub's `ModelCard` / `ModelCardData` filled from the model's
config and saved checkpoint (template: `model_card_template.md`).

Metadata: base model (the teacher), tags, pipeline tag, license, datasets and the task metrics as `model-index`
evaluation results (`huggingface_hub.EvalResult`). Body: the binarization settings, the size of each checkpoint
component against a float32 BERT of the same shape, metrics and latency where measured, the training run (its
hyperparameters, datasets, steps and final losses), for a pruned model its sparsity (heads kept, FFN width and share
of the encoder Linears' weights kept, per layer: `pruning.report.config_sparsity_report`) and how to load the model
with and without this package.

The training run is recorded while it happens, as setfit fills its card: `ModelCardCallback` (which
`DistillationTrainer` adds) fills a `TrainingRecord` on the model, `save_pretrained` writes it next to the weights
(`training_record.json`) and the card reads it from the model or from that file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import TrainerCallback

from .format import COMPONENTS, checkpoint_size_report, component_of
from .layer_sizes import is_pruned

TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")
_HEADS = {  # model class -> (Auto class, pipeline tag)
    "BinaryBertModel": ("AutoModel", "feature-extraction"),
    "BinaryBertForMaskedLM": ("AutoModelForMaskedLM", "fill-mask"),
    "BinaryBertForSequenceClassification": ("AutoModelForSequenceClassification", "text-classification"),
    "BinaryBertForQuestionAnswering": ("AutoModelForQuestionAnswering", "question-answering"),
    "BinaryBertForTokenClassification": ("AutoModelForTokenClassification", "token-classification"),
    "BinaryBertForMultipleChoice": ("AutoModelForMultipleChoice", "multiple-choice"),
}
# Pipeline tags transformers 5 has a `pipeline()` for; the card shows the one-line pipeline example only for these.
_TRANSFORMERS_PIPELINES = ("fill-mask", "text-classification", "token-classification")
_COMPONENT_LABELS = {"packed_weights": "binarized weights", "scales": "scales α (and offsets γ)",
                     "embeddings": "embeddings (full precision)", "other": "other (LayerNorm, biases, heads)"}
_WEIGHT_SCHEMES = {
    "mean_abs": "W ≈ α·sign(W), α = mean|W| recomputed at every step (XNOR-Net, Rastegari et al. 2016)",
    "learned": "W ≈ α·sign(W), α learned, initialised to mean|W|",
    "learned_offset": "W ≈ α·sign(W − γ) + γ, α and γ learned, initialised to γ₀ = mean W, α₀ = mean|W − γ₀|",
}
_GRANULARITY = {"tensor": "one α per weight matrix", "row": "one α per output row (BiBERT)",
                "head": "one α per attention head on query/key/value, one per matrix elsewhere"}
_STES = {"clipped_identity": "clipped identity (Courbariaux et al. 2016)", "approx_sign": "ApproxSign (Bi-Real Net)"}
# metric name as `evaluate_model` reports it -> (model-index metric type, display name)
_METRICS = {"accuracy": ("accuracy", "Accuracy"), "f1": ("f1", "F1"), "exact_match": ("exact_match", "Exact match"),
            "matthews_correlation": ("matthews_correlation", "Matthews correlation"),
            "pearson": ("pearsonr", "Pearson r"), "spearmanr": ("spearmanr", "Spearman ρ"),
            "mrr": ("mrr", "Mean reciprocal rank"), "perplexity": ("perplexity", "Perplexity"),
            "cross_entropy": ("cross_entropy", "Cross-entropy (nats)")}


@dataclass
class TrainingRecord:
    """What the training run of a model was, for its card: `hyperparameters` (transformers'
    `extract_hyperparameters_from_trainer` plus the distillation loss weights), `datasets` (names of the training
    data), `steps` (optimizer steps done), `epochs` and `final_losses` (the last logged value of `loss`, of each
    distillation component `loss_<name>` and the run's mean `train_loss`)."""

    hyperparameters: dict = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    steps: int = 0
    epochs: float | None = None
    final_losses: dict[str, float] = field(default_factory=dict)

    FILE_NAME = "training_record.json"

    def save(self, folder: str | os.PathLike) -> None:
        Path(folder, self.FILE_NAME).write_text(json.dumps(asdict(self), indent=1, default=str))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TrainingRecord | None:
        """The record saved in `folder`, or None when there is none."""
        path = Path(folder, cls.FILE_NAME)
        return cls(**json.loads(path.read_text())) if path.is_file() else None


class ModelCardCallback(TrainerCallback):
    """Fills the `TrainingRecord` of the trained model during training (`model.training_record`).

    Args:
        trainer: the `Trainer` it is added to (its hyperparameters and training data are read at the start).
        datasets: names of the training data (default: the training dataset's own name, when it has one).
    """

    def __init__(self, trainer, datasets: list[str] | None = None):
        self.trainer = trainer
        self.datasets = datasets
        self.record = TrainingRecord()

    def on_train_begin(self, args, state, control, **kwargs):
        from transformers.modelcard import extract_hyperparameters_from_trainer

        hyperparameters = extract_hyperparameters_from_trainer(self.trainer)
        if hasattr(args, "loss_weights"):  # DistillationTrainingArguments
            hyperparameters.update({f"{name}_loss_weight": w for name, w in args.loss_weights().items()})
            hyperparameters.update(temperature=args.temperature, two_stage=args.two_stage)
        datasets = self.datasets
        if datasets is None:
            name = getattr(getattr(self.trainer.train_dataset, "info", None), "dataset_name", None)
            datasets = [name] if name and name not in ("csv", "json", "text", "generator") else []
        self.record = TrainingRecord(hyperparameters=hyperparameters, datasets=list(datasets))
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        model.training_record = self.record

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if key in ("loss", "train_loss") or key.startswith("loss_"):
                self.record.final_losses[key] = value

    def on_train_end(self, args, state, control, **kwargs):
        self.record.steps, self.record.epochs = state.global_step, state.epoch


def _training_rows(record: TrainingRecord | None) -> dict | None:
    if record is None:
        return None
    return {"hyperparameters": [(k, _number(v) if isinstance(v, float) else v)
                                for k, v in record.hyperparameters.items()],
            "datasets": record.datasets, "steps": record.steps,
            "epochs": _number(record.epochs, 2) if record.epochs is not None else None,
            "losses": [(k, _number(v, 4)) for k, v in record.final_losses.items()]}


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` can be a Hub repository id (and is not a local path)."""
    if not name or os.path.exists(name):
        return False
    try:
        validate_repo_id(str(name))
    except HFValidationError:
        return False
    return True


def float32_size_report(model) -> dict[str, float]:
    """Tensor bytes, in MB (10⁶ bytes), of a float32 BERT with `model`'s architecture (its `_teacher_class` built on
    the meta device from `config.to_bert_config()`), split like `size.checkpoint_size_report`: the weights `model`
    binarizes count under `"packed_weights"`, the rest by `size.component_of`; plus `"total"`."""
    with torch.device("meta"):
        bert = model._teacher_class(model.config.to_bert_config())
    tied = set(getattr(bert, "all_tied_weights_keys", None) or {})
    binarized = set(model.binary_modules())
    sizes = dict.fromkeys(COMPONENTS, 0)
    for key, tensor in bert.state_dict().items():
        if key in tied:
            continue
        module, _, leaf = key.rpartition(".")
        part = "packed_weights" if module in binarized and leaf == "weight" else component_of(key)
        sizes[part] += tensor.numel() * 4
    report = {k: v / 1e6 for k, v in sizes.items()}
    report["total"] = sum(sizes.values()) / 1e6
    return report


def eval_results_for_task(task: str, metrics: dict[str, float], dataset: dict | None = None) -> list[EvalResult]:
    """`model-index` results for `metrics` (`{name: value}` as `recipes.evaluate_model` reports them) on `task`.

    Args:
        task: a GLUE task name (`"sst2"`, `"RTE"`, …; dataset `nyu-mll/glue`, validation split), `"squad"`
            (dataset `rajpurkar/squad`, no split unless `dataset` names it) or `"mlm"`.
        dataset: `{"type": Hub id, "name": display name, "config": ..., "split": ...}`; required for `"mlm"`
            (whose evaluation text is the caller's), optional override otherwise.

    Returns:
        One `EvalResult` per known metric (unknown names are skipped); [] for `"mlm"` without `dataset`.

    Raises:
        ValueError: for a task that is neither `"mlm"`, `"squad"` nor a GLUE task.
    """
    if task == "mlm":
        if dataset is None:
            return []
        task_type, task_name = "fill-mask", "Masked language modeling"
    elif task == "squad":  # EM / F1 in percent; the split is the caller's (e.g. a part of the dev set)
        task_type, task_name = "question-answering", "Extractive question answering"
        dataset = {"type": "rajpurkar/squad", "name": "SQuAD v1.1", **(dataset or {})}
    else:
        from .data import get_glue_task

        glue = get_glue_task(task)
        task_type, task_name = "text-classification", f"GLUE {glue.name.upper()}"
        split = "validation_matched" if glue.name == "mnli" else "validation"
        dataset = {"type": "nyu-mll/glue", "name": f"GLUE {glue.name.upper()}", "config": glue.hub_config,
                   "split": split, **(dataset or {})}
    return [
        EvalResult(task_type=task_type, task_name=task_name, dataset_type=dataset["type"],
                   dataset_name=dataset.get("name", dataset["type"]), dataset_config=dataset.get("config"),
                   dataset_split=dataset.get("split"), metric_type=_METRICS[name][0], metric_name=_METRICS[name][1],
                   metric_value=round(float(value), 4))
        for name, value in metrics.items() if name in _METRICS
    ]


def _settings(config) -> list[tuple[str, str]]:
    a, e = config.activation_bits, config.embedding_bits
    if a == 32:
        activations = "32-bit float (W1A32)"
    else:
        kind = "elastic (BiT)" if config.activation_quantizer == "elastic" else (
            "sign (BiBERT)" if a == 1 else "uniform, learned step (LSQ)")
        activations = f"{a} bit, {kind}"
        shift_dtype = getattr(config, "activation_shift_dtype", "float32")
        if config.activation_quantizer == "elastic" and shift_dtype != "float32":
            activations += f", shifts in {shift_dtype}"
    if e == 1:
        scheme = getattr(config, "embedding_weight_scale", None) or config.weight_scale
        per_row = "one α and γ per row" if scheme == "learned_offset" else "one α per row, no offset"
        embeddings = f"1 bit per value, {per_row}: {', '.join(config.binarized_embeddings)} table(s)"
    else:
        embeddings = "float16" if e == 16 else f"full precision ({config.fp_dtype})"
    attention = ("Bi-Attention: boolean weights, no softmax (BiBERT)" if config.attention_type == "bi_attention"
                 else "softmax" + (f", probabilities quantized to {a} bit" if a < 32 else ""))
    return [
        ("bits (W-E-A)", f"1-{e if e < 32 else 32}-{a}"),
        ("weights", f"1 bit: {_WEIGHT_SCHEMES[config.weight_scale]}"),
        ("scale granularity", _GRANULARITY[config.scale_granularity]),
        ("binarized layers", ", ".join(f"`{m}`" for m in config.binarized_modules)),
        ("activations", activations),
        ("attention", attention),
        ("embeddings", embeddings),
        ("straight-through estimator", _STES[config.ste]),
        ("full-precision tensors stored as", config.fp_dtype),
    ]


def _methods(config) -> list[str]:
    """The sources of what this config does (the training losses are not recorded in it, so not named)."""
    a = config.activation_bits
    lines = ["1-bit weights W ≈ α·B + γ trained through a straight-through estimator (scale α: XNOR-Net, Rastegari "
             "et al. 2016; learned offset γ: the hf_binary_bert blog series)"]
    if a < 32 and config.activation_quantizer == "elastic":
        lines.append("elastic activation binarization (BiT, Liu et al., NeurIPS 2022)")
    elif a == 1:
        lines.append("sign activation binarization (BiBERT, Qin et al., ICLR 2022)")
    elif a < 32:
        lines.append("learned step size activation quantization (LSQ, Esser et al., ICLR 2020)")
    if config.attention_type == "bi_attention":
        lines.append("Bi-Attention: boolean attention weights (BiBERT, Qin et al., ICLR 2022)")
    if config.embedding_bits == 1:
        lines.append("1-bit embeddings (BiBERT, Qin et al., ICLR 2022)")
    if is_pruned(config):
        lines.append("block-structured pruning: group lasso on blocks of the weight matrices, thresholded, zero heads, "
                     "query/key dimensions and FFN neurons removed (Li et al., Findings of EMNLP 2020; "
                     "knowledge-guided, after Jha et al.)")
    return lines


def _pruning_rows(config) -> dict | None:
    """The card's sparsity section from the config's per-layer sizes; None for an unpruned model."""
    from .pruning.report import config_sparsity_report  # lazy: the pruning package imports the trainers

    rows = config_sparsity_report(config)
    if rows is None:
        return None
    layers = len(rows)
    heads = sum(round(r["heads_kept"] * config.num_attention_heads) for r in rows)
    neurons = sum(round(r["ffn_kept"] * config.intermediate_size) for r in rows)
    return {"layers": [{"layer": r["layer"], "heads": r["heads"], "query_key_head_size": r["query_key_head_size"],
                        "ffn_width": r["ffn_width"],
                        "weights_kept": f"{100 * r['weights_kept']:.1f} %"} for r in rows],
            "heads": f"{heads}/{layers * config.num_attention_heads}",
            "neurons": f"{neurons}/{layers * config.intermediate_size}",
            "weights_kept": f"{100 * sum(r['weights_kept'] for r in rows) / layers:.1f} %"}


def _number(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def create_model_card(
    model,
    checkpoint_dir: str | os.PathLike,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    task: str | None = None,
    metrics: dict[str, float] | None = None,
    teacher_metrics: dict[str, float] | None = None,
    dataset: dict | None = None,
    latency_ms: dict[int, float] | None = None,
    teacher_latency_ms: dict[int, float] | None = None,
    latency_note: str | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    training: TrainingRecord | None = None,
) -> ModelCard:
    """The model card of `model`, saved (packed) in `checkpoint_dir`.

    Args:
        model: the `BinaryBertPreTrainedModel` that was saved.
        checkpoint_dir: its saved folder; the size table reads its safetensors header(s).
        repo_id: the Hub repository (used in the loading examples and as model name).
        base_model: Hub id of the teacher (default: `config.teacher_name_or_path` when it is a Hub id; a local
            path is named in the text only, since `base_model` metadata must be a Hub id).
        task: what `metrics` were measured on (`"sst2"`, …, or `"mlm"`), for the `model-index` results.
        metrics / teacher_metrics: `{metric name: value}` as `recipes.evaluate_model` reports them.
        dataset: the evaluation dataset for `eval_results_for_task` (needed for `"mlm"`).
        latency_ms / teacher_latency_ms: `{batch size: median ms}`; `latency_note`: where they were measured.
        license: an SPDX-like Hub license id (e.g. `"apache-2.0"`).
        tags: extra tags.
        training: the training run (default: `model.training_record`, else `training_record.json` in
            `checkpoint_dir`); its datasets join the card's `datasets` metadata.

    Returns:
        A `huggingface_hub.ModelCard` (`.save(path)`, `.push_to_hub(repo_id)`).

    Raises:
        ValueError: `metrics` without `task`, or an unknown `task`.
    """
    config = model.config
    if metrics and task is None:
        raise ValueError("create_model_card(metrics=...) needs task= (what the metrics were measured on)")
    auto_class, pipeline_tag = _HEADS.get(type(model).__name__, ("AutoModel", None))
    teacher = base_model or config.teacher_name_or_path
    hub_teacher = teacher if is_hub_id(teacher) else None
    if hub_teacher:
        base_line = f"[{hub_teacher}](https://huggingface.co/{hub_teacher})"
    else:
        base_line = f"the full-precision BERT `{os.path.basename(os.path.normpath(teacher))}`" if teacher else None
    eval_results = eval_results_for_task(task, metrics, dataset) if metrics else []
    if training is None:
        training = getattr(model, "training_record", None) or TrainingRecord.load(checkpoint_dir)
    name = repo_id.split("/")[-1] if repo_id else os.path.basename(os.path.normpath(checkpoint_dir))
    card_data = ModelCardData(
        base_model=hub_teacher,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        datasets=sorted({r.dataset_type for r in eval_results} | set(training.datasets if training else ())) or None,
        tags=list(dict.fromkeys(["hf_binary_bert", "binary_bert", "bert", "binarized", "1-bit",
                                 f"w1a{config.activation_bits}", *(["pruned"] if is_pruned(config) else []),
                                 *(tags or [])])),
        model_name=name,
        eval_results=eval_results or None,
    )
    student = checkpoint_size_report(checkpoint_dir)
    fp32 = float32_size_report(model)
    sizes = []
    for part in (*COMPONENTS, "total"):
        model_mb = sum(student[p] for p in COMPONENTS) if part == "total" else student[part]
        ratio = f"{fp32[part] / model_mb:.1f}×" if model_mb and fp32[part] else "—"
        sizes.append({"component": _COMPONENT_LABELS.get(part, "**total**"), "model": _number(model_mb, 3),
                      "teacher": _number(fp32[part], 3), "ratio": ratio})
    eval_rows = [{"task": {"mlm": "masked LM", "squad": "SQuAD v1.1"}.get(task, task.upper()), "metric": _METRICS[k][1],
                  "value": _number(v), "teacher": _number((teacher_metrics or {}).get(k))}
                 for k, v in (metrics or {}).items() if k in _METRICS]
    latency_rows = [{"batch": b, "model": _number(ms, 1), "teacher": _number((teacher_latency_ms or {}).get(b), 1),
                     "speedup": f"{teacher_latency_ms[b] / ms:.2f}×" if (teacher_latency_ms or {}).get(b) else "—"}
                    for b, ms in sorted((latency_ms or {}).items())]
    a, e = config.activation_bits, config.embedding_bits
    pruning = _pruning_rows(config)
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=name,
        scheme=f"W1A{a}" + (", 1-bit embeddings" if e == 1 else ""),
        base_model=base_line,
        settings=_settings(config),
        sizes=sizes,
        eval_rows=eval_rows,
        has_teacher_metrics=bool(teacher_metrics),
        latency_rows=latency_rows,
        has_teacher_latency=bool(teacher_latency_ms),
        latency_note=latency_note,
        auto_class=auto_class,
        repo_id=repo_id or name,
        # the Hub's tag in the card metadata, but no transformers 5 pipeline ("question-answering" was removed in 5.0)
        pipeline_tag=pipeline_tag if pipeline_tag in _TRANSFORMERS_PIPELINES else None,
        methods=_methods(config),
        training=_training_rows(training),
        pruning=pruning,
    )


__all__ = ["ModelCardCallback", "TrainingRecord", "create_model_card", "eval_results_for_task", "float32_size_report",
           "is_hub_id"]
