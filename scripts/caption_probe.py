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
import torch


def load(params, folder: Path):
    """A model folder, or a training checkpoint (weights only, architecture from params)."""
    from soraflow.models import build_model, load_model

    if (folder / "model.safetensors").is_file() and (folder / "COMPLETE").is_file():
        from safetensors.torch import load_file

        info = __import__("json").loads((Path(params.features.output) / "info.json").read_text())
        model = build_model(params.model.resolve(info["caption_channels"], info["caption_max_length"]), seed=0)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
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
    from soraflow.evaluation.caption_sensitivity import swap_attribute
    from soraflow.evaluation.prompts import try_parse_caption
    from soraflow.features.cache import FeatureCache

    params = load_params(args.params)
    model = load(params, Path(args.model))
    diffusion = build_diffusion(params.diffusion)
    text = load_text_encoder(params.text_encoder)
    attrs = ("color", "direction")
    for split in args.splits:
        cache = FeatureCache(params.features.output, split=split)
        index = cache.index
        plain = index["augment"] == "" if "augment" in index.columns else np.ones(len(index), bool)
        rows = [i for i in index.index[plain] if index.at[i, "bucket_num_frames"] > 1
                and (a := try_parse_caption(index.at[i, "text"])) and a.direction in ("left", "right", "up", "down")]
        rows = rows[: args.clips]
        for mode in ("t2v", "i2v"):
            base, gaps = [], {a: [] for a in attrs}
            for n, r in enumerate(rows):
                batch = cache.batch([r])
                x = batch["latents"]
                noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(n))
                kw = {k: batch[k] for k in ("height", "width", "num_frames", "fps")}
                caption = index.at[r, "text"]
                y, mask = text.encode([caption] + [swap_attribute(caption, a) for a in attrs])
                x_mask = None
                if mode == "i2v":
                    x_mask = torch.ones(1, x.shape[2], dtype=torch.bool)
                    x_mask[:, 0] = False
                with torch.no_grad():
                    losses = [diffusion.loss_at_timesteps(model, x, {**kw, "y": y[j : j + 1], "mask": mask[j : j + 1]},
                                                          timesteps=args.timesteps, noise=noise, x_mask=x_mask)[:, 0].numpy()
                              for j in range(len(attrs) + 1)]
                base.append(losses[0])
                for j, a in enumerate(attrs):
                    gaps[a].append(losses[j + 1] - losses[0])
            mean = np.mean(base, axis=0)
            print(f"{split} {mode}: {len(rows)} clips, t = {args.timesteps}")
            print("  loss      " + " ".join(f"{v:8.3f}" for v in mean))
            for a in attrs:
                rel = np.mean(gaps[a], axis=0) / mean * 100
                print(f"  {a:9s} " + " ".join(f"{v:+7.1f}%" for v in rel))


if __name__ == "__main__":
    main()
