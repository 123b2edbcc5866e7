"""Explicit calibration of the activation quantizers: set each learned step s (BiT's α) from a few batches, before
inference, instead of from whatever input comes first.

A quantizer with a step (LSQ 2–8-bit, every elastic one) starts uncalibrated. Training calibrates it on its first
batch (LSQ / BiT initialisation); in eval mode an uncalibrated quantizer raises `NotCalibratedError` rather than
calibrating on inference data. To use a model in eval mode that was never trained (a fresh `from_teacher` student, a
random test model) or to re-estimate the steps on data of your own:

```python
import hf_binary_bert as hb

hb.calibrate(model, [tokenizer(texts, return_tensors="pt", padding=True) for texts in batches])
# or, when the forward needs more than model(**batch):
with hb.Calibration(model):
    for batch in batches:
        model(**batch)
```

Inside `Calibration` each quantizer that calibrates sets s₀ = the mean over the calibration batches of the LSQ / BiT
rule (2·mean|x − β| / √Q_p signed, 4·mean|x − β| / √Q_p unsigned; `binarization/activation.py`), whatever the
model's train/eval mode. The `calibrated` flag is set and saved with the checkpoint. Calibration runs the eager
per-module path (the native encoder runtime does not calibrate), so the native runtime takes over only afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .binarization.activation import ActivationQuantizer, NotCalibratedError
from .runtime import BinaryBertEncoder


def _quantizers(model: nn.Module) -> dict[str, ActivationQuantizer]:
    """`{name: quantizer}` of the quantizers of `model` that have a step to calibrate."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ActivationQuantizer) and m.has_step}


class Calibration:
    """Context manager: inside it, the forwards of `model` calibrate its activation quantizers (see the module
    docstring); on exit every quantizer is back to normal (calibrated ones keep their step).

    Args:
        model: any module holding `ActivationQuantizer`s (a `BinaryBert*` model).
        recalibrate: also re-estimate quantizers that are already calibrated (trained or loaded steps are
            overwritten); default: only the uncalibrated ones calibrate, the others keep their step.
    """

    def __init__(self, model: nn.Module, *, recalibrate: bool = False):
        self.model = model
        self.recalibrate = recalibrate
        self._encoders: list[tuple[BinaryBertEncoder, object]] = []

    def __enter__(self) -> Calibration:
        for quantizer in _quantizers(self.model).values():
            if self.recalibrate or not quantizer.calibrated.item():
                quantizer._calibration_batches = 0
        for module in self.model.modules():  # the native runtime does not calibrate: eager path while calibrating
            if isinstance(module, BinaryBertEncoder):
                self._encoders.append((module, module.__dict__.get("inference_plan")))
                if module.inference_plan.kernel == "auto":
                    module.inference_plan = module.inference_plan.replace(kernel="eager")
        return self

    def __exit__(self, *exc) -> None:
        for quantizer in _quantizers(self.model).values():
            quantizer.__dict__.pop("_calibration_batches", None)
        for module, previous in self._encoders:
            if previous is None:
                module.__dict__.pop("inference_plan", None)
            else:
                module.inference_plan = previous
        self._encoders.clear()


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, *, recalibrate: bool = False) -> nn.Module:
    """Calibrate the activation quantizers of `model` on `batches` (no gradient; the model's mode is unchanged).

    Args:
        model: a `BinaryBert*` model (training or packed form).
        batches: an iterable of model inputs: a mapping is called as `model(**batch)` (e.g. a tokenizer's
            `BatchEncoding` or `{"input_ids": ids [batch, seq], "attention_mask": ...}`), anything else as
            `model(batch)` (input ids [batch, seq]).
        recalibrate: also re-estimate quantizers that are already calibrated (see `Calibration`).

    Returns:
        `model`.

    Raises:
        ValueError: if a quantizer that had to calibrate saw no data (no batches, or inputs that never reach it),
            naming the first such quantizer.
    """
    quantizers = _quantizers(model)
    with Calibration(model, recalibrate=recalibrate):
        pending = {name for name, q in quantizers.items() if q._calibration_batches is not None}
        for batch in batches:
            model(**batch) if isinstance(batch, Mapping) else model(batch)
        missing = sorted(name for name in pending if quantizers[name]._calibration_batches == 0)
    if missing:
        raise ValueError(f"calibrate(): {len(missing)} activation quantizer(s) saw no data, e.g. {missing[0]!r}: "
                         "pass at least one batch of model inputs that reaches them")
    return model


__all__ = ["Calibration", "NotCalibratedError", "calibrate"]
