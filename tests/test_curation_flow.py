"""The curate flow end to end on a generated demo corpus: ground truth, MLflow, validation, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from soraflow.curation.groundtruth import cut_scores, detected_cuts, label_clips, rule_rates, true_cuts
from soraflow.curation.tables import assemble_tables  # noqa: F401  (import check)
from soraflow.demo.config import DemoConfig
from soraflow.demo.generator import generate_corpus


def _check_ground_truth(out: Path, corpus: Path, sources: list[dict], min_rate: float = 0.95) -> dict:
    """The issue's acceptance figures, from the run's outputs and the corpus manifests."""
    from soraflow.curation.config import FiltersConfig

    f = FiltersConfig()
    clips = pd.read_parquet(out / "clips.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    cuts = cut_scores(detected_cuts(sources), true_cuts(pd.read_parquet(corpus / "videos.parquet")), tolerance=2)
    labelled = label_clips(clips, rejected, pd.read_parquet(corpus / "scenes.parquet"))
    videos = labelled[labelled["kind"] == "video"]
    motion = rule_rates(videos["motion"], videos["static"], lambda m: m < f.motion_min)
    text = rule_rates(labelled["ocr_boxes"].astype(float), labelled["has_text"], lambda n: n > f.ocr_boxes_max)
    figures = {"cuts": cuts, "motion": motion, "text": text}
    assert cuts["precision"] >= min_rate and cuts["recall"] >= min_rate, figures
    assert motion["n_positive"] > 0 and motion["n_negative"] > 0, figures
    assert motion["reject_positive"] >= min_rate and motion["keep_negative"] >= min_rate, figures
    assert text["n_positive"] > 0 and text["n_negative"] > 0, figures
    assert text["reject_positive"] >= min_rate and text["keep_negative"] >= min_rate, figures
    # The rules in the run did what the scores say (not only in this re-computation).
    static_kept = videos[videos["static"] & videos["kept"]]
    assert len(static_kept) <= (1 - min_rate) * motion["n_positive"] + 1e-9, static_kept
    return figures


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(
        num_videos=6, num_images=1, seed=3, static_fraction=0.3, text_fraction=0.3, short_sides=[144],
        min_seconds=1.0, max_seconds=3.0, workers=1,
    )
    generate_corpus(cfg, root, progress=False)
    return root


def _params(tmp_path: Path, corpus: Path, out: Path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"curate": {"input": str(corpus / "raw"), "output": str(out), "workers": 2}}))
    return p


def test_flow_on_small_demo_corpus(small_corpus, tmp_path, prefect_harness, mlflow_store, monkeypatch):
    import mlflow

    from flows.curate import run_curate

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "curated"
    params = _params(tmp_path, small_corpus, out)
    metrics = run_curate(str(params))

    clips = pd.read_parquet(out / "clips.parquet")
    assert metrics["clips_kept"] == len(clips) > 0
    assert metrics["sources"] == 7 and metrics["sources_processed"] == 7
    for col in ("path", "text", "num_frames", "height", "width", "aspect_ratio", "fps", "resolution",
                "motion", "ocr_boxes", "camera_motion", "split", "id", "source_path", "start_frame", "end_frame"):
        assert col in clips.columns
    assert (clips["aspect_ratio"] - clips["height"] / clips["width"]).abs().max() < 1e-9
    assert (clips["resolution"] == clips["height"] * clips["width"]).all()
    assert set(clips["split"]) <= {"train", "heldout"}
    assert (clips.groupby("source_path")["split"].nunique() == 1).all()  # one split per source
    assert all(Path(p).is_file() for p in clips["path"])
    assert (out / "validation" / "summary.txt").read_text().startswith("clips.parquet validation: PASSED")
    assert (out / "validation" / "docs" / "index.html").is_file()

    sources = [json.loads(p.read_text()) for p in sorted((out / ".work").glob("*/source.json"))]
    _check_ground_truth(out, small_corpus, sources)

    run = mlflow.search_runs(filter_string="tags.`soraflow.stage` = 'curate'", output_format="list")[0]
    assert run.data.metrics["clips_kept"] == len(clips)
    assert any(k.startswith("rejected.filter.") for k in run.data.metrics)
    assert "curate.missing.aesthetic" in run.data.tags  # no CLIP weights here: reason recorded
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "curate")}
    assert {"curate/score_histograms.png", "curate/sample_grid.png", "curate/validation"} <= names

    # Resume: drop one finished source and the tables; the rerun redoes that source only.
    victim = next(p for p in (out / ".work").iterdir() if p.is_dir() and not p.name.startswith("."))
    shutil.rmtree(victim)
    (out / "clips.parquet").unlink()
    again = run_curate(str(params), track=False)
    assert again["sources_processed"] == 1 and again["sources_cached"] == 6
    pd.testing.assert_frame_equal(clips, pd.read_parquet(out / "clips.parquet"))


def test_output_is_the_same_bytes_when_curation_runs_again(small_corpus, tmp_path, prefect_harness, monkeypatch):
    """With the work and report folders outside the output (params.yaml's DVC layout), the output
    holds only clips and tables, and a second run, cached or from scratch, writes the same bytes:
    DVC then sees an unchanged ``data/curated`` and skips every later stage."""
    from flows.curate import run_curate
    from soraflow.tracking import hash_paths  # names and bytes of every file under the folder

    monkeypatch.chdir(tmp_path)
    out, reports = tmp_path / "curated", tmp_path / "reports"
    params = tmp_path / "params.yaml"

    def curate(work: Path) -> dict:
        params.write_text(yaml.safe_dump({"curate": {
            "input": str(small_corpus / "raw"), "output": str(out), "workers": 2,
            "work_dir": str(work), "report_dir": str(reports),
        }}))
        return run_curate(str(params), track=False)

    first = curate(tmp_path / "work")
    digest = hash_paths([out])
    assert {p.name for p in out.iterdir()} == {"clips", "clips.parquet", "rejected.parquet"}
    assert first["sources_processed"] == 7 and len(list((out / "clips").iterdir())) == first["clips_kept"] > 0
    assert (reports / "validation" / "summary.txt").read_text().startswith("clips.parquet validation: PASSED")
    assert json.loads((reports / "metrics.json").read_text())["clips_kept"] == first["clips_kept"]

    stale = tmp_path / "work" / "0123456789abcdef-000000000000"  # a source of an earlier input
    stale.mkdir()
    shutil.rmtree(out)  # DVC deletes a stage's outputs before running it; the work folder stays
    cached = curate(tmp_path / "work")
    assert cached["sources_cached"] == 7 and cached["sources_processed"] == 0
    assert hash_paths([out]) == digest
    assert not stale.exists() and len(list((tmp_path / "work").iterdir())) == 7

    shutil.rmtree(out)
    fresh = curate(tmp_path / "work2")  # every source decoded, scored and encoded again
    assert fresh["sources_processed"] == 7
    assert hash_paths([out]) == digest


def test_validation_failure_is_readable(small_corpus, tmp_path):
    from soraflow.curation.config import CurateConfig
    from soraflow.curation.inputs import dedupe_sources, discover_inputs
    from soraflow.curation.pipeline import curate_source
    from soraflow.curation.validation import validate_clips

    cfg = CurateConfig(input=str(small_corpus / "raw"), output=str(tmp_path / "out"))
    sources, problems = dedupe_sources(discover_inputs(cfg.input)[:2])
    outcomes = [curate_source(i, s, cfg, tmp_path / "out" / ".work") for i, s in sources]
    tables = assemble_tables(outcomes, problems, cfg.output, cfg.heldout_fraction)
    assert len(tables.clips) >= 2
    ok = validate_clips(tables.clips, tmp_path / "ok", data_docs=False)
    assert ok.success, ok.summary

    bad = tables.clips.copy()
    bad.loc[0, "id"] = bad.loc[1, "id"]
    bad.loc[1, "text"] = "   "
    bad.loc[1, "path"] = str(tmp_path / "gone.mp4")
    report = validate_clips(bad, tmp_path / "bad", data_docs=False)
    assert not report.success
    text = report.summary
    assert "FAILED" in text
    assert "expect_column_values_to_be_unique(id)" in text
    assert "expect_column_values_to_match_regex(text)" in text
    assert "_file_exists" in text
    assert (tmp_path / "bad" / "validation" / "result.json").is_file()
    empty = validate_clips(tables.clips.iloc[0:0], tmp_path / "empty", min_rows=1, data_docs=False)
    assert not empty.success and "row_count" in empty.summary


def test_validation_data_docs_with_relative_output(small_corpus, tmp_path, monkeypatch):
    """The pipeline passes a relative output folder (``data/curated``); GX data docs need it absolute."""
    from soraflow.curation.config import CurateConfig
    from soraflow.curation.inputs import dedupe_sources, discover_inputs
    from soraflow.curation.pipeline import curate_source
    from soraflow.curation.validation import validate_clips

    cfg = CurateConfig(input=str(small_corpus / "raw"), output=str(tmp_path / "out"))
    sources, problems = dedupe_sources(discover_inputs(cfg.input)[:2])
    outcomes = [curate_source(i, s, cfg, tmp_path / "out" / ".work") for i, s in sources]
    tables = assemble_tables(outcomes, problems, cfg.output, cfg.heldout_fraction)
    monkeypatch.chdir(tmp_path)
    report = validate_clips(tables.clips, Path("rel") / "curated", data_docs=True)
    assert report.success, report.summary
    assert (tmp_path / "rel" / "curated" / "validation" / "docs" / "index.html").is_file()


@pytest.mark.slow
def test_ground_truth_on_full_demo_corpus(tmp_path):
    """The issue's acceptance figures on the default demo corpus (48 videos, 6 stills)."""
    from soraflow.curation.config import CurateConfig
    from soraflow.curation.inputs import dedupe_sources, discover_inputs
    from soraflow.curation.pipeline import curate_source

    corpus = tmp_path / "demo"
    generate_corpus(DemoConfig(), corpus, progress=False)
    cfg = CurateConfig(input=str(corpus / "raw"), output=str(tmp_path / "out"))
    sources, problems = dedupe_sources(discover_inputs(cfg.input))
    outcomes = [curate_source(i, s, cfg, tmp_path / "out" / ".work") for i, s in sources]
    tables = assemble_tables(outcomes, problems, cfg.output, cfg.heldout_fraction)
    facts = [json.loads((Path(o.work_dir) / "source.json").read_text()) for o in outcomes]
    figures = _check_ground_truth(tmp_path / "out", corpus, facts)
    # Most scenes survive the demo's length rule (0.5 s) and every kept clip has a caption.
    assert len(tables.clips) >= 0.6 * len(pd.read_parquet(corpus / "scenes.parquet"))
    assert tables.clips["text"].str.strip().str.len().min() > 0
    print(figures)
