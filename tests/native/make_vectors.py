"""Writes tests/native/vectors.bin: inputs and expected outputs of the fused Linears, computed by the pure-PyTorch
reference twins (`hf_binary_bert.kernels.reference.w1a1_linear` / `w1a8_linear`), for the C-level kernel test
(tests/native/test_kernels_main.cpp), which must reproduce every output bit for bit on every instruction set.

    python tests/native/make_vectors.py [OUT]      # rewrites tests/native/vectors.bin (committed), or writes OUT

Format (little-endian), after the magic b"HFBV0001" and an int32 case count, per case:
    int32 kind (0 = w1a1, 1 = w1a8), M, K, N, a, b, dynamic, flags (1 = shift, 2 = gamma, 4 = bias)
          (w1a1: a = mode, b = scale_by_step; w1a8: a = q_min, b = q_max)
    float32 step, threshold
    float32 x[M·K], uint8 packed[N·ceil(K/8)], float32 alpha[N], gamma[N] (flag 2), bias[N] (flag 4),
    shift[K] (flag 1), expected[M·N]
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hf_binary_bert.kernels import reference  # noqa: E402
from hf_binary_bert.format import pack_bits  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("vectors.bin")
SIGNED, UNSIGNED_GE, UNSIGNED_GT = reference.SIGNED, reference.UNSIGNED_GE, reference.UNSIGNED_GT

# (M, K, N, mode, scale_by_step, shift, gamma, bias, threshold, step)
W1A1 = [
    (1, 64, 8, SIGNED, False, False, False, False, 0.0, 1.0),
    (3, 100, 13, SIGNED, True, True, True, True, 0.0, 0.3),
    (5, 300, 40, UNSIGNED_GE, False, True, True, True, 0.5, 1.0),
    (4, 768, 33, UNSIGNED_GT, True, True, False, True, 0.5, 0.25),
    (5, 1000, 24, SIGNED, True, False, True, False, 0.0, 0.7),
    (6, 520, 70, UNSIGNED_GE, False, False, True, True, 0.5, 1.0),
    (2, 3072, 17, SIGNED, False, True, True, True, 0.0, 1.0),
]
# (M, K, N, q_min, q_max, dynamic, shift, gamma, bias, step)
W1A8 = [
    (1, 64, 16, -128, 127, False, False, False, False, 0.05),
    (3, 100, 13, -8, 7, False, True, True, True, 0.25),
    (5, 300, 40, 0, 15, False, True, True, False, 0.125),
    (4, 768, 33, -127, 127, True, True, True, True, 1.0),
    (4, 1030, 20, -2, 1, False, False, True, True, 0.5),
    (3, 2052, 17, 0, 255, False, True, False, True, 0.0625),
    (5, 200, 35, -127, 127, True, False, False, False, 1.0),
]


def _inputs(g, m, k, step):
    x = torch.randn(m, k, generator=g) * 2
    x[:, ::7] = 0.0  # sign(0) = +1, levels at 0
    x[:, 3::11] = step * (torch.randint(-20, 20, (m, len(range(3, k, 11))), generator=g) + 0.5)  # ties at half steps
    return x


def main() -> None:
    g = torch.Generator().manual_seed(20240611)
    cases = []
    for m, k, n, mode, by_step, has_shift, has_gamma, has_bias, thr, step in W1A1:
        x = _inputs(g, m, k, step)
        shift = (0.1 * torch.randn(k, generator=g)) if has_shift else None
        if shift is not None:
            x[:, 5::13] = shift[5::13]  # x − β = 0 exactly
        if mode != SIGNED:
            x = x.abs()
        packed = pack_bits(torch.randn(n, k, generator=g) >= 0)
        alpha = torch.rand(n, generator=g) + 0.5
        gamma = 0.1 * torch.randn(n, generator=g) if has_gamma else None
        bias = torch.randn(n, generator=g) if has_bias else None
        y = reference.w1a1_linear(x, packed, alpha, gamma, bias, shift, torch.tensor(step), thr, mode, by_step)
        cases.append((0, m, k, n, mode, int(by_step), 0, step, thr, x, packed, alpha, gamma, bias, shift, y))
    for m, k, n, qn, qp, dynamic, has_shift, has_gamma, has_bias, step in W1A8:
        x = _inputs(g, m, k, step)
        shift = (0.1 * torch.randn(k, generator=g)) if has_shift else None
        packed = pack_bits(torch.randn(n, k, generator=g) >= 0)
        alpha = torch.rand(n, generator=g) + 0.5
        gamma = 0.1 * torch.randn(n, generator=g) if has_gamma else None
        bias = torch.randn(n, generator=g) if has_bias else None
        y = reference.w1a8_linear(x, packed, alpha, gamma, bias, shift, torch.tensor(step), qn, qp, dynamic)
        cases.append((1, m, k, n, qn, qp, int(dynamic), step, 0.0, x, packed, alpha, gamma, bias, shift, y))
    with OUT.open("wb") as f:
        f.write(b"HFBV0001" + struct.pack("<i", len(cases)))
        for kind, m, k, n, a, b, dyn, step, thr, x, packed, alpha, gamma, bias, shift, y in cases:
            flags = (shift is not None) | (gamma is not None) << 1 | (bias is not None) << 2
            f.write(struct.pack("<8i2f", kind, m, k, n, a, b, dyn, flags, step, thr))
            for t in (x, packed, alpha, gamma, bias, shift, y):
                if t is not None:
                    f.write(t.contiguous().numpy().tobytes())
    print(f"{OUT}: {len(cases)} cases, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
