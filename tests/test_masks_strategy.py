"""Inference ``mask_strategy``: parsing, recipes, applying to latents, loops, error messages."""

from __future__ import annotations

import pytest
import torch

from soraflow.config_base import ConfigError
from soraflow.masks import (
    RECIPES,
    MaskGroup,
    append_loop_reference,
    apply_mask_strategy,
    format_mask_strategy,
    looped_length,
    parse_mask_strategy,
    stitch_loops,
)


def test_parse_defaults_and_recipes():
    assert parse_mask_strategy("") == [] and parse_mask_strategy(None) == []
    assert parse_mask_strategy(RECIPES["image_to_video"]) == [MaskGroup(0, 0, 0, 0, 1, 0.0)]
    assert parse_mask_strategy(RECIPES["extend"]) == [MaskGroup(0, 0, 0, -8, 8, 0.0)]
    assert parse_mask_strategy(RECIPES["extend_forward"]) == [MaskGroup(0, 0, -8, 0, 8, 0.0)]
    assert parse_mask_strategy(RECIPES["first_last"]) == [MaskGroup(0, 0, 0, 0, 1, 0.0), MaskGroup(0, 1, 0, -1, 1, 0.0)]
    assert parse_mask_strategy(RECIPES["edit"]) == [MaskGroup(0, 0, 0, 0, 32, 0.4)]
    assert parse_mask_strategy(" 1 , 2 ; 3") == [MaskGroup(1, 2), MaskGroup(3)]
    for text in RECIPES.values():  # round trip through the formatter
        assert parse_mask_strategy(format_mask_strategy(parse_mask_strategy(text))) == parse_mask_strategy(text)
    assert format_mask_strategy(parse_mask_strategy("0,0,0,0,32,0.4")) == "0,0,0,0,32,0.4"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,x", r"group 1 \('0,x'\): field ref_id must be an integer, got 'x'"),
        ("0;0,1,a", r"group 2 \('0,1,a'\): field ref_start must be an integer"),
        ("0,0,0,z", r"field target_start must be an integer"),
        ("0,0,0,0,0", r"field length must be >= 1"),
        ("0,0,0,0,1.5", r"field length must be an integer, got '1.5'"),
        ("0,0,0,0,8,1.4", r"field edit_ratio must be in \[0, 1\], got '1.4'"),
        ("0,0,0,0,8,abc", r"field edit_ratio must be a number"),
        ("-1", r"field loop_id must be >= 0"),
        ("0,-2", r"field ref_id must be >= 0"),
        ("0,0,0,0,1,0,7", r"7 fields, at most 6 \(loop_id, ref_id, ref_start, target_start, length, edit_ratio\)"),
        ("0,,1", r"field ref_id is empty"),
        ("0;", r"group 2 \(''\): field loop_id is empty"),
    ],
)
def test_parse_errors_name_group_and_field(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_mask_strategy(text)
    assert issubclass(ConfigError, ValueError)


def latents(batch=1, frames=16, c=2, hw=2, value=0.0):
    return torch.full((batch, c, frames, hw, hw), value)


def frames_ref(n, c=2, hw=2, offset=100.0):
    """A reference whose frame i is filled with offset + i (to see which frame landed where)."""
    return (offset + torch.arange(n, dtype=torch.float32)).reshape(1, n, 1, 1).expand(c, n, hw, hw).clone()


def frame_values(x):
    return x[0, 0, :, 0, 0].tolist()


def test_apply_image_to_video_and_first_last():
    z = latents()
    x_cond, x_mask = apply_mask_strategy(z, [[frames_ref(1, offset=7.0)]], [RECIPES["image_to_video"]])
    assert frame_values(x_cond)[0] == 7.0 and frame_values(x_cond)[1:] == [0.0] * 15
    assert x_mask.tolist() == [[0.0] + [1.0] * 15]
    assert torch.equal(z, latents())  # input untouched

    x_cond, x_mask = apply_mask_strategy(z, [[frames_ref(1, offset=1.0), frames_ref(1, offset=2.0)]], [RECIPES["first_last"]])
    v = frame_values(x_cond)
    assert v[0] == 1.0 and v[-1] == 2.0 and v[1:-1] == [0.0] * 14
    assert x_mask[0].tolist() == [0.0] + [1.0] * 14 + [0.0]


def test_apply_extend_edit_and_negative_indices():
    ref = frames_ref(20)
    x_cond, x_mask = apply_mask_strategy(latents(), [[ref]], [RECIPES["extend"]])  # ref 0..7 -> clip 8..15
    assert frame_values(x_cond)[8:] == [100.0 + i for i in range(8)]
    assert x_mask[0].tolist() == [1.0] * 8 + [0.0] * 8

    x_cond, x_mask = apply_mask_strategy(latents(), [[ref]], [RECIPES["extend_forward"]])  # ref 12..19 -> clip 0..7
    assert frame_values(x_cond)[:8] == [112.0 + i for i in range(8)]
    assert x_mask[0].tolist() == [0.0] * 8 + [1.0] * 8

    x_cond, x_mask = apply_mask_strategy(latents(frames=32), [[frames_ref(40)]], [RECIPES["edit"]])
    assert frame_values(x_cond) == [100.0 + i for i in range(32)]
    assert x_mask[0].tolist() == pytest.approx([0.4] * 32)

    # length clipped to what fits; groups of other loops ignored; batch of two strategies
    x_cond, x_mask = apply_mask_strategy(latents(batch=2), [[frames_ref(3)], None], ["0,0,-2,-1,5;1,0,0,0,4", ""])
    assert frame_values(x_cond)[-1] == 101.0 and x_mask[0].tolist() == [1.0] * 15 + [0.0]
    assert x_mask[1].tolist() == [1.0] * 16


def test_apply_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"field ref_id=1 but sample 0 has 1 reference"):
        apply_mask_strategy(latents(), [[frames_ref(2)]], ["0,1"])
    with pytest.raises(ConfigError, match=r"field target_start=-17 is outside the clip's 16 frames"):
        apply_mask_strategy(latents(), [[frames_ref(2)]], ["0,0,0,-17"])
    with pytest.raises(ConfigError, match=r"field ref_start=5 is outside the reference's 2 frames"):
        apply_mask_strategy(latents(), [[frames_ref(2)]], ["0,0,5"])
    with pytest.raises(ValueError, match="want \\[C, T, H, W\\]"):
        apply_mask_strategy(latents(), [[torch.zeros(3, 1, 2, 2)]], ["0"])


