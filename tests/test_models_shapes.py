"""STDiT2 shapes, presets, parameter and FLOP counts, config validation."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from models_helpers import inputs, tiny_config, tiny_model
from soraflow.config_base import ConfigError
from soraflow.models import PRESETS, ModelConfig, STDiT2Config, build_model, count_flops, preset_config
from soraflow.models.flops import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize(
    ("frames", "height", "width"),
    [
        (1, 8, 8),  # image
        (1, 6, 10),  # image, landscape
        (4, 8, 8),  # video, square
        (3, 6, 10),  # video, landscape
        (5, 10, 6),  # video, portrait
        (3, 7, 9),  # odd sizes: padded to patch multiples, cropped back
        (2, 1, 3),  # smaller than a patch in H
    ],
)
def test_output_shape_images_videos_aspect_ratios(model, frames, height, width):
    x, t, y, kw = inputs(frames=frames, height=height, width=width)
    out = model(x, t, y, **kw)
    assert out.shape == (2, 8, frames, height, width)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_no_learned_sigma_halves_output_channels():
    m = tiny_model(learn_sigma=False)
    x, t, y, kw = inputs()
    assert m(x, t, y, **kw).shape == (2, 4, 3, 6, 8)
    assert m.learn_sigma is False and m.out_channels == 4


def test_temporal_patch_pads_frames_and_crops_back():
    m = tiny_model(patch_size=(2, 2, 2))
    x, t, y, kw = inputs(frames=3, height=5, width=7)
    x_mask = torch.tensor([[True, False, True], [False, False, True]])
    out = m(x, t, y, None, x_mask, **kw)
    assert out.shape == (2, 8, 3, 5, 7) and torch.isfinite(out).all()


def test_padding_to_patch_multiples_then_cropping(model):
    # an odd-sized input is zero-padded to patch multiples inside the model and cropped back:
    # the same as padding it ourselves and cropping the output
    x, t, y, kw = inputs(frames=2, height=7, width=9)
    out = model(x, t, y, **kw)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1))
    out_padded = model(padded, t, y, **kw)
    assert out_padded.shape[-2:] == (8, 10)
    torch.testing.assert_close(out, out_padded[..., :7, :9])


def test_accessors(model):
    assert model.in_channels == 4
    assert model.caption_max_length == 6
    assert model.caption_channels == 16
    assert isinstance(model.config, STDiT2Config)


def test_xl2_parameter_count_on_meta():
    config = preset_config("STDiT2-XL/2", caption_channels=4096, caption_max_length=200)
    model = build_model(config, device="meta")
    assert sum(p.numel() for p in model.parameters()) == 767_452_100
    assert model.num_parameters() == 767_452_100
    # the null caption is a buffer [200, 4096], not a parameter
    assert model.y_embedder.null_embedding.shape == (200, 4096)
    assert count_parameters(config)["buffers"] == 200 * 4096
    # the original logs "731.90 M" with M = 2**20
    assert f"{767_452_100 / 2**20:.2f}" == "731.90"


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_build_and_count(name):
    config = preset_config(name, caption_channels=384, caption_max_length=32)
    n = count_parameters(config)["total"]
    c, d = config.hidden_size, config.depth
    # per block: 2 self-attention (4C^2 each), cross-attention (4C^2), MLP (8C^2) = 16 C^2 weights
    assert 16 * c * c * d < n < 16 * c * c * d * 1.5 + 5e6


def test_flops_match_the_matmul_arithmetic():
    config = tiny_config()
    t, h, w = 4, 8, 8
    flops = count_flops(config, t, h, w, batch=1, caption_len=6)
    c, d, n, s, length = config.hidden_size, config.depth, t * 16, 16, 6
    per_block = (
        2 * n * c * 3 * c * 2  # two qkv
        + 2 * n * c * c * 2  # two output projections
        + 2 * n * c * c + 2 * length * c * 2 * c + 2 * n * c * c  # cross: q, kv, proj
        + 2 * n * c * 4 * c * 2  # mlp
        + 4 * t * s * s * c  # spatial attention scores + values
        + 4 * s * t * t * c  # temporal attention
        + 4 * n * length * c  # cross attention
    )
    expected_blocks = d * per_block
    assert flops["total"] > expected_blocks
    assert flops["total"] < expected_blocks * 1.25  # embedders, final layer
    backward = count_flops(config, t, h, w, batch=1, caption_len=6, backward=True)["total"]
    assert 2.7 * flops["total"] < backward < 3.1 * flops["total"]


def test_config_rejects_bad_shapes():
    with pytest.raises(ValidationError, match="divisible"):
        STDiT2Config(hidden_size=48, num_heads=5)
    with pytest.raises(ValidationError, match="even"):
        STDiT2Config(hidden_size=60, num_heads=4)  # head dim 15
    with pytest.raises(ValidationError, match="multiple of 12"):
        STDiT2Config(hidden_size=64, num_heads=4)
    with pytest.raises(ValidationError, match="extra"):
        STDiT2Config(enable_flashattn=True)  # the original's misspelled key is an error, not ignored
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("STDiT2-L/2")


def test_model_section_resolves_caption_sizes_from_the_text_encoder():
    section = ModelConfig(preset="STDiT2-S/2", depth=3)
    config = section.resolve(caption_channels=384, caption_max_length=32)
    assert (config.hidden_size, config.depth, config.caption_channels, config.caption_max_length) == (384, 3, 384, 32)
    fixed = ModelConfig(caption_channels=4096, caption_max_length=200).resolve(caption_channels=384, caption_max_length=32)
    assert (fixed.caption_channels, fixed.caption_max_length) == (4096, 200)
    with pytest.raises(ConfigError, match="model.caption_channels"):
        ModelConfig().resolve()
    with pytest.raises(ValidationError, match="preset"):
        ModelConfig(preset="DiT-XL/2")
    with pytest.raises(ValidationError, match="divisible"):
        ModelConfig(num_heads=5)


def test_params_yaml_model_section_loads():
    from pathlib import Path

    from soraflow.config import load_params

    path = Path(__file__).resolve().parents[1] / "params.yaml"
    params = load_params(path)
    assert params.model.preset in PRESETS
    config = params.model.resolve(caption_channels=384, caption_max_length=32)
    assert math.prod(config.patch_size) == 4


def test_patch_embed_is_the_originals_conv3d():
    model = tiny_model(patch_size=(2, 2, 2))
    x = torch.randn(2, 4, 4, 6, 8)
    tokens, grid = model.x_embedder(x)
    conv = torch.nn.functional.conv3d(x, model.x_embedder.weight, model.x_embedder.bias, stride=(2, 2, 2))
    # the original flattens the conv map [B, C, T, H, W] to tokens ordered (T, H, W)
    expected = conv.flatten(3).permute(0, 2, 3, 1)
    assert grid == (2, 3, 4)
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)


def test_unpatchify_matches_the_originals_channel_order():
    model = tiny_model(patch_size=(1, 2, 2))
    nt, nh, nw, co = 2, 3, 4, model.out_channels
    tokens = torch.randn(2, nt, nh * nw, 4 * co)
    out = model._unpatchify(tokens, (nt, nh, nw), (2, 6, 8))
    # "B (N_t N_h N_w) (T_p H_p W_p C_out) -> B C_out (N_t T_p) (N_h H_p) (N_w W_p)"
    for t_i, h_i, w_i, ph, pw, ch in [(0, 0, 0, 0, 0, 0), (1, 2, 3, 1, 0, 5), (0, 1, 2, 1, 1, 7)]:
        token = tokens[1, t_i, h_i * nw + w_i]
        assert out[1, ch, t_i, h_i * 2 + ph, w_i * 2 + pw] == token[(ph * 2 + pw) * co + ch]
