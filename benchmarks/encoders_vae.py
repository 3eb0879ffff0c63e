"""Demo VAE: reconstruction PSNR and training time with the params.yaml settings.

    .venv/bin/python benchmarks/encoders_vae.py --size 32 --size 64 [--source synthetic|flat|demo]
        [--frames 400] [--steps N] [--set key=value ...]   (e.g. --set threads=2)

``synthetic``: coloured shapes on plain / gradient / sharp checker backgrounds; ``flat``:
plain and gradient backgrounds only; ``demo``: scenes drawn by the demo corpus renderer (``soraflow.demo``),
rendered at 144 px and resized to the frame size, as the ``vae`` stage resizes clip frames.
Frames are square (``size`` x ``size``); the VAE trains on ``image_size`` crops of them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from soraflow.config import load_params
from soraflow.demo.render import sample_demo_frames
from soraflow.encoders import VAEDemoTrainConfig, synthetic_frames, train_demo_vae
from soraflow.yaml12 import load_yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, action="append", help="frame size in pixels (repeatable; default 32 and 64)")
    ap.add_argument("--source", choices=["synthetic", "flat", "demo"], default="synthetic")
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--steps", type=int, default=None, help="override vae.demo_train.steps")
    ap.add_argument("--set", action="append", default=[], help="vae.demo_train key=value (YAML value)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    base = load_params(args.params).vae.demo_train.model_dump()
    for item in args.set:
        key, value = item.split("=", 1)
        base[key] = load_yaml(value)
    if args.steps:
        base["steps"] = args.steps
    for size in args.size or [32, 64]:
        if args.source == "demo":
            frames = sample_demo_frames(args.frames, size, seed=0)
        else:
            kinds = ("plain", "gradient", "checker") if args.source == "synthetic" else ("plain", "gradient")
            frames = synthetic_frames(args.frames, size, seed=0, backgrounds=kinds)
        cfg = VAEDemoTrainConfig(**{**base, "resize_short_side": None})
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            r = train_demo_vae(frames, cfg, out, progress=False)
            total = time.perf_counter() - t0
        print(
            json.dumps(
                {
                    "source": args.source,
                    "frame_size": size,
                    "frames": args.frames,
                    "threads": cfg.threads or torch.get_num_threads(),
                    "steps": r.steps,
                    "train_seconds": round(r.seconds, 1),
                    "total_seconds": round(total, 1),
                    "psnr_db": round(r.psnr, 2),
                    "held_out_frames": r.num_val_frames,
                    "scaling_factor": round(r.scaling_factor, 4),
                    "shift_factor": round(r.shift_factor, 4),
                    "parameters": r.num_parameters,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
