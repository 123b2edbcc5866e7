"""`DistillationTrainer`: the transformers `Trainer` with a frozen teacher and distillation losses."""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from transformers import PreTrainedModel, Trainer

from ..attention import attention_kl_in_layers, record_softmax
from ..binarization.activation import ActivationQuantizer
from ..binarization.linear import BinarizedWeightMixin
from ..binarization.ste import round_ste
from ..binarization.swap import binarized_target
from ..format import stored_dtypes
from .arguments import DistillationTrainingArguments
from .losses import (
    attention_distillation_loss,
    attention_layer_map,
    direction_matching_loss,
    hidden_state_cosine,
    hidden_state_mse,
    layer_map,
    mean_over_rows_and_layers,
    prediction_distillation_loss,
    span_distillation_loss,
)

logger = logging.getLogger(__name__)
# Batch keys that are targets, not model inputs: the teacher never sees them, the student only for the task loss.
_TARGET_KEYS = ("labels", "start_positions", "end_positions")


@contextlib.contextmanager
def capture_qkv(model: torch.nn.Module, targets=("query", "key", "value")):
    """Record the outputs of every layer's query/key/value Linear (before any activation quantization) while the
    context is open: yields `{"query": [[B, T, D] per layer], "key": [...], "value": [...]}`, filled by forward
    hooks on the modules `encoder.layer.N.attention.self.{query,key,value}` of transformers' BERT (full-precision
    or binarized)."""
    result: dict[str, list[torch.Tensor]] = {t: [] for t in targets}
    if not targets:  # nothing to record: no module walk on the training hot path
        yield result
        return
    captured: dict[str, dict[str, torch.Tensor]] = {t: {} for t in targets}
    handles = []
    for name, module in model.named_modules():
        target = binarized_target(name)
        if target in captured:
            def hook(mod, args, output, _name=name, _target=target):
                captured[_target][_name] = output
            handles.append(module.register_forward_hook(hook))
    try:
        yield result
    finally:
        for handle in handles:
            handle.remove()
    for t in targets:  # layer order = module registration order
        result[t].extend(captured[t].values())


@contextlib.contextmanager
def capture_pooled(model: torch.nn.Module, enabled: bool = True):
    """Record the pooled `[CLS]` state ([B, D], the output of `model.<base model>.pooler`: tanh(W·h_[CLS] + b)) while
    the context is open: yields a dict whose `"pooled"` entry is set by a forward hook (absent when the model ran no
    pooler).

    Raises:
        ValueError: when `enabled` and the model has no pooler (e.g. a masked-LM or question-answering head, or
            `add_pooling_layer=False`).
    """
    result: dict[str, torch.Tensor] = {}
    if not enabled:
        yield result
        return
    pooler = getattr(getattr(model, "base_model", model), "pooler", None)
    if pooler is None:
        raise ValueError(f"pooled_loss_weight > 0 needs a model with a pooler; {type(model).__name__} has none")

    def hook(module, args, output):
        result["pooled"] = output

    handle = pooler.register_forward_hook(hook)
    try:
        yield result
    finally:
        handle.remove()


def quantizer_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters of the model's activation quantizers (`ActivationQuantizer`: the step /
    scale α and the elastic shift β; BiT's `clip_` parameters). These get `quantizer_learning_rate`."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, ActivationQuantizer):
            prefix = f"{module_name}." if module_name else ""
            names.extend(prefix + n for n, p in module.named_parameters(recurse=False) if p.requires_grad)
    return names


def head_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the task head's trainable parameters: the base model's pooler and every module outside the base
    model (`classifier`, `qa_outputs`, `cls.predictions.transform`, …), except parameters tied to the base model
    (a masked-LM decoder shares the word embeddings). These get `head_learning_rate`."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, "base_model", None)
    base_ids = {id(p) for n, p in base.named_parameters() if not n.startswith("pooler.")} if base is not None else set()
    names = []
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in base_ids:
            continue
        if not name.startswith(f"{prefix}.") or name.startswith(f"{prefix}.pooler."):
            names.append(name)
    return names


