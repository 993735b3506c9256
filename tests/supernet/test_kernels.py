import torch

from supernet.mixers.attention import KERNELS, LinearAttention, LocalAttention, SoftmaxAttention, make_kernel
from supernet.quant import QuantLinear, fake_quantize_activation, fake_quantize_weight


def qkv(tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, tokens, 8, generator=g) for _ in range(3)]


def naive_local(q, k, v, window):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    index = torch.arange(q.shape[-2])
    scores = scores.masked_fill((index[None] - index[:, None]).abs() > window, float("-inf"))
    return scores.softmax(-1) @ v


def test_local_attention_paths_agree_with_the_definition():
    for tokens in (10, 40, 200):  # full window, masked kernel, sliding window
        q, k, v = qkv(tokens)
        torch.testing.assert_close(LocalAttention(window=4)(q, k, v), naive_local(q, k, v, 4), atol=1e-5, rtol=1e-5)
    q, k, v = qkv(6)
    torch.testing.assert_close(LocalAttention(window=8)(q, k, v), SoftmaxAttention(8)(q, k, v))


def test_linear_attention_matches_its_formula():
    q, k, v = qkv(12)
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    weights = phi_q @ phi_k.transpose(-1, -2)
    expected = (weights / weights.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(LinearAttention(4)(q, k, v), expected, atol=1e-5, rtol=1e-5)


def test_registry_knows_every_space_attention_type():
    from search_space import MIXERS

    assert {"softmax", "linear", "local"} <= set(KERNELS) and set(KERNELS) <= set(MIXERS)
    assert make_kernel("local", 3).window == 3


def test_weight_quantization_is_per_channel_symmetric_with_few_levels():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 32, generator=g) * torch.arange(1, 7).unsqueeze(1)  # channels of different scale
    for bits in (8, 4):
        quantized = fake_quantize_weight(weight, bits)
        for row, qrow in zip(weight, quantized, strict=True):
            assert len(torch.unique(qrow)) <= 2 ** bits - 1
            assert (qrow - row).abs().max() <= row.abs().max() / (2 ** (bits - 1) - 1) / 2 + 1e-6
    assert fake_quantize_weight(weight, 32) is weight


def test_activation_quantization_levels_and_zero():
    x = torch.linspace(-1.0, 3.0, 1000)
    quantized = fake_quantize_activation(x, 8)
    assert len(torch.unique(quantized)) <= 256
    assert (quantized - x).abs().max() <= 4.0 / 255 / 2 + 1e-6
    assert fake_quantize_activation(torch.zeros(3), 8).eq(0).all()


def test_straight_through_gradient_is_identity():
    weight = torch.randn(4, 4, requires_grad=True)
    fake_quantize_weight(weight, 4, block_size=4).sum().backward()
    torch.testing.assert_close(weight.grad, torch.ones(4, 4))
    for bits in (8, 4):
        x = torch.randn(32, requires_grad=True)
        fake_quantize_activation(x, bits).mul(2).sum().backward()
        torch.testing.assert_close(x.grad, torch.full((32,), 2.0))


def test_low_bit_weights_have_a_scale_per_block_and_activations_int8_per_row_and_block():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 64, generator=g) * torch.cat([torch.ones(32), 10 * torch.ones(32)])  # blocks of two scales
    quantized = fake_quantize_weight(weight, 4, block_size=32)
    for block in (slice(0, 32), slice(32, 64)):
        for row, qrow in zip(weight[:, block], quantized[:, block], strict=True):
            assert len(torch.unique(qrow)) <= 15
            assert (qrow - row).abs().max() <= row.abs().max() / 7 / 2 + 1e-6  # the block's own step
    x = torch.randn(2, 5, 64, generator=g) * torch.cat([torch.ones(32), 100 * torch.ones(32)])
    simulated = fake_quantize_activation(x, 4, block_size=32)
    for block in (slice(0, 32), slice(32, 64)):
        step = x[..., block].abs().amax(dim=-1, keepdim=True) / 127
        assert ((simulated[..., block] - x[..., block]).abs() <= step / 2 + 1e-6).all()


def test_quant_linear_at_8_bits_is_close_to_fp32():
    layer = QuantLinear(64, 32, bits=8)
    full = torch.nn.Linear(64, 32)
    full.load_state_dict(layer.state_dict())
    x = torch.randn(10, 64)
    error = (layer(x) - full(x)).abs().max() / full(x).abs().max()
    assert 0 < error < 0.05
