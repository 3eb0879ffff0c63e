"""Shared pieces of the buckets tests: a scalar port of the original rule and hypothesis strategies."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from soraflow.buckets.config import BucketsConfig
from soraflow.buckets.draws import PURPOSE_KEEP, uniform


def reference_bucket(T, H, W, clip_key, config: BucketsConfig, seed: int, epoch: int):
    """Open-Sora 1.1 ``Bucket.get_bucket_id``, line by line, one clip at a time.

    Only the random source differs from the original: the draw of bucket ``b`` is the same
    counter-based uniform the vectorised code uses. Returns ``(resolution, t, ar_key)`` or None.
    """
    tables = config.tables()
    names = sorted(config.bucket_config, key=lambda n: tables[n].pixels, reverse=True)
    bucket_id, cnt = {}, 0
    for n in names:
        for t in sorted(config.bucket_config[n], reverse=True):
            bucket_id[(n, t)] = cnt
            cnt += 1

    def draw(b):
        return uniform(PURPOSE_KEEP, seed, epoch, np.array([clip_key], dtype=np.uint64), b)[0]

    fi = config.frame_interval
    resolution = H * W
    for hw_id in names:
        t_criteria = {t: config.bucket_config[hw_id][t][0] for t in sorted(config.bucket_config[hw_id], reverse=True)}
        if resolution < tables[hw_id].pixels * 0.8:
            continue
        if T == 1:
            if 1 in t_criteria:
                if draw(bucket_id[(hw_id, 1)]) < t_criteria[1]:
                    return hw_id, 1, tables[hw_id].closest_key(H, W)
            else:
                continue
        t_fail = True
        for t_id, prob in t_criteria.items():
            if T > t_id * fi and t_id != 1:
                t_fail = False
                break
        if t_fail:
            continue
        if prob == 1 or draw(bucket_id[(hw_id, t_id)]) < prob:
            return hw_id, t_id, tables[hw_id].closest_key(H, W)
    return None


SIZES = [(144, 256), (240, 426), (360, 640), (480, 854), (720, 1280), (1080, 1920), (512, 512), (256, 256), (100, 100), (64, 48)]


def _threshold_sizes() -> list[tuple[int, int]]:
    """Sizes just above and just below 0.8 x the pixels of each table (the tolerance edge)."""
    out = []
    for table in BucketsConfig().tables().values():
        edge = 0.8 * table.pixels
        h = int(edge**0.5)
        w = int(np.ceil(edge / h))
        out += [(h, w), (h, w - 1)]
    return out


SIZES += _threshold_sizes()
FRAME_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128]
#: Frame counts at and just past t * frame_interval (the strict T > t * fi edge).
EDGE_FRAMES = sorted({f * k + d for f in FRAME_CHOICES for k in (1, 2, 3, 4) for d in (0, 1)} - {1})


@st.composite
def clip_tables(draw, min_size=1, max_size=120, with_id=None):
    n = draw(st.integers(min_size, max_size))
    rows = draw(
        st.lists(
            st.tuples(
                st.one_of(st.just(1), st.integers(2, 400), st.sampled_from(EDGE_FRAMES)),
                st.one_of(st.sampled_from(SIZES), st.tuples(st.integers(16, 2000), st.integers(16, 2000))),
                st.booleans(),
            ),
            min_size=n,
            max_size=n,
        )
    )
    t = [r[0] for r in rows]
    h = [r[1][1] if r[2] else r[1][0] for r in rows]
    w = [r[1][0] if r[2] else r[1][1] for r in rows]
    df = pd.DataFrame({"num_frames": t, "height": h, "width": w})
    if with_id is None:
        with_id = draw(st.booleans())
    if with_id:
        ids = draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n, unique=True))
        df.insert(0, "id", ids)
    return df



@st.composite
def bucket_configs(draw, resolutions=("144p", "256", "240p", "360p", "512", "480p", "720p", "32px", "64px"), max_batch=6, permissive=False):
    """Random configs; ``permissive`` adds a 32px catch-all (frames 1 and 2, keep 1.0) so that
    most clips get a bucket and the sampler has batches to deal."""
    names = draw(st.lists(st.sampled_from(resolutions), min_size=1, max_size=4, unique=True))
    if permissive and "32px" not in names:
        names.append("32px")
    cfg = {}
    for name in names:
        frames = draw(st.lists(st.sampled_from(FRAME_CHOICES), min_size=1, max_size=4, unique=True))
        entry = {}
        for f in frames:
            prob = draw(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0.0, 1.0)))
            bs = draw(st.integers(1, max_batch))
            entry[f] = [prob, None if prob == 0.0 and draw(st.booleans()) else bs]
        if permissive and name == "32px":
            entry.update({1: [1.0, draw(st.integers(1, max_batch))], 2: [1.0, draw(st.integers(1, max_batch))]})
        cfg[name] = entry
    fi = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    # Default extra_resolutions (demo 32px/64px tables) stay available.
    return BucketsConfig(bucket_config=cfg, frame_interval=fi, seed=seed, rank_lockstep=draw(st.booleans()))
