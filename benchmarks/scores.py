"""Per-clip cost of each curation scorer, and the score distributions on the demo ground truth.

    python benchmarks/scores.py --corpus data/demo            # an existing demo corpus
    python benchmarks/scores.py --generate /tmp/demo --seed 1  # generate one first
    python benchmarks/scores.py --corpus data/demo --jitter 2  # clip ends off by 2 frames
    python benchmarks/scores.py --corpus data/demo --set ocr_size=512 --set flow_gap=4

Every scene of ``scenes.parquet`` is decoded (PyAV, once per video), sampled with
``sample_indices`` and scored. Prints ms per clip for decode-only, motion, OCR and the total,
then ``motion`` for static vs moving scenes and ``ocr_boxes`` / ``ocr_area`` for text vs
clean scenes, with the threshold that separates them best. ``--jitter k`` shifts each
scene's ends inward/outward by up to ``k`` frames (scene cuts detected 1-2 frames off).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd

from soraflow.curation.scores import ScoresConfig, load_scorers, sample_indices, score_clip
from soraflow.curation.scores import sampling
from soraflow.curation.scores.motion import motion_scores
from soraflow.curation.scores.ocr import ocr_scores


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def describe(name: str, values: np.ndarray) -> str:
    if len(values) == 0:
        return f"{name}: none"
    q = np.percentile(values, [0, 5, 50, 95, 100])
    return f"{name} (n={len(values)}): min {q[0]:.3f} p5 {q[1]:.3f} median {q[2]:.3f} p95 {q[3]:.3f} max {q[4]:.3f}"


def separation(low: np.ndarray, high: np.ndarray) -> str:
    """Is every 'high' value above every 'low' one? (and the geometric middle of the gap)"""
    if len(low) == 0 or len(high) == 0:
        return "one side is empty"
    lo_max, hi_min = float(np.max(low)), float(np.min(high))
    gap = "clean gap" if hi_min > lo_max else "OVERLAP"
    return f"low max {lo_max:.4f} < high min {hi_min:.4f}: {gap}; geometric mid {math.sqrt(max(lo_max, 1e-6) * max(hi_min, 1e-6)):.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="demo corpus folder (videos.parquet, scenes.parquet, raw/)")
    ap.add_argument("--generate", type=Path, help="generate a demo corpus here first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-videos", type=int, default=48)
    ap.add_argument("--jitter", type=int, default=0, help="random shift of scene ends, frames")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a curate.scores key")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N videos")
    ap.add_argument("--csv", type=Path, help="write per-scene scores here")
    ap.add_argument(
        "--time-clip",
        metavar="ARCH",
        help="also time CLIP embedding of the aesthetic frames + caption match with a RANDOMLY initialised "
        "open_clip ARCH (e.g. ViT-L-14) and aesthetic head: timing only, the values mean nothing",
    )
    args = ap.parse_args()

    corpus = args.corpus
    if args.generate:
        from soraflow.demo.config import DemoConfig
        from soraflow.demo.generator import generate_corpus

        generate_corpus(DemoConfig(seed=args.seed, num_videos=args.num_videos, workers=2), args.generate)
        corpus = args.generate
    if corpus is None:
        ap.error("give --corpus or --generate")

    update = dict(kv.split("=", 1) for kv in args.set)
    cfg = ScoresConfig(**update)
    print("config:", {k: v for k, v in cfg.model_dump().items() if k in update} or "defaults")
    scorers = load_scorers(cfg)
    scenes = pd.read_parquet(corpus / "scenes.parquet")
    videos = pd.read_parquet(corpus / "videos.parquet")
    videos = videos[videos.kind == "video"]
    if args.limit:
        videos = videos.head(args.limit)
    rng = np.random.default_rng(0)

    rows, t_decode, t_motion, t_ocr, t_total, n_frames = [], 0.0, 0.0, 0.0, 0.0, 0
    for vid in videos.itertuples():
        t0 = time.perf_counter()
        frames = decode(corpus / vid.path)
        t_decode += time.perf_counter() - t0
        n_frames += len(frames)
        for sc in scenes[scenes.path == vid.path].itertuples():
            s, e = int(sc.start_frame), int(sc.end_frame)
            if args.jitter:
                s = int(np.clip(s + rng.integers(-args.jitter, args.jitter + 1), 0, e - 2))
                e = int(np.clip(e + rng.integers(-args.jitter, args.jitter + 1), s + 2, len(frames)))
            clip = frames[s:e]
            idx = sample_indices(len(clip), float(vid.fps), cfg)
            sampled = clip[idx]
            t0 = time.perf_counter()
            row = score_clip(sampled, idx, float(vid.fps), None, scorers, cfg)
            t_total += time.perf_counter() - t0
            # per-scorer timings, same work as inside score_clip
            n = len(clip)
            pairs = sampling.flow_pair_positions(idx, cfg, n)
            t0 = time.perf_counter()
            motion_scores(list(sampled), pairs, [idx[b] - idx[a] for a, b in pairs], scorers.flow, cfg)
            t_motion += time.perf_counter() - t0
            t0 = time.perf_counter()
            ocr_scores([sampled[p] for p in sampling.ocr_positions(idx, cfg, n)], scorers.ocr)
            t_ocr += time.perf_counter() - t0
            rows.append(
                {
                    "path": vid.path,
                    "scene": sc.scene_index,
                    "frames": n,
                    "size": f"{vid.width}x{vid.height}",
                    "static": sc.static,
                    "pan": sc.camera_pan,
                    "direction": sc.direction,
                    "background": sc.background,
                    "has_text": sc.has_text,
                    "text_style": sc.text_style,
                    **row,
                }
            )
    df = pd.DataFrame(rows)
    k = len(df)
    print(f"{k} clips, {n_frames} frames decoded; per clip (ms): decode-only {1000 * t_decode / k:.1f}, "
          f"motion {1000 * t_motion / k:.1f}, ocr {1000 * t_ocr / k:.1f}, score_clip total {1000 * t_total / k:.1f}")
    st, mv = df[df.static], df[~df.static]
    print(describe("motion static", st.motion.to_numpy()))
    print(describe("motion moving", mv.motion.to_numpy()))
    print("  motion:", separation(st.motion.to_numpy(), mv.motion.to_numpy()))
    print(describe("motion_p90 static", st.motion_p90.to_numpy()))
    print(describe("motion_p90 moving", mv.motion_p90.to_numpy()))
    print("  motion_p90:", separation(st.motion_p90.to_numpy(), mv.motion_p90.to_numpy()))
    tx, cl = df[df.has_text], df[~df.has_text]
    print(describe("ocr_boxes text", tx.ocr_boxes.to_numpy(float)))
    print(describe("ocr_boxes clean", cl.ocr_boxes.to_numpy(float)))
    print(describe("ocr_area text", tx.ocr_area.to_numpy()))
    print(describe("ocr_area clean", cl.ocr_area.to_numpy()))
    print("  ocr_area:", separation(cl.ocr_area.to_numpy(), tx.ocr_area.to_numpy()))
    print("camera label vs ground truth (pan column):")
    print(pd.crosstab(df.pan + "/" + np.where(df.static, "static", "moving"), df.camera_motion))
    if args.csv:
        df.to_csv(args.csv, index=False)
    if args.time_clip:
        time_clip(args.time_clip, cfg)


def time_clip(arch: str, cfg: ScoresConfig) -> None:
    """ms per clip of aesthetic + match with a random-weight model of the given architecture."""
    import open_clip
    import torch

    from soraflow.curation.scores.clip_scores import AestheticMLP, ClipScorer, embed_dim

    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    clip = ClipScorer(model.eval(), preprocess, open_clip.get_tokenizer(arch), AestheticMLP(embed_dim(model)).eval(), "cpu")
    frames = [np.random.default_rng(i).integers(0, 256, (360, 640, 3), dtype=np.uint8) for i in range(cfg.clip_frames)]
    clip.match(clip.image_embeddings(frames[:1]), "warm up")
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        emb = clip.image_embeddings(frames)
        clip.aesthetic(emb)
        clip.match(emb[len(frames) // 2 : len(frames) // 2 + 1], "a red circle moving left on a gray background")
    print(f"{arch} (random weights, timing only, torch threads {torch.get_num_threads()}): "
          f"aesthetic + match {1000 * (time.perf_counter() - t0) / reps:.0f} ms per clip ({cfg.clip_frames} frames)")


if __name__ == "__main__":
    main()
