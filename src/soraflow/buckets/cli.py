"""``soraflow buckets ...``: see which clips land in which bucket, and why the others don't.

``soraflow buckets preview`` answers the original's most common question, "why do I get 0
training samples?": every clip of a metadata table gets its bucket (or the reason it has
none), and a per-bucket table shows clips, batches and tokens per batch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from soraflow.buckets.assign import assign_buckets
from soraflow.buckets.config import BucketsConfig, parse_bucket_config
from soraflow.buckets.stats import bucket_statistics, reason_counts
from soraflow.config_base import ConfigError, read_yaml

app = typer.Typer(
    help="Bucketing (resolution x frames x aspect ratio): preview assignments and batch counts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: Path) -> pd.DataFrame:
    """A clip table from CSV or parquet (by extension)."""
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported table format {path.suffix!r} (use .csv or .parquet)")
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Write CSV or parquet by the output's extension."""
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported output format {path.suffix!r} (use .csv or .parquet)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)


def read_bucket_config_file(path: Path) -> Any:
    """The bare ``bucket_config`` mapping from YAML or JSON (a ``{bucket_config: ...}`` wrapper is accepted)."""
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON: {err}") from None
    else:
        data = read_yaml(path)
    if isinstance(data, dict) and set(data) == {"bucket_config"}:
        data = data["bucket_config"]
    return data


def load_preview_config(
    bucket_config: Path, frame_interval: int, seed: int, params: Path | None = None
) -> BucketsConfig:
    """Validate the bucket config file (plus user tables from ``params``' ``buckets`` section)."""
    extra: dict[str, Any] = {}
    if params is not None:
        data = read_yaml(params)
        section = data.get("buckets", {}) if isinstance(data, dict) else {}
        extra = (section or {}).get("extra_resolutions", {}) or {}
    raw = read_bucket_config_file(bucket_config)
    return parse_bucket_config(raw, source=str(bucket_config), frame_interval=frame_interval, seed=seed, extra_resolutions=extra)


@app.command("preview")
def preview(
    metadata: Path = typer.Option(
        ..., "--metadata", help="Clip table (.csv or .parquet) with num_frames, height, width; other columns are kept; an 'id' column keys the draws."
    ),
    bucket_config: Path = typer.Option(
        ..., "--bucket-config", help="YAML or JSON file with the bare bucket_config mapping: resolution -> {num_frames: (keep_prob, batch_size)}."
    ),
    frame_interval: int = typer.Option(1, "--frame-interval", min=1, help="Source frames between sampled frames (a video needs T > t * frame_interval)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the keep-probability draws."),
    output: Path = typer.Option(
        ..., "--output", help="Where to write the table with the bucket_* columns and bucket_reason (.csv or .parquet)."
    ),
    epoch: int = typer.Option(0, "--epoch", min=0, help="Epoch of the draws (keep_prob < 1 re-draws every epoch)."),
    params: Path = typer.Option(
        None, "--params", help="A params.yaml whose buckets.extra_resolutions (user tables such as 64px) the config may name."
    ),
) -> None:
    """Assign every clip to a bucket (or say why not), write the table, print clips/batches/tokens per bucket."""
    console = Console()
    try:
        config = load_preview_config(bucket_config, frame_interval, seed, params)
        df = read_table(metadata)
        assigned = assign_buckets(df, config, seed=seed, epoch=epoch)
        write_table(assigned, output)
    except (ConfigError, ValueError) as err:
        print(f"soraflow buckets preview: {err}", file=sys.stderr)
        raise typer.Exit(2) from None
    stats, _ = bucket_statistics(assigned, drop_last=config.drop_last, figure=False)
    console.print(_stats_table(stats))
    console.print(_reasons_table(reason_counts(assigned)))
    n_ok = int(assigned["bucket_resolution"].notna().sum())
    console.print(
        f"{n_ok:,} of {len(assigned):,} clips got a bucket; {int(stats['batches'].sum()):,} batches per epoch "
        f"(per-rank batch sizes, incomplete batches dropped). Wrote {output}."
    )


def _stats_table(stats: pd.DataFrame) -> Table:
    table = Table(title="Buckets (epoch draws)")
    for col, justify in [
        ("resolution", "left"), ("frames", "right"), ("H/W", "right"), ("size HxW", "right"), ("batch size", "right"),
        ("clips", "right"), ("batches", "right"), ("left over", "right"), ("tokens/batch", "right"),
    ]:
        table.add_column(col, justify=justify)
    for r in stats.itertuples():
        table.add_row(
            r.resolution, str(r.num_frames), f"{r.aspect_ratio:.2f}", f"{r.height}x{r.width}", str(r.batch_size),
            f"{r.clips:,}", f"{r.batches:,}", f"{r.left_over_clips:,}", f"{r.tokens_per_batch:,}",
        )
    if stats.empty:
        table.add_row("(none)", "", "", "", "", "0", "0", "0", "")
    return table


def _reasons_table(reasons: pd.DataFrame) -> Table:
    table = Table(title="Clips by outcome")
    table.add_column("outcome")
    table.add_column("clips", justify="right")
    table.add_column("meaning")
    for r in reasons.itertuples():
        table.add_row(r.reason, f"{r.clips:,}", r.meaning)
    return table
