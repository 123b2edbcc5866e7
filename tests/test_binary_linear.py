import pytest
import torch

from hf_binary_bert import BinaryLinear, PackedBinaryLinear
from hf_binary_bert.binarization import sign_ste
from hf_binary_bert.format import pack_bits, unpack_bits, unpack_signs


def test_pack_unpack_round_trip_and_bit_order():
    bits = torch.rand(5, 21, generator=torch.Generator().manual_seed(1)) > 0.5
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 3)
    assert torch.equal(unpack_bits(packed, 21), bits)
    # bit j of byte k holds element 8k + j (least significant bit first)
    one = torch.zeros(1, 9, dtype=torch.bool)
    one[0, 0] = one[0, 8] = True
    assert pack_bits(one).tolist() == [[1, 1]]
    with pytest.raises(ValueError, match="expected ceil"):
        unpack_bits(packed, 30)


@pytest.mark.parametrize("ste, expected", [("clipped_identity", [0.0, 1.0, 1.0, 1.0, 0.0]), ("approx_sign", [0.0, 1.0, 2.0, 1.0, 0.0])])
def test_ste_forward_and_gradients(ste, expected):
    x = torch.tensor([-1.5, -0.5, 0.0, 0.5, 1.5], requires_grad=True)
    y = sign_ste(x, ste)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == expected


def test_mean_abs_scale_matches_xnor_formula():
    torch.manual_seed(0)
    layer = BinaryLinear(16, 8, weight_scale="mean_abs", num_groups=2)
    w = layer.weight.detach()
    alpha = torch.stack([w[:4].abs().mean(), w[4:].abs().mean()])
    expected = torch.cat([alpha[0] * torch.where(w[:4] >= 0, 1.0, -1.0), alpha[1] * torch.where(w[4:] >= 0, 1.0, -1.0)])
    assert torch.allclose(layer.quantized_weight(), expected)
    x = torch.randn(3, 16)
    assert torch.allclose(layer(x), x @ expected.T + layer.bias, atol=1e-6)


def test_learned_offset_initialisation():
    torch.manual_seed(0)
    layer = BinaryLinear(10, 6, weight_scale="learned_offset", num_groups=3)
    w = layer.weight.detach().reshape(3, -1)
    gamma = w.mean(1)
    assert torch.allclose(layer.weight_offset, gamma)
    assert torch.allclose(layer.weight_scale, (w - gamma[:, None]).abs().mean(1))
    wq = layer.quantized_weight().detach().reshape(3, -1)
    assert torch.allclose(wq, layer.weight_scale[:, None].detach() * torch.where(w >= gamma[:, None], 1.0, -1.0) + gamma[:, None])


def test_learned_scale_and_offset_receive_their_gradients():
    """L = Σ y, y = x·(α·B + γ)ᵀ + b with B = sign_STE(W − γ) (clipped identity: 1[|W − γ| ≤ 1]):
    ∂L/∂α = Σ_n Σ_k c_k B[n, k], ∂L/∂W[n, k] = α·c_k·1[|W − γ| ≤ 1], ∂L/∂γ = Σ_n Σ_k c_k (1 − α·1[|W − γ| ≤ 1]),
    with c_k = Σ_m x[m, k]."""
    torch.manual_seed(0)
    layer = BinaryLinear(8, 4, weight_scale="learned_offset")
    with torch.no_grad():
        layer.weight[0, :3] += 2.0  # outside the STE window
    x = torch.randn(2, 8)
    layer(x).sum().backward()
    alpha, gamma, w = layer.weight_scale.detach(), layer.weight_offset.detach(), layer.weight.detach()
    c = x.sum(0)
    signs = torch.where(w - gamma >= 0, 1.0, -1.0)
    window = ((w - gamma).abs() <= 1).float()
    assert 0 < window.sum() < window.numel()
    torch.testing.assert_close(layer.weight_scale.grad, (signs * c).sum().reshape(1))
    torch.testing.assert_close(layer.weight.grad, alpha * c * window)
    torch.testing.assert_close(layer.weight_offset.grad, (c * (1 - alpha * window)).sum().reshape(1))


@pytest.mark.parametrize("scheme", ["mean_abs", "learned", "learned_offset"])
@pytest.mark.parametrize("groups", [1, 4, 12])
def test_freeze_unfreeze_keep_the_forward(scheme, groups):
    torch.manual_seed(0)
    layer = BinaryLinear(19, 12, weight_scale=scheme, num_groups=groups)
    x = torch.randn(4, 19)
    packed = layer.freeze()
    assert isinstance(packed, PackedBinaryLinear)
    assert packed.weight_packed.shape == (12, 3) and packed.weight_packed.dtype == torch.uint8
    assert not any(p.shape == (12, 19) for p in packed.parameters())
    assert torch.equal(packed(x), layer(x))
    again = packed.unfreeze(scheme)
    assert torch.allclose(again(x), layer(x), atol=1e-5)


def test_invalid_groups_raise():
    with pytest.raises(ValueError, match=r"num_groups \(5\) must divide out_features \(12\)"):
        BinaryLinear(4, 12, num_groups=5)


def test_unpack_signs_matches_bits():
    bits = torch.rand(7, 29, generator=torch.Generator().manual_seed(2)) > 0.5
    signs = unpack_signs(pack_bits(bits), 29, torch.float64)
    assert signs.dtype == torch.float64 and signs.shape == (7, 29)
    assert torch.equal(signs, bits.double() * 2 - 1)
    with pytest.raises(ValueError, match="must be uint8"):
        unpack_signs(pack_bits(bits).int(), 29)
