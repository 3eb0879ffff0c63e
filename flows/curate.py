"""Stage ``curate``: source videos/images -> ``clips.parquet``, clip files, ``rejected.parquet``.

One Prefect task per source file (idempotent, cached on disk by content hash, see
:mod:`soraflow.curation.pipeline`), fanned out through the task runner chosen in params:

- ``curate.task_runner: threads`` (default): a ``ThreadPoolTaskRunner`` with
  ``curate.workers`` threads in this process (PyAV, OpenCV and onnxruntime release the GIL);
- ``curate.task_runner: dask``: ``prefect_dask.DaskTaskRunner``; a local cluster of
  ``curate.workers`` single-threaded worker processes, or the running cluster at
  ``curate.dask_address``.

Running on a Dask cluster::

    # on the scheduler host
    dask scheduler --port 8786
    # on every worker host (same Python env, and the input/output paths mounted at the same place)
    dask worker tcp://SCHEDULER:8786 --nworkers 4 --nthreads 1
    # from the project root
    soraflow curate --task-runner dask --dask-address tcp://SCHEDULER:8786
    #   or set curate.task_runner / curate.dask_address in params.yaml
    #   (`dvc exp run -S curate.task_runner=dask -S curate.dask_address=...` for the DVC stage)

Workers load the scoring models once per process and write each source's result under
``curate.work_dir`` (default ``<output>/.work/``; temp folder, then rename), so a killed run
restarted with the same params redoes only the sources that had not finished, on any worker.
``metrics.json`` and ``validation/`` go to ``curate.report_dir`` (default ``<output>``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm.auto import tqdm

from soraflow.config import load_params
from soraflow.curation.config import CurateConfig
from soraflow.curation.inputs import SourceItem
from soraflow.curation.pipeline import SourceOutcome, clean_stale_tmp, curate_source, prune_work

log = logging.getLogger(__name__)


def build_task_runner(config: CurateConfig):
    """The Prefect task runner named by ``curate.task_runner``."""
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": config.workers, "threads_per_worker": 1, "processes": True}
        )
    return ThreadPoolTaskRunner(max_workers=config.workers)


@task(name="curate-source", cache_policy=NO_CACHE, retries=0)
def curate_source_task(item: SourceItem, sha256: str, config: CurateConfig, work_root: str) -> SourceOutcome:
    return curate_source(item, sha256, config, work_root)


def resolve_config(params_path: str, input: str | None, output: str | None, overrides: dict | None = None):
    """Params from ``params_path`` with the command line's overrides of the ``curate`` section."""
    from soraflow.config_base import parse_model

    params = load_params(params_path)
    update = {k: v for k, v in {"input": input, "output": output, **(overrides or {})}.items() if v is not None}
    if update:
        data = params.curate.model_dump(mode="json")
        data.update(update)
        cfg = parse_model(CurateConfig, data, "command line (curate)")
        params = params.model_copy(update={"curate": cfg})
    return params, params.curate


@flow(name="curate", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)
def curate_flow(
    params_path: str = "params.yaml",
    input: str | None = None,
    output: str | None = None,
    overrides: dict | None = None,
    track: bool = True,
) -> dict:
    """Curate ``input`` into ``output`` (defaults: ``curate.input``/``curate.output``).

    Returns the run's metrics. Raises :class:`soraflow.curation.validation.ValidationFailed`
    when the output table fails its expectations (after logging the report).
    """
    import contextlib

    from soraflow.curation.inputs import dedupe_sources, discover_inputs
    from soraflow.curation.report import run_metrics
    from soraflow.curation.tables import assemble_tables

    logger = get_run_logger()
    params, cfg = resolve_config(params_path, input, output, overrides)
    out = Path(cfg.output)
    work_root = cfg.work_root()
    reports = cfg.report_root()
    t0 = time.perf_counter()
    items = discover_inputs(cfg.input)
    sources, problems = dedupe_sources(items)
    stale = clean_stale_tmp(work_root)
    if stale:
        logger.info("removed %d unfinished work folders of an interrupted run", stale)
    logger.info("curating %d source files (%d input problems) with %s x%d", len(sources), len(problems),
                cfg.task_runner, cfg.workers)

    if track:
        from soraflow.tracking import stage_run

        run_ctx = stage_run("curate", params, params_path=params_path)
    else:
        run_ctx = contextlib.nullcontext()
    with run_ctx:
        futures = [curate_source_task.submit(item, sha, cfg, str(work_root)) for item, sha in sources]
        outcomes_by_dir: dict[str, SourceOutcome] = {}
        bar = tqdm(total=len(futures), desc="curate", unit="file")
        for fut in as_completed(futures):
            oc = fut.result()
            outcomes_by_dir[oc.work_dir] = oc
            bar.set_postfix(clips=sum(o.kept for o in outcomes_by_dir.values()))
            bar.update()
        bar.close()
        # Keep input order (as_completed yields in finishing order).
        outcomes = [f.result() for f in futures]
        tables = assemble_tables(outcomes, problems, out, cfg.heldout_fraction)
        pruned = prune_work(work_root, {o.work_dir for o in outcomes})
        if pruned:
            logger.info("removed %d work folders no source of this run uses (%s)", pruned, work_root)
        elapsed = time.perf_counter() - t0
        metrics = run_metrics(tables)
        metrics.update(_work_metrics(outcomes, tables, elapsed))
        report = None
        if cfg.validation.enabled:
            from soraflow.curation.validation import validate_clips

            report = validate_clips(tables.clips, reports, cfg.validation.min_rows, cfg.validation.data_docs)
            metrics["validation_success"] = float(report.success)
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        _log_missing(tables, logger)
        if track:
            _log_mlflow(tables, metrics, report, reports)
        logger.info("curate: %d clips kept, %d rows rejected in %.1f s", len(tables.clips), len(tables.rejected), elapsed)
        if report is not None and not report.success:
            from soraflow.curation.validation import ValidationFailed

            raise ValidationFailed(report.summary)
    return metrics


