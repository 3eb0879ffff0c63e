"""``soraflow buckets preview`` on small CSV and parquet tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from soraflow.buckets.config import PUBLISHED_STAGE2
from soraflow.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner(env={"COLUMNS": "200"})


def clips() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"clip_{i}.mp4" for i in range(6)],
            "num_frames": [200, 48, 49, 100, 1, 300],
            "height": [1080, 360, 360, 120, 1024, 144],
            "width": [1920, 640, 640, 160, 1024, 256],
            "aes": [5.0, 6.0, 4.5, 5.5, 6.1, 4.0],
        }
    )


def stage2_json(path: Path) -> Path:
    # JSON needs string keys for the frame counts.
    path.write_text(json.dumps({r: {str(t): list(v) for t, v in f.items()} for r, f in PUBLISHED_STAGE2.items()}))
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_preview_writes_table_with_bucket_columns_and_reasons(tmp_path, fmt):
    meta = tmp_path / f"meta.{fmt}"
    df = clips()
    df.to_csv(meta, index=False) if fmt == "csv" else df.to_parquet(meta, index=False)
    out = tmp_path / f"out.{'parquet' if fmt == 'csv' else 'csv'}"  # the output's own extension decides
    result = runner.invoke(
        app,
        ["buckets", "preview", "--metadata", str(meta), "--bucket-config", str(stage2_json(tmp_path / "b.json")),
         "--frame-interval", "3", "--seed", "0", "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    got = pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out)
    assert list(got.columns[:5]) == list(df.columns)  # every input column kept
    for col in ["bucket_resolution", "bucket_num_frames", "bucket_aspect_ratio", "bucket_height", "bucket_width", "bucket_batch_size", "bucket_reason"]:
        assert col in got.columns
    reasons = got["bucket_reason"].astype(object).where(got["bucket_reason"].notna(), None).tolist()
    # clip 1: 360x640, T=48 = 16*3 (strict) -> too short; clip 3: 120x160 -> too small;
    # clip 5: 144x256, T=300 -> 144p only (keep 1.0), t=64 (192 < 300 < 384) -> (144, 256).
    assert reasons[1] == "too_short" and reasons[3] == "too_small"
    assert reasons[0] is None and reasons[2] is None and reasons[4] is None and reasons[5] is None
    row5 = got.iloc[5]
    assert (str(row5["bucket_resolution"]), int(row5["bucket_num_frames"]), float(row5["bucket_aspect_ratio"])) == ("144p", 64, 0.56)
    assert (int(row5["bucket_height"]), int(row5["bucket_width"]), int(row5["bucket_batch_size"])) == (144, 256, 4)
    assert pd.isna(got.iloc[1]["bucket_batch_size"])  # empty when no bucket
    # The per-bucket table and the outcome table are printed.
    assert "tokens/batch" in result.output and "144p" in result.output
    assert "too_short" in result.output and "4 of 6 clips got a bucket" in result.output


def test_preview_with_yaml_config_and_user_tables_from_params(tmp_path):
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"num_frames": [40, 40, 1], "height": [144, 360, 240], "width": [256, 640, 240]}).to_csv(meta, index=False)
    cfg = tmp_path / "b.yaml"
    cfg.write_text(yaml.safe_dump({"64px": {"16": [1.0, 2], "1": [1.0, 4]}}))
    out = tmp_path / "out.csv"
    args = ["buckets", "preview", "--metadata", str(meta), "--bucket-config", str(cfg), "--output", str(out)]
    # 64px is a user table: unknown without --params.
    bad = runner.invoke(app, args)
    assert bad.exit_code == 2
    assert "bucket_config['64px']: unknown resolution" in bad.output
    ok = runner.invoke(app, args + ["--params", str(ROOT / "params.yaml")])
    assert ok.exit_code == 0, ok.output
    got = pd.read_csv(out)
    assert got["bucket_resolution"].tolist() == ["64px"] * 3
    assert got["bucket_num_frames"].tolist() == [16, 16, 1]
    # 144/256 = 0.5625 -> key 0.56 -> (48, 80) after the 16-pixel snap.
    assert got[["bucket_height", "bucket_width"]].values.tolist()[0] == [48, 80]


def test_preview_rejects_bad_config_and_missing_columns(tmp_path):
    meta = tmp_path / "meta.csv"
    clips().to_csv(meta, index=False)
    cfg = tmp_path / "b.yaml"
    cfg.write_text("240p: {16: [1.5, 4]}\n")
    out = tmp_path / "out.csv"
    r = runner.invoke(app, ["buckets", "preview", "--metadata", str(meta), "--bucket-config", str(cfg), "--output", str(out)])
    assert r.exit_code == 2 and "bucket_config['240p'][16]: keep probability must be in [0, 1]" in r.output
    assert not out.exists()
    cfg.write_text("240p: {16: [1.0, 4]}\n")
    clips().drop(columns="height").to_csv(meta, index=False)
    r = runner.invoke(app, ["buckets", "preview", "--metadata", str(meta), "--bucket-config", str(cfg), "--output", str(out)])
    assert r.exit_code == 2 and "lacks column(s) ['height']" in r.output


def test_preview_help_lists_the_options():
    r = runner.invoke(app, ["buckets", "preview", "--help"])
    assert r.exit_code == 0
    for opt in ["--metadata", "--bucket-config", "--frame-interval", "--seed", "--output"]:
        assert opt in r.output
