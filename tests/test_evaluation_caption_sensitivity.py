"""Caption sensitivity: swapped attribute words, and the loss gap of a model that reads some words only."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from soraflow.diffusion import DiffusionConfig, build_diffusion
from soraflow.evaluation.caption_sensitivity import caption_sensitivity, swap_attribute


def test_swap_attribute_words():
    cap = "a red circle moving left on a gray textured background, camera panning right"
    assert swap_attribute(cap, "color") == "a green circle moving left on a gray textured background, camera panning right"
    assert swap_attribute(cap, "shape") == "a red square moving left on a gray textured background, camera panning right"
    assert swap_attribute(cap, "direction") == "a red circle moving right on a gray textured background, camera panning right"
    assert swap_attribute("a yellow triangle moving up on a navy background", "color").startswith("a red triangle moving up")
    assert swap_attribute("a blue square standing still on a teal textured background, camera panning left", "direction") is None
    assert swap_attribute("a cat on a mat", "color") is None
    with pytest.raises(ValueError, match="attribute"):
        swap_attribute(cap, "size")


class _Cache:
    """What caption_sensitivity reads of a FeatureCache: ``index`` and ``batch(rows)``."""

    def __init__(self, texts: list[str], seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.index = pd.DataFrame({"text": texts, "bucket_num_frames": [4] * len(texts)})
        self.latents = torch.randn(len(texts), 2, 4, 4, 4, generator=g)

    def batch(self, rows: list[int]) -> dict[str, torch.Tensor]:
        n = len(rows)
        return {"latents": self.latents[rows], "height": torch.full((n,), 16.0), "width": torch.full((n,), 16.0),
                "num_frames": torch.full((n,), 4.0), "fps": torch.full((n,), 12.0)}


def _words_encoder(read_direction: bool):
    """Caption states that carry colour and shape (and direction only if ``read_direction``)."""

    def code(word: str) -> float:
        # The word's first three bytes: distinct for every colour, shape and direction word, the
        # same in every process (``hash`` of a str is salted per process and could collide).
        return float(int.from_bytes(word.encode()[:3], "big"))

    def encode(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for c in captions:
            words = c.split()
            key = [code(words[1]), code(words[2])]
            key.append(code(words[4]) if read_direction else 0.0)
            rows.append(key)
        return torch.tensor(rows)[:, None, :], torch.ones(len(captions), 1, dtype=torch.long)

    return encode


class _Oracle(nn.Module):
    """Knows every clip by its caption states: predicts the exact velocity when the states match a
    clip's own caption, and the mean clip otherwise (rectified flow)."""

    def __init__(self, cache: _Cache, encode, num_timesteps: int):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        y, _ = encode(cache.index["text"].tolist())
        self.table = {}
        for i in range(len(cache.index)):  # the first window of each caption (what is measured)
            self.table.setdefault(tuple(y[i, 0].tolist()), cache.latents[i])
        self.mean = cache.latents.mean(dim=0)
        self.T = num_timesteps

    def forward(self, x, t, y=None, mask=None, x_mask=None, **kw):
        x0 = torch.stack([self.table.get(tuple(y[b, 0].tolist()), self.mean) for b in range(x.shape[0])])
        tau = (t.float() / self.T).view(-1, 1, 1, 1, 1)
        return (x0 - x) / tau  # v = x0 - noise, from x_t = (1 - tau) x0 + tau noise


@pytest.mark.parametrize("read_direction", [False, True])
def test_loss_gap_shows_which_words_the_model_reads(read_direction):
    texts = [
        "a red circle moving left on a black background",
        "a blue square moving up on a white background",
        "a green triangle moving down on a gray gradient background",
        "a yellow circle moving right on a navy textured background, camera panning left",
        "a red square standing still on a teal textured background, camera panning right",
        "a red square standing still on a teal textured background, camera panning right",  # a second window
    ]
    cache = _Cache(texts)
    diffusion = build_diffusion(DiffusionConfig(type="rflow", learn_sigma=False))
    encode = _words_encoder(read_direction)
    m = caption_sensitivity(_Oracle(cache, encode, diffusion.num_timesteps), diffusion, cache, encode, max_clips=10)
    assert m["caption_sensitivity_color_clips"] == 5  # one window per caption
    assert m["caption_sensitivity_direction_clips"] == 4  # standing still has no direction to swap
    for attr in ("color", "shape"):  # read: the right words give the exact answer, wrong ones the mean
        assert m[f"caption_sensitivity_{attr}"] > 1.0 and m[f"caption_sensitivity_{attr}_frac_worse"] == 1.0
    if read_direction:
        assert m["caption_sensitivity_direction"] > 1.0 and m["caption_sensitivity_direction_frac_worse"] == 1.0
    else:
        assert m["caption_sensitivity_direction"] == 0.0 and m["caption_sensitivity_direction_frac_worse"] == 0.0