def is_regression_model(model: torch.nn.Module | None) -> bool:
    """Whether `model` predicts one score per example, as transformers decides it for its sequence-classification
    heads: `config.problem_type == "regression"`, or no problem type and `num_labels == 1`."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    problem_type = getattr(config, "problem_type", None)
    return problem_type == "regression" or (problem_type is None and getattr(config, "num_labels", None) == 1)


def binarized_attention_probabilities(model: torch.nn.Module | None) -> bool:
    """Whether `model`'s attention probabilities are 1-bit: Bi-Attention, or softmax attention with 1-bit activations
    (BiT's {0, α} probabilities)."""
    config = getattr(model, "config", None)
    return getattr(config, "attention_type", None) == "bi_attention" or getattr(config, "activation_bits", 32) == 1


def _heads_per_layer(model: torch.nn.Module | None) -> tuple | None:
    """Attention heads of each encoder layer (a pruned BERT's `layer_num_attention_heads`), or None without a config."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        return None
    heads = getattr(config, "layer_num_attention_heads", None)
    return tuple(heads) if heads else (config.num_attention_heads,) * config.num_hidden_layers


def heads_per_layer(model: torch.nn.Module) -> list[int]:
    """Attention heads of each encoder layer of `model` (a pruned config's `layer_num_attention_heads`, else
    `num_attention_heads` in every layer)."""
    config = model.config
    return list(getattr(config, "layer_num_attention_heads", None)
                or [config.num_attention_heads] * config.num_hidden_layers)


def check_head_losses(student: torch.nn.Module, teacher: torch.nn.Module, args) -> None:
    """The attention loss (per head of [B, H, T, T] probabilities) and DMD (per head of Q / K / V) compare each
    student layer's heads with those of its teacher layer (`losses.layer_map`) one to one; a student with other
    heads per layer than its teacher (e.g. binarized from a pruned copy of it, `recipes.distill(student_init=…)`)
    can use the other losses only.

    Raises:
        ValueError: naming the loss weight that is on and the first layer whose heads differ.
    """
    on = [name for name in ("attention_loss_weight", "dmd_loss_weight") if getattr(args, name, 0)]
    if not on:
        return
    mine, theirs = heads_per_layer(student), heads_per_layer(teacher)
    mapping = layer_map(len(mine) + 1, len(theirs) + 1)[1:]
    for i, heads in enumerate(mine):
        if heads != theirs[mapping[i] - 1]:
            raise ValueError(f"{' and '.join(on)} > 0 compare attention heads one to one, but student layer {i} has "
                             f"{heads} heads and its teacher layer {mapping[i] - 1} has {theirs[mapping[i] - 1]}: "
                             "set them to 0 for a student with other heads than its teacher")


def default_attention_loss_weight(student: torch.nn.Module | None, teacher: torch.nn.Module | None = None) -> float:
    """`attention_loss_weight` when it is not given (None): 1.0 for a regression student whose attention
    probabilities are not 1-bit (and, when `teacher` is given, whose layers have the teacher's numbers of heads,
    so that the maps compare), 0.0 otherwise.

    Measured on STS-B with a binarized MiniLM (issue 16; docs/distillation.md, "Attention distillation on STS-B"):
    a W1A4 student taught by the prediction MSE and the hidden states only kept its scores near their mean for
    hundreds of steps of 16 pairs (Pearson 0.38 at step 500); with the attention KL (MiniLM, Wang et al. 2020) it
    reached 0.68 (0.81 × the teacher). A scalar regression target gives the student one number per example; the
    attention distributions give it the teacher's routing of every token, which is where a fine-tuned BERT builds
    the `[CLS]` state the regression head reads. Not for 1-bit probabilities, where it was measured without a gain
    worth its memory: on the quantized maps the KL's log of their zero entries is clamped, so no gradient reaches
    the keys the student ignores (a 3-stage run's W1A1 stage: Pearson 0.31); on the softmax before the quantizer
    (`attention_distribution="softmax"`) the student's attention matches the teacher's entropy, yet a W1A1 student
    scored 0.27 with it and 0.29 without (600 steps), and the 3-stage run's W1A1 stage 0.34 (docs/distillation.md,
    "The attention loss and 1-bit probabilities").
    """
    if not is_regression_model(student) or binarized_attention_probabilities(student):
        return 0.0
    if teacher is None:
        return 1.0
    student_heads, teacher_heads = _heads_per_layer(student), _heads_per_layer(teacher)
    if student_heads is None or teacher_heads is None:
        return 0.0
    # layer by layer, or one head count throughout when the depths differ (the loss maps layers uniformly)
    same = student_heads == teacher_heads or set(student_heads) == set(teacher_heads) == {student_heads[0]}
    return 1.0 if same else 0.0  # otherwise the attention maps of mapped layers would not line up


def default_attention_distribution(student: torch.nn.Module | None) -> str:
    """`attention_distribution` when it is not given (None): `"softmax"` for a student whose attention probabilities
    are 1-bit (BiT's binarized softmax), else `"quantized"` (Bi-Attention has no softmax: its boolean maps are
    compared either way).

    Measured on STS-B (issue 16; docs/distillation.md, "The attention loss and 1-bit probabilities"): BiT's 1-bit
    probabilities {0, α} are zero on most keys and the KL's log of a zero is clamped, so the KL of the quantized maps
    gives the query and key projections no gradient through the keys the student ignores; the KL of the softmax
    before the quantizer has one everywhere. A W1A4 student (16 probability levels) scored higher with the quantized
    maps, the ones its forward uses.
    """
    config = getattr(student, "config", None)
    bi_attention = getattr(config, "attention_type", None) == "bi_attention"
    return "softmax" if getattr(config, "activation_bits", 32) == 1 and not bi_attention else "quantized"


def _recorded_or(recorded: list | None, maps: tuple | None):
    """The maps `record_softmax` recorded when it recorded one per layer (`maps`: the model's returned attentions;
    None when the forward was not asked for them, see `_records_every_layer`), else `maps` (no recording, or a model
    without quantized softmax attention)."""
    if maps is None:
        if not recorded:
            raise ValueError("the attention loss found no attention maps: the forward recorded no softmax and "
                             "returned no attentions")
        return recorded
    return recorded if recorded and len(recorded) == len(maps) else maps


def _records_every_layer(model: torch.nn.Module) -> bool:
    """Whether `record_softmax` records one map per layer of `model` in a training forward: a quantized softmax
    (`probs_quantizer`) in each of its `config.num_hidden_layers` attention layers. Such a student's forward need not
    return its attention maps (`output_attentions`) for an attention loss on the recorded softmax: the quantized
    maps it would return (one [B, H, T, T] float tensor per layer) are then never made to outlive the forward."""
    layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    return layers is not None and sum(hasattr(m, "probs_quantizer") for m in model.modules()) == layers


class DistillationTrainer(Trainer):
    """Trains a student (typically a `BinaryBert*` model) to match a frozen full-precision teacher.

    The teacher is put in eval mode with `requires_grad_(False)`, placed on the device by accelerate without a
    DDP/FSDP wrapper (`prepare_model(..., evaluation_mode=True)`) and run under `torch.no_grad()` (optionally in bf16
    autocast). The loss and its weights are described in `DistillationTrainingArguments`; each component is logged
    separately as `loss_<component>` (mean over the logging interval and over processes). A question-answering
    student (`start_logits` / `end_logits`) distils its start and end distributions over the tokens
    (`losses.span_distillation_loss`); the span targets (`start_positions`, `end_positions`), like `labels`, reach
    the student only for the task loss and never the teacher.

    Saving: checkpoints written during training keep the latent float weights (so `resume_from_checkpoint` works);
    `trainer.save_model()` called by the user writes the packed checkpoint of a binarized student.

    Args:
        teacher_model: the full-precision teacher, with the same tokenizer/vocabulary as the student and
            `attn_implementation="eager"` when `attention_loss_weight > 0` (set here if it is not).
        args: `DistillationTrainingArguments`; an `attention_loss_weight` of None is set here, in `args`, to
            `default_attention_loss_weight(model, teacher_model)`, an `attention_distribution` of None to
            `default_attention_distribution(model)`.
        model_card_datasets: names of the training data for the student's model card (`ModelCardCallback`,
            which records the run's hyperparameters, steps and final losses on the student).
        original_teacher_model: optional, the full-precision model at the start of a multi-step schedule when
            `teacher_model` is an earlier stage's student: each training step also runs it (under `no_grad`, logits
            only) on every `args.original_teacher_every`-th optimizer step and logs the student's prediction loss
            against it as `loss_prediction_original` (the mean over those steps), outside the loss.
        **kwargs: as `transformers.Trainer` (`model` is the student).

    Raises:
        ValueError: without a teacher, with `args` that are not `DistillationTrainingArguments`, or with an attention
            or DMD loss between models whose heads differ (`check_head_losses`).
    """

    # compute_loss returns a per-micro-batch mean: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, teacher_model: PreTrainedModel | None = None, args: DistillationTrainingArguments | None = None,
                 model_card_datasets: list[str] | None = None, original_teacher_model: PreTrainedModel | None = None,
                 **kwargs):
        if teacher_model is None:
            raise ValueError("DistillationTrainer needs a teacher_model")
        if not isinstance(args, DistillationTrainingArguments):
            raise ValueError(f"args must be DistillationTrainingArguments, got {type(args).__name__}")
        student = kwargs.get("model")
        if args.attention_loss_weight is None:
            args.attention_loss_weight = default_attention_loss_weight(student, teacher_model)
            if args.attention_loss_weight:
                logger.info("regression student: attention distillation (%s) on by default, weight %g "
                            "(DistillationArguments.attention_loss_weight)",
                            args.attention_loss, args.attention_loss_weight)
        if args.attention_distribution is None:
            args.attention_distribution = default_attention_distribution(student)
        if student is not None:
            check_head_losses(student, teacher_model, args)
        if args.attention_loss_weight > 0:
            for role, model in (("teacher", teacher_model), ("student", student)):
                if model is not None and model.config._attn_implementation != "eager":
                    logger.info("attention distillation: switching the %s to eager attention", role)
                    model.set_attn_implementation("eager")
        super().__init__(args=args, **kwargs)
        teacher_model.eval().requires_grad_(False)
        self.teacher = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        self.original_teacher = None
        if original_teacher_model is not None and original_teacher_model is not teacher_model:
            original_teacher_model.eval().requires_grad_(False)
            self.original_teacher = self.accelerator.prepare_model(original_teacher_model, evaluation_mode=True)
        # detached running sums per component; read (one device sync) only when logging
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}
        self._export_packed = False
        from ..model_card import ModelCardCallback  # the student's card records this run (hyperparameters, losses)

        self.add_callback(ModelCardCallback(self, datasets=model_card_datasets))

    # --------------------------------------------------------------------------------------------------------------
    def _teacher_context(self):
        if self.args.teacher_bf16:
            return torch.autocast(device_type=self.args.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward_as_saved(self, model):
        """The forward of the student or teacher `model`: `model` itself, or, with `train_in_fp_dtype`, `model` run
        (`torch.func.functional_call`) with each parameter of `format.stored_dtypes` rounded to the dtype it is
        saved in (`round_ste`: forward value exactly the saved one, gradient straight through to the float32
        parameter). A full-precision teacher has no such parameters and runs as it is; a binarized one (an earlier
        multi-step stage) runs as its saved file does. Why (docs/distillation.md): rounding a trained SST-2
        W1A1 student's float32 LayerNorms, biases and tables to float16 only when saving changed 82 of 872 dev
        labels."""
        if not self.args.train_in_fp_dtype:
            return model
        unwrapped = self.accelerator.unwrap_model(model)
        dtypes = stored_dtypes(unwrapped)
        if not dtypes:
            return model
        parameters = dict(unwrapped.named_parameters())
        by_id = {id(parameters[name]): dtype for name, dtype in dtypes.items()}

        def forward(**kwargs):
            rounded = {name: round_ste(p, by_id[id(p)]) for name, p in model.named_parameters() if id(p) in by_id}
            return torch.func.functional_call(model, rounded, args=(), kwargs=kwargs)

        return forward

    def _set_ramps(self, model, *, done: bool = False) -> None:
        """λ = min(1, step / (ratio·max_steps)) (1 when `done`) on every binarized weight (`binarization_ramp_ratio`,
        `BinarizedWeightMixin.binarization_mix`) and activation quantizer (`activation_ramp_ratio`,
        `ActivationQuantizer.quantization_mix`) of the student, for each ramp that is on."""
        step, total = self.state.global_step, self.state.max_steps
        for kind, attr, ratio in ((BinarizedWeightMixin, "binarization_mix", self.args.binarization_ramp_ratio),
                                  (ActivationQuantizer, "quantization_mix", self.args.activation_ramp_ratio)):
            if not ratio:
                continue
            lam = 1.0 if done or not total else min(1.0, step / (ratio * total))
            for module in model.modules():
                if isinstance(module, kind):
                    setattr(module, attr, lam)

    def train(self, *args, **kwargs):
        """`Trainer.train`; afterwards every ramped λ is back at 1 (`binarization_ramp_ratio`,
        `activation_ramp_ratio`), so a later training forward (another stage, another trainer) does not inherit a
        blend."""
        try:
            return super().train(*args, **kwargs)
        finally:
            self._set_ramps(self.accelerator.unwrap_model(self.model), done=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        if model.training:
            self._set_ramps(self.accelerator.unwrap_model(model))
            weights = args.loss_weights(self.state.global_step, self.state.max_steps)
        else:
            weights = args.loss_weights()
        need = {}
        if "hidden" in weights or "cosine" in weights:
            need["output_hidden_states"] = True
        if "attention" in weights:
            need["output_attentions"] = True
        pooled = "pooled" in weights
        labels = inputs.get("labels")
        # the targets (classification labels, question-answering spans) go to the student only with the task loss
        features = {k: v for k, v in inputs.items() if k not in _TARGET_KEYS}

        dmd_targets = tuple(args.dmd_targets) if "dmd" in weights else ()
        unwrapped = self.accelerator.unwrap_model(model)
        unwrapped_teacher = self.accelerator.unwrap_model(self.teacher)
        # The teacher first: its forward's temporaries come and go before the student's autograd graph is built,
        # instead of on top of it (only its outputs stay, which the losses read).
        softmax = "attention" in weights and args.attention_distribution == "softmax"
        with (torch.no_grad(), self._teacher_context(), capture_qkv(unwrapped_teacher, dmd_targets) as teacher_qkv,
              capture_pooled(unwrapped_teacher, pooled) as teacher_pooled,
              record_softmax(unwrapped_teacher) if softmax else contextlib.nullcontext() as teacher_softmax):
            teacher_out = self._forward_as_saved(self.teacher)(**features, **need)
        student_need = dict(need)
        if softmax and unwrapped.training and _records_every_layer(unwrapped):
            # the recorded softmax is the student's map: its quantized maps need not be returned. Training mode only:
            # an eval forward without autograd may run on the native runtime, which records nothing.
            student_need.pop("output_attentions", None)
        # the KL of the quantized maps computed inside each attention layer (`attention_kl_in_layers`): the maps are
        # not returned and not kept (training mode, as above; not under activation checkpointing, whose recomputed
        # forward runs outside this context)
        in_layers = ("attention" in weights and not softmax and args.attention_loss == "kl" and unwrapped.training
                     and not getattr(unwrapped, "is_gradient_checkpointing", False)
                     and _records_every_layer(unwrapped) and teacher_out.attentions is not None)
        kl_targets = None
        if in_layers:
            mapping = attention_layer_map(unwrapped.config.num_hidden_layers, len(teacher_out.attentions))
            kl_targets = [teacher_out.attentions[m] for m in mapping]
            student_need.pop("output_attentions", None)
        with (capture_qkv(unwrapped, dmd_targets) as student_qkv, capture_pooled(unwrapped, pooled) as student_pooled,
              record_softmax(unwrapped) if softmax else contextlib.nullcontext() as student_softmax,
              attention_kl_in_layers(unwrapped, kl_targets) if in_layers else contextlib.nullcontext() as kl_rows):
            student_out = self._forward_as_saved(model)(**(inputs if "task" in weights else features), **student_need)
        del kl_targets

        token_mask = features.get("attention_mask")
        components: dict[str, torch.Tensor] = {}
        if "task" in weights:
            if student_out.loss is None:
                raise ValueError("task_loss_weight > 0 needs `labels` in the batch")
            components["task"] = student_out.loss
        if "prediction" in weights and "start_logits" in student_out:  # extractive QA: start/end distributions
            components["prediction"] = span_distillation_loss(
                student_out.start_logits, student_out.end_logits, teacher_out.start_logits.float(),
                teacher_out.end_logits.float(), args.temperature, token_mask)
        elif "prediction" in weights:
            logits = student_out.logits
            if logits.dim() == 3:  # masked LM: distil where labels are set, else on every real token
                row_mask = labels.ne(-100) if labels is not None else token_mask
            else:
                row_mask = None
            regression = is_regression_model(unwrapped) or (logits.dim() == 2 and logits.shape[-1] == 1)
            components["prediction"] = prediction_distillation_loss(
                logits, teacher_out.logits.float(), args.temperature, row_mask, regression
            )
        if "hidden" in weights:
            components["hidden"] = hidden_state_mse(
                student_out.hidden_states, teacher_out.hidden_states, token_mask, args.hidden_layer_weights
            )
        if "cosine" in weights:
            components["cosine"] = hidden_state_cosine(
                student_out.hidden_states, teacher_out.hidden_states, token_mask, args.hidden_layer_weights
            )
        if "attention" in weights and in_layers:
            components["attention"] = mean_over_rows_and_layers(kl_rows, token_mask)
        elif "attention" in weights:
            # with "softmax": the softmax before the probability quantizer where a model quantizes its attention (a
            # binarized student; a binarized teacher: an earlier stage of a multi-step schedule)
            components["attention"] = attention_distillation_loss(
                _recorded_or(student_softmax, student_out.attentions),
                _recorded_or(teacher_softmax, teacher_out.attentions), token_mask, args.attention_loss
            )
        if "dmd" in weights:
            teacher_heads = self.accelerator.unwrap_model(self.teacher).config.num_attention_heads
            components["dmd"] = sum(
                direction_matching_loss(student_qkv[t], teacher_qkv[t], unwrapped.config.num_attention_heads,
                                        token_mask, teacher_heads)
                for t in dmd_targets
            )
        if pooled:
            components["pooled"] = (student_pooled["pooled"] - teacher_pooled["pooled"].to(
                student_pooled["pooled"].dtype)).pow(2).mean()
        loss = sum(weights[k] * v for k, v in components.items())

        if (model.training and self.original_teacher is not None and student_out.logits.dim() == 2
                and self.state.global_step % args.original_teacher_every == 0):
            with torch.no_grad(), self._teacher_context():  # logged only: logits, no hidden states
                original_logits = self.original_teacher(**features).logits.float()
                regression = student_out.logits.shape[-1] == 1 or getattr(
                    self.accelerator.unwrap_model(model).config, "problem_type", None) == "regression"
                components["prediction_original"] = prediction_distillation_loss(
                    student_out.logits.detach(), original_logits, args.temperature, None, regression)

        if model.training:
            for k, v in components.items():
                self._loss_sums[k] = self._loss_sums.get(k, 0) + v.detach().float()
                self._loss_counts[k] = self._loss_counts.get(k, 0) + 1
        if return_outputs:
            # Only loss and logits: hidden states / attentions must not be gathered as predictions in evaluation.
            if "start_logits" in student_out:
                return loss, type(student_out)(loss=loss, start_logits=student_out.start_logits,
                                               end_logits=student_out.end_logits)
            return loss, type(student_out)(loss=loss, logits=student_out.logits)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_sums:
            names = sorted(self._loss_sums)
            means = torch.stack([self._loss_sums[k] / self._loss_counts[k] for k in names]).to(self.args.device)
            if self.accelerator.num_processes > 1:
                means = self.accelerator.reduce(means, reduction="mean")
            logs.update({f"loss_{k}": round(v, 6) for k, v in zip(names, means.tolist())})
            self._loss_sums.clear()
            self._loss_counts.clear()
        super().log(logs, start_time)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The Trainer's optimizer; with `head_learning_rate`, the task head's parameters (`head_parameter_names`)
        move into param groups of their own with that learning rate, and with `quantizer_learning_rate` the
        activation quantizers' parameters (`quantizer_parameter_names`) likewise (the scheduler scales every group
        alike; each group keeps its weight decay). An optimizer passed to the Trainer (`optimizers=`) is left as it
        is."""
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if not created:
            return optimizer
        opt_model = self.model if model is None else model
        moves = [(lr, set(names_of(opt_model))) for lr, names_of in (
            (self.args.head_learning_rate, head_parameter_names),
            (self.args.quantizer_learning_rate, quantizer_parameter_names)) if lr is not None]
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper, if any
        for lr, names in moves:
            chosen = {id(p) for n, p in opt_model.named_parameters() if n in names}
            new_groups = []
            for group in inner.param_groups:
                moved = [p for p in group["params"] if id(p) in chosen]
                if moved:
                    group["params"] = [p for p in group["params"] if id(p) not in chosen]
                    new_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": moved, "lr": lr})
            inner.param_groups[:] = [g for g in inner.param_groups if g["params"]]
            for group in new_groups:
                inner.add_param_group(group)
        return optimizer

    # --------------------------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # the Trainer's own saves (checkpoints) keep the training form so that training can resume; a final save
        # (`save_model()` by the user, or inside `push_to_hub`) writes the packed checkpoint
        self._export_packed = not _internal_call or getattr(self, "_pushing", False)
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self._export_packed = False

    def push_to_hub(self, *args, **kwargs):
        """`Trainer.push_to_hub`, uploading the packed student (not its training form) and this package's model
        card (`create_model_card`). Keywords other than the Trainer's go to `create_model_card`."""
        self._pushing = True
        try:
            return super().push_to_hub(*args, **kwargs)
        finally:
            self._pushing = False

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None, **card_kwargs) -> None:
        """Write `README.md` in `args.output_dir`: the student's card from `hf_binary_bert.model_card`
        (binarization, sizes against float32 BERT, how to load) instead of the Trainer's generic one.

        Args:
            license, tags: as `Trainer.create_model_card`; `finetuned_from` becomes the card's `base_model` (default:
                the student config's `teacher_name_or_path` when it is a Hub id); `model_name` the name when
                `hub_model_id` is unset. `language`, `tasks`, `dataset_tags`, `dataset`, `dataset_args` are not used.
            **card_kwargs: `model_card.create_model_card`'s keywords (`task`, `metrics`, `latency_ms`, …). With
                `task` and no `metrics`, the last evaluation in the log history gives the metrics.
        """
        from ..model_card import create_model_card
        from ..modeling_binary_bert import BinaryBertPreTrainedModel

        if not self.is_world_process_zero():
            return
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not isinstance(model, BinaryBertPreTrainedModel):
            return super().create_model_card(language, license, tags, model_name, finetuned_from, tasks, dataset_tags,
                                             dataset, dataset_args)
        if card_kwargs.get("task") is not None and card_kwargs.get("metrics") is None:
            evaluations = [entry for entry in self.state.log_history if any(k.startswith("eval_") for k in entry)]
            if evaluations:
                card_kwargs["metrics"] = {k.removeprefix("eval_"): v for k, v in evaluations[-1].items()
                                          if k.startswith("eval_")}
        card = create_model_card(model, self.args.output_dir, repo_id=self.hub_model_id or model_name,
                                 base_model=finetuned_from, license=license,
                                 tags=[tags] if isinstance(tags, str) else tags, **card_kwargs)
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        from ..modeling_binary_bert import BinaryBertPreTrainedModel

        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not isinstance(model, BinaryBertPreTrainedModel):
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir, packed=self._export_packed, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
