"""Build and read the feature cache.

Layout of ``<output>/``:

- ``index.parquet``: one row per cached sample (clip x window x augmentation, see
  :mod:`soraflow.features.augment`; ``augment`` names the transform, "" for none) with the clip's metadata
  (``id``, ``text``, ``split``, ``fps``, source ``height``/``width``), its bucket (the
  ``bucket_*`` columns of :func:`soraflow.buckets.assign_buckets`), the ``shard`` file and
  ``row`` inside it, and ``caption_index`` into the caption tensors;
- ``latents-<bucket>-<k>.safetensors``: ``latents`` ``[N, C, T, h, w]`` (float32) for rows of
  one bucket;
- ``captions.safetensors``: ``emb`` ``[M, L, C]`` and ``mask`` ``[M, L]`` for the M distinct
  captions, plus ``null`` is left to the model (its own null-caption buffer);
- ``info.json``: encoder references, latent channels, scaling, counts.

Buckets are assigned once, with epoch-0 draws, when the cache is built: a clip is cached at
the bucket it falls in; the sampler then batches cached rows by those fixed buckets.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from soraflow.buckets import BucketsConfig, assign_buckets
from soraflow.buckets.dataset import load_clip
from soraflow.features.augment import Variant, cache_variants, transform_video, variant_caption
from soraflow.features.config import FeaturesConfig
from soraflow.prefetch import ordered_map

log = logging.getLogger(__name__)

INDEX_FILE = "index.parquet"
CAPTIONS_FILE = "captions.safetensors"
INFO_FILE = "info.json"


@dataclass
class CacheSummary:
    rows: int
    clips: int
    skipped: int
    captions: int
    shards: int
    seconds: float
    bytes: int

    def as_metrics(self) -> dict[str, float]:
        return {f"cache_{k}": float(v) for k, v in self.__dict__.items()}


def _bucket_name(res: str, t: int, h: int, w: int) -> str:
    return f"{res}-{t}x{h}x{w}".replace("/", "_")


IMAGE_FPS = 120.0  # Open-Sora's fps conditioning value for still images


def _effective_fps(fps: float, num_frames: int, frame_interval: int) -> float:
    """Frame rate of the sampled frames (the original conditions on fps / frame_interval)."""
    if num_frames == 1 or fps is None or not np.isfinite(fps) or fps <= 0:
        return IMAGE_FPS
    return float(fps) / frame_interval


def _window_seed(seed: int, clip_id: str, window: int) -> int:
    import hashlib

    digest = hashlib.sha256(f"{seed}:{clip_id}:{window}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def frame_image_records(kept: pd.DataFrame, buckets: BucketsConfig, per_clip: int) -> list[dict[str, Any]]:
    """The training videos of ``kept`` (assigned clips) re-assigned to the 1-frame bucket of their
    resolution, for caching ``per_clip`` single frames each as images.

    The frame keeps the video's height and width (a resolution's aspect-ratio table does not
    depend on the frame count) and takes the 1-frame bucket's batch size. A resolution whose
    1-frame bucket is disabled (or absent) gets no frame images; that is logged.
    """
    if per_clip == 0:
        return []
    videos = kept[(kept["split"] == "train") & (kept["bucket_num_frames"] > 1)]
    # An enabled bucket always has a batch size (the config checks it).
    image_batch = {res: frames[1][1] for res, frames in buckets.bucket_config.items() if frames.get(1, (0.0, None))[0] > 0}
    resolution = videos["bucket_resolution"].astype(str)
    without = sorted(set(resolution) - set(image_batch))
    if without:
        log.warning(
            "features.frame_images_per_clip: resolution(s) %s have no enabled 1-frame bucket in "
            "buckets.bucket_config; their videos get no frame images",
            ", ".join(without),
        )
    keep = resolution.isin(image_batch)
    out = videos[keep].assign(bucket_num_frames=1, bucket_batch_size=resolution[keep].map(image_batch)).to_dict("records")
    if out:
        log.info("caching %d frame(s) of each of %d training videos as images", per_clip, len(out))
    return out


def build_feature_cache(
    clips: pd.DataFrame,
    vae,
    text_encoder,
    buckets: BucketsConfig,
    config: FeaturesConfig,
    output: str | Path,
    *,
    progress: bool = True,
) -> CacheSummary:
    """Encode every clip of ``clips`` (curation's table) into ``output`` (replaced atomically)."""
    import time

    t0 = time.perf_counter()
    output = Path(output)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    clips = clips[clips["split"].isin(config.splits)].reset_index(drop=True)
    assigned = assign_buckets(clips, buckets, buckets.seed, 0)
    kept = assigned[assigned["bucket_resolution"].notna()].reset_index(drop=True)
    skipped = len(assigned) - len(kept)
    if skipped:
        reasons = assigned.loc[assigned["bucket_resolution"].isna(), "bucket_reason"].value_counts().to_dict()
        log.info("%d clips fit no bucket and are not cached: %s", skipped, reasons)
    if kept.empty:
        raise ValueError(
            "no clip fits any bucket: check buckets.bucket_config against the curated sizes "
            "(`soraflow buckets preview` explains each clip)"
        )

    train_variants = cache_variants(config.augment)

    table = kept.assign(_frame_image=False)
    images = frame_image_records(kept, buckets, config.frame_images_per_clip)
    if images:
        table = pd.concat([table, pd.DataFrame(images).assign(_frame_image=True)], ignore_index=True)
    # Frame images number their windows after every video window (and its variants) of the clip.
    image_base = config.windows_per_clip * len(train_variants)

    def variants_of(rec: dict[str, Any]) -> list[Variant]:
        return train_variants if rec["split"] == "train" and not rec["_frame_image"] else [Variant()]

    def windows_of(rec: dict[str, Any]) -> range:
        if rec["_frame_image"]:
            return range(image_base, image_base + config.frame_images_per_clip)
        return range(config.windows_per_clip)

    records = table.to_dict("records")
    captions = sorted({variant_caption(str(rec["text"]), v, config.augment) for rec in records for v in variants_of(rec)})
    cap_index = {c: i for i, c in enumerate(captions)}
    embs, masks = [], []
    for i in range(0, len(captions), 64):
        e, m = text_encoder.encode(captions[i : i + 64])
        embs.append(e.float().cpu())
        masks.append(m.cpu())
    save_file({"emb": torch.cat(embs).contiguous(), "mask": torch.cat(masks).contiguous()}, str(tmp / CAPTIONS_FILE))

    def decode_window(size: tuple[int, int, int], job: tuple[dict[str, Any], int, int, Variant]) -> torch.Tensor:
        """The ``T x H x W`` window ``job`` encodes: its seeded frames, then its variant's transform."""
        (t, h, w), (rec, wdx, _, variant) = size, job
        rng = np.random.default_rng(_window_seed(config.seed, str(rec["id"]), wdx))
        video = load_clip(rec["path"], t, buckets.frame_interval, h, w, rng, max_window_start=config.max_window_start)
        return transform_video(video, variant)

    rows: list[dict[str, Any]] = []
    groups = table.groupby(["bucket_resolution", "bucket_num_frames", "bucket_height", "bucket_width"], observed=True)
    n_jobs = sum(len(variants_of(rec)) * len(windows_of(rec)) for rec in records)
    bar = tqdm(total=n_jobs, desc="features", disable=not progress, mininterval=1.0)
    shards = 0
    for (res, t, h, w), group in groups:
        name = _bucket_name(str(res), int(t), int(h), int(w))
        pending: list[torch.Tensor] = []
        pending_rows: list[dict[str, Any]] = []
        shard_k = 0

        def flush() -> None:
            nonlocal shard_k, shards
            if not pending:
                return
            shard = f"latents-{name}-{shard_k:04d}.safetensors"
            save_file({"latents": torch.cat(pending).contiguous()}, str(tmp / shard))
            for r, row in enumerate(pending_rows):
                row["shard"], row["row"] = shard, r
            rows.extend(pending_rows)
            pending.clear()
            pending_rows.clear()
            shard_k += 1
            shards += 1

        # A variant of window w is cached as window w + k * windows_per_clip (k = variant number),
        # from the same frames as window w; frame images (one variant) are windows image_base + j.
        jobs = [
            (rec, wdx, k, variant)
            for rec in group.to_dict("records")
            for wdx in windows_of(rec)
            for k, variant in enumerate(variants_of(rec))
        ]
        # Clips decode in worker threads while the VAE encodes the previous batch (decoding took
        # two thirds of the demo's stage); the VAE and its thread count are untouched.
        decode = partial(decode_window, (int(t), int(h), int(w)))
        decoded = ordered_map(decode, jobs, config.decode_workers, ahead=2 * config.encode_batch)
        for j in range(0, len(jobs), config.encode_batch):
            chunk = jobs[j : j + config.encode_batch]
            videos = [next(decoded) for _ in chunk]
            with torch.inference_mode():
                lat = vae.encode(torch.stack(videos).to(vae.device, vae.dtype)).float().cpu()
            pending.append(lat)
            for rec, wdx, k, variant in chunk:
                text = variant_caption(str(rec["text"]), variant, config.augment)
                pending_rows.append(
                    {
                        "id": rec["id"],
                        "window": wdx + k * config.windows_per_clip,
                        "augment": variant.name,
                        "text": text,
                        "caption_index": cap_index[text],
                        "split": rec["split"],
                        "fps": _effective_fps(rec["fps"], int(t), buckets.frame_interval),
                        "source_height": int(rec["height"]),
                        "source_width": int(rec["width"]),
                        "source_num_frames": int(rec["num_frames"]),
                        "path": rec["path"],
                        "bucket_resolution": str(res),
                        "bucket_num_frames": int(t),
                        "bucket_height": int(h),
                        "bucket_width": int(w),
                        "bucket_aspect_ratio": float(rec["bucket_aspect_ratio"]),
                        "bucket_batch_size": int(rec["bucket_batch_size"]),
                    }
                )
            if sum(p.shape[0] for p in pending) >= config.shard_rows:
                flush()
            bar.update(len(chunk))
        flush()
    bar.close()

    index = pd.DataFrame(rows)
    index["sample_id"] = index["id"].astype(str) + ":" + index["window"].astype(str)
    index.to_parquet(tmp / INDEX_FILE, index=False)
    latent_shape = list(load_file(str(tmp / index["shard"].iloc[0]))["latents"].shape[1:2])
    info = {
        "latent_channels": latent_shape[0],
        "vae_downsample": int(vae.downsample_factor),
        "caption_channels": int(embs[0].shape[-1]),
        "caption_max_length": int(embs[0].shape[1]),
        "frame_interval": buckets.frame_interval,
        "rows": len(index),
        "clips": int(index["id"].nunique()),
    }
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)
    size = sum(f.stat().st_size for f in output.iterdir())
    return CacheSummary(
        rows=len(index), clips=int(index["id"].nunique()), skipped=int(skipped), captions=len(captions),
        shards=shards, seconds=time.perf_counter() - t0, bytes=size,
    )


