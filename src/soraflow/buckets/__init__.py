"""Buckets: Open-Sora-compatible (resolution, frames, aspect ratio) bucketing and a resumable
distributed batch sampler.

- :mod:`~soraflow.buckets.tables`: the original's ten resolution tables and user tables;
- :mod:`~soraflow.buckets.config`: the ``buckets`` section of params.yaml (``bucket_config``);
- :mod:`~soraflow.buckets.assign`: the assignment rule, vectorised over a clip table;
- :mod:`~soraflow.buckets.sampler`: per-epoch batches, dealt to ranks, resumable mid-epoch;
- :mod:`~soraflow.buckets.dataset`: reading a clip at its bucket's size (PyAV);
- :mod:`~soraflow.buckets.stats`: clips, batches and tokens per bucket, as a table and a plot.
"""

from soraflow.buckets.assign import BUCKET_COLUMNS, REASONS, BucketPlan, assign_buckets
from soraflow.buckets.config import PUBLISHED_STAGE2, BucketsConfig, ResolutionSpec, parse_bucket_config
from soraflow.buckets.sampler import BucketBatch, BucketKey, BucketSampler, ClipRequest, plan_epoch
from soraflow.buckets.stats import bucket_statistics, reason_counts
from soraflow.buckets.tables import BUILTIN_RESOLUTIONS, ResolutionTable, builtin_tables

__all__ = [
    "BUCKET_COLUMNS",
    "BUILTIN_RESOLUTIONS",
    "PUBLISHED_STAGE2",
    "REASONS",
    "BucketBatch",
    "BucketKey",
    "BucketPlan",
    "BucketSampler",
    "BucketsConfig",
    "ClipRequest",
    "ResolutionSpec",
    "ResolutionTable",
    "assign_buckets",
    "bucket_statistics",
    "builtin_tables",
    "parse_bucket_config",
    "plan_epoch",
    "reason_counts",
]
