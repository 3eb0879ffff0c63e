"""Bucket assignment speed: 1,000,000 clips on one core (the issue asks for under 5 s).

Run: ``python benchmarks/buckets.py [--clips N] [--repeat R]``. Prints the best wall time of
``assign_buckets`` over a random clip table with the original's stage-2 ``bucket_config``
(frame_interval 3), and of building one epoch of batches with the sampler.
"""

from __future__ import annotations

import argparse
import os
import time

# One core: numpy's elementwise kernels are single-threaded anyway; pin BLAS pools too.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from soraflow.buckets import BucketSampler, BucketsConfig, assign_buckets  # noqa: E402
from soraflow.buckets.config import PUBLISHED_STAGE2  # noqa: E402


def random_clips(n: int, seed: int = 0) -> pd.DataFrame:
    """Clips with common video sizes (both orientations), 10% images, 1-400 frames."""
    rng = np.random.default_rng(seed)
    sizes = np.array([(144, 256), (240, 426), (360, 640), (480, 854), (720, 1280), (1080, 1920), (512, 512), (1024, 1024)])
    pick = sizes[rng.integers(len(sizes), size=n)]
    flip = rng.random(n) < 0.2
    h = np.where(flip, pick[:, 1], pick[:, 0])
    w = np.where(flip, pick[:, 0], pick[:, 1])
    t = rng.integers(2, 400, size=n)
    t[rng.random(n) < 0.1] = 1
    return pd.DataFrame({"id": np.arange(n), "num_frames": t, "height": h, "width": w})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    config = BucketsConfig(bucket_config=PUBLISHED_STAGE2, frame_interval=3, seed=0, extra_resolutions={})
    df = random_clips(args.clips)
    best = float("inf")
    for epoch in range(args.repeat):
        t0 = time.perf_counter()
        out = assign_buckets(df, config, epoch=epoch)
        best = min(best, time.perf_counter() - t0)
    kept = int(out["bucket_resolution"].notna().sum())
    print(f"assign_buckets: {args.clips:,} clips in {best:.3f} s (best of {args.repeat}); {kept:,} got a bucket")
    sampler = BucketSampler(df, config, num_replicas=8, rank=0)
    t0 = time.perf_counter()
    n = len(sampler)
    print(f"BucketSampler epoch plan (assignment + grouping + shuffles): {time.perf_counter() - t0:.3f} s, {n:,} batches per rank of 8")


if __name__ == "__main__":
    main()
