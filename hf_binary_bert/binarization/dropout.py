"""Dropout that keeps a bool mask for the backward pass instead of the float noise tensor.

PyTorch's CPU dropout (`torch.nn.functional.dropout`, ATen's `_dropout_impl`) draws noise = Bernoulli(1 − p) / (1 − p)
into a float tensor the size of the input and returns input · noise; autograd then keeps that float noise (4 bytes an
element) until the backward pass. `mask_dropout` draws the same noise with the same calls (so the same random numbers
and the same output, bit for bit) and keeps only noise ≠ 0 as bool (1 byte an element): the backward pass rebuilds
noise = 1[kept] · 1/(1 − p), the same float values, and multiplies the gradient by it as autograd would. For the
attention probabilities of a BERT layer at batch 32 × 128 tokens that is 6 MiB kept instead of 24 MiB.
"""

from __future__ import annotations

import torch
from torch import nn

from ..kernels.reference import dropout_backward


def dropout_noise(x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """noise = Bernoulli(1 − p) / (1 − p) shaped like x, drawn as ATen's `_dropout_impl` draws it (the same random
    numbers), its kept mask noise ≠ 0 (bool) and its nonzero value 1/(1 − p) computed as there (0-d)."""
    noise = torch.empty_like(x).bernoulli_(1 - p)
    noise.div_(1 - p)
    return noise, noise != 0, torch.ones((), dtype=x.dtype).div_(1 - p)


def dropout_kept(shape: torch.Size, p: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept mask of `dropout_noise` (bool, `shape`) drawn directly as bool, and 1/(1 − p) (0-d, `dtype`): the
    same random numbers as the float draw, since ATen's CPU `bernoulli_(p)` draws the same values whatever the output
    dtype (with MKL: integers from one stream, then copied; without: one draw per element) — the fused attention
    path's test compares the two draws."""
    kept = torch.empty(shape, dtype=torch.bool).bernoulli_(1 - p)
    return kept, torch.ones((), dtype=dtype).div_(1 - p)


class _MaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        noise, kept, ctx.keep_scale = dropout_noise(x, p)
        ctx.save_for_backward(kept)
        return x * noise

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kept,) = ctx.saved_tensors
        return dropout_backward(grad, kept, ctx.keep_scale), None


def mask_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`torch.nn.functional.dropout(x, p, training)` with the same values (and random draws); when autograd records
    it, it keeps a bool mask instead of the float noise. Other devices than the CPU, p ∉ (0, 1), or no autograd:
    `torch.nn.functional.dropout` itself."""
    if not training or not 0 < p < 1 or x.device.type != "cpu" or not (torch.is_grad_enabled() and x.requires_grad):
        return nn.functional.dropout(x, p, training)
    return _MaskDropout.apply(x, p)


class MaskDropout(nn.Dropout):
    """`nn.Dropout` computed by `mask_dropout` (same values, a bool mask kept for the backward pass)."""

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


__all__ = ["MaskDropout", "mask_dropout", "use_mask_dropout_"]
