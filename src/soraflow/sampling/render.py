"""Render a prompt set to files: one mp4 + GIF per prompt, a captioned grid GIF, ``samples.json``.

Shared by ``soraflow sample`` and the ``sample`` stage. Prompts are sampled in batches of
``batch_size``; batch ``i`` uses seed ``seed + i``, so the files depend only on the prompt
list, the settings and the seed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soraflow.sampling.writers import video_grid, write_gif, write_mp4, write_png

log = logging.getLogger(__name__)

__all__ = ["INDEX_NAME", "GRID_NAME", "render_prompts", "slugify"]

INDEX_NAME = "samples.json"
GRID_NAME = "grid.gif"


def slugify(text: str, max_chars: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_chars].rstrip("-") or "sample"


def render_prompts(
    generator: Any,
    prompts: Sequence[str],
    output: str | Path,
    *,
    num_frames: int,
    height: int,
    width: int,
    fps: float | None = None,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    guidance: float | None = None,
    reference: Any = None,
    mask_strategy: str | None = None,
    loops: int = 1,
    batch_size: int = 8,
    min_display_size: int = 128,
    grid: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate every prompt, write the files under ``output``, return (and write) the index."""
    prompts = list(prompts)
    generator.check_size(num_frames, height, width)  # fail before any file is written
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    play_fps = float(fps or generator.default_fps)
    samples: list[dict[str, Any]] = []
    videos: list[np.ndarray] = []
    started = time.perf_counter()
    for batch_i, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = prompts[start : start + batch_size]
        batch_seed = int(seed) + batch_i
        frames = generator.generate(
            chunk, num_frames=num_frames, height=height, width=width, fps=fps, seed=batch_seed,
            steps=steps, sampler=sampler, guidance=guidance, reference=reference,
            mask_strategy=mask_strategy, loops=loops, progress=progress,
        )
        for j, prompt in enumerate(chunk):
            index = start + j
            stem = f"{index:03d}-{slugify(prompt)}"
            video = frames[j]
            entry: dict[str, Any] = {
                "index": index,
                "prompt": prompt,
                "seed": batch_seed,
                "batch_position": j,
                "num_frames": int(video.shape[0]),
                "height": int(video.shape[1]),
                "width": int(video.shape[2]),
                "fps": play_fps,
                "mp4": write_mp4(video, out / f"{stem}.mp4", play_fps, min_size=min_display_size).name,
                "gif": write_gif(video, out / f"{stem}.gif", play_fps, min_size=min_display_size).name,
            }
            if video.shape[0] == 1:
                entry["png"] = write_png(video[0], out / f"{stem}.png", min_size=min_display_size).name
            np.save(out / f"{stem}.npy", video)  # raw uint8 frames, for evaluation and tests
            entry["frames"] = f"{stem}.npy"
            samples.append(entry)
            videos.append(video)
        log.info("sampled %d/%d prompts", min(start + batch_size, len(prompts)), len(prompts))
    index: dict[str, Any] = {
        "model": str(getattr(generator, "source", "")),
        "settings": {
            "num_frames": num_frames, "height": height, "width": width, "fps": play_fps, "seed": int(seed),
            "steps": steps, "sampler": sampler, "guidance": guidance, "mask_strategy": mask_strategy,
            "loops": loops, "batch_size": batch_size,
            "reference": [str(r) for r in reference] if isinstance(reference, (list, tuple)) else (str(reference) if isinstance(reference, (str, Path)) else None),
        },
        "seconds": round(time.perf_counter() - started, 3),
        "samples": samples,
    }
    if grid and videos:
        grid_frames = video_grid(videos, prompts, columns=4, tile_size=128)
        write_gif(grid_frames, out / GRID_NAME, play_fps, min_size=0)
        index["grid"] = GRID_NAME
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return index


def load_sample_settings(params_path: str | Path | None, overrides: dict[str, Any] | None = None):
    """``(SampleConfig, BucketsConfig | None)`` from params.yaml (when it exists) with overrides.

    Overrides whose value is None are ignored; the result is validated again, so a bad
    override fails with the key named (``sample.height: ...``).
    """
    from soraflow.config_base import parse_model
    from soraflow.sampling.config import SampleConfig

    buckets = None
    data: dict[str, Any] = {}
    if params_path is not None and Path(params_path).exists():
        from soraflow.config import load_params

        params = load_params(params_path)
        data = params.sample.model_dump()
        buckets = params.buckets
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_model(SampleConfig, data, "sample"), buckets


def render_from_config(
    cfg: Any,
    buckets: Any = None,
    *,
    reference: Any = None,
    mask_strategy: str | None = None,
    loops: int = 1,
    generator: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Load ``cfg.model`` and render ``cfg.prompts`` into ``cfg.output`` (see :func:`render_prompts`)."""
    from soraflow.sampling.generator import VideoGenerator

    gen = generator or VideoGenerator.from_uri(
        cfg.model, device=cfg.device, use_ema=cfg.use_ema, buckets=buckets, mixed_precision=cfg.mixed_precision
    )
    index = render_prompts(
        gen, cfg.prompts, cfg.output,
        num_frames=cfg.num_frames, height=cfg.height, width=cfg.width, fps=cfg.fps, seed=cfg.seed,
        steps=cfg.steps, sampler=cfg.sampler, guidance=cfg.guidance, reference=reference,
        mask_strategy=mask_strategy, loops=loops, batch_size=cfg.batch_size,
        min_display_size=cfg.min_display_size, progress=progress,
    )
    index["model"] = cfg.model
    index["output"] = str(cfg.output)
    Path(cfg.output, INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return index
