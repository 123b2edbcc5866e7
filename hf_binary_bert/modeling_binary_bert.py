"""Binarized BERT models: transformers' BERT classes with their Linear layers swapped for binarized ones.

Nothing of `modeling_bert.py` is copied: each class subclasses its transformers twin, runs its `__init__`, swaps the
Linear layers named in `config.binarized_modules` (`binarization.binarize_`) and ends with `post_init()`.
On top, `BinaryBertPreTrainedModel` adds the packed checkpoint format (`save_pretrained` / `from_pretrained`),
the conversion from a full-precision teacher (`from_teacher`) and the switch between the training form and the packed
inference form of the binarized layers (`freeze` / `unfreeze`).
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch
from transformers import (
    AutoConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertPreTrainedModel,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.loss.loss_utils import ForSequenceClassificationLoss
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput
from transformers.utils.generic import can_return_tuple

from . import attention as _attention  # noqa: F401  (registers the quantized attention functions)
from .binarization import (
    ActivationQuantizer,
    BinaryEmbedding,
    BinaryLinear,
    PackedBinaryEmbedding,
    PackedBinaryLinear,
    binarize_,
    freeze_,
    initial_scales,
    unfreeze_,
)
from .binarization.dropout import use_mask_dropout_
from .configuration_binary_bert import BINARIZABLE_MODULES, BinaryBertConfig
from .format import STUDENT_ONLY_SUFFIXES, packed_state_dict, validate_checkpoint
from .kernels.linear import DEFAULT_PLAN, InferencePlan
from .layer_sizes import apply_layer_sizes, is_pruned, pruned_class
from .runtime import (
    BinaryBertEmbeddings,
    BinaryBertEncoder,
    BinaryBertModelForward,
    BinaryBertPooler,
    use_native_encoder,
)

logger = logging.getLogger(__name__)

_BINARY_TYPES = (BinaryLinear, BinaryEmbedding)
_PACKED_TYPES = (PackedBinaryLinear, PackedBinaryEmbedding)
# Config attributes of the teacher that must not be copied into the student config.
_TEACHER_ONLY_KEYS = ("model_type", "architectures", "transformers_version", "_name_or_path", "dtype", "auto_map")


class BinaryBertPreTrainedModel(BertPreTrainedModel):
    """Base class of the binarized BERT models: packed save/load, teacher conversion, freeze/unfreeze."""

    config_class = BinaryBertConfig
    config: BinaryBertConfig
    base_model_prefix = "bert"
    # The full-precision BERT class whose checkpoint `from_teacher` reads for this head and `to_bert` exports to.
    _teacher_class: type[PreTrainedModel] = BertModel
    # How the packed model computes in eval mode (`set_inference_kernel`; kernels/linear.py): the default plan
    inference_plan: InferencePlan = DEFAULT_PLAN

    def _binarize(self) -> None:
        apply_layer_sizes(self, self.config)  # a pruned model: per-layer head count / FFN width (layer_sizes.py)
        replaced = binarize_(self, self.config)
        if not replaced:
            raise ValueError(
                f"BinaryBertConfig.binarized_modules={self.config.binarized_modules} matched no Linear layer of "
                f"{type(self).__name__}"
            )
        use_mask_dropout_(self)  # same dropout, a bool mask kept for the backward pass (binarization/dropout.py)
        for name, module in self.named_modules():  # named in their errors (e.g. NotCalibratedError)
            if isinstance(module, ActivationQuantizer):
                module.qualified_name = name
        use_native_encoder(self)  # the encoder runs on the native runtime where it can (runtime.py)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, _BINARY_TYPES) and module.scale_mode != "mean_abs":
            alpha, gamma = initial_scales(module.weight, module.num_groups, module.has_offset)
            init.copy_(module.weight_scale, alpha)
            if gamma is not None:
                init.copy_(module.weight_offset, gamma)
        elif isinstance(module, _PACKED_TYPES):
            init.zeros_(module.weight_packed)
            init.ones_(module.weight_scale)
            if module.has_offset:
                init.zeros_(module.weight_offset)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, ActivationQuantizer):
            if module.has_step:
                init.ones_(module.step)
                init.zeros_(module.calibrated)
            if hasattr(module, "shift"):
                init.zeros_(module.shift)

    # ------------------------------------------------------------------------------------------------------------
    # Training form <-> packed inference form

    def freeze(self):
        """Swap every `BinaryLinear` for its packed inference form (`PackedBinaryLinear`: uint8 bits + scales, no
        latent weights) in place; the forward is unchanged. Returns `self`."""
        return self._set_form(packed=True)

    def unfreeze(self):
        """Swap every `PackedBinaryLinear` back for a trainable `BinaryLinear` (latent weight α·B + γ) in place,
        e.g. to continue training a model loaded from a packed checkpoint. Returns `self`."""
        return self._set_form(packed=False)

    def _set_form(self, packed: bool):
        """The one writer of `config.packed_weights` (which form the binarized layers are built in): swaps the
        layers and records the form. `save_pretrained` writes the form of the file into a copy of the config."""
        if packed:
            freeze_(self)
        else:
            unfreeze_(self, self.config)
        self.config.packed_weights = packed
        if packed:  # the new packed Linears compute under the model's plan
            self._apply_plan(self.inference_plan)
        return self

    def set_inference_kernel(self, kernel: str = "auto", float_activations: str | None = None,
                             mlm_head: str | None = None):
        """Choose how the packed binarized Linears (and the masked-LM decoder) compute in eval mode on the CPU.

        Args:
            kernel: `"auto"` (default on load): the native encoder runtime (`hf_binary_bert.runtime`: every
                encoder layer in one native call) where it applies, else the bitwise kernels of
                `hf_binary_bert.kernels` wherever they apply (eval mode, CPU, float32, no gradient needed; the
                Linears and, with 1-bit Q/K/V, Bi-Attention); `"eager"`: those kernels called layer by layer from
                PyTorch's eager forward, without the native runtime; `"reference"`: always the pure-PyTorch forward.
            float_activations: for layers without an input quantizer (W1A32): `"float32"` (default: the exact
                reference forward) or `"int8"` (dynamic per-row int8 activations on the W1 × int8 kernel, an
                approximation); None leaves it unchanged.
            mlm_head: masked-LM models only: the full-precision decoder (hidden → vocabulary, the largest GEMM of
                a binarized BERT) in `"float32"` (default, `nn.Linear`) or `"int8"` (`kernels.linear.Int8HeadLinear`:
                per-row int8 weights × 7-bit dynamic activations; same Parameters, so saving and tying are
                unaffected); None leaves it unchanged.

        Returns:
            `self`.

        Raises:
            ValueError: for another `kernel`, `float_activations` or `mlm_head`, `mlm_head` on a model without a
                masked-LM head, or a model in training form (call `freeze()`).

        The choice is one object, the model's `inference_plan` (`kernels.linear.InferencePlan`), shared by every
        packed Linear, quantized attention module and the encoder's native runtime.
        """
        from .kernels.linear import Int8HeadLinear

        current = self.inference_plan
        plan = InferencePlan(kernel, float_activations or current.float_activations, mlm_head or current.mlm_head)
        if mlm_head is not None:
            head = getattr(getattr(self, "cls", None), "predictions", None)
            if head is None:
                raise ValueError(f"mlm_head applies to masked-LM models, not {type(self).__name__}")
            if mlm_head == "int8" and not isinstance(head.decoder, Int8HeadLinear):
                head.decoder = Int8HeadLinear.from_linear(head.decoder)
            elif mlm_head == "float32" and isinstance(head.decoder, Int8HeadLinear):
                head.decoder = head.decoder.to_linear()
        if not any(isinstance(m, PackedBinaryLinear) for m in self.modules()) and \
                any(isinstance(m, BinaryLinear) for m in self.modules()):
            raise ValueError("this model is in training form (latent float weights): call model.freeze() first")
        self._apply_plan(plan)
        return self

    def _apply_plan(self, plan) -> None:
        """Make `plan` the model's inference plan, read by every packed Linear, quantized attention module, the
        embeddings, the pooler and the encoder (whose native runtime is rebuilt on its next call)."""
        self.inference_plan = plan
        for module in self.modules():
            if isinstance(module, (PackedBinaryLinear, BinaryBertEncoder, BinaryBertEmbeddings, BinaryBertPooler)) or \
                    hasattr(module, "query_quantizer"):
                module.inference_plan = plan
            if isinstance(module, BinaryBertEncoder):
                module.runtime().invalidate()

    def binary_modules(self) -> dict[str, torch.nn.Module]:
        """`{qualified name: module}` of every binarized Linear and embedding (training or packed form)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, (*_BINARY_TYPES, *_PACKED_TYPES))}

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """Quantized activations or Bi-Attention run through this package's attention functions
        (`hf_binary_bert.attention`, eager path); requesting `"eager"` (or nothing) gives them, anything else
        (`"sdpa"`, flash, flex) raises. Full-precision attention: as transformers."""
        required = self.config.quantized_attention
        if required is None:
            return super().get_correct_attn_implementation(requested_attention, is_init_check)
        if requested_attention not in (None, "eager", required):
            raise ValueError(
                f"attn_implementation={requested_attention!r} is not possible with activation_bits="
                f"{self.config.activation_bits} / attention_type={self.config.attention_type!r}: the quantized "
                f"attention needs the eager path ({required!r})"
            )
        return required

    # ------------------------------------------------------------------------------------------------------------
    # Packed checkpoints

    def packed_state_dict(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The tensors of the packed checkpoint (`format.packed_state_dict`; docs/checkpoint-format.md).

        Args:
            state_dict: the training-form tensors to pack (default: `self.state_dict()`), e.g. the one a Trainer
                gathered.
        """
        return packed_state_dict(self, state_dict)

    def save_pretrained(self, save_directory, *args, packed: bool = True, state_dict=None, push_to_hub: bool = False,
                        **kwargs):
        """Save the config, the weights (safetensors only) and the standalone modeling code.

        The code (`remote_code.write_remote_code`: `configuration_binary_bert.py` and `modeling_binary_bert.py`,
        generated from this package's sources) and the config's `auto_map` (`AutoConfig` and every Auto model class
        this package registers: `remote_code.AUTO_MAP`) let
        the checkpoint load with `trust_remote_code=True` where `hf_binary_bert` is not installed.

        Args:
            packed (`bool`, defaults to `True`): write the packed checkpoint (1 bit per binarized weight, scales,
                full-precision parts in `config.fp_dtype`; the saved config has `packed_weights=True`). With
                `False`, write the training form (latent float32 weights), e.g. for a resumable Trainer checkpoint.
            state_dict: tensors to save instead of `self.state_dict()` (packed first when `packed`).
            push_to_hub (`bool`, defaults to `False`): then upload the saved folder as it is (no model card; see
                `push_to_hub`) to `repo_id` (keyword, default: the folder name), with `token`, `private`,
                `revision`, `commit_message`, `create_pr` taken from `kwargs`.
            *args, **kwargs: passed to `PreTrainedModel.save_pretrained`.

        Raises:
            ValueError: for `packed=False` on a model that holds packed weights (call `unfreeze()` first).
            hub.PushToHubError: with `push_to_hub`, as `push_to_hub`.
        """
        from .remote_code import AUTO_MAP, write_remote_code

        if kwargs.get("safe_serialization") is False:
            raise ValueError("hf_binary_bert saves safetensors only (safe_serialization=False is not supported)")
        if not packed and self.config.packed_weights:
            raise ValueError("This model holds packed weights; call model.unfreeze() before save_pretrained(packed=False)")
        upload = {k: kwargs.pop(k) for k in ("repo_id", "token", "private", "revision", "commit_message",
                                             "commit_description", "create_pr") if k in kwargs}
        self.config.auto_map = dict(AUTO_MAP)
        live = self.config
        if packed and not live.packed_weights:  # the saved config describes the file: a copy, the model unchanged
            self.config = type(live).from_dict({**live.to_dict(), "packed_weights": True})
        try:
            saved = super().save_pretrained(
                save_directory, *args, state_dict=self.packed_state_dict(state_dict) if packed else state_dict, **kwargs
            )
        finally:
            self.config = live
        write_remote_code(save_directory)
        if getattr(self, "training_record", None) is not None:  # filled during training (model_card.py)
            self.training_record.save(save_directory)
        if push_to_hub:
            from .hub import upload_checkpoint

            repo_id = upload.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            upload_checkpoint(save_directory, repo_id, **upload)
        return saved

    def save_for_hub(self, folder, *, repo_id: str | None = None, max_shard_size: int | str | None = "50GB",
                     tags: list[str] | None = None, tokenizer=None, model_card=None, **card_kwargs) -> None:
        """Write into `folder` exactly what `push_to_hub` uploads: `save_pretrained` (packed weights, config,
        code), the tokenizer when given, and the model card as `README.md` (`model_card`, or one generated by
        `model_card.create_model_card(self, folder, repo_id=repo_id, tags=tags, **card_kwargs)`).

        Raises:
            ValueError: from `create_model_card` (`metrics` without `task`, an unknown task).
        """
        from .model_card import create_model_card

        self.save_pretrained(folder, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        if model_card is None:
            model_card = create_model_card(self, folder, repo_id=repo_id, tags=tags, **card_kwargs)
        model_card.save(os.path.join(folder, "README.md"))

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        **save_kwargs,
    ):
        """Upload the packed checkpoint, its config and standalone code, the tokenizer and a generated model card
        to the Hub in one commit.

        Everything is first written to a temporary folder (`save_for_hub`), which is removed afterwards whether the
        upload worked or not; then `hub.upload_checkpoint` creates the repository if needed and commits the folder.

        Args:
            repo_id, commit_message, commit_description, private, token, revision, create_pr: as
                `PreTrainedModel.push_to_hub` (`revision`: a branch, created when missing).
            **save_kwargs: `save_for_hub`'s keywords: `max_shard_size`, `tags` (extra card tags), `tokenizer`
                (uploaded with the model), `model_card` (a `huggingface_hub.ModelCard` instead of the generated
                one) and, for the generated card, `model_card.create_model_card`'s keywords: `base_model`, `task`
                with `metrics` / `teacher_metrics` (they become `model-index` results), `dataset`, `latency_ms` /
                `teacher_latency_ms`, `latency_note`, `license`.

        Returns:
            The `huggingface_hub.CommitInfo` of the commit (`.oid`: the revision to pin).

        Raises:
            hub.PushToHubError: for an authentication failure, a missing repository / namespace or revision, or
                another HTTP error, naming the repository and status.
            ValueError: from `create_model_card` (`metrics` without `task`, an unknown task).
        """
        from .hub import upload_checkpoint

        with tempfile.TemporaryDirectory(prefix="hf_binary_bert_push_") as folder:
            self.save_for_hub(folder, repo_id=repo_id, **save_kwargs)
            return upload_checkpoint(folder, repo_id, token=token, private=private, revision=revision,
                                     commit_message=commit_message, commit_description=commit_description,
                                     create_pr=create_pr)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load a binarized model (packed or training form) from a folder or the Hub, as `PreTrainedModel`.

        Before loading, every tensor of the checkpoint is checked against the model the config describes, as
        transformers built it (`format.validate_checkpoint`, from `_load_pretrained_model`). The model is built in float32 unless `dtype` says otherwise, whatever
        `fp_dtype` the file was written in.

        Raises:
            ValueError: naming the tensor, for a missing, extra, wrongly typed or wrongly shaped tensor, or a
                truncated file; `OSError` from transformers when the folder or repo does not exist.
        """
        kwargs.setdefault("dtype", torch.float32)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @staticmethod
    def _load_pretrained_model(model, state_dict, checkpoint_files, load_config, *args, **kwargs):
        """transformers' loading step, called on the model `from_pretrained` built (once, on the meta device) before
        any weight is read: the checkpoint files are first checked against it (`format.validate_checkpoint`)."""
        if checkpoint_files is not None:
            validate_checkpoint(model, checkpoint_files, prefix=model.base_model_prefix)
        return BertPreTrainedModel._load_pretrained_model(model, state_dict, checkpoint_files, load_config, *args,
                                                          **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Export to a plain transformers BERT

    @torch.no_grad()
    def to_bert(self) -> PreTrainedModel:
        """A plain transformers BERT of the matching head (`BertModel`, `BertForMaskedLM`,
        `BertForSequenceClassification`, `BertForQuestionAnswering`, `BertForTokenClassification`,
        `BertForMultipleChoice`) whose weights are the dequantized binarized ones, W = α·B + γ (1-bit
        embeddings likewise, per row), for tools that do not know this package. Its outputs equal this model's
        (up to float rounding) because, at full-precision activations, the binarized model is exactly a BERT with
        those weights. The export is float32; the weights still take only two values per scale group, but the file is a
        plain 32-bit one.

        Returns:
            The new model, on CPU, in this model's train/eval mode.

        Raises:
            ValueError: when activations are quantized (`activation_bits` < 32) or attention is Bi-Attention: a
                plain BERT has no place for activation quantizers, so its outputs would differ; for a sequence
                classifier with `classifier_pooling="mean"` (a plain BERT's pooler reads the first token).
        """
        if self.config.activation_bits < 32 or self.config.quantized_attention is not None:
            raise ValueError(
                f"to_bert() needs full-precision activations and softmax attention; this model has activation_bits="
                f"{self.config.activation_bits}, attention_type={self.config.attention_type!r}, which a plain BERT "
                "cannot compute"
            )
        if isinstance(self, BertForSequenceClassification) and self.config.classifier_pooling != "cls":
            raise ValueError(
                f"to_bert() of a sequence classifier needs classifier_pooling='cls'; this model has "
                f"classifier_pooling={self.config.classifier_pooling!r}, which BertForSequenceClassification (its "
                "pooler reads the first token) cannot compute"
            )
        binary = self.binary_modules()
        state = {}
        for key, tensor in self.state_dict().items():
            module_name, _, leaf = key.rpartition(".")
            module = binary.get(module_name)
            if module is None or leaf == "bias":
                state[key] = tensor.detach().float().cpu()
            elif leaf in ("weight", "weight_packed"):  # scales and offsets are folded into the weight
                state[f"{module_name}.weight"] = _dequantized_weight(module).float().cpu()
        bert = self._teacher_class(self.config.to_bert_config())
        apply_layer_sizes(bert, bert.config)
        missing, unexpected = bert.load_state_dict(state, strict=False)
        tied = set(getattr(bert, "all_tied_weights_keys", None) or {})
        if unexpected or [k for k in missing if k not in tied]:
            raise ValueError(f"to_bert(): tensors do not match {type(bert).__name__}: missing {missing}, "
                             f"unexpected {unexpected}")
        bert.tie_weights()
        return bert.train(self.training)

    # ------------------------------------------------------------------------------------------------------------
    # Conversion from a full-precision teacher

    @classmethod
    def from_teacher(cls, teacher: PreTrainedModel | str | os.PathLike, **config_kwargs):
        """Binarize a full-precision BERT: copy its weights into a new student of this class and initialise the
        scales (α₀ = mean|W|; with offset γ₀ = mean W, α₀ = mean|W − γ₀|).

        Args:
            teacher: a `BertModel`, `BertForMaskedLM`, `BertForSequenceClassification`, `BertForQuestionAnswering`,
                `BertForTokenClassification` or `BertForMultipleChoice` (or any BERT-architecture model), or a Hub id / local folder of such a checkpoint. A binarized model in training form is
                accepted too (multi-step distillation: the previous stage's student); its latent weights and learned
                scales are copied, its activation quantizers are not (the new ones calibrate on the first batch).
            **config_kwargs: binarization fields of `BinaryBertConfig` (`weight_scale`, `scale_granularity`, …) and
                any other config attribute to override (e.g. `num_labels`).

        Returns:
            The student, in training form (latent float32 weights), on the teacher's device.

        Raises:
            ValueError: if the teacher is not a BERT (`model_type` other than `"bert"` / `"binary_bert"`), is a
                packed binarized model, or a binarization field is invalid.
        """
        teacher_name = str(teacher) if isinstance(teacher, (str, os.PathLike)) else None
        if isinstance(teacher, (str, os.PathLike)):
            teacher = load_teacher(teacher, cls._teacher_class, **{k: v for k, v in config_kwargs.items() if k == "num_labels"})
        model_type = getattr(teacher.config, "model_type", None)
        if model_type not in ("bert", "binary_bert"):
            raise ValueError(f"teacher must be a BERT (model_type 'bert' or 'binary_bert'), got model_type {model_type!r}")
        if model_type == "binary_bert" and teacher.config.packed_weights:
            raise ValueError("a packed binary_bert teacher has no latent weights to start from: call teacher.unfreeze() first")
        teacher_config = {k: v for k, v in teacher.config.to_dict().items() if k not in _TEACHER_ONLY_KEYS}
        if model_type == "bert":  # a binarized teacher (multi-step) passes on its own teacher_name_or_path
            teacher_config["teacher_name_or_path"] = teacher_name or teacher.config.name_or_path or None
        config = BinaryBertConfig(**{**teacher_config, "packed_weights": False, **config_kwargs})
        student = cls(config).to(next(teacher.parameters()).device)
        student_shapes = {k: v.shape for k, v in student.state_dict().items()}
        mapped = {}
        for key, tensor in teacher.state_dict().items():
            if "_quantizer." in key:  # activation quantizers start afresh (other bits, other statistics)
                continue
            for candidate in (key, f"{cls.base_model_prefix}.{key}", key.removeprefix(f"{cls.base_model_prefix}.")):
                if student_shapes.get(candidate) == tensor.shape:
                    mapped[candidate] = tensor.float()
                    break
        missing, _ = student.load_state_dict(mapped, strict=False)
        for name, module in student.named_modules():
            # a scale the teacher lacks (another scheme, e.g. learned -> learned_offset) re-initialises all of this
            # module's scales from the copied latent weight, not from the student's random initialisation
            scale_keys = [f"{name}.{p}" for p in ("weight_scale", "weight_offset") if hasattr(module, p)]
            if isinstance(module, _BINARY_TYPES) and any(k not in mapped for k in scale_keys):
                module.reset_scales()
        tied = set(getattr(student, "all_tied_weights_keys", None) or {})
        fresh = [k for k in missing if not k.endswith(STUDENT_ONLY_SUFFIXES) and k not in tied]
        if fresh:
            logger.warning("Student weights not in the teacher, newly initialised: %s", ", ".join(sorted(fresh)))
        student.tie_weights()
        return student


def _dequantized_weight(module: torch.nn.Module) -> torch.Tensor:
    """W = α·B + γ of a binarized Linear / embedding, training or packed form."""
    if isinstance(module, _BINARY_TYPES):
        return module.quantized_weight().detach()
    return module.dequantized_weight()


def load_teacher(path: str | os.PathLike, teacher_class: type[PreTrainedModel] = BertModel, **kwargs) -> PreTrainedModel:
    """Load a full-precision BERT checkpoint (Hub id or folder) as `teacher_class`, in float32.

    Raises:
        ValueError: if the checkpoint is not a BERT (`model_type` other than `"bert"`).
    """
    config = AutoConfig.from_pretrained(path)
    if config.model_type != "bert":
        raise ValueError(f"{path}: teacher must be a BERT checkpoint (model_type 'bert'), got {config.model_type!r}")
    if is_pruned(config):  # per-layer sizes (a pruned teacher): a subclass that builds those shapes
        teacher_class = pruned_class(teacher_class)
    model, info = teacher_class.from_pretrained(path, dtype=torch.float32, output_loading_info=True, **kwargs)
    if info["missing_keys"]:
        logger.warning("%s has no %s; newly initialised", path, ", ".join(sorted(info["missing_keys"])))
    return model


class BinaryBertModel(BinaryBertPreTrainedModel, BinaryBertModelForward, BertModel):
    """`transformers.BertModel` with binarized Linear layers. Inputs and outputs as `BertModel` (the forward: see
    `runtime.BinaryBertModelForward`)."""

    def __init__(self, config: BinaryBertConfig, add_pooling_layer: bool = True):
        BertModel.__init__(self, config, add_pooling_layer=add_pooling_layer)
        self._binarize()
        self.post_init()


class BinaryBertForMaskedLM(BinaryBertPreTrainedModel, BertForMaskedLM):
    """`transformers.BertForMaskedLM` with a binarized encoder; the prediction head stays full precision and its
    decoder is tied to the word embeddings. Inputs and outputs (`MaskedLMOutput`, logits [batch, seq, vocab]) as
    `BertForMaskedLM`."""

    _teacher_class = BertForMaskedLM

    def __init__(self, config: BinaryBertConfig):
        if config.embedding_bits == 1 and "word" in config.binarized_embeddings and config.tie_word_embeddings:
            raise ValueError(
                "BinaryBertConfig.embedding_bits=1 binarizes the word embeddings, which tie_word_embeddings=True would "
                "share with the masked-LM decoder: set tie_word_embeddings=False (the decoder then stays full "
                "precision) or leave 'word' out of binarized_embeddings"
            )
        BertForMaskedLM.__init__(self, config)
        self._binarize()
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                encoder_hidden_states=None, encoder_attention_mask=None, labels=None,
                logits_positions: torch.Tensor | None = None, **kwargs) -> MaskedLMOutput:
        """`BertForMaskedLM.forward`, plus `logits_positions` to compute the vocabulary logits (the largest GEMM of
        a small BERT: hidden × vocabulary per position) only where they are needed, such as the masked tokens of the
        fill-mask pipeline (`hf_binary_bert.BinaryBertFillMaskPipeline` passes them).

        Args:
            logits_positions: bool [batch, seq]: the positions to predict; None: every position (as `BertForMaskedLM`).
                With it, `logits` is [n, vocab] for the n True positions in row-major order (as
                `logits_positions.nonzero()` lists them), and `labels` (if given) are read at those positions only.

        Raises:
            ValueError: when `logits_positions` is not a bool tensor of the inputs' [batch, seq] shape.
        """
        if logits_positions is None:
            return super().forward(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids, inputs_embeds=inputs_embeds,
                                   encoder_hidden_states=encoder_hidden_states,
                                   encoder_attention_mask=encoder_attention_mask, labels=labels, **kwargs)
        shape = tuple(input_ids.shape if input_ids is not None else inputs_embeds.shape[:2])
        if not isinstance(logits_positions, torch.Tensor) or logits_positions.dtype != torch.bool \
                or tuple(logits_positions.shape) != shape:
            got = (f"{logits_positions.dtype} {tuple(logits_positions.shape)}" if isinstance(logits_positions, torch.Tensor)
                   else type(logits_positions).__name__)
            raise ValueError(f"logits_positions must be a bool tensor of shape {shape} (batch, seq), got {got}")
        return_dict = kwargs.pop("return_dict", None)
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds,
                            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
                            return_dict=True, **kwargs)
        logits = self.cls(outputs[0][logits_positions.to(outputs[0].device)])  # [n, vocab]
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits, labels[logits_positions].to(logits.device))
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions)
        return output.to_tuple() if return_dict is False else output


