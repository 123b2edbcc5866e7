"""Activation quantizers: what turns the inputs of binarized Linears and of the attention matmuls into 1–8-bit values.

Two schemes (`BinaryBertConfig.activation_quantizer`), each with a signed form (inputs that can be negative: Q/K/V,
the inputs of the Linears) and an unsigned form (non-negative inputs: attention probabilities, the FFN input after
ReLU):

- `"sign"`:
  - 1 bit, signed: x̂ = sign(x) ∈ {−1, +1}, gradient by the configured STE (BiBERT, Qin et al. ICLR 2022).
  - 1 bit, unsigned: x̂ = 1[x ≥ ½] ∈ {0, 1} (direct binarization of a probability; the baseline Bi-Attention fixes).
  - b ∈ {2, 4, 8} bits: LSQ (Esser et al., ICLR 2020): x̂ = s·round(clip(x / s, Q_n, Q_p)) with a learned step s,
    signed Q_n = −2ᵇ⁻¹, Q_p = 2ᵇ⁻¹ − 1, unsigned Q_n = 0, Q_p = 2ᵇ − 1; ∂/∂s scaled by g = 1/√(N·Q_p).
- `"elastic"` (BiT, Liu et al. NeurIPS 2022, eq. 3–5): a learned per-channel shift β first, then
  - 1 bit, signed: x̂ = α·sign(x − β) ∈ {−α, +α}; ∂x̂/∂α = sign(x − β) (scaled by g), ∂x̂/∂x = 1[|x − β| ≤ α].
  - 1 bit, unsigned and b bits: x̂ = α·round(clip((x − β) / α, Q_n, Q_p)) (LSQ gradients), e.g. {0, α}.

With `BinaryBertConfig.activation_shift_dtype` float16 / bfloat16, every forward (and the packed kernels) uses β rounded
to that dtype (`ActivationQuantizer.effective_shift`), with a straight-through gradient to the float32 β.

Learned steps start from data (LSQ / BiT initialisation): s₀ = 2·mean|x − β| / √Q_p for signed and
4·mean|x − β| / √Q_p for unsigned inputs, averaged over processes under `torch.distributed`; a 1-bit signed elastic
quantizer with `step_init="least_squares"` (`BinaryBertConfig.activation_step_init`) starts at α₀ = mean|x − β|
instead, the least-squares α of x − β ≈ α·sign(x − β). When that happens:
- in training mode, on the first batch the quantizer sees (as LSQ and BiT do);
- explicitly, inside `hf_binary_bert.Calibration` / `hf_binary_bert.calibrate(model, batches)` (any mode): s₀ is
  then the mean of the rule over the calibration batches.
Never in eval mode otherwise: a quantizer with a step that has not been calibrated raises `NotCalibratedError` there
(instead of calibrating on whatever inference input comes first). The `calibrated` buffer records calibration and
is saved, so a loaded checkpoint keeps its trained step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configuration_binary_bert import ACTIVATION_STEP_INITS
from ..kernels.ops import training_kernels
from ..kernels.reference import _shift_grad, lsq_backward, lsq_values
from .ste import binary_sign, round_ste, sign_ste

ACTIVATION_SCHEMES = ("sign", "elastic")


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Forward: x. Backward: gradient × `scale` (LSQ's step-gradient scaling)."""
    return (x - x * scale).detach() + x * scale


