"""``soraflow register``, ``soraflow promote [--rollback]`` and ``soraflow serve``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="The params.yaml to read (registry section).")


def register_command(
    params: Path = PARAMS,
    promote: bool = typer.Option(
        None, "--promote/--no-promote", help="Compare with the champion right after registering (default: registry.auto_promote)."
    ),
) -> None:
    """Stage register: log the trained model to MLflow, register it as 'challenger', maybe promote it."""
    from flows.register import register_flow

    out = register_flow(params_path=str(params), promote=promote)
    typer.echo(f"registered {out['model_name']} version {out['version']} ({out['model_uri']}) as challenger")
    if "promotion" in out:
        typer.echo(out["promotion"]["reason"])


def promote_command(
    params: Path = PARAMS,
    rollback: bool = typer.Option(False, "--rollback", help="Move 'champion' back to the 'previous' version."),
    version: str = typer.Option(None, "--version", help="Compare this version instead of the 'challenger' alias."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole decision as JSON."),
) -> None:
    """Promote the challenger to champion if it beats it on the registry.metrics (or roll back).

    Rule: at least as good on every listed metric and strictly better on one (beyond
    registry.tolerance); ties and missing metrics never promote. Every decision is logged
    (version tags, registry.decision_path).
    """
    from soraflow.config import load_params
    from soraflow.registry import RegistryError
    from soraflow.registry import promote as promote_version
    from soraflow.registry import rollback as rollback_champion

    cfg = load_params(params).registry
    try:
        result = rollback_champion(cfg) if rollback else promote_version(cfg, version)
    except RegistryError as err:
        typer.echo(f"soraflow promote: {err}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(result.decision.reason)
        def v(x: str | None) -> str:
            return f"v{x}" if x is not None else "none"

        typer.echo(f"champion: {v(result.champion_after)}  previous: {v(result.previous_after)}")


def serve_command(
    prefect_yaml: Path = typer.Option(Path("prefect.yaml"), "--prefect-yaml", help="Deployments to serve (names, entrypoints, schedules)."),
    name: list[str] = typer.Option(None, "--name", help="Serve only this deployment (repeatable). Default: all of prefect.yaml."),
    limit: int = typer.Option(None, "--limit", help="At most this many flow runs at once."),
) -> None:
    """Serve the pipeline's deployments (curate, nightly train+evaluate+promote, ...) with their
    cron schedules in this process, until Ctrl-C. Schedules are not paused on shutdown."""
    from flows.pipeline import serve_deployments

    serve_deployments(prefect_yaml, names=list(name) if name else None, limit=limit)