class BinaryBertForSequenceClassification(BinaryBertPreTrainedModel, BertForSequenceClassification):
    """`transformers.BertForSequenceClassification` with a binarized encoder (pooler and classifier binarized only
    when named in `config.binarized_modules`). Inputs and outputs (`SequenceClassifierOutput`, logits
    [batch, num_labels]) as `BertForSequenceClassification`. With `config.classifier_pooling="mean"` the pooler
    reads the mean of the last hidden states over the real tokens instead of the first token's."""

    _teacher_class = BertForSequenceClassification

    def __init__(self, config: BinaryBertConfig):
        BertForSequenceClassification.__init__(self, config)
        self._binarize()
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, **kwargs):
        if self.config.classifier_pooling == "cls":
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels, **kwargs)
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        pooled = self.bert.pooler.activation(self.bert.pooler.dense(mean_pool(outputs.last_hidden_state,
                                                                              attention_mask)))
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else ForSequenceClassificationLoss(labels, logits, self.config)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of `hidden_states` [batch, seq, hidden] over the real tokens (`attention_mask` [batch, seq] nonzero;
    every token when None), [batch, hidden]: sentence-transformers' mean pooling. Padding positions do not enter,
    so a padded sequence pools to what it pools to alone (up to float rounding).

    Raises:
        ValueError: when `attention_mask` is not [batch, seq] of `hidden_states`, or a row has no real token.
    """
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    if attention_mask.shape != hidden_states.shape[:2]:
        raise ValueError(f"attention_mask must be [batch, seq] = {list(hidden_states.shape[:2])} for mean pooling, "
                         f"got {list(attention_mask.shape)}")
    real = (attention_mask != 0).unsqueeze(-1)  # [batch, seq, 1]
    count = real.sum(dim=1)
    if bool((count == 0).any()):
        raise ValueError("attention_mask has a row without a real token: mean pooling has nothing to average")
    # where, not a product: whatever a padding position holds (even inf or NaN) does not enter the sum
    return torch.where(real, hidden_states, 0.0).sum(dim=1) / count.to(hidden_states.dtype)


class BinaryBertForQuestionAnswering(BinaryBertPreTrainedModel, BertForQuestionAnswering):
    """`transformers.BertForQuestionAnswering` with a binarized encoder (extractive QA, e.g. SQuAD); the span
    classifier `qa_outputs` (hidden → 2) stays full precision unless named in `config.binarized_modules`. Inputs and
    outputs (`QuestionAnsweringModelOutput`: `start_logits`, `end_logits` [batch, seq]; with `start_positions` /
    `end_positions` [batch], the mean of the two cross-entropies as `loss`) as `BertForQuestionAnswering`."""

    _teacher_class = BertForQuestionAnswering

    def __init__(self, config: BinaryBertConfig):
        if config.num_labels != 2:
            raise ValueError(f"BinaryBertForQuestionAnswering scores span starts and ends: config.num_labels must be 2, "
                             f"got {config.num_labels}")
        BertForQuestionAnswering.__init__(self, config)
        self._binarize()
        self.post_init()


class BinaryBertForTokenClassification(BinaryBertPreTrainedModel, BertForTokenClassification):
    """`transformers.BertForTokenClassification` with a binarized encoder (NER, POS tagging); the classifier
    (hidden → num_labels) stays full precision unless named in `config.binarized_modules`. Inputs and outputs
    (`TokenClassifierOutput`, logits [batch, seq, num_labels]) as `BertForTokenClassification`."""

    _teacher_class = BertForTokenClassification

    def __init__(self, config: BinaryBertConfig):
        BertForTokenClassification.__init__(self, config)
        self._binarize()
        self.post_init()


class BinaryBertForMultipleChoice(BinaryBertPreTrainedModel, BertForMultipleChoice):
    """`transformers.BertForMultipleChoice` with a binarized encoder (SWAG, RACE): each choice is encoded as its own
    sequence and scored by the pooled output; pooler and classifier (hidden → 1) binarized only when named in
    `config.binarized_modules`. Inputs `input_ids` [batch, num_choices, seq] and outputs (`MultipleChoiceModelOutput`,
    logits [batch, num_choices]) as `BertForMultipleChoice`."""

    _teacher_class = BertForMultipleChoice

    def __init__(self, config: BinaryBertConfig):
        BertForMultipleChoice.__init__(self, config)
        self._binarize()
        self.post_init()


__all__ = [
    "BINARIZABLE_MODULES",
    "BinaryBertForMaskedLM",
    "BinaryBertForMultipleChoice",
    "BinaryBertForQuestionAnswering",
    "BinaryBertForSequenceClassification",
    "BinaryBertForTokenClassification",
    "BinaryBertModel",
    "BinaryBertPreTrainedModel",
    "load_teacher",
]
