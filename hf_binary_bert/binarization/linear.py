"""Binarized Linear layers: the training form (`BinaryLinear`, latent float weights) and the inference form
(`PackedBinaryLinear`, packed uint8 bits + scales). `BinaryLinear.freeze()` and `PackedBinaryLinear.unfreeze()` convert
between the two; both compute the same forward.

Weight binarization (per group g of output rows, see `num_groups`):
    W_q = α_g · B + γ_g,  B = sign(W − γ_g) ∈ {−1, +1}   (sign(0) = +1; γ_g = 0 without an offset)
- `"mean_abs"`: α_g = ‖W_g‖₁ / n_g, recomputed every forward (XNOR-Net, Rastegari et al. 2016).
- `"learned"`: α_g is a parameter, α₀ = ‖W_g‖₁ / n_g (XNOR-Net++-style learned scale; the blog series' learned α).
- `"learned_offset"`: α_g and γ_g are parameters, γ₀ = mean(W_g), α₀ = mean|W_g − γ₀| (the blog series' offset).
The gradient of sign goes through a straight-through estimator (`ste.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..format import dequantize, pack_weight, packed_length, per_row
from ..kernels import ops
from ..kernels.linear import InferencePlanReader
from ..kernels.ops import training_kernels
from ..kernels.reference import SIGNED, lsq_backward, lsq_values
from .activation import ActivationQuantizer, _shift_grad
from .kernel_dispatch import kernel_applies, kernel_forward
from .ste import binary_sign, sign_ste


def _check_groups(out_features: int, num_groups: int) -> None:
    if num_groups < 1 or out_features % num_groups != 0:
        raise ValueError(f"num_groups ({num_groups}) must divide out_features ({out_features})")


def initial_scales(weight: torch.Tensor, num_groups: int, with_offset: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Initial (or, for `"mean_abs"`, the per-forward) scale α [G] and offset γ [G] or None of a weight [out, in].

    Without offset: α_g = mean|W_g|. With offset: γ_g = mean(W_g), α_g = mean|W_g − γ_g|.
    """
    groups = weight.reshape(num_groups, -1)
    if not with_offset:
        return groups.abs().mean(dim=1), None
    gamma = groups.mean(dim=1)
    return (groups - gamma.unsqueeze(1)).abs().mean(dim=1), gamma


def current_scales(scale_mode: str, num_groups: int, weight: torch.Tensor, weight_scale=None, weight_offset=None):
    """α [G] and γ [G] (or None) that a binarized weight uses in its forward: recomputed from `weight` for
    `"mean_abs"`, the stored parameters otherwise."""
    if scale_mode == "mean_abs":
        return initial_scales(weight, num_groups, False)
    return weight_scale, weight_offset


