"""The batch sampler: homogeneous batches, ranks disjoint and complete, resume equals continuation."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from buckets_helpers import bucket_configs, clip_tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soraflow.buckets.config import PUBLISHED_STAGE2, BucketsConfig
from soraflow.buckets.sampler import BucketBatch, BucketSampler, plan_epoch

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def all_ranks(df, config, num_replicas, epoch=0, **kw):
    out = []
    for r in range(num_replicas):
        s = BucketSampler(df, config, num_replicas=num_replicas, rank=r, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def bucket_sizes(assigned: pd.DataFrame) -> Counter:
    got = assigned[assigned["bucket_resolution"].notna()]
    return Counter(zip(got["bucket_resolution"].astype(str), got["bucket_num_frames"].astype(int), got["bucket_aspect_ratio"]))


@SETTINGS
@given(df=clip_tables(max_size=150), config=bucket_configs(permissive=True), num_replicas=st.integers(1, 4), epoch=st.integers(0, 3))
def test_batches_homogeneous_and_ranks_disjoint_and_complete(df, config, num_replicas, epoch):
    ranks = all_ranks(df, config, num_replicas, epoch)
    ref = BucketSampler(df, config, num_replicas=num_replicas, rank=0)
    assigned = ref.assignment(epoch)
    n_global = ref.num_global_batches(epoch)
    # Every rank the same number of batches (drop_last: the < num_replicas tail is dropped).
    assert {len(b) for b in ranks} == {n_global // num_replicas}
    seen: list[int] = []
    for batches in ranks:
        for batch in batches:
            key = batch.bucket
            assert 0 < len(batch) == batch.batch_size  # drop_last: full batches only
            rows = assigned.iloc[batch.indices]
            # Homogeneous in (resolution, frames, aspect ratio), and the target size rides along.
            assert (rows["bucket_resolution"].astype(str) == key.resolution).all()
            assert (rows["bucket_num_frames"] == key.num_frames).all()
            assert (rows["bucket_aspect_ratio"] == key.aspect_ratio).all()
            assert (rows["bucket_height"] == key.height).all() and (rows["bucket_width"] == key.width).all()
            assert (rows["bucket_batch_size"] == len(batch)).all()
            assert all((r.num_frames, r.height, r.width) == (key.num_frames, key.height, key.width) for r in batch)
            seen.extend(batch.indices)
    # Disjoint: no clip twice in an epoch.
    assert len(seen) == len(set(seen))
    # Complete: the ranks together cover every full batch of every bucket, minus the tail.
    per_bucket = bucket_sizes(assigned)
    bs = {k: int(config.bucket_config[k[0]][k[1]][1]) for k in per_bucket}
    full_batches = sum(n // bs[k] for k, n in per_bucket.items())
    assert n_global == full_batches
    covered = Counter()
    for batches in ranks:
        for batch in batches:
            covered[batch.global_index] += 1
    assert sorted(covered) == list(range(n_global // num_replicas * num_replicas))


@SETTINGS
@given(df=clip_tables(max_size=120), config=bucket_configs(permissive=True), num_replicas=st.integers(1, 4))
def test_without_drop_last_every_assigned_clip_is_served(df, config, num_replicas):
    ranks = all_ranks(df, config, num_replicas, drop_last=False)
    ref = BucketSampler(df, config, num_replicas=num_replicas, rank=0, drop_last=False)
    assigned = ref.assignment()
    expected = set(np.flatnonzero(assigned["bucket_resolution"].notna().to_numpy()).tolist())
    served = {i for batches in ranks for b in batches for i in b.indices}
    assert served == expected
    assert len({len(b) for b in ranks}) == 1  # padded to equal counts
    for batches in ranks:
        for b in batches:
            assert 0 < len(b) <= b.batch_size


@SETTINGS
@given(
    df=clip_tables(min_size=20, max_size=150),
    config=bucket_configs(max_batch=3, permissive=True),
    r_before=st.integers(1, 4),
    r_after=st.integers(1, 4),
    frac=st.floats(0.0, 1.0),
    epoch=st.integers(0, 2),
)
def test_resume_equals_continuation_with_any_rank_count(df, config, r_before, r_after, frac, epoch):
    # The uninterrupted run's global order: one rank sees every global batch in order (the
    # order of an r_before-rank run: with rank_lockstep, runs of r_before same-bucket batches).
    whole = BucketSampler(df, config, num_replicas=1, rank=0, lockstep=r_before if config.rank_lockstep else 1)
    whole.set_epoch(epoch)
    global_order = [b.indices for b in whole]
    # Train k steps on r_before ranks, checkpoint (every rank writes the same state).
    samplers = [BucketSampler(df, config, num_replicas=r_before, rank=r) for r in range(r_before)]
    iters = []
    for s in samplers:
        s.set_epoch(epoch)
        iters.append(iter(s))
    steps = int(frac * len(samplers[0]))
    for _ in range(steps):
        for it in iters:
            next(it)
    states = [s.state_dict() for s in samplers]
    assert all(st_ == states[0] for st_ in states)
    assert states[0]["position"] == steps * r_before
    # Same rank count: each rank continues exactly where the uninterrupted rank would have.
    if r_after == r_before:
        for r, it in enumerate(iters):
            fresh = BucketSampler(df, config, num_replicas=r_before, rank=r, seed=0)  # seed comes from the state
            fresh.load_state_dict(states[0])
            fresh.set_epoch(epoch)  # the trainer's usual call keeps the resume position
            assert [b.indices for b in fresh] == [b.indices for b in it]
    # Any rank count: the resumed ranks serve the global batches that come next, in order.
    pos = states[0]["position"]
    remaining = len(global_order) - pos
    for r in range(r_after):
        fresh = BucketSampler(df, config, num_replicas=r_after, rank=r)
        fresh.load_state_dict(states[0])
        got = [b.indices for b in fresh]
        assert len(got) == remaining // r_after
        assert got == [global_order[pos + k * r_after + r] for k in range(remaining // r_after)]
        # After the resumed epoch, the next epoch starts from its beginning.
        fresh.set_epoch(epoch + 1)
        assert fresh.state_dict()["position"] == 0


def test_deterministic_from_seed_and_epoch_and_same_assignment_on_every_rank():
    rng = np.random.default_rng(1)
    n = 3000
    df = pd.DataFrame({"id": rng.permutation(10 * n)[:n], "num_frames": rng.integers(1, 300, n),
                       "height": rng.choice([144, 240, 360, 720, 1080], n), "width": rng.choice([256, 426, 640, 1280, 1920], n)})
    config = BucketsConfig(bucket_config=PUBLISHED_STAGE2, frame_interval=3, seed=5)
    a = [b.indices for b in BucketSampler(df, config, num_replicas=2, rank=1)]
    b = [b.indices for b in BucketSampler(df, config, num_replicas=2, rank=1)]
    assert a == b and len(a) > 50
    s = BucketSampler(df, config, num_replicas=2, rank=1)
    s.set_epoch(1)
    assert [x.indices for x in s] != a
    assignments = [BucketSampler(df, config, num_replicas=4, rank=r).assignment(3) for r in range(4)]
    for other in assignments[1:]:
        pd.testing.assert_frame_equal(other, assignments[0])
    # Batches of the same bucket shuffle differently per epoch; with rank_lockstep=False (the
    # original) buckets of a step differ across ranks.
    original = config.model_copy(update={"rank_lockstep": False})
    buckets_at_step0 = {next(iter(BucketSampler(df, original, num_replicas=8, rank=r))).bucket for r in range(8)}
    assert len(buckets_at_step0) > 1


@SETTINGS
@given(df=clip_tables(max_size=150), config=bucket_configs(permissive=True), num_replicas=st.integers(2, 4), epoch=st.integers(0, 2))
def test_rank_lockstep_gives_every_rank_one_bucket_per_step(df, config, num_replicas, epoch):
    config = config.model_copy(update={"rank_lockstep": True})
    ranks = all_ranks(df, config, num_replicas, epoch)
    plan = BucketSampler(df, config, num_replicas=num_replicas).plan(epoch)
    groups = Counter(g for g, _ in plan.batches)
    # A step mixes buckets only where the buckets' remainders (count % ranks) meet: at most
    # sum(remainders) // ranks steps (the remainders' short last run is dropped with drop_last).
    mixed = sum(len({b.bucket for b in step}) > 1 for step in zip(*ranks))
    assert mixed <= sum(n % num_replicas for n in groups.values()) // num_replicas
    # Same batches as the original's plan, only in another order.
    original = plan_epoch(plan.assigned, seed=config.seed, epoch=epoch)
    assert sorted(tuple(r.tolist()) for _, r in plan.batches) == sorted(tuple(r.tolist()) for _, r in original.batches)


def test_rank_lockstep_on_a_two_bucket_table():
    # 960- vs 1280-token buckets, as in the demo: 6 batches of each; two ranks.
    df = pd.DataFrame({"num_frames": [40] * 24, "height": [144] * 12 + [256] * 12, "width": [256] * 12 + [256] * 12})
    config = BucketsConfig(bucket_config={"144p": {16: [1.0, 2]}}, frame_interval=1, seed=3)
    steps = list(zip(*all_ranks(df, config, 2)))
    assert len(steps) == 6 and all(a.bucket == b.bucket for a, b in steps)
    assert len({a.bucket for a, _ in steps}) == 2  # both buckets train, interleaved by the shuffle
    original = list(zip(*all_ranks(df, config.model_copy(update={"rank_lockstep": False}), 2)))
    assert any(a.bucket != b.bucket for a, b in original)  # this seed's original deal mixes them
    with pytest.raises(ValueError, match="lockstep"):
        BucketSampler(df, config, lockstep=0)


def test_state_from_before_rank_lockstep_resumes_in_its_order():
    df = pd.DataFrame({"num_frames": [40] * 24, "height": [144] * 12 + [256] * 12, "width": 256})
    config = BucketsConfig(bucket_config={"144p": {16: [1.0, 2]}}, frame_interval=1, seed=3)
    old = BucketSampler(df, config.model_copy(update={"rank_lockstep": False}), num_replicas=2, rank=0)
    it = iter(old)
    next(it), next(it)
    state = old.state_dict()
    assert state["lockstep"] == 1
    state.pop("lockstep")  # a checkpoint written before the key existed
    new = BucketSampler(df, config, num_replicas=2, rank=0)
    new.load_state_dict(state)
    assert [b.indices for b in new] == [b.indices for b in it]
    new.set_epoch(1)  # later epochs: the new config's lockstep order
    assert new.state_dict()["lockstep"] == 2


def test_state_dict_with_explicit_steps_and_reiteration():
    df = pd.DataFrame({"num_frames": [40] * 50, "height": 144, "width": 256})
    config = BucketsConfig(bucket_config={"144p": {16: [1.0, 2]}}, frame_interval=1)
    s = BucketSampler(df, config, num_replicas=2, rank=0)
    assert len(s) == 12  # 25 batches of 2, 12 per rank, 1 dropped
    it = iter(s)
    for _ in range(5):
        next(it)  # as if a DataLoader prefetched five batches ...
    assert s.state_dict()["position"] == 10
    assert s.state_dict(steps=3)["position"] == 6  # ... but training finished only three steps
    rest = list(it)
    assert len(rest) == 7
    again = list(s)  # iterating the same epoch again starts over
    assert len(again) == 12
    with pytest.raises(ValueError, match="drop_last"):
        BucketSampler(df, config, drop_last=False).load_state_dict(s.state_dict())


def test_batches_pickle_for_dataloader_workers():
    df = pd.DataFrame({"num_frames": [40] * 8, "height": 144, "width": 256})
    config = BucketsConfig(bucket_config={"144p": {16: [1.0, 4]}}, frame_interval=1)
    batch = next(iter(BucketSampler(df, config)))
    copy = pickle.loads(pickle.dumps(batch))
    assert isinstance(copy, BucketBatch) and copy == batch and copy.bucket == batch.bucket
    assert copy.bucket.height == 144 and copy.bucket.width == 256


def test_plan_epoch_accepts_a_table_read_back_from_csv(tmp_path):
    from soraflow.buckets.assign import assign_buckets

    df = pd.DataFrame({"num_frames": [40] * 9 + [1] * 5, "height": 144, "width": 256})
    config = BucketsConfig(bucket_config={"144p": {16: [1.0, 4], 1: [1.0, 2]}}, frame_interval=1)
    assigned = assign_buckets(df, config)
    assigned.to_csv(tmp_path / "a.csv", index=False)
    back = pd.read_csv(tmp_path / "a.csv")
    p1 = plan_epoch(assigned, seed=1, epoch=0)
    p2 = plan_epoch(back, seed=1, epoch=0)
    assert [rows.tolist() for _, rows in p1.batches] == [rows.tolist() for _, rows in p2.batches]
    assert len(p1.batches) == 2 + 2