def _work_metrics(outcomes: list[SourceOutcome], tables, elapsed: float) -> dict[str, float]:
    timings: dict[str, float] = {}
    for s in tables.sources:
        for k, v in (s.get("timings") or {}).items():
            timings[k] = timings.get(k, 0.0) + float(v)
    m = {f"seconds.{k}": round(v, 3) for k, v in timings.items()}
    m["seconds.total"] = round(elapsed, 3)
    m["sources_cached"] = float(sum(o.cached for o in outcomes))
    m["sources_processed"] = float(sum(not o.cached for o in outcomes))
    n_clips = len(tables.clips) + int(tables.rejected["id"].notna().sum()) if len(tables.rejected) else len(tables.clips)
    m["clips_seen"] = float(n_clips)
    m["scene_cuts"] = float(sum(len(s.get("cuts", [])) for s in tables.sources))
    return m


def _log_missing(tables, logger) -> None:
    """Say which filters could not run because their model is missing, and why."""
    skipped: dict[str, int] = {}
    missing: dict[str, str] = {}
    for s in tables.sources:
        for rule, n in (s.get("skipped_filters") or {}).items():
            skipped[rule] = skipped.get(rule, 0) + int(n)
        missing.update(s.get("missing_scores") or {})
    for rule, n in sorted(skipped.items()):
        logger.warning("filter %s could not run on %d clips (score missing: %s)", rule, n,
                       missing.get(rule.split("_")[0], "not computed"))


def _log_mlflow(tables, metrics: dict[str, float], report, reports: Path) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    from soraflow.curation.report import sample_grid, score_histograms
    from soraflow.curation.tables import reason_counts

    mlflow.log_metrics({k.replace(":", "_"): v for k, v in metrics.items()})
    missing: dict[str, str] = {}
    for s in tables.sources:
        missing.update(s.get("missing_scores") or {})
    if missing:
        mlflow.set_tags({f"curate.missing.{k}": v[:500] for k, v in missing.items()})
    mlflow.log_dict(reason_counts(tables.rejected), "curate/rejected_reasons.json")
    for name, make in (("curate/score_histograms.png", score_histograms), ("curate/sample_grid.png", sample_grid)):
        fig = make(tables)
        mlflow.log_figure(fig, name)
        plt.close(fig)
    if report is not None:
        mlflow.log_artifacts(report.folder, "curate/validation")
    mlflow.log_artifact(str(reports / "metrics.json"), "curate")


def run_curate(
    params_path: str = "params.yaml",
    input: str | None = None,
    output: str | None = None,
    overrides: dict | None = None,
    track: bool = True,
) -> dict:
    """Run :func:`curate_flow` with the task runner chosen by ``curate.task_runner``.

    ``overrides`` replace keys of the ``curate`` section (e.g. ``{"workers": 4}``).
    """
    _, cfg = resolve_config(params_path, input, output, overrides)
    return curate_flow.with_options(task_runner=build_task_runner(cfg))(
        params_path=params_path, input=input, output=output, overrides=overrides, track=track
    )


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("curate")
