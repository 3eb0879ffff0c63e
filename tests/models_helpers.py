"""Shared pieces of the STDiT2 tests: a tiny config, a model whose zero-initialised outputs
are given values (a fresh model outputs exactly 0, which would make comparisons vacuous),
and random inputs."""

from __future__ import annotations

import torch

from soraflow.models import STDiT2, STDiT2Config, build_model

CAPTION_CHANNELS = 16
CAPTION_LEN = 6


def tiny_config(**overrides) -> STDiT2Config:
    fields = dict(
        hidden_size=48, depth=2, num_heads=2, caption_channels=CAPTION_CHANNELS, caption_max_length=CAPTION_LEN
    )
    fields.update(overrides)
    return STDiT2Config(**fields)


def randomize_zero_init(model: STDiT2, temporal: bool = True, seed: int = 1) -> STDiT2:
    """Give the zero-initialised projections random values (optionally not the temporal one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layers = [model.final_layer.linear] + [b.cross_attn.proj for b in model.blocks]
        if temporal:
            layers += [b.attn_temp.proj for b in model.blocks]
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.2)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.2)
    return model


def tiny_model(seed: int = 0, temporal: bool = True, **overrides) -> STDiT2:
    return randomize_zero_init(build_model(tiny_config(**overrides), seed=seed), temporal=temporal).eval()


def inputs(batch=2, frames=3, height=6, width=8, caption_len=CAPTION_LEN, seed=0, channels=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, frames, height, width, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randn(batch, caption_len, CAPTION_CHANNELS, generator=g)
    kwargs = {"height": torch.full((batch,), height * 8.0), "width": torch.full((batch,), width * 8.0)}
    return x, t, y, kwargs