def test_long_video_loops():
    T, k = 8, 3
    assert looped_length(4, T, k) == 8 + 3 * 5
    clips = [torch.full((2, T, 2, 2), float(i)) for i in range(3)]
    refs, strategy = None, RECIPES["image_to_video"]
    refs = [frames_ref(1)]
    refs, strategy = append_loop_reference(refs, strategy, clips[0], loop_i=1, condition_frames=k)
    assert strategy == "0;1,1,-3,0,3,0" and len(refs) == 2
    # loop 1 takes loop 0's last k frames at its start
    x_cond, x_mask = apply_mask_strategy(latents(frames=T), [refs], [strategy], loop_i=1)
    assert frame_values(x_cond)[:k] == [0.0] * k and x_mask[0].tolist() == [0.0] * k + [1.0] * (T - k)
    # loop 0 sees only its own group
    _, x_mask0 = apply_mask_strategy(latents(frames=T), [refs], [strategy], loop_i=0)
    assert x_mask0[0].tolist() == [0.0] + [1.0] * (T - 1)
    video = stitch_loops(clips, k)
    assert video.shape == (2, looped_length(3, T, k), 2, 2)
    assert video[0, :, 0, 0].tolist() == [0.0] * 8 + [1.0] * 5 + [2.0] * 5
