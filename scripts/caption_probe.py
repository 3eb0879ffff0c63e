#!/usr/bin/env python
"""Per-timestep caption sensitivity of a trained model: does it read each caption word?

For up to N video rows of the feature cache (one split), the velocity/noise loss is measured at
fixed timesteps on fixed noise with the clip's own caption and with one word swapped
(colour, direction; see soraflow.evaluation.caption_sensitivity), twice: with every frame
generated (text-to-video) and with the first frame given (image-to-video, where the direction
word alone says where the object goes). Prints the relative loss increase per timestep; a model
that ignores a word scores about 0%.

    python scripts/caption_probe.py --params params.yaml --model models/train/final
    python scripts/caption_probe.py --model models/train/checkpoints/step-00003000  # a checkpoint
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def load(folder: Path, params, cache_info: dict):
    """A model folder, or a training checkpoint (weights only, architecture from params)."""
    from soraflow.models import build_model, load_model
    from soraflow.training.checkpoint import load_weights

    if (folder / "model.safetensors").is_file() and (folder / "COMPLETE").is_file():
        config = params.model.resolve(cache_info["caption_channels"], cache_info["caption_max_length"])
        model = build_model(config, seed=0)
        model.load_state_dict(load_weights(folder))
        return model.eval()
    return load_model(folder).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="params.yaml (feature cache, text encoder, diffusion)")
    ap.add_argument("--model", default="models/train/final", help="model folder or training checkpoint folder")
    ap.add_argument("--splits", nargs="+", default=["train", "heldout"], help="feature-cache splits to probe")
    ap.add_argument("--clips", type=int, default=40, help="video rows per split")
    ap.add_argument("--timesteps", type=float, nargs="+", default=[100, 300, 500, 700, 850, 950])
    args = ap.parse_args()

    from soraflow.config import load_params
    from soraflow.diffusion.factory import build_diffusion
    from soraflow.encoders import load_text_encoder
    from soraflow.evaluation.caption_sensitivity import swapped_caption_losses
    from soraflow.evaluation.prompts import try_parse_caption
    from soraflow.features.cache import FeatureCache

    params = load_params(args.params)
    caches = {split: FeatureCache(params.features.output, split=split) for split in args.splits}
    model = load(Path(args.model), params, next(iter(caches.values())).info)
    diffusion = build_diffusion(params.diffusion)
    text = load_text_encoder(params.text_encoder)
    attrs = ("color", "direction")
    for split, cache in caches.items():
        index = cache.index
        plain = index["augment"] == "" if "augment" in index.columns else np.ones(len(index), bool)
        rows = [i for i in index.index[plain] if index.at[i, "bucket_num_frames"] > 1
                and (a := try_parse_caption(index.at[i, "text"])) and a.direction in ("left", "right", "up", "down")]
        rows = rows[: args.clips]
        for first_frame_given, mode in ((False, "t2v"), (True, "i2v")):
            base, gaps = [], {a: [] for a in attrs}
            for n, r in enumerate(rows):
                loss, swapped = swapped_caption_losses(
                    model, diffusion, cache.batch([r]), index.at[r, "text"], text.encode, attrs, args.timesteps,
                    seed=n, first_frame_given=first_frame_given,
                )
                base.append(loss)
                for a in attrs:
                    gaps[a].append(swapped[a] - loss)
            mean = np.mean(base, axis=0)
            print(f"{split} {mode}: {len(rows)} clips, t = {args.timesteps}")
            print("  loss      " + " ".join(f"{v:8.3f}" for v in mean))
            for a in attrs:
                rel = np.mean(gaps[a], axis=0) / mean * 100
                print(f"  {a:9s} " + " ".join(f"{v:+7.1f}%" for v in rel))


if __name__ == "__main__":
    main()