class _ScaledSignSTE(torch.autograd.Function):
    """BiT's 1-bit elastic forward x̂ = α·sign((x − β) / α) (sign(0) = +1) with its gradients, as one function:
    ∂/∂x = 1[|u| ≤ 1], ∂/∂β = −Σ 1[|u| ≤ 1]·g over the broadcast dims, ∂/∂α = Σ g·sign(u), u = (x − β)/α.

    One pass each way (`kernels.ops.scaled_sign_forward` / `_backward`, compiled for float32 CPU tensors, else
    their PyTorch twins). Saves one uint8 code per element (the sign and the window 1[|u| ≤ 1]) instead of the
    shifted input, the quotient and the sign that the plain composition of autograd ops keeps. The forward values
    are those of `binary_sign((x − β) / α)·α` exactly (NaN aside); the gradients equal the plain composition's up
    to float rounding (it computes ∂/∂x as (g·α)·1[|u| ≤ 1]/α, and ∂/∂α as a sum in another order)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shift: torch.Tensor | None, step: torch.Tensor) -> torch.Tensor:
        step = step.detach()
        kernels = training_kernels(x, shift, step)
        out, codes = kernels.scaled_sign_forward(x, shift, step)
        ctx.save_for_backward(codes, step, shift)
        ctx.kernels = kernels
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        codes, step, shift = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x, grad_step = ctx.kernels.scaled_sign_backward(grad.contiguous(), codes, step)
        grad_shift = _shift_grad(grad_x, shift) if needs[1] else None
        return grad_x if needs[0] else None, grad_shift, grad_step if needs[2] else None


class _LSQRound(torch.autograd.Function):
    """LSQ's forward x̂ = α·round(clip((x − β) / α, Q_n, Q_p)) with its gradients (Esser et al. 2020; β = 0 without
    a shift), as one function: with u = (x − β)/α, ∂/∂x = 1[Q_n ≤ u ≤ Q_p], ∂/∂β = −Σ ∂/∂x over the broadcast
    dims, ∂/∂α = Σ g·(round(clip(u)) − u·1[Q_n ≤ u ≤ Q_p]).

    Saves only the input x (u is computed again in the backward, with the same roundings): for the attention
    probabilities that is the softmax output autograd keeps anyway, elsewhere one float tensor instead of the three
    (shifted input, quotient, clipped quotient) the plain composition keeps. Forward values equal the plain
    expression's exactly, gradients up to float rounding."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shift: torch.Tensor | None, step: torch.Tensor, q_n: int,
                q_p: int) -> torch.Tensor:
        ctx.save_for_backward(x, shift, step.detach())
        ctx.q_n, ctx.q_p = q_n, q_p
        return lsq_values(x, shift, step.detach(), q_n, q_p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, shift, step = ctx.saved_tensors
        return (*lsq_backward(grad, x, shift, step, ctx.q_n, ctx.q_p, ctx.needs_input_grad[:3]), None, None)


def quantized_rebuild(x_hat: torch.Tensor):
    """A function that computes `x_hat` again, bit for bit and with its strides, from what the quantizer that made it
    keeps for its own backward pass — the uint8 codes of BiT's 1-bit elastic quantizer (`_ScaledSignSTE`), the input
    x of LSQ (`_LSQRound`) — or None when `x_hat` is not such a quantizer's output. The function reads the
    quantizer's saved tensors when called: call it before that quantizer's backward pass has run (a matmul that
    reads x̂ runs its backward first). Used to keep those instead of the float x̂ for the attention's matmuls
    (`attention._saved_as_rebuilt`)."""
    node = x_hat.grad_fn
    if isinstance(node, _ScaledSignSTE._backward_cls):
        @torch.no_grad()
        def rebuild():
            codes, step, _ = node.saved_tensors
            return node.kernels.scaled_sign_levels(codes, step)
    elif isinstance(node, _LSQRound._backward_cls):
        @torch.no_grad()
        def rebuild():
            x, shift, step = node.saved_tensors
            return lsq_values(x, shift, step, node.q_n, node.q_p)
    else:
        return None
    return rebuild


def quantization_range(bits: int, signed: bool) -> tuple[int, int]:
    """(Q_n, Q_p): the integer levels of a `bits`-bit quantizer; 1-bit signed is sign(·), i.e. (−1, 1)."""
    if signed:
        return (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return 0, 2**bits - 1


class NotCalibratedError(RuntimeError):
    """An activation quantizer whose step was never set from data ran in eval mode (see the module docstring)."""


class ActivationQuantizer(nn.Module):
    r"""Quantizes an activation tensor to `bits` bits (see the module docstring for the formulas).

    Parameters (when the scheme has them): `step` [] (s or α, float32), `shift` [`shift_shape`] (β, elastic only);
    buffer `calibrated` uint8 [] (1 once the step was initialised from data). Shapes: x [..., *shift_shape] →
    x̂ same shape and dtype.

    Args:
        bits: 1, 2, 4 or 8.
        signed: whether the input can be negative (signed value set) or not (unsigned).
        scheme: `"sign"` or `"elastic"`.
        shift_shape: shape of the elastic shift β, broadcast against the trailing dims of x (e.g. `(in_features,)`
            for a Linear input, `(heads, 1, head_dim)` for Q/K/V); None: no shift (attention probabilities).
        ste: straight-through estimator of the 1-bit `"sign"` scheme.
        shift_dtype: dtype β is rounded to in every forward (`effective_shift`): float32 (no rounding), float16 or
            bfloat16.

    Raises:
        ValueError: for bits outside {1, 2, 4, 8} or an unknown scheme.
        NotCalibratedError: (forward, `kernel_step`) in eval mode, outside `Calibration`, while the step has not
            been calibrated.
    """

    # Set by `hf_binary_bert.Calibration`: None outside it, else how many calibration batches this quantizer has
    # averaged so far. `qualified_name`: its name in the model (set by the model classes), for error messages.
    _calibration_batches: int | None = None
    qualified_name: str | None = None
    # λ of progressive quantization (`DistillationArguments.activation_ramp_ratio`): in training mode the output is
    # λ·x̂ + (1 − λ)·(x − β), the quantized value blended with the value it approximates; 1 (the default, and always
    # in eval mode): x̂ alone. A plain attribute, not a buffer: the state dict does not change.
    quantization_mix: float = 1.0

    def __init__(self, bits: int, *, signed: bool = True, scheme: str = "sign", shift_shape: tuple[int, ...] | None = None,
                 ste: str = "clipped_identity", shift_dtype: torch.dtype = torch.float32, step_init: str = "lsq"):
        super().__init__()
        if bits not in (1, 2, 4, 8):
            raise ValueError(f"activation bits must be one of [1, 2, 4, 8], got {bits!r}")
        if scheme not in ACTIVATION_SCHEMES:
            raise ValueError(f"activation scheme must be one of {list(ACTIVATION_SCHEMES)}, got {scheme!r}")
        if step_init not in ACTIVATION_STEP_INITS:
            raise ValueError(f"activation step_init must be one of {list(ACTIVATION_STEP_INITS)}, got {step_init!r}")
        self.bits = bits
        self.signed = signed
        self.scheme = scheme
        self.ste = ste
        self.shift_dtype = shift_dtype
        # a plain attribute (not saved: only the start of training depends on it)
        self.step_init = step_init
        self.q_n, self.q_p = quantization_range(bits, signed)
        if self.has_step:
            self.step = nn.Parameter(torch.ones(()))
            self.register_buffer("calibrated", torch.zeros((), dtype=torch.uint8))
            self._seen_calibrated = False  # caches `calibrated` == 1 to avoid a device sync per forward
        if scheme == "elastic" and shift_shape is not None:
            self.shift = nn.Parameter(torch.zeros(shift_shape))

    @property
    def has_step(self) -> bool:
        return self.scheme == "elastic" or self.bits > 1

    def effective_shift(self) -> torch.Tensor | None:
        """β as every forward and kernel uses it: the `shift` parameter rounded to `shift_dtype` (round to nearest
        even), returned in the parameter's dtype; with autograd, the gradient goes straight through to the
        parameter. The parameter itself when `shift_dtype` is its dtype; None without a shift."""
        shift = getattr(self, "shift", None)
        return None if shift is None else round_ste(shift, self.shift_dtype)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, previous_batches: int = 0) -> None:
        """Initialise the step from a batch x (already shifted; LSQ / BiT rule in the module docstring) and mark it
        calibrated. With `previous_batches` = n > 0, the step becomes the mean of the rule over n + 1 batches: (n·s +
        rule(x)) / (n + 1), s the current step."""
        value = x.detach().float().abs().mean() * self._init_factor()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(value)
            value /= torch.distributed.get_world_size()
        if previous_batches:
            value = (self.step.detach().float() * previous_batches + value) / (previous_batches + 1)
        self.step.copy_(value.clamp_min(1e-5))
        self.calibrated.fill_(1)
        self._seen_calibrated = True

    def _init_factor(self) -> float:
        """c in s₀ = c·mean|x − β|: 2/√Q_p signed, 4/√Q_p unsigned (LSQ, BiT); 1 for a 1-bit signed elastic
        quantizer with `step_init="least_squares"` (argmin_α E[(x − α·sign x)²] = E|x|)."""
        if self.step_init == "least_squares" and self.is_scaled_sign:
            return 1.0
        return (2.0 if self.signed else 4.0) / math.sqrt(max(self.q_p, 1))

    def _calibrate_once(self, x: torch.Tensor) -> None:
        """Calibrate on x (already shifted) inside `Calibration`, or in training mode unless this quantizer has seen
        data or was loaded calibrated; in eval mode, refuse to run uncalibrated."""
        if self._calibration_batches is not None:
            self.calibrate(x, self._calibration_batches)
            self._calibration_batches += 1
            return
        if not self._seen_calibrated:
            if self.calibrated.item():
                self._seen_calibrated = True
            elif self.training:
                self.calibrate(x)
            else:
                name = f" {self.qualified_name!r}" if self.qualified_name else ""
                raise NotCalibratedError(
                    f"activation quantizer{name} ({self.bits}-bit {self.scheme}) has no calibrated step: it was "
                    "never run on data, and in eval mode it does not calibrate on inference inputs. Calibrate the "
                    "model first with hf_binary_bert.calibrate(model, batches) on a few representative batches (or "
                    "`with hf_binary_bert.Calibration(model): model(**batch)`), or train it (a training-mode "
                    "forward calibrates on its first batch)."
                )

    def _inference_step(self, dtype: torch.dtype) -> torch.Tensor:
        """max(s, 1e-5) as the no-grad forward and the packed kernels use it (0-d, detached, in `dtype`)."""
        return self.step.detach().clamp_min(1e-5).to(dtype)

    def kernel_step(self, x: torch.Tensor) -> torch.Tensor:
        """The step s (α) as the no-grad forward would use it on input x, for the packed kernels: calibrates first
        where `forward` would (inside `Calibration`, or training mode before any data), then returns max(s, 1e-5)
        (0-d, detached).

        Raises:
            NotCalibratedError: in eval mode outside `Calibration` when the step was never calibrated."""
        self._calibrate_once(x - self.effective_shift().to(x.dtype) if hasattr(self, "shift") else x)
        return self._inference_step(x.dtype)

    @torch.no_grad()
    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The no-grad forward in factored form: integer levels q (same shape and dtype as x, holding integers) and
        the scale s (a 0-d tensor; 1 for the 1-bit sign scheme), with q·s = forward(x) without autograd. Products of
        levels (attention's Q̂·K̂ᵀ, Â·V̂) are then exact integers in float32 (|Σ| < 2²⁴), scaled once, as the native
        runtime computes them.

        Raises:
            NotCalibratedError: as `forward`."""
        if hasattr(self, "shift"):
            x = x - self.effective_shift().to(x.dtype)
        one = torch.ones((), dtype=x.dtype)
        if not self.has_step:
            return (binary_sign(x) if self.signed else (x >= 0.5).to(x.dtype)), one
        self._calibrate_once(x)
        step = self._inference_step(x.dtype)
        if self.bits == 1 and self.signed:
            return binary_sign(x / step), step
        return (x / step).clamp_(self.q_n, self.q_p).round_(), step

    @property
    def mixing(self) -> bool:
        """True while a training forward blends the unquantized input in (`quantization_mix` < 1)."""
        return self.training and self.quantization_mix < 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mixing:
            lam = self.quantization_mix
            shifted = x - self.effective_shift().to(x.dtype) if hasattr(self, "shift") else x
            return lam * self._quantize(x) + (1 - lam) * shifted
        return self._quantize(x)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_step and torch.is_grad_enabled():
            return self._train_forward(x)
        # Without autograd (inference): the same values with fewer tensor ops (no STE bookkeeping).
        no_grad = not torch.is_grad_enabled()
        if hasattr(self, "shift"):
            x = x - self.effective_shift().to(x.dtype)
        if not self.has_step:  # 1-bit "sign"
            if self.signed:
                return binary_sign(x) if no_grad else sign_ste(x, self.ste)
            if no_grad:
                return (x >= 0.5).to(x.dtype)  # = (sign(x − ½) + 1) / 2: x − ½ ≥ 0 ⟺ x ≥ ½ exactly
            return (sign_ste(x - 0.5, self.ste) + 1) / 2
        self._calibrate_once(x)
        # the step as `kernel_step` gives it (the gradient scaling of the training forward can move it by an ulp)
        step = self._inference_step(x.dtype)
        if self.bits == 1 and self.signed:
            return binary_sign(x / step).mul_(step)
        return (x / step).clamp_(self.q_n, self.q_p).round_().mul_(step)

    @property
    def is_scaled_sign(self) -> bool:
        """Whether the training forward is BiT's 1-bit α·sign(x − β) (`_ScaledSignSTE`): elastic, 1 bit, signed."""
        return self.has_step and self.bits == 1 and self.signed

    def training_operands(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """β (in x's dtype, None without a shift) and the step α with LSQ's gradient scaling, as the training forward
        uses them on input x; calibrates first where `forward` would."""
        shift = self.effective_shift().to(x.dtype) if hasattr(self, "shift") else None
        if self._calibration_batches is not None or not self._seen_calibrated:
            with torch.no_grad():  # calibration sees x − β, as in the no-grad forward
                self._calibrate_once(x if shift is None else x - shift)
        step = _grad_scale(self.step.clamp_min(1e-5), 1.0 / math.sqrt(x.numel() * max(self.q_p, 1))).to(x.dtype)
        return shift, step

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The forward with autograd of the schemes with a step: one autograd function (above) computes x − β,
        the quantization and their gradients."""
        shift, step = self.training_operands(x)
        if self.is_scaled_sign:
            # BiT: the STE window is |x − β| ≤ α and ∂/∂α = sign(x − β)
            return _ScaledSignSTE.apply(x, shift, step)
        return _LSQRound.apply(x, shift, step, self.q_n, self.q_p)

    def extra_repr(self) -> str:
        shift = f", shift={list(self.shift.shape)}" if hasattr(self, "shift") else ""
        if hasattr(self, "shift") and self.shift_dtype != torch.float32:
            shift += f", shift_dtype={str(self.shift_dtype).removeprefix('torch.')}"
        return f"bits={self.bits}, signed={self.signed}, scheme={self.scheme}{shift}"


def make_activation_quantizer(config, *, signed: bool = True, shift_shape: tuple[int, ...] | None = None) -> nn.Module:
    """The quantizer `config` asks for (`activation_bits`, `activation_quantizer`, `ste`, `activation_shift_dtype`,
    `activation_step_init`), or `nn.Identity()` at 32 bits."""
    if config.activation_bits >= 32:
        return nn.Identity()
    shift_dtype = getattr(torch, getattr(config, "activation_shift_dtype", "float32"))
    return ActivationQuantizer(config.activation_bits, signed=signed, scheme=config.activation_quantizer,
                               shift_shape=shift_shape, ste=config.ste, shift_dtype=shift_dtype,
                               step_init=getattr(config, "activation_step_init", "lsq"))


__all__ = ["ACTIVATION_SCHEMES", "ActivationQuantizer", "NotCalibratedError", "make_activation_quantizer", "quantization_range"]
