"""Dropout for binarized students' training: a bool kept mask from a counter-based generator, kept for the backward
pass instead of a float noise tensor.

PyTorch's CPU dropout (`torch.nn.functional.dropout`, ATen's `_dropout_impl`) draws noise = Bernoulli(1 − p) / (1 − p)
into a float tensor the size of the input, one Mersenne-Twister number per element (about 6 ns each on the
machines here: 5 % of a W1A1 MiniLM distillation step), and autograd keeps that float noise (4 bytes an element)
until the backward pass. `mask_dropout` draws the kept mask (bool, 1 byte an element) with Philox4x32-10 under a
64-bit key taken from PyTorch's default CPU generator (`kernels.ops.dropout_kept`, compiled and vectorized, a
fraction of a nanosecond an element; `kernels.reference.dropout_kept` is its twin bit for bit), returns
x · (1/(1 − p)) · 1[kept] — the values `F.dropout` gives for that mask — and rebuilds the same noise
1[kept] · 1/(1 − p) in the backward pass. Same distribution as `F.dropout`, not the same random numbers; the same
masks again after `torch.manual_seed` (or a Trainer checkpoint's restored RNG state), since only the key comes from
PyTorch's generator. For the attention probabilities of a BERT layer at batch 32 × 128 tokens the mask is 6 MiB
kept instead of 24 MiB.
"""

from __future__ import annotations

import torch
from torch import nn

from ..kernels import ops, reference


def dropout_key() -> int:
    """A 64-bit Philox key (an int in [0, 2⁶⁴)) drawn from PyTorch's default CPU generator, which `torch.manual_seed`
    and the Trainer's checkpointed RNG state set."""
    return int(torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64)) & ((1 << 64) - 1)


def dropout_kept(shape: torch.Size, p: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Dropout's kept mask (bool, `shape`, each element kept with probability 1 − p; `kernels.ops.dropout_kept`
    under a fresh `dropout_key()`) and 1/(1 − p) (0-d, `dtype`, computed as ATen's dropout computes it)."""
    return ops.dropout_kept(dropout_key(), shape, 1 - p), torch.ones((), dtype=dtype).div_(1 - p)


def _apply(x: torch.Tensor, kept: torch.Tensor, keep_scale: torch.Tensor, backward: bool) -> torch.Tensor:
    """`kernels.ops.dropout_apply` (one compiled pass) for a contiguous float32 CPU x, else its PyTorch twin: the
    same values bit for bit."""
    if x.is_contiguous() and ops.training_kernels(x) is ops:
        return ops.dropout_apply(x, kept, keep_scale, backward)
    return reference.dropout_apply(x, kept, keep_scale, backward)


class _MaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        kept, ctx.keep_scale = dropout_kept(x.shape, p, x.dtype)
        ctx.save_for_backward(kept)
        return _apply(x, kept, ctx.keep_scale, False)  # x · noise for noise = 1[kept] · 1/(1 − p), bit for bit

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kept,) = ctx.saved_tensors
        return _apply(grad, kept, ctx.keep_scale, True), None


def mask_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout of x (any shape) with probability p: x · 1[kept] / (1 − p), the mask from `dropout_kept` (Philox;
    the same distribution as `torch.nn.functional.dropout`, other random numbers); when autograd records it, only
    the bool mask is kept for the backward pass. Other devices than the CPU, p ∉ (0, 1), or no autograd:
    `torch.nn.functional.dropout` itself."""
    if not training or not 0 < p < 1 or x.device.type != "cpu" or not (torch.is_grad_enabled() and x.requires_grad):
        return nn.functional.dropout(x, p, training)
    return _MaskDropout.apply(x, p)


class MaskDropout(nn.Dropout):
    """`nn.Dropout` computed by `mask_dropout` (a Philox mask, kept as bool for the backward pass)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(input)
        return mask_dropout(input, self.p, self.training)


def use_mask_dropout_(model: nn.Module) -> int:
    """Replace every plain `nn.Dropout` in `model` by a `MaskDropout` with the same p (no parameters or buffers: the
    state dict is unchanged). Returns how many."""
    replaced = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, MaskDropout(child.p, child.inplace))
                replaced += 1
    return replaced


__all__ = ["MaskDropout", "dropout_kept", "dropout_key", "mask_dropout", "use_mask_dropout_"]
