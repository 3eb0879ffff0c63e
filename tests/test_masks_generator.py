"""Training mask generator: type frequencies, shapes of each type, images, config validation."""

from __future__ import annotations

import pytest
import torch

from soraflow.config_base import ConfigError, parse_model
from soraflow.masks import MASK_NAMES, MaskConfig, MaskGenerator, MaskRatios


def test_default_ratios_are_the_originals():
    r = MaskRatios().as_dict()
    assert list(r) == list(MASK_NAMES) and len(r) == 9
    assert r["identity"] == 0.75 and r["quarter_head_tail"] == 0.05 and r["image_head_tail"] == 0.05
    assert sum(r.values()) == pytest.approx(1.0)


def test_type_frequencies_follow_ratios():
    gen = MaskGenerator()
    g = torch.Generator().manual_seed(0)
    n = 20000
    _, names = gen.sample(n, 16, g)
    for name, p in gen.ratios.items():
        freq = names.count(name) / n
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(freq - p) < 5 * sigma + 1e-9, (name, freq, p)


def test_custom_ratios_from_mapping():
    gen = MaskGenerator({"identity": 0.5, "image_head": 0.5})
    _, names = gen.sample(2000, 8, torch.Generator().manual_seed(1))
    assert set(names) == {"identity", "image_head"}
    assert 0.45 < names.count("image_head") / 2000 < 0.55


@pytest.mark.parametrize("name", MASK_NAMES)
def test_each_mask_type_shape(name):
    g = torch.Generator().manual_seed(2)
    T = 16
    for _ in range(50):
        mask, applied = MaskGenerator.mask_for(name, T, g)
        assert applied == name and mask.dtype == torch.bool and mask.shape == (T,)
        cond = (~mask).nonzero().flatten().tolist()
        k = len(cond)
        if name == "identity":
            assert k == 0
        elif name.startswith("image"):
            want = {"image_random": 1, "image_head": 1, "image_tail": 1, "image_head_tail": 2}[name]
            assert k == want
        else:
            per_end = k // 2 if name.endswith("head_tail") else k
            assert 1 <= per_end <= T // 4
        if name.endswith("head_tail"):
            assert cond[: k // 2] == list(range(k // 2)) and cond[k // 2 :] == list(range(T - k // 2, T))
        elif name.endswith("head"):
            assert cond == list(range(k))
        elif name.endswith("tail"):
            assert cond == list(range(T - k, T))
        elif name.endswith("random") and k:
            assert cond == list(range(cond[0], cond[0] + k))  # one contiguous span


def test_quarter_random_covers_sizes_and_positions():
    g = torch.Generator().manual_seed(3)
    sizes, starts = set(), set()
    for _ in range(400):
        mask, _ = MaskGenerator.mask_for("quarter_random", 16, g)
        cond = (~mask).nonzero().flatten().tolist()
        sizes.add(len(cond))
        starts.add(cond[0])
    assert sizes == {1, 2, 3, 4}
    assert min(starts) == 0 and max(starts) >= 12


def test_images_are_never_masked_and_short_clips_keep_a_generated_frame():
    gen = MaskGenerator({"image_head_tail": 0.5, "quarter_head_tail": 0.5})
    g = torch.Generator().manual_seed(4)
    masks, names = gen.sample(100, 1, g)
    assert masks.all() and set(names) == {"identity"}
    for T in (2, 3, 4, 5):
        masks, _ = gen.sample(200, T, g)
        assert masks.any(dim=1).all(), T  # never every frame conditioning


def test_ratios_must_sum_to_one_and_names_must_exist():
    with pytest.raises(ConfigError, match="sum to 1"):
        parse_model(MaskConfig, {"mask_ratios": {"identity": 0.9}}, "params.yaml")
    with pytest.raises(ConfigError, match="mask_ratios.bogus: unknown key"):
        parse_model(MaskConfig, {"mask_ratios": {"bogus": 0.1}}, "params.yaml")
    with pytest.raises(ConfigError, match="greater than or equal to 0"):
        parse_model(MaskConfig, {"mask_ratios": {"identity": -0.1}}, "params.yaml")
    with pytest.raises(ConfigError, match="unknown mask type"):
        MaskGenerator({"identity": 0.5, "half_tail": 0.5})
    with pytest.raises(ConfigError, match="sum to 1"):
        MaskGenerator({"identity": 0.5})
    cfg = parse_model(MaskConfig, {"mask_ratios": {"identity": 1.0, "quarter_random": 0, "quarter_head": 0, "quarter_tail": 0,
                                                    "quarter_head_tail": 0, "image_random": 0, "image_head": 0, "image_tail": 0,
                                                    "image_head_tail": 0}}, "params.yaml")
    masks, _ = MaskGenerator(cfg.mask_ratios).sample(50, 8, torch.Generator().manual_seed(0))
    assert masks.all()


def test_generator_is_reproducible():
    a = MaskGenerator().sample(64, 8, torch.Generator().manual_seed(9))
    b = MaskGenerator().sample(64, 8, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
