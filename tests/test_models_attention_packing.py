"""Packed temporal attention (``STDiT2Config.temporal_attention_pack``): several short sequences
attended as one with a block-diagonal mask must give what attending them one by one gives.

Packing runs on CUDA only (``Attention.pack_devices``); these tests turn it on for the CPU to
compare both paths on the same device, in fp64 where the results must agree to rounding."""

from __future__ import annotations

import pytest
import torch

from soraflow.config import load_params
from soraflow.models.config import ModelConfig, STDiT2Config
from soraflow.models.layers import Attention, RotaryEmbedding, block_diagonal_mask, pack_factor
from soraflow.models.stdit2 import STDiT2

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize(
    ("sequences", "tokens", "pack", "expected"),
    [
        (3240, 16, 128, 8),  # XL/2 240p x 16 frames, batch 8: 405 packs of 128 tokens
        (405, 16, 128, 5),  # batch 1: 405 = 3^4 * 5, so packs of 5 (80 tokens)
        (7, 16, 128, 7),  # a prime count: all 7 in one pack (112 tokens)
        (11, 16, 128, 1),  # 11 does not fit in 128 tokens and has no other divisor
        (64, 16, 0, 1),  # packing off
        (64, 200, 128, 1),  # sequences longer than a pack are left alone
    ],
)
def test_pack_factor_is_the_largest_divisor_that_fits(sequences, tokens, pack, expected):
    g = pack_factor(sequences, tokens, pack)
    assert g == expected
    assert sequences % g == 0 and (g == 1 or g * tokens <= pack)


def test_block_diagonal_mask_keeps_each_sequence_to_itself():
    mask = block_diagonal_mask(3, 2)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1],
            [0, 0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def _attention(pack_tokens: int) -> Attention:
    torch.manual_seed(0)
    attn = Attention(48, 4, pack_tokens=pack_tokens).double()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    attn.pack_devices = ("cpu",)
    return attn


@pytest.mark.parametrize("with_rope", [True, False])
def test_packed_attention_equals_one_sequence_at_a_time(with_rope):
    """Values and gradients (input, projections, q/k norm gains) of 12 sequences of 5 tokens,
    packed 6 at a time (30 tokens), against the unpacked module with the same weights."""
    packed, plain = _attention(32), _attention(0)
    assert pack_factor(12, 5, packed.pack_tokens) == 6
    rope = RotaryEmbedding(12).cos_sin(5) if with_rope else None
    rope = tuple(r.double() for r in rope) if rope else None
    x = torch.randn(12, 5, 48, dtype=torch.float64)
    grad = torch.randn(12, 5, 48, dtype=torch.float64)
    results = []
    for module in (packed, plain):
        xi = x.clone().requires_grad_()
        out = module(xi, rope=rope)
        out.backward(grad)
        results.append((out, xi.grad, *(p.grad for p in module.parameters())))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # and packing does attend across what it packs if the mask is left out: the test can fail
    qkv = packed.qkv(x).reshape(2, 30, 144)
    unmasked = packed._attend(qkv, tuple(r.repeat(6, 1) for r in rope) if rope else None).view(12, 5, 48)
    assert not torch.allclose(packed.proj(unmasked), results[1][0], atol=1e-6)


def test_packing_is_cuda_only_by_default():
    attn = Attention(48, 4, pack_tokens=128)
    assert attn.pack_devices == ("cuda",)
    assert STDiT2Config().temporal_attention_pack == 128


def test_params_model_section_sets_the_pack_size():
    assert load_params().model.temporal_attention_pack == 128  # the project's params.yaml
    config = ModelConfig(hidden_size=48, num_heads=4, temporal_attention_pack=0).resolve(16, 8)
    assert config.temporal_attention_pack == 0
    model = STDiT2(config)
    assert all(blk.attn_temp.pack_tokens == 0 and blk.attn.pack_tokens == 0 for blk in model.blocks)
    with pytest.raises(ValueError):
        ModelConfig(temporal_attention_pack=-1)


def test_stdit2_with_packed_temporal_attention_matches_unpacked():
    """A whole STDiT2 (per-sample and per-frame timesteps), packing forced on for the CPU."""
    torch.manual_seed(0)
    config = STDiT2Config(
        hidden_size=48, depth=2, num_heads=4, caption_channels=16, caption_max_length=6, zero_init_temporal=False
    )
    model = STDiT2(config).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 4, 4, 6, 6, dtype=torch.float64)
    y = torch.randn(2, 6, 16, dtype=torch.float64)
    size = {"height": torch.tensor([48.0, 48.0]), "width": torch.tensor([48.0, 48.0])}
    for t in (torch.tensor([10.0, 700.0]), torch.tensor([[0.0, 300.0, 300.0, 300.0], [5.0, 5.0, 900.0, 900.0]])):
        kwargs = dict(size)
        if t.dim() == 2:  # per-frame timesteps (the image-to-video / extension path)
            kwargs["x_mask"] = t > 0
            t = t.amax(dim=1)
        plain = model(x, t, y, **kwargs)
        for blk in model.blocks:
            blk.attn_temp.pack_devices = ("cpu",)
        packed = model(x, t, y, **kwargs)
        for blk in model.blocks:
            blk.attn_temp.pack_devices = ("cuda",)
        assert plain.abs().max() > 0.1
        torch.testing.assert_close(packed, plain, rtol=1e-10, atol=1e-12)


def test_compiled_packed_attention_matches_eager():
    """Inductor traces the packing (pack_factor on Python ints, the mask built in the graph)."""
    attn = _attention(32).float()
    rope = RotaryEmbedding(12).cos_sin(5)
    x = torch.randn(12, 5, 48)
    eager = attn(x, rope=rope)
    compiled = torch.compile(attn, fullgraph=True)(x, rope=rope)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