class BinarizedWeightMixin:
    """The binarization of a latent weight W [rows, cols] shared by `BinaryLinear` and `BinaryEmbedding`:
    α [num_groups] (`weight_scale`) and γ [num_groups] (`weight_offset`) parameters per scheme, their
    initialisation, W_q = α·sign_STE(W − γ) + γ and the packed form."""

    weight: torch.Tensor
    scale_mode: str
    num_groups: int
    ste: str
    # λ of progressive binarization (`DistillationArguments.binarization_ramp_ratio`): in training mode the forward
    # uses λ·W_q + (1 − λ)·W; 1 (the default, and always in eval mode) is the binarized weight alone. A plain
    # attribute, not a buffer: the state dict and the packed checkpoint do not change.
    binarization_mix: float = 1.0

    @property
    def mixing(self) -> bool:
        """True while a training forward blends the latent weight in (`binarization_mix` < 1)."""
        return self.training and self.binarization_mix < 1

    def _init_binarization(self, weight_scale: str, num_groups: int, ste: str, device=None, dtype=None) -> None:
        if weight_scale not in ("mean_abs", "learned", "learned_offset"):
            raise ValueError(f"weight_scale must be one of ['mean_abs', 'learned', 'learned_offset'], got {weight_scale!r}")
        self.scale_mode = weight_scale
        self.num_groups = num_groups
        self.ste = ste
        if weight_scale != "mean_abs":
            self.weight_scale = nn.Parameter(torch.ones(num_groups, device=device, dtype=dtype))
        if weight_scale == "learned_offset":
            self.weight_offset = nn.Parameter(torch.zeros(num_groups, device=device, dtype=dtype))

    @property
    def has_offset(self) -> bool:
        return self.scale_mode == "learned_offset"

    @torch.no_grad()
    def reset_scales(self) -> None:
        """Set the learned α (and γ) to their initial values computed from the current latent weight."""
        if self.scale_mode == "mean_abs":
            return
        alpha, gamma = initial_scales(self.weight, self.num_groups, self.has_offset)
        self.weight_scale.copy_(alpha)
        if gamma is not None:
            self.weight_offset.copy_(gamma)

    def _share_weight(self, weight: nn.Parameter) -> None:
        """Use `weight` as the latent weight and (re)create the scales on its device, initialised from it."""
        self.weight = weight
        for name in ("weight_scale", "weight_offset"):
            if hasattr(self, name):
                setattr(self, name, nn.Parameter(torch.ones(self.num_groups, dtype=weight.dtype, device=weight.device)))
        if weight.device.type != "meta":
            self.reset_scales()

    def scales(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """α [num_groups] and γ [num_groups] (None without offset) used by the current forward."""
        return current_scales(
            self.scale_mode, self.num_groups, self.weight, getattr(self, "weight_scale", None), getattr(self, "weight_offset", None)
        )

    def quantized_weight(self) -> torch.Tensor:
        """W_q = α·B + γ [rows, cols], differentiable through the STE; while `mixing`, λ·W_q + (1 − λ)·W."""
        alpha, gamma = self.scales()
        rows = self.weight.shape[0]
        if gamma is None:
            w_q = per_row(alpha, rows) * sign_ste(self.weight, self.ste)
        else:
            gamma_rows = per_row(gamma, rows)
            w_q = per_row(alpha, rows) * sign_ste(self.weight - gamma_rows, self.ste) + gamma_rows
        return self._mix(w_q, self.weight)

    def _mix(self, binarized: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """λ·binarized + (1 − λ)·latent while `mixing`, else `binarized` (progressive binarization)."""
        if not self.mixing:
            return binarized
        lam = self.binarization_mix
        return lam * binarized + (1 - lam) * latent

    def packed_tensors(self, state: dict[str, torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        """This layer's binarized weight in packed form (`format.pack_weight`); the bias is not included. The one
        packing path: `freeze` and the packed checkpoint (`format.packed_state_dict`) both call it.

        Args:
            state: `{"weight", "weight_scale", "weight_offset"}` of this layer to pack instead of its own tensors
                (e.g. from a state dict a Trainer gathered; absent scales are None).
        """
        if state is None:
            state = {name: getattr(self, name, None) for name in ("weight", "weight_scale", "weight_offset")}
        alpha, gamma = current_scales(self.scale_mode, self.num_groups, state["weight"], state.get("weight_scale"),
                                      state.get("weight_offset"))
        return pack_weight(state["weight"], alpha, gamma)

    @torch.no_grad()
    def copy_scales_from(self, packed: nn.Module) -> None:
        """Take α (and γ; 0 when `packed` has none) from a packed module, for the learned schemes."""
        if self.scale_mode != "mean_abs":
            self.weight_scale.copy_(packed.weight_scale)
        if self.has_offset:
            self.weight_offset.copy_(packed.weight_offset if packed.has_offset else torch.zeros_like(packed.weight_scale))


def _factored_linear(x: torch.Tensor, shift: torch.Tensor | None, step: torch.Tensor, bias: torch.Tensor | None,
                     factored: tuple, levels: tuple[int, int] | None = None) -> torch.Tensor:
    """s·(α_w·(q·Bᵀ) + γ_w·Σq) + b, the packed model's kernels on the operands of `BinaryLinear._factored_operands`:
    q = sign(x − β) ∈ {±1} and s = α (`levels` None: BiT's 1-bit elastic input, `kernels.ops.w1a1_linear`), or
    q = round(clip((x − β)/α, Q_n, Q_p)) for `levels` = (Q_n, Q_p) (LSQ, `kernels.ops.w1a8_linear`)."""
    packed, layout, sums, alpha, gamma = factored
    flat_shift = None if shift is None else shift.detach().reshape(-1).expand(x.shape[-1]).contiguous()
    bias = None if bias is None else bias.detach()
    if levels is None:
        return ops.w1a1_linear_impl(x.contiguous(), packed, layout, alpha, gamma, bias, flat_shift, step.detach(), 0.0,
                                    SIGNED, True)
    return ops.w1a8_linear_impl(x.contiguous(), packed, layout, sums, alpha, gamma, bias, flat_shift, step.detach(),
                                levels[0], levels[1], False)


def _factored_rebuild(x: torch.Tensor, shift: torch.Tensor | None, step: torch.Tensor, bias: torch.Tensor | None,
                      factored: tuple, levels: tuple[int, int] | None):
    """A function that computes a factored training forward's output (`_factored_linear`; the tensor that holds its
    memory, when the output is a view) again, bit for bit (integer dot products, the same epilogue), from its input:
    set on that tensor as `_rebuild` (see
    `attention._saved_as_rebuilt`: an LSQ quantizer on Q/K/V, which keeps its input, then keeps the Linear's input
    instead, which the Linear keeps anyway). Holds only detached references: no gradient, no copy."""
    x, step = x.detach(), step.detach()
    shift = None if shift is None else shift.detach()
    bias = None if bias is None else bias.detach()

    @torch.no_grad()
    def rebuild():
        out = _factored_linear(x, shift, step, bias, factored, levels)
        return out if out._base is None else out._base

    return rebuild


def _weight_and_bias_grads(ctx, g2: torch.Tensor, x_hat_of) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """∂W_q and ∂b of F.linear(x̂, W_q, b) from ∂y as [M, out] (`g2`), as AddmmBackward computes them for mat2 = W_qᵀ:
    (gradᵀ·mat1)ᵀ and Σ_m grad; `x_hat_of()` rebuilds x̂ (only called when ∂W_q is needed). The `ctx` of
    `_ScaledSignLinear` / `_LSQLinear` (W_q and b are their inputs 3 and 4)."""
    needs = ctx.needs_input_grad
    grad_weight = grad_bias = None
    if needs[3]:
        x_hat = x_hat_of()
        grad_weight = g2.t().mm(x_hat.view(-1, x_hat.shape[-1]))
        del x_hat
    if ctx.has_bias and needs[4]:
        grad_bias = g2.sum(0)
    return grad_weight, grad_bias


class _ScaledSignLinear(torch.autograd.Function):
    """F.linear(x̂, W_q, b) with x̂ = α·sign((x − β)/α) (BiT's 1-bit elastic input quantizer, `_ScaledSignSTE`), as one
    function that keeps one uint8 code per input element for the backward pass (the sign of x − β and the STE
    window) instead of the float x̂. x [..., in], W_q = α_w·B + γ_w [out, in], b [out].

    Forward: with `factored` (the packed signs B, their kernel layout, α_w and γ_w per output row; what
    `BinaryLinear._factored_operands` gives in training mode for float32 CPU tensors with the compiled kernels) the
    XNOR-popcount kernel of the packed model, `kernels.ops.w1a1_linear`: y = α·(α_w·(q·Bᵀ) + γ_w·Σq) + b with q = sign(x − β) ∈
    {±1}, the integer dot products exact — the factored order in which the packed model and the native runtime
    compute this Linear, so the training forward gives their values bit for bit for the same α, β, α_w, γ_w, b (the
    training step α carries LSQ's gradient scaling, which can move it by an ulp from the saved one; and up to an
    (x − β)/α that underflows to −0, whose sign the STE codes read as +). It equals F.linear(x̂, W_q, b)
    up to the float rounding of that sum (about 1e-6 relative), in a fraction of its time. Without `factored`,
    F.linear itself. Backward: the backward pass rebuilds x̂ = ±α exactly and runs the matmuls autograd runs for
    `F.linear`, so the gradients equal those of `F.linear(_ScaledSignSTE(x, β, α), W_q, b)` bit for bit but ∂α,
    which the compiled kernels sum in another order. The quantizer's passes: `kernels.ops.scaled_sign_*` (one each
    way)."""

    @staticmethod
    def forward(ctx, x, shift, step, weight, bias, factored=None):
        step = step.detach()
        kernels = training_kernels(x, shift, step)
        x_hat, codes = kernels.scaled_sign_forward(x, shift, step)  # as _ScaledSignSTE
        ctx.save_for_backward(codes, step, shift, weight)
        ctx.has_bias, ctx.kernels = bias is not None, kernels
        if factored is None:
            return F.linear(x_hat, weight, bias)
        del x_hat
        return _factored_linear(x, shift, step, bias, factored)

    @staticmethod
    def backward(ctx, grad):
        codes, step, shift, weight = ctx.saved_tensors
        kernels = ctx.kernels
        needs = ctx.needs_input_grad
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_weight, grad_bias = _weight_and_bias_grads(ctx, g2, lambda: kernels.scaled_sign_levels(codes, step))
        grad_x = grad_shift = grad_step = None
        if needs[0] or needs[1] or needs[2]:
            grad_x_hat = g2.mm(weight).view(codes.shape)  # a new tensor: ∂x written into it
            grad_x, grad_step = kernels.scaled_sign_backward(grad_x_hat, codes, step, out=grad_x_hat)
            grad_shift = _shift_grad(grad_x, shift) if needs[1] else None
        return (grad_x if needs[0] else None, grad_shift, grad_step if needs[2] else None, grad_weight, grad_bias,
                None)


class _LSQLinear(torch.autograd.Function):
    """F.linear(x̂, W_q, b) with LSQ's x̂ = α·round(clip((x − β)/α, Q_n, Q_p)) (`activation._LSQRound`: the 2–8-bit
    and the unsigned quantizers with a step, BiT's elastic ones included) as one function that keeps only the input
    x for the backward pass (the plain composition keeps x and the float x̂). x [..., in], W_q = α_w·B + γ_w
    [out, in], b [out].

    Forward: with `factored` (`BinaryLinear._factored_operands(..., "nib")`, training mode) the packed model's
    W1 × u8 kernel, `kernels.ops.w1a8_linear` (the packed model's kernel for 2–8-bit inputs; for the unsigned 1-bit
    elastic input the packed model runs `w1a1_linear`, the same values for finite inputs): y = α·(α_w·(q·Bᵀ) +
    γ_w·Σq) + b, q the integer levels, the dot products exact — the
    packed model's and the native runtime's order, so their values bit for bit (for the same α, β, α_w, γ_w, b),
    and F.linear(x̂, W_q, b)'s up to the float rounding of that sum; without it, F.linear itself. Backward: x̂
    computed again from x with the forward's roundings, then the matmuls autograd runs for `F.linear` and
    `_LSQRound`'s gradients (`reference.lsq_backward`): bit for bit those of `F.linear(_LSQRound(x, β, α), W_q, b)`.
    A NaN in x gives a finite forward on the kernel (its level is Q_n) where F.linear's is NaN; the backward's
    rebuilt x̂ is NaN there, so the weights' gradients show it. Under reentrant activation checkpointing
    (`use_reentrant=True`) the first forward runs without autograd, in F.linear's order, and the recomputation in
    this one: the backward then follows a forward that can differ by float rounding (transformers' default is
    non-reentrant)."""

    @staticmethod
    def forward(ctx, x, shift, step, weight, bias, q_n, q_p, factored=None, source=None):
        step = step.detach()
        # `source` = (h, f) with x = f(h) (`ActivationSource`): keep h, which f's own backward keeps anyway, instead
        # of x, and compute x = f(h) again in the backward pass (the same values: f is elementwise and deterministic)
        ctx.save_for_backward(x if source is None else source[0], shift, step, weight)
        ctx.has_bias, ctx.q_n, ctx.q_p = bias is not None, q_n, q_p
        ctx.recompute = None if source is None else source[1]
        if factored is not None:
            return _factored_linear(x, shift, step, bias, factored, (q_n, q_p))
        return F.linear(lsq_values(x, shift, step, q_n, q_p), weight, bias)  # x̂ as _LSQRound

    @staticmethod
    def backward(ctx, grad):
        x, shift, step, weight = ctx.saved_tensors
        if ctx.recompute is not None:
            with torch.no_grad():
                x = ctx.recompute(x)
        needs = ctx.needs_input_grad
        g2 = grad.reshape(-1, grad.shape[-1])  # x̂ again with the forward's roundings
        grad_weight, grad_bias = _weight_and_bias_grads(ctx, g2, lambda: lsq_values(x, shift, step, ctx.q_n, ctx.q_p))
        grad_x = grad_shift = grad_step = None
        if needs[0] or needs[1] or needs[2]:
            grad_x_hat = g2.mm(weight).view(x.shape)  # a new tensor, as x when computed again: work buffers
            grad_x, grad_shift, grad_step = lsq_backward(grad_x_hat, x, shift, step, ctx.q_n, ctx.q_p, needs[:3],
                                                         overwrite=ctx.recompute is not None)
        return grad_x, grad_shift, grad_step, grad_weight, grad_bias, None, None, None, None


class ActivationSource(nn.Module):
    """An elementwise activation y = f(h) (the FFN's GELU, `BertIntermediate.intermediate_act_fn`) that,
    while autograd records, marks its output with its input: `y._activation_source = (h, f)`. A `BinaryLinear` whose
    LSQ input quantizer (2–8 bits) reads y then keeps h for its backward pass instead of y and computes y = f(h)
    again there (`_LSQLinear`); a GELU's own backward keeps h anyway, so one [..., intermediate_size] float tensor
    less is kept per layer (at batch 32 × 128 tokens, MiniLM: 24 MiB a layer, 144 MiB for six), for one more GELU
    pass in the backward. For an f whose backward keeps its output (ReLU) it saves nothing; `binarize_` wraps GELUs
    only. The values are the same bit for bit: f runs on the same tensor with the same kernel. Its forward is f's:
    same values, no parameters, no state-dict entries."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.act(hidden)
        if torch.is_grad_enabled() and hidden.requires_grad and out is not hidden:
            out._activation_source = (hidden, self.act, hidden._version, out._version)
        return out


def _activation_source(x: torch.Tensor) -> tuple | None:
    """(h, f) when an `ActivationSource` marked `x` = f(h) and neither tensor has been changed in place since (else
    None: the backward pass then keeps x itself)."""
    source = getattr(x, "_activation_source", None)
    if source is None:
        return None
    hidden, act, hidden_version, out_version = source
    if hidden._version != hidden_version or x._version != out_version or hidden.shape != x.shape:
        return None
    return hidden, act


class BinaryLinear(BinarizedWeightMixin, nn.Linear):
    r"""Linear layer with 1-bit weights for quantization-aware training.

    Holds the latent float weight W [out_features, in_features] (trained by the optimizer) and, for the learned
    schemes, α [num_groups] (`weight_scale`) and γ [num_groups] (`weight_offset`). The forward uses the binarized
    weight W_q = α·sign(W − γ) + γ (see the module docstring):

        y = x · W_qᵀ + b,  x: [..., in_features] → y: [..., out_features]

    Args:
        in_features, out_features, bias: as `torch.nn.Linear`.
        weight_scale: `"mean_abs"`, `"learned"` or `"learned_offset"`.
        num_groups: how many α/γ: 1 (per tensor), the number of attention heads (per head) or `out_features`
            (per row); must divide `out_features`.
        ste: straight-through estimator of sign, `"clipped_identity"` or `"approx_sign"`.

    Raises:
        ValueError: for an unknown `weight_scale` or a `num_groups` that does not divide `out_features`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        weight_scale: str = "mean_abs",
        num_groups: int = 1,
        ste: str = "clipped_identity",
        device=None,
        dtype=None,
    ):
        _check_groups(out_features, num_groups)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_binarization(weight_scale, num_groups, ste, device, dtype)
        # Slot for an activation quantizer on the input (identity: full-precision activations, W1A32).
        self.input_quantizer: nn.Module = nn.Identity()
        if self.weight.device.type != "meta":
            self.reset_scales()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        quantizer = self.input_quantizer
        if (torch.is_grad_enabled() and isinstance(quantizer, ActivationQuantizer) and quantizer.has_step
                and not quantizer.mixing and not torch.is_autocast_enabled(input.device.type)):
            # An input quantizer with a step (BiT's 1-bit elastic one, LSQ's 2–8-bit ones) with autograd: one
            # function with the quantizer that keeps uint8 codes (1 bit) or only x (LSQ), not the float x̂. In
            # training mode its forward is the packed model's factored form where the compiled kernel applies
            # (`_ScaledSignLinear`, `_LSQLinear`); in eval mode, as without autograd, F.linear's (the pure-PyTorch
            # reference path's) values. Under autocast the plain path, whose matmul autocast casts.
            levels = None if quantizer.is_scaled_sign else (quantizer.q_n, quantizer.q_p)
            shift, step = quantizer.training_operands(input)
            # the kernels compute the binarized weight only: none while the latent weight is blended in
            factored = self._factored_operands(input, shift, levels) if self.training and not self.mixing else None
            if levels is None:
                return _ScaledSignLinear.apply(input, shift, step, self.quantized_weight(), self.bias, factored)
            source = _activation_source(input)
            out = _LSQLinear.apply(input, shift, step, self.quantized_weight(), self.bias, *levels, factored, source)
            if factored is not None and source is None:
                # how to compute the output again from x, which this Linear keeps anyway (so the closure keeps nothing
                # more alive), on the tensor that holds the memory (the kernel's [M, out] when `out` views it)
                root = out if out._base is None else out._base
                root._rebuild = _factored_rebuild(input, shift, step, self.bias, factored, levels)
            return out
        return F.linear(quantizer(input), self.quantized_weight(), self.bias)

    @torch.no_grad()
    def _factored_operands(self, x: torch.Tensor, shift: torch.Tensor | None, levels: tuple[int, int] | None):
        """(packed signs B uint8 [out, ceil(in / 8)], their kernel layout (`"bits"` for `w1a1_linear` when `levels`
        is None, else `"nib"` for `w1a8_linear`), Σ_k B int32 [out] (`"nib"`; else None), α_w float32 [out], γ_w
        float32 [out] or None) of the current latent weight, for the factored forward (`_factored_linear`) of a 1-bit
        elastic input (`levels` None) or LSQ levels (Q_n, Q_p); None where the compiled kernels do not
        apply (another dtype or device, no extension, `torch.compile`, an input whose last dim is not `in_features`
        (F.linear then raises), a β that is neither per input feature nor one value, levels that do not fit 8
        bits)."""
        if (not ops.available() or torch.compiler.is_compiling() or x.dtype != torch.float32 or x.device.type != "cpu"
                or x.shape[-1] != self.in_features or self.weight.dtype != torch.float32
                or self.weight.device.type != "cpu" or (self.bias is not None and self.bias.dtype != torch.float32)
                or (shift is not None and shift.numel() not in (1, self.in_features))
                or (levels is not None and (levels[0] > 0 or levels[1] < 1 or levels[1] - levels[0] > 255))):
            return None
        alpha, gamma = self.scales()
        rows, k = self.out_features, self.in_features
        packed = pack_weight(self.weight, alpha, gamma)["weight_packed"]  # B = sign(W − γ), sign(0) = +1: as sign_ste
        alpha_rows = per_row(alpha.detach().float(), rows).reshape(-1).contiguous()
        gamma_rows = None if gamma is None else per_row(gamma.detach().float(), rows).reshape(-1).contiguous()
        if levels is None:
            return packed, ops.repack_weight(packed, k, "bits"), None, alpha_rows, gamma_rows
        return packed, ops.repack_weight(packed, k, "nib"), ops.row_sums(packed, k), alpha_rows, gamma_rows

    @torch.no_grad()
    def freeze(self) -> "PackedBinaryLinear":
        """The inference form of this layer: packed bits + scales, no latent weight. Same forward."""
        packed = PackedBinaryLinear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            num_groups=self.num_groups,
            has_offset=self.has_offset,
            device=self.weight.device,
        )
        for name, tensor in self.packed_tensors().items():
            getattr(packed, name).copy_(tensor)
        if self.bias is not None:
            packed.bias.copy_(self.bias)
        packed.input_quantizer = self.input_quantizer
        return packed.train(self.training)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> "BinaryLinear":
        """A `BinaryLinear` sharing `linear`'s weight and bias tensors, with scales initialised from them."""
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta", **kwargs)
        module.bias = linear.bias
        module._share_weight(linear.weight)
        return module

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, weight_scale={self.scale_mode}, num_groups={self.num_groups}, ste={self.ste}"
        )


class PackedBinaryLinear(InferencePlanReader, nn.Module):
    r"""Inference form of `BinaryLinear`: only the packed sign bits and the scales, no latent weight.

    Buffers: `weight_packed` uint8 [out_features, ceil(in_features / 8)] (layout in `hf_binary_bert.format`),
    `weight_scale` float32 [num_groups] (α), `weight_offset` float32 [num_groups] (γ, offset scheme only); parameter
    `bias` [out_features].

    Two forwards, equal up to float rounding (exactly equal integer dot products):
    - in eval mode on the CPU, when no gradient is needed (`torch.inference_mode()` / `torch.no_grad()`), the bitwise
      kernels of `hf_binary_bert.kernels` (input quantization fused in; see `binarization.kernel_dispatch` for which quantizer
      maps to which kernel), as the model's inference plan (`inference_plan`, `kernels.linear.InferencePlan`) says:
      kernel `"reference"` turns them off; `float_activations="int8"` lets a layer without input quantizer (W1A32)
      quantize its input dynamically per row to int8 (an approximation);
    - otherwise the pure-PyTorch reference: unpack to ±1, W = α·B + γ, then `F.linear`, equal to the
      `BinaryLinear` it was frozen from.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        num_groups: int = 1,
        has_offset: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_groups(out_features, num_groups)
        self.in_features = in_features
        self.out_features = out_features
        self.num_groups = num_groups
        self.has_offset = has_offset
        self.input_quantizer: nn.Module = nn.Identity()
        self.register_buffer(
            "weight_packed", torch.zeros(out_features, packed_length(in_features), dtype=torch.uint8, device=device)
        )
        self.register_buffer("weight_scale", torch.ones(num_groups, dtype=torch.float32, device=device))
        if has_offset:
            self.register_buffer("weight_offset", torch.zeros(num_groups, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W = α·B + γ [out_features, in_features] in `dtype`."""
        return dequantize(self.weight_packed, self.in_features, self.weight_scale,
                          self.weight_offset if self.has_offset else None, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if kernel_applies(self, input):
            return kernel_forward(self, input)
        input = self.input_quantizer(input)
        bias = None if self.bias is None else self.bias.to(input.dtype)
        return F.linear(input, self.dequantized_weight(input.dtype), bias)

    @torch.no_grad()
    def unfreeze(self, weight_scale: str, ste: str = "clipped_identity") -> BinaryLinear:
        """A trainable `BinaryLinear` whose latent weight is α·B + γ (so it binarizes back to the same B)."""
        module = BinaryLinear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            weight_scale=weight_scale,
            num_groups=self.num_groups,
            ste=ste,
            device=self.weight_packed.device,
        )
        module.weight.copy_(self.dequantized_weight())
        if self.bias is not None:
            module.bias.copy_(self.bias)
        module.copy_scales_from(self)
        module.input_quantizer = self.input_quantizer
        return module.train(self.training)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"num_groups={self.num_groups}, has_offset={self.has_offset}"
        )


__all__ = ["BinarizedWeightMixin", "BinaryLinear", "PackedBinaryLinear", "binary_sign", "current_scales", "initial_scales"]
