"""sign(x) with straight-through estimators (STE) for its gradient."""

from __future__ import annotations

import torch


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0) = +1, so every value is exactly ±1 (and packs to one bit). Same shape and dtype as x.

    Computed as sign(sign(x) + ½) ({−1, 0, 1} → {−½, ½, 1½} → {−1, 1, 1}): the same values as
    `torch.where(x >= 0, 1, -1)` (except NaN, which stays NaN), about 9× faster on the CPU.
    """
    return torch.sign(x).add_(0.5).sign_()


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, ste: str) -> torch.Tensor:
        # the clipped identity needs only the window 1[|x| ≤ 1]: saved as bool (1 byte a value instead of 4)
        ctx.save_for_backward(x.abs() <= 1 if ste == "clipped_identity" and x.requires_grad else x)
        ctx.ste = ste
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (saved,) = ctx.saved_tensors
        if ctx.ste == "clipped_identity":
            # Courbariaux et al. 2016 (BinaryConnect / BNN): d sign(x)/dx ≈ 1_{|x| ≤ 1}
            window = saved if saved.dtype == torch.bool else saved.abs() <= 1
            grad = grad_output * window.to(grad_output.dtype)
        else:
            x = saved
            # Bi-Real Net (Liu et al. 2018), ApproxSign: d/dx ≈ 2 − 2|x| for |x| < 1, else 0
            grad = grad_output * (2.0 - 2.0 * x.abs()).clamp_min(0.0).to(grad_output.dtype)
        return grad, None


def sign_ste(x: torch.Tensor, ste: str = "clipped_identity") -> torch.Tensor:
    """Forward: `binary_sign(x)`. Backward: the straight-through estimator `ste`.

    Args:
        x: any shape.
        ste: `"clipped_identity"` (gradient 1 where |x| ≤ 1, 0 elsewhere) or `"approx_sign"` (Bi-Real Net:
            2 − 2|x| where |x| < 1, 0 elsewhere).

    Raises:
        ValueError: for another `ste`.
    """
    if ste not in ("clipped_identity", "approx_sign"):
        raise ValueError(f"ste must be one of ['clipped_identity', 'approx_sign'], got {ste!r}")
    return _SignSTE.apply(x, ste)


def round_ste(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x rounded to `dtype` (round to nearest even, as `Tensor.to` rounds) and returned in x's dtype, with a
    straight-through gradient: the forward value is exactly the rounded one, the gradient to x is 1 (the
    identity STE of quantization-aware training, Bengio et al. 2013). Same shape as x; x itself when `dtype` is
    x's dtype. Under `no_grad` (or for an x without gradient) the rounded tensor, detached.

    Used where a value is stored narrower than it is trained: the elastic shifts β (`activation_shift_dtype`) and
    the full-precision parts saved in `fp_dtype` (`format.stored_dtypes`).
    """
    if x.dtype == dtype:
        return x
    rounded = x.detach().to(dtype).to(x.dtype)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return rounded
    return rounded + (x - x.detach())  # = rounded exactly (+ 0), gradient 1 to x
