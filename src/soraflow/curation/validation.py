"""Validate ``clips.parquet`` with great-expectations 1.x before anything downstream reads it.

An ephemeral context (nothing written to a GX project), a pandas data source, one
whole-dataframe batch and one :class:`ExpectationSuite`: the Open-Sora columns exist, have
the right types and ranges, ids and paths are unique, every clip file exists, captions are
not empty, frame ranges are ordered, labels come from their vocabularies. The result is saved
as JSON (``validation/result.json``), a plain-text summary (``validation/summary.txt``) and,
optionally, GX data docs (``validation/docs/index.html``); the flow logs the folder to MLflow
and stops when :attr:`ValidationReport.success` is false.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from soraflow.curation.tables import CLIP_COLUMNS

log = logging.getLogger(__name__)

CAMERA_LABELS = ["static", "pan", "tilt", "zoom", "complex"]
_INT = ["Int64Dtype", "int64", "int32"]
_FLOAT = ["float64", "Float64Dtype", "float32"]
_STR = ["StringDtype", "str", "object"]


class ValidationFailed(RuntimeError):
    """``clips.parquet`` failed its expectations; the message lists each failure."""


@dataclass
class ValidationReport:
    success: bool
    summary: str
    folder: str
    failures: list[str]


def build_suite(min_rows: int):
    """The expectations every curated table must meet (see the module docstring)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="curated_clips")
    add = suite.add_expectation
    add(gxe.ExpectTableColumnsToMatchSet(column_set=CLIP_COLUMNS, exact_match=False))
    add(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))
    for col in ("num_frames", "height", "width", "resolution", "start_frame", "end_frame", "ocr_boxes"):
        add(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=_INT))
    for col in ("aspect_ratio", "fps", "motion", "ocr_area", "aesthetic", "match"):
        add(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=_FLOAT))
    for col in ("path", "text", "id", "source_path", "split"):
        add(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=_STR))
    for col in ("path", "text", "id", "source_path", "num_frames", "height", "width", "split", "start_frame", "end_frame"):
        add(gxe.ExpectColumnValuesToNotBeNull(column=col))
    add(gxe.ExpectColumnValuesToBeUnique(column="id"))
    add(gxe.ExpectColumnValuesToBeUnique(column="path"))
    add(gxe.ExpectColumnValuesToMatchRegex(column="text", regex=r"\S"))
    add(gxe.ExpectColumnValuesToBeInSet(column="_file_exists", value_set=[True]))
    add(gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "heldout"]))
    add(gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["video", "image"]))
    add(gxe.ExpectColumnValuesToBeInSet(column="camera_motion", value_set=CAMERA_LABELS))
    for col, lo, hi in (
        ("num_frames", 1, None),
        ("height", 2, None),
        ("width", 2, None),
        ("resolution", 4, None),
        ("aspect_ratio", 0.0, None),
        ("fps", 0.0, 1000.0),
        ("start_frame", 0, None),
        ("motion", 0.0, None),
        ("ocr_boxes", 0, None),
        ("ocr_area", 0.0, 1.0),
        ("match", -100.0, 100.0),
    ):
        add(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi, strict_min=col in ("aspect_ratio", "fps")))
    add(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="end_frame", column_B="start_frame"))
    add(gxe.ExpectColumnPairValuesToBeEqual(column_A="_frames_match", column_B="_true"))
    return suite


def _frame_for_validation(clips: pd.DataFrame) -> pd.DataFrame:
    """The table plus computed check columns (file exists, frame count = frame range)."""
    df = clips.copy()
    df["_file_exists"] = [isinstance(p, str) and os.path.isfile(p) for p in df["path"]] if len(df) else []
    if len(df):
        df["_frames_match"] = (df["end_frame"] - df["start_frame"]).astype("Int64") == df["num_frames"].astype("Int64")
        df["_frames_match"] = df["_frames_match"].fillna(False).astype(bool)
    else:
        df["_frames_match"] = pd.Series(dtype=bool)
    df["_true"] = True
    return df


def _describe_failure(r) -> str:
    cfg = r.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    col = kwargs.pop("column", None)
    what = f"{cfg.type}({col})" if col else cfg.type
    res = r.result or {}
    bits = []
    if "observed_value" in res:
        bits.append(f"observed {res['observed_value']!r}")
    if res.get("unexpected_count"):
        sample = res.get("partial_unexpected_list", [])[:5]
        bits.append(f"{res['unexpected_count']} unexpected value(s), e.g. {sample!r}")
    if r.exception_info and r.exception_info.get("raised_exception"):
        bits.append(f"error: {r.exception_info.get('exception_message')}")
    shown = {k: v for k, v in kwargs.items() if v is not None and k != "column_set"}
    return f"{what} {shown if shown else ''}: {'; '.join(bits) or 'failed'}".replace(" :", ":")


def validate_clips(clips: pd.DataFrame, output: str | Path, min_rows: int = 1, data_docs: bool = True) -> ValidationReport:
    """Run the suite on ``clips``; write ``<output>/validation/``; never raises on failure."""
    # GX logs every function it registers at INFO when first imported (200-odd lines), and sets
    # one module's logger to INFO itself; keep its warnings only.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    # GX's data-docs store needs an absolute base directory (a relative one raises at build time).
    folder = Path(output).resolve() / "validation"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    df = _frame_for_validation(clips)

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = ctx.data_sources.add_pandas("curate").add_dataframe_asset("clips").add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(build_suite(min_rows))
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
    if data_docs:
        from great_expectations.checkpoint import UpdateDataDocsAction

        ctx.add_data_docs_site(
            site_name="curate",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder / "docs")},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="curated_clips", data=batch_def, suite=suite))
        cp = ctx.checkpoints.add(
            gx.Checkpoint(
                name="curate",
                validation_definitions=[vd],
                actions=[UpdateDataDocsAction(name="data_docs", site_names=["curate"])],
                result_format=result_format,
            )
        )
        result = next(iter(cp.run(batch_parameters={"dataframe": df}).run_results.values()))
    else:
        result = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite, result_format=result_format)

    failures = [_describe_failure(r) for r in result.results if not r.success]
    stats = result.statistics
    head = (
        f"clips.parquet validation: {'PASSED' if result.success else 'FAILED'} "
        f"({stats.get('successful_expectations')}/{stats.get('evaluated_expectations')} expectations met, "
        f"{len(clips)} rows)"
    )
    summary = "\n".join([head] + [f"  - {f}" for f in failures])
    (folder / "result.json").write_text(json.dumps(result.to_json_dict(), indent=1, default=str))
    (folder / "summary.txt").write_text(summary + "\n")
    (log.info if result.success else log.error)(summary)
    return ValidationReport(bool(result.success), summary, str(folder), failures)
