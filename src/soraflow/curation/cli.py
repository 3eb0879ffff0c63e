"""``soraflow curate``: run the curation flow (``flows/curate.py``) from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def curate_command(
    input: str = typer.Option(
        None, "--input", "-i",
        help="Folder of videos/images (walked recursively) or a CSV/parquet manifest with 'path' "
        "and optional 'text' columns (default: curate.input in params).",
    ),
    output: str = typer.Option(
        None, "--output", "-o", help="Output folder for clips.parquet, rejected.parquet and clips/ (default: curate.output)."
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="The params.yaml to read."),
    workers: int = typer.Option(None, "--workers", "-w", help="Parallel source files (default: curate.workers)."),
    task_runner: str = typer.Option(
        None, "--task-runner", help="'threads' or 'dask' (default: curate.task_runner)."
    ),
    dask_address: str = typer.Option(
        None, "--dask-address", help="Scheduler address of a running Dask cluster, e.g. tcp://host:8786."
    ),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="Do not log the run to MLflow."),
) -> None:
    """Curate videos into training clips: probe, scene cuts, scores, captions, filters, validation.

    Writes OUTPUT/clips.parquet (kept clips, Open-Sora columns), OUTPUT/rejected.parquet (every
    dropped file or clip with its reason) and the clip files under OUTPUT/clips/; metrics.json and
    the validation report (validation/) under curate.report_dir (default OUTPUT). Each file's
    result is kept under curate.work_dir (default OUTPUT/.work), so re-running after an
    interruption redoes only unfinished files; work folders this run did not use are removed.
    """
    from flows.curate import run_curate
    from soraflow.curation.validation import ValidationFailed

    overrides = {"workers": workers, "task_runner": task_runner, "dask_address": dask_address}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        metrics = run_curate(str(params), input=input, output=output, overrides=overrides, track=not no_tracking)
    except ValidationFailed as err:
        print(f"soraflow curate: the curated table failed validation:\n{err}", file=sys.stderr)
        raise typer.Exit(1) from None
    typer.echo(
        f"kept {int(metrics['clips_kept'])} clips from {int(metrics['sources'])} files, "
        f"rejected {int(metrics['rows_rejected'])} (see rejected.parquet)"
    )
