"""Sampling (issue 7): prompts (+ reference frames) -> videos with a trained STDiT2.

Public API::

    from soraflow.sampling import VideoGenerator, write_mp4, write_gif, video_grid
    gen = VideoGenerator.from_uri("models:/soraflow-stdit@champion")   # or "models/train/final"
    videos = gen.generate(prompts, num_frames=8, height=32, width=32, seed=0)  # [B, T, H, W, 3] uint8
    latents = gen.generate_latents(prompts, num_frames=8, height=32, width=32)  # [B, C, T, h, w]
    write_mp4(videos[0], "a.mp4", fps=12); write_gif(videos[0], "a.gif", fps=12)

Names are imported lazily so that reading the config (``soraflow.sampling.config``) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEMO_PROMPTS": "config",
    "SampleConfig": "config",
    "VideoGenerator": "generator",
    "latents_to_uint8": "generator",
    "read_encoders": "generator",
    "resolve_device": "generator",
    "IMAGE_FPS": "generator",
    "CorruptModelError": "uri",
    "ModelNotFoundError": "uri",
    "resolve_model_uri": "uri",
    "is_mlflow_uri": "uri",
    "load_reference_frames": "references",
    "SizeRule": "sizes",
    "bucket_sizes": "sizes",
    "check_size": "sizes",
    "render_prompts": "render",
    "upscale_nearest": "writers",
    "video_grid": "writers",
    "write_gif": "writers",
    "write_mp4": "writers",
    "write_png": "writers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"soraflow.sampling.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'soraflow.sampling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
