"""Bucket assignment: the original's rule on hand-checked clips, the vectorised code against a
line-by-line port, the reasons for clips left out, and keep-probability rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from buckets_helpers import bucket_configs, clip_tables, reference_bucket
from hypothesis import HealthCheck, given, settings

from soraflow.buckets.assign import BUCKET_COLUMNS, BucketPlan, assign_buckets
from soraflow.buckets.config import PUBLISHED_STAGE2, BucketsConfig
from soraflow.buckets.draws import clip_keys
from soraflow.buckets.stats import bucket_statistics, reason_counts, tokens_per_clip

STAGE2 = BucketsConfig(bucket_config=PUBLISHED_STAGE2, frame_interval=3, seed=0)


def copies(n: int, num_frames: int, height: int, width: int) -> pd.DataFrame:
    """``n`` clips with the same metadata and distinct ids: the draws differ per clip."""
    return pd.DataFrame({"id": np.arange(n), "num_frames": num_frames, "height": height, "width": width})


def shares(out: pd.DataFrame) -> dict[str, float]:
    return out["bucket_resolution"].astype(object).fillna("none").value_counts(normalize=True).to_dict()


def test_stage2_visiting_order_and_bucket_ids():
    plan = BucketPlan.from_config(STAGE2)
    # Most pixels first: 1080p 2073600, 1024 1048576, 720p 921600, 480p 409920, 512 262144,
    # 240p 102240, 256 65536, 144p 36864.
    assert plan.resolutions == ("1080p", "1024", "720p", "480p", "512", "240p", "256", "144p")
    assert plan.frames["512"] == (128, 64, 32, 16, 1)
    # bucket ids count (resolution, frames) pairs in that order: 1080p/1 -> 0, 1024/1 -> 1,
    # 720p/32,16,1 -> 2,3,4, 480p -> 5,6,7, 512/128 -> 8 ... 144p/1 -> 27.
    assert plan.buckets[("720p", 32)].index == 2
    assert plan.buckets[("512", 128)].index == 8
    assert plan.buckets[("144p", 1)].index == 27


def test_stage2_landscape_1080p_video_of_200_frames():
    # H=1080, W=1920 (2,073,600 px), T=200, frame_interval 3.
    # 1080p and 1024 pass the pixel test (>= 0.8 x pixels) but hold only frame bucket 1 -> next.
    # 720p: largest t != 1 with 200 > 3t is 32 (96 < 200); 720p/32 is [0.0, None] -> always
    #   fails and falls to the next resolution (not to 720p/16). 480p: same, 480p/32 disabled.
    # 512: 128*3 = 384 > 200, 64*3 = 192 < 200 -> t=64, keep 0.2.
    # 240p: t=64, keep 0.8; 256: t=64, keep 0.5; 144p: t=64, keep 1.0 (always).
    # So P(512) = 0.2, P(240p) = 0.8*0.8 = 0.64, P(256) = 0.8*0.2*0.5 = 0.08, P(144p) = 0.08.
    out = assign_buckets(copies(20000, 200, 1080, 1920), STAGE2)
    assert out["bucket_num_frames"].eq(64).all()
    got = shares(out)
    assert set(got) == {"512", "240p", "256", "144p"}
    for name, p in {"512": 0.2, "240p": 0.64, "256": 0.08, "144p": 0.08}.items():
        assert got[name] == pytest.approx(p, abs=5 * np.sqrt(p * (1 - p) / 20000))
    # H/W = 0.5625: 512 and 256 tables have keys 0.52 / 0.57 -> 0.57 (|0.0075| < |0.0425|);
    # 240p and 144p have 0.56 -> sizes (384, 672), (240, 426), (192, 336), (144, 256).
    sizes = out.groupby("bucket_resolution", observed=True)[["bucket_aspect_ratio", "bucket_height", "bucket_width", "bucket_batch_size"]].first()
    assert sizes.loc["512"].tolist() == [0.57, 384, 672, 1]
    assert sizes.loc["240p"].tolist() == [0.56, 240, 426, 4]
    assert sizes.loc["256"].tolist() == [0.57, 192, 336, 4]
    assert sizes.loc["144p"].tolist() == [0.56, 144, 256, 4]


def test_stage2_square_image_always_finds_a_frame1_bucket():
    # 1024x1024 image (1,048,576 px, T=1): 1080p needs 0.8*2073600 = 1658880 -> skip.
    # 1024: frame bucket 1 keep 0.3 -> P = 0.3; then 720p 0.1, 480p 0.4, 512 0.5, 240p 0.1,
    # 256 0.8, 144p 1.0: always assigned, always t=1, always the 1.0 key.
    out = assign_buckets(copies(20000, 1, 1024, 1024), STAGE2)
    assert out["bucket_num_frames"].eq(1).all()
    assert out["bucket_aspect_ratio"].eq(1.0).all()
    got = shares(out)
    assert got["1024"] == pytest.approx(0.3, abs=0.02)
    assert got["720p"] == pytest.approx(0.7 * 0.1, abs=0.01)
    assert got["480p"] == pytest.approx(0.7 * 0.9 * 0.4, abs=0.015)
    assert "1080p" not in got and "none" not in got


def test_stage2_frame_boundary_is_strict():
    # H=360, W=640 (230,400 px): 480p needs 327,936 -> skip; 512 needs 209,715.2 -> ok.
    # T=48: 48 > 16*3 = 48 is false -> no frame bucket at 512, 240p, 256, 144p -> too short.
    # T=49: t=16 everywhere; 144p/16 keeps with 1.0, so the clip always gets t=16.
    df = pd.DataFrame({"num_frames": [48, 49] * 500, "height": 360, "width": 640})
    out = assign_buckets(df, STAGE2)
    short, ok = out.iloc[0::2], out.iloc[1::2]
    assert short["bucket_resolution"].isna().all()
    assert (short["bucket_reason"] == "too_short").all()
    assert short["bucket_batch_size"].isna().all()
    assert ok["bucket_num_frames"].eq(16).all()
    assert set(ok["bucket_resolution"].astype(str)) <= {"512", "240p", "256", "144p"}


def test_stage2_pixel_tolerance_boundary():
    # 144p needs H*W >= 0.8 * 36864 = 29491.2. 172x172 = 29584 passes; 171x172 = 29412 does not.
    # T=100: 128*3, 64*3 > 100 but 32*3 = 96 < 100 -> t=32; 144p/32 keeps with 1.0.
    # H/W = 1.0 -> key 1.00 -> (192, 192); 171/172 = 0.994 would also be 1.00, but it is too small.
    df = pd.DataFrame({"num_frames": [100, 100], "height": [172, 171], "width": [172, 172]})
    out = assign_buckets(df, STAGE2)
    assert out.loc[0, ["bucket_num_frames", "bucket_height", "bucket_width", "bucket_batch_size"]].tolist() == [32, 192, 192, 9]
    assert out.loc[0, "bucket_resolution"] == "144p"
    assert pd.isna(out.loc[1, "bucket_resolution"]) and out.loc[1, "bucket_reason"] == "too_small"


def test_pixel_tolerance_is_inclusive_at_an_exact_edge():
    # 0.8 * 102240 = 81792.0 exactly; the original skips a resolution only if H*W < 81792,
    # so 288x284 = 81792 fits 240p and 287x284 = 81508 does not.
    config = BucketsConfig(bucket_config={"240p": {16: [1.0, 2]}}, frame_interval=1)
    df = pd.DataFrame({"num_frames": [40, 40], "height": [288, 287], "width": [284, 284]})
    out = assign_buckets(df, config)
    assert out["bucket_resolution"].astype(object).tolist()[0] == "240p"
    assert out["bucket_reason"].astype(object).tolist()[1] == "too_small"


def test_stage2_portrait_video_keep_prob_failure_goes_to_lower_resolution_same_t():
    # H=1920, W=1080, T=60: t=16 (60 > 48, 60 < 96) at 720p (keep 0.1), 480p (0.4), 512 (0.2),
    # 240p (0.9), 256 (0.5), 144p (1.0) -> always t=16. At 144p H/W = 1.78 -> (256, 144).
    out = assign_buckets(copies(5000, 60, 1920, 1080), STAGE2)
    assert out["bucket_num_frames"].eq(16).all()
    got = shares(out)
    assert got["720p"] == pytest.approx(0.1, abs=0.02)
    assert got["480p"] == pytest.approx(0.9 * 0.4, abs=0.035)
    low = out[out["bucket_resolution"] == "144p"]
    assert len(low) and (low["bucket_height"] == 256).all() and (low["bucket_width"] == 144).all()


def test_reasons_for_every_clip_left_out():
    config = BucketsConfig(
        bucket_config={"240p": {16: [0.0, None], 1: [1.0, 4]}, "144p": {8: [1.0, 2]}}, frame_interval=1, seed=3
    )
    df = pd.DataFrame(
        {
            "num_frames": [100, 5, 1, 100, np.nan, 0, 100, 1],
            "height": [1080, 1080, 120, 150, 1080, 1080, 200, 200],
            "width": [1920, 1920, 160, 250, 1920, 1920, 200, 200],
        }
    )
    out = assign_buckets(df, config)
    reasons = out["bucket_reason"].astype(object).tolist()
    # 0: 240p/16 captures it (keep 0.0) -> falls to 144p/8 (keep 1.0) -> assigned at 144p/8.
    assert out.loc[0, "bucket_resolution"] == "144p" and pd.isna(reasons[0])
    # 1: T=5: no t != 1 with 5 > t (16, 8) -> too short.
    assert reasons[1] == "too_short"
    # 2: 120x160 = 19200 < 0.8 * 36864 -> too small.
    assert reasons[2] == "too_small"
    # 3: 150x250 = 37500: passes 144p only (240p needs 81792); a video of 100 frames -> 144p/8.
    assert out.loc[3, "bucket_resolution"] == "144p"
    # 4, 5: missing / zero frames -> invalid metadata.
    assert reasons[4] == "invalid_metadata" and reasons[5] == "invalid_metadata"
    # 6: 200x200 = 40000 passes 144p only, T=100 -> 144p/8.
    assert out.loc[6, "bucket_resolution"] == "144p"
    # 7: a 200x200 image: 144p has no frame bucket 1 and 240p is too large -> no bucket.
    assert reasons[7] == "no_bucket"
    only_disabled = BucketsConfig(bucket_config={"240p": {16: [0.0, None]}}, frame_interval=1)
    out2 = assign_buckets(df.iloc[[0]], only_disabled)
    assert out2["bucket_reason"].iloc[0] == "dropped_by_keep_prob"
    summary = reason_counts(out).set_index("reason")["clips"]
    assert summary["assigned"] == 3 and summary["too_short"] == 1 and summary["invalid_metadata"] == 2
    assert summary.sum() == len(df)


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['height'\]"):
        assign_buckets(pd.DataFrame({"num_frames": [1], "width": [3]}), STAGE2)


def test_output_keeps_columns_and_types():
    df = pd.DataFrame({"path": ["a.mp4", "b.mp4"], "num_frames": [100, 10], "height": [360, 360], "width": [640, 640], "score": [1.5, 2.0]})
    out = assign_buckets(df, STAGE2)
    assert list(out.columns) == list(df.columns) + list(BUCKET_COLUMNS)
    assert out["bucket_aspect_ratio"].dtype == np.float64
    assert str(out["bucket_batch_size"].dtype) == "Int64"
    pd.testing.assert_frame_equal(out[df.columns], df)


def test_draws_depend_on_seed_epoch_and_id_only():
    df = copies(4000, 60, 1920, 1080)
    a0 = assign_buckets(df, STAGE2, epoch=0)
    assert assign_buckets(df, STAGE2, epoch=0)["bucket_resolution"].equals(a0["bucket_resolution"])
    a1 = assign_buckets(df, STAGE2, epoch=1)
    b0 = assign_buckets(df, STAGE2, seed=1, epoch=0)
    assert (a1["bucket_resolution"] != a0["bucket_resolution"]).mean() > 0.3
    assert (b0["bucket_resolution"] != a0["bucket_resolution"]).mean() > 0.3
    # Row order does not matter when there is an id column: the draws follow the clip.
    perm = np.random.default_rng(0).permutation(len(df))
    shuffled = assign_buckets(df.iloc[perm].reset_index(drop=True), STAGE2, epoch=0)
    pd.testing.assert_frame_equal(shuffled.sort_values("id").reset_index(drop=True), a0)
    # Without an id column the row position is the id.
    no_id = assign_buckets(df.drop(columns="id"), STAGE2, epoch=0)
    assert no_id["bucket_resolution"].equals(a0["bucket_resolution"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(df=clip_tables(max_size=60), config=bucket_configs())
def test_vectorised_equals_line_by_line_port(df, config):
    out = assign_buckets(df, config, epoch=2)
    keys = clip_keys(df)
    tables = config.tables()
    for i, row in enumerate(df.itertuples()):
        ref = reference_bucket(row.num_frames, row.height, row.width, keys[i], config, config.seed, 2)
        got = out.iloc[i]
        if ref is None:
            assert pd.isna(got["bucket_resolution"])
            assert got["bucket_reason"] in {"too_short", "too_small", "no_bucket", "dropped_by_keep_prob"}
        else:
            res, t, key = ref
            assert (got["bucket_resolution"], got["bucket_num_frames"], got["bucket_aspect_ratio"]) == (res, t, float(key))
            assert (got["bucket_height"], got["bucket_width"]) == tables[res].size(key)
            assert got["bucket_batch_size"] == config.bucket_config[res][t][1]
            assert pd.isna(got["bucket_reason"])


@pytest.mark.parametrize("p", [0.1, 0.35, 0.5, 0.9])
def test_keep_probability_rate_matches_config(p):
    n = 20000
    config = BucketsConfig(bucket_config={"240p": {16: [p, 4]}, "144p": {16: [0.5, 4]}}, frame_interval=1, seed=11)
    out = assign_buckets(copies(n, 100, 1080, 1920), config, epoch=3)
    got = shares(out)
    tol = lambda q: 5 * np.sqrt(q * (1 - q) / n)  # noqa: E731
    # First 240p with p, then (on failure) 144p with 0.5, else dropped.
    assert got.get("240p", 0) == pytest.approx(p, abs=tol(p))
    assert got.get("144p", 0) == pytest.approx((1 - p) * 0.5, abs=tol((1 - p) * 0.5))
    dropped = out["bucket_reason"] == "dropped_by_keep_prob"
    assert dropped.mean() == pytest.approx((1 - p) * 0.5, abs=tol((1 - p) * 0.5))
    # A fresh draw each epoch: kept in both epochs ~ p^2 (independent), not p.
    other = assign_buckets(copies(n, 100, 1080, 1920), config, epoch=4)
    both = ((out["bucket_resolution"] == "240p") & (other["bucket_resolution"] == "240p")).mean()
    assert both == pytest.approx(p * p, abs=tol(p * p))


def test_statistics_table_and_figure():
    config = BucketsConfig(bucket_config={"144p": {16: [1.0, 4], 1: [1.0, 3]}}, frame_interval=1)
    df = pd.DataFrame({"num_frames": [50] * 10 + [1] * 7, "height": 144, "width": 256})
    stats, fig = bucket_statistics(assign_buckets(df, config))
    assert stats[["num_frames", "clips", "batches", "left_over_clips"]].values.tolist() == [[16, 10, 2, 2], [1, 7, 2, 1]]
    # 144x256 -> latent 18x32 -> 9x16 patches of 2x2 = 144 tokens per frame.
    assert stats["tokens_per_clip"].tolist() == [16 * 144, 144]
    assert stats["tokens_per_batch"].tolist() == [16 * 144 * 4, 144 * 3]
    assert tokens_per_clip(16, 144, 256, vae_downsample=4, patch_size=(2, 2, 2)) == 8 * 18 * 32
    assert fig is not None and len(fig.axes) == 2
    stats_keep, _ = bucket_statistics(assign_buckets(df, config), drop_last=False, figure=False)
    assert stats_keep["batches"].tolist() == [3, 3]