class FeatureCache:
    """Reads a cache built by :func:`build_feature_cache`; all shards are held in memory.

    ``index`` is the table the bucket sampler batches (its ``bucket_*`` columns are fixed);
    :meth:`batch` returns the tensors of a list of index rows, which must share a bucket.
    """

    def __init__(self, root: str | Path, split: str | None = "train"):
        self.root = Path(root)
        if not (self.root / INDEX_FILE).exists():
            raise FileNotFoundError(f"{self.root}: no feature cache here (run the `features` stage)")
        self.info = json.loads((self.root / INFO_FILE).read_text())
        index = pd.read_parquet(self.root / INDEX_FILE)
        if split is not None:
            index = index[index["split"] == split]
        self.index = index.reset_index(drop=True)
        caps = load_file(str(self.root / CAPTIONS_FILE))
        self.caption_emb, self.caption_mask = caps["emb"], caps["mask"]
        self._shards = {name: load_file(str(self.root / name))["latents"] for name in self.index["shard"].unique()}
        # Columns as plain arrays once: per-sample reads then skip pandas (it was most of the
        # data-wait share of a training step).
        self._shard_of = self.index["shard"].to_numpy(dtype=object)
        self._row_of = self.index["row"].to_numpy(dtype=np.int64)
        self._caption_of = torch.as_tensor(self.index["caption_index"].to_numpy(dtype=np.int64).copy())
        self._numbers = {
            key: torch.as_tensor(self.index[col].to_numpy(dtype=np.float32))
            for key, col in (("height", "bucket_height"), ("width", "bucket_width"),
                             ("num_frames", "bucket_num_frames"), ("fps", "fps"))
        }

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, rows: list[int]) -> dict[str, torch.Tensor]:
        rows = [int(r) for r in rows]
        latents = torch.stack([self._shards[self._shard_of[r]][self._row_of[r]] for r in rows])
        at = torch.as_tensor(rows, dtype=torch.long)
        cap = self._caption_of[at]
        out = {"latents": latents, "y": self.caption_emb[cap], "mask": self.caption_mask[cap]}
        out.update({key: values[at] for key, values in self._numbers.items()})
        return out
