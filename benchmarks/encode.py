"""Clip encoding: libx264 presets compared on encoding CPU, decoding CPU, file size and Y-PSNR.

    python benchmarks/encode.py                                   # demo corpus, default presets
    python benchmarks/encode.py --input /path/to/videos --presets ultrafast veryfast --crf 23

Every file's first ``--max-frames`` frames are decoded once (PyAV) and resized as curation
does (shorter side capped at ``curate.clips.max_short_side``, even sizes, YUV 4:2:0). Each
preset then writes them with curation's own :func:`soraflow.curation.encode.encode_clip`
(one x264 thread, as the curate stage runs it), and the written clip is decoded back. Printed
per preset: encoding CPU seconds (this process), decoding CPU seconds of the written clips
(what every reader of the dataset pays, once per epoch in a trainer that decodes on the fly),
total bytes, and the luma PSNR of the decoded clips against the frames that went in (mean and
worst clip), with each figure's ratio to the first preset.

Why it exists: the preset trades encoding time, decoding time and storage against each other
at the same crf; ``curate.clips.preset`` picks one, and this is the evidence.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from soraflow.curation.config import ClipsConfig
from soraflow.curation.decode import even_size
from soraflow.curation.encode import encode_clip
from soraflow.evaluation.metrics import psnr

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"}


def source_frames(path: Path, max_short_side: int, max_frames: int) -> tuple[list[av.VideoFrame], float]:
    """The first ``max_frames`` frames at the clip size, YUV 4:2:0, and the stream's rate."""
    frames: list[av.VideoFrame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        for frame in container.decode(stream):
            w, h = even_size(frame.width, frame.height, max_short_side)
            frames.append(frame.reformat(width=w, height=h, format="yuv420p"))
            if len(frames) >= max_frames:
                break
    return frames, fps


def luma(frames: list[av.VideoFrame]) -> np.ndarray:
    """``[T, H, W]`` uint8 Y planes (a yuv420p frame's ``to_ndarray`` stacks Y over U and V)."""
    return np.stack([f.to_ndarray()[: f.height] for f in frames])


def measure(clips: list[tuple[list[av.VideoFrame], float]], config: ClipsConfig, work: Path) -> dict[str, float]:
    enc_cpu = dec_cpu = 0.0
    size = 0
    psnrs = []
    for i, (frames, fps) in enumerate(clips):
        path = work / f"{config.preset}-{i}.mp4"
        t0 = time.process_time()
        encode_clip(frames, fps, path, config)
        enc_cpu += time.process_time() - t0
        size += path.stat().st_size
        t0 = time.process_time()
        with av.open(str(path)) as container:
            decoded = list(container.decode(video=0))
        dec_cpu += time.process_time() - t0
        if len(decoded) != len(frames):
            raise RuntimeError(f"{path}: wrote {len(frames)} frames, read back {len(decoded)}")
        psnrs.append(psnr(luma(frames), luma(decoded)))
        path.unlink()
    return {"encode_cpu": enc_cpu, "decode_cpu": dec_cpu, "bytes": size,
            "psnr_mean": float(np.mean(psnrs)), "psnr_min": float(np.min(psnrs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=Path("data/demo/raw"), help="folder of videos (default: data/demo/raw)")
    ap.add_argument("--limit", type=int, default=50, help="use the first N videos (0: all)")
    ap.add_argument("--max-frames", type=int, default=300, help="frames per video")
    ap.add_argument("--presets", nargs="+", default=["superfast", "ultrafast", "veryfast"])
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--max-short-side", type=int, default=ClipsConfig().max_short_side)
    args = ap.parse_args()

    files = sorted(p for p in args.input.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if args.limit:
        files = files[: args.limit]
    if not files:
        raise SystemExit(f"no videos under {args.input}")
    clips = [c for c in (source_frames(p, args.max_short_side, args.max_frames) for p in files) if c[0]]
    n = sum(len(f) for f, _ in clips)
    print(f"{len(clips)} videos, {n} frames, crf {args.crf}, one x264 thread")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            r = measure(clips, ClipsConfig(preset=preset, crf=args.crf, threads=1), Path(tmp))
            base = base or r
            print(
                f"{preset:10s} encode {r['encode_cpu']:6.2f} s CPU ({1000 * r['encode_cpu'] / n:.2f} ms/frame, "
                f"{r['encode_cpu'] / base['encode_cpu']:.2f}x)  decode {r['decode_cpu']:5.2f} s "
                f"({r['decode_cpu'] / base['decode_cpu']:.2f}x)  size {r['bytes'] / 1e6:7.2f} MB "
                f"({r['bytes'] / base['bytes']:.2f}x)  Y-PSNR mean {r['psnr_mean']:.2f} dB, worst clip {r['psnr_min']:.2f} dB",
                flush=True,
            )


if __name__ == "__main__":
    main()
