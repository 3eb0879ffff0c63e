"""Helpers for the evaluation tests: rendered demo scenes, a render-based "oracle" generator,
a tiny curated corpus and a tiny feature cache on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from soraflow.demo import vocab
from soraflow.demo.render import render_scene_frames
from soraflow.demo.spec import SceneSpec
from soraflow.evaluation.classifier import LabelledClip
from soraflow.evaluation.prompts import parse_caption

@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: one intra-op thread. With two threads on shared, loaded cores a tiny STDiT2
    forward was measured at 0.5 s instead of 5 ms (threads wait for each other)."""
    from soraflow.threads import torch_threads

    with torch_threads(1):
        yield


SIZE = 32
FRAMES = 8
INTERVAL = 2


def random_spec(rng: np.random.Generator, direction: str | None = None, color: str | None = None,
                shape: str | None = None, speed: float | None = None) -> SceneSpec:
    """A scene with a plain or gradient background far from its object colour."""
    color = color or list(vocab.COLORS)[int(rng.integers(len(vocab.COLORS)))]
    bgs = [b for b in vocab.BACKGROUND_COLORS if vocab.colors_compatible(color, b)]
    direction = direction or vocab.DIRECTIONS[int(rng.integers(len(vocab.DIRECTIONS)))]
    return SceneSpec(
        shape=shape or vocab.SHAPES[int(rng.integers(len(vocab.SHAPES)))],
        color=color,
        direction=direction,
        background=("plain", "gradient")[int(rng.integers(2))],
        background_color=bgs[int(rng.integers(len(bgs)))],
        speed=0.0 if direction == "none" else (speed if speed is not None else float(rng.uniform(0.03, 0.05))),
        object_size=float(rng.uniform(0.3, 0.4)),
        start_x=float(rng.uniform(0.25, 0.75)),
        start_y=float(rng.uniform(0.25, 0.75)),
        gradient_angle=float(rng.choice([0.0, 45.0, 90.0])),
    )


def render(spec: SceneSpec, num_frames: int = FRAMES * INTERVAL, size: int = SIZE) -> np.ndarray:
    return render_scene_frames(spec, size, size, num_frames)


def labelled(rng: np.random.Generator, n: int, num_frames: int = FRAMES * INTERVAL) -> list[LabelledClip]:
    """``n`` rendered clips cycling through the directions (so every class is present)."""
    out = []
    for i in range(n):
        spec = random_spec(rng, direction=vocab.DIRECTIONS[i % len(vocab.DIRECTIONS)])
        out.append(LabelledClip(render(spec, num_frames), spec.color, spec.shape, spec.direction))
    return out


class IdentityVAE:
    """encode/decode that return their input: the VAE round trip is lossless."""

    downsample_factor = 1
    device = torch.device("cpu")
    dtype = torch.float32

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.clone()


class RenderGenerator:
    """A perfect "generator": renders the prompt's scene (random placement/background per seed);
    with a reference, the first frame is the reference. ``model``/``diffusion`` for the
    held-out loss are given by the test."""

    def __init__(self, model=None, diffusion=None, frame_interval: int = INTERVAL, wrong_direction: bool = False):
        self.model, self.diffusion = model, diffusion
        self.vae = IdentityVAE()
        self.frame_interval = frame_interval
        self.wrong_direction = wrong_direction
        self.calls: list[dict] = []

    def generate(self, prompts, *, num_frames, height, width, seed=0, reference=None, mask_strategy=None, **kwargs):
        self.calls.append({"prompts": list(prompts), "seed": seed, "reference": reference, "mask_strategy": mask_strategy, **kwargs})
        rng = np.random.default_rng(seed)
        out = []
        for p in prompts:
            a = parse_caption(p)
            direction = a.direction or "none"
            if self.wrong_direction:
                direction = {"left": "right", "right": "left", "up": "down", "down": "up", "none": "left"}[direction]
            spec = random_spec(rng, direction=direction, color=a.color, shape=a.shape)
            frames = render_scene_frames(spec, width, height, num_frames * self.frame_interval)[:: self.frame_interval]
            if reference is not None:
                frames = frames.copy()
                frames[0] = np.asarray(reference[0]).reshape(height, width, 3)
            out.append(frames)
        return np.stack(out)


def write_corpus(root: Path, rng: np.random.Generator, n_train: int = 12, n_heldout: int = 6, frames: int = 24,
                 size: int = 48) -> pd.DataFrame:
    """mp4 clips of rendered scenes plus ``clips.parquet`` (curation's columns that evaluation reads)."""
    from soraflow.demo.writer import write_video

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_train + n_heldout):
        split = "train" if i < n_train else "heldout"
        spec = random_spec(rng, direction=vocab.DIRECTIONS[i % len(vocab.DIRECTIONS)])
        path = root / f"clip_{i:03d}.mp4"
        write_video(path, iter(render_scene_frames(spec, size, size, frames)), size, size, 24, crf=18)
        rows.append(
            {
                "path": str(path), "text": spec.caption(), "num_frames": frames, "height": size, "width": size,
                "fps": 24.0, "split": split, "id": f"c{i:03d}", "kind": "video",
            }
        )
    table = pd.DataFrame(rows)
    table.to_parquet(root / "clips.parquet", index=False)
    return table


def tiny_stdit(caption_channels: int = 8, caption_len: int = 4, seed: int = 0):
    from soraflow.models import build_model, preset_config

    cfg = preset_config("STDiT2-T/2", hidden_size=48, depth=1, num_heads=2, in_channels=4,
                        caption_channels=caption_channels, caption_max_length=caption_len)
    return build_model(cfg, seed=seed).eval()


def write_cache(root: Path, buckets: dict[str, tuple[int, int, int, int]], caption_channels: int = 8,
                caption_len: int = 4, seed: int = 0) -> None:
    """A feature cache in the layout of :mod:`soraflow.features.cache` (held-out rows only):
    ``buckets`` maps a resolution name to ``(rows, T, h, w)`` of latents."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    save_file({"emb": torch.randn(3, caption_len, caption_channels, generator=g),
               "mask": torch.ones(3, caption_len, dtype=torch.long)}, str(root / "captions.safetensors"))
    rows = []
    for res, (n, t, h, w) in buckets.items():
        shard = f"latents-{res}.safetensors"
        save_file({"latents": torch.randn(n, 4, t, h, w, generator=g)}, str(root / shard))
        for r in range(n):
            rows.append({
                "id": f"{res}{r}", "window": 0, "text": "x", "caption_index": r % 3, "split": "heldout", "fps": 12.0,
                "path": "x.mp4", "bucket_resolution": res, "bucket_num_frames": t, "bucket_height": h * 4,
                "bucket_width": w * 4, "bucket_aspect_ratio": 1.0, "bucket_batch_size": 4, "shard": shard, "row": r,
            })
    pd.DataFrame(rows).to_parquet(root / "index.parquet", index=False)
    (root / "info.json").write_text(json.dumps({"latent_channels": 4, "caption_channels": caption_channels,
                                                "caption_max_length": caption_len}))


def tiny_clip_weights(folder: Path, arch: str = "soraflow-test-eval-tiny-clip") -> tuple[str, Path]:
    """Register a tiny open_clip architecture and save random weights for it: ``(arch, file)``."""
    import open_clip

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{arch}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{arch}.json")
    torch.manual_seed(0)
    weights = folder / "clip.pt"
    torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), weights)
    return arch, weights
