"""Binarized embedding tables (BiBERT's 1-bit embeddings): the training form `BinaryEmbedding` (latent float table)
and the inference form `PackedBinaryEmbedding` (packed uint8 bits + one scale per row).

Each row v (one token's vector) is binarized on its own, with the configured `weight_scale` scheme:
    E_q[v] = α_v · sign(E[v] − γ_v) + γ_v      (γ_v = 0 without an offset; α_v = mean|E[v]| for "mean_abs")
as BiBERT (Qin et al., ICLR 2022, §4 "binarize the embedding layer", row-wise scaling factors).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..format import dequantize, packed_length
from .linear import BinarizedWeightMixin
from .ste import sign_ste


class BinaryEmbedding(BinarizedWeightMixin, nn.Embedding):
    r"""`nn.Embedding` whose table [num_embeddings, embedding_dim] is binarized per row in the forward
    (`BinarizedWeightMixin.quantized_weight`, gradient through the STE to the latent table).

    Args:
        num_embeddings, embedding_dim, padding_idx: as `torch.nn.Embedding`.
        weight_scale: `"mean_abs"`, `"learned"` or `"learned_offset"`; one α (and γ) per row.
        ste: straight-through estimator of sign.

    Raises:
        ValueError: for an unknown `weight_scale`.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 weight_scale: str = "mean_abs", ste: str = "clipped_identity", device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx, device=device, dtype=dtype)
        self._init_binarization(weight_scale, num_embeddings, ste, device, dtype)
        if self.weight.device.type != "meta":
            self.reset_scales()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # Binarize only the rows looked up (each row has its own α, γ): the same values and gradients as
        # F.embedding(input, self.quantized_weight()), without a binarized copy of the whole table per forward.
        rows = F.embedding(input, self.weight, self.padding_idx)
        if self.scale_mode == "mean_abs":
            return self._mix(rows.abs().mean(-1, keepdim=True) * sign_ste(rows, self.ste), rows)
        alpha = F.embedding(input, self.weight_scale.unsqueeze(1), self.padding_idx)
        if not self.has_offset:
            return self._mix(alpha * sign_ste(rows, self.ste), rows)
        gamma = F.embedding(input, self.weight_offset.unsqueeze(1), self.padding_idx)
        return self._mix(alpha * sign_ste(rows - gamma, self.ste) + gamma, rows)

    @torch.no_grad()
    def freeze(self) -> "PackedBinaryEmbedding":
        """The inference form: packed bits + per-row scales, no latent table. Same forward."""
        packed = PackedBinaryEmbedding(self.num_embeddings, self.embedding_dim, has_offset=self.has_offset,
                                       device=self.weight.device)
        for name, tensor in self.packed_tensors().items():
            getattr(packed, name).copy_(tensor)
        return packed.train(self.training)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, **kwargs) -> "BinaryEmbedding":
        """A `BinaryEmbedding` sharing `embedding`'s table, with scales initialised from it."""
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, device="meta", **kwargs)
        module._share_weight(embedding.weight)
        return module

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_scale={self.scale_mode}, ste={self.ste}"


class PackedBinaryEmbedding(nn.Module):
    r"""Inference form of `BinaryEmbedding`.

    Buffers: `weight_packed` uint8 [num_embeddings, ceil(embedding_dim / 8)], `weight_scale` float32
    [num_embeddings] (α_v), `weight_offset` float32 [num_embeddings] (γ_v, offset scheme only). The forward gathers
    the packed rows of the requested ids and unpacks only those: ids [...] → vectors [..., embedding_dim].
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, has_offset: bool = False, device=None):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.has_offset = has_offset
        self.register_buffer("weight_packed", torch.zeros(num_embeddings, packed_length(embedding_dim), dtype=torch.uint8, device=device))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=torch.float32, device=device))
        if has_offset:
            self.register_buffer("weight_offset", torch.zeros(num_embeddings, dtype=torch.float32, device=device))

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The whole table E = α·B + γ [num_embeddings, embedding_dim] in `dtype`."""
        return dequantize(self.weight_packed, self.embedding_dim, self.weight_scale,
                          self.weight_offset if self.has_offset else None, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        flat = input.reshape(-1)
        offset = self.weight_offset[flat] if self.has_offset else None
        vectors = dequantize(self.weight_packed[flat], self.embedding_dim, self.weight_scale[flat], offset)
        return vectors.reshape(*input.shape, self.embedding_dim)

    @torch.no_grad()
    def unfreeze(self, weight_scale: str, ste: str = "clipped_identity") -> BinaryEmbedding:
        """A trainable `BinaryEmbedding` whose latent table is α·B + γ (so it binarizes back to the same B)."""
        module = BinaryEmbedding(self.num_embeddings, self.embedding_dim, weight_scale=weight_scale, ste=ste,
                                 device=self.weight_packed.device)
        module.weight.copy_(self.dequantized_weight())
        module.copy_scales_from(self)
        return module.train(self.training)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, has_offset={self.has_offset}"


__all__ = ["BinaryEmbedding", "PackedBinaryEmbedding"]
