"""``soraflow train``: run the ``train`` flow (torchrun workers) with defaults from params.yaml."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from soraflow.training.launch import TrainingLaunchError, launch_torchrun

log = logging.getLogger(__name__)


def worker_args(
    params: Path,
    *,
    builder: str = "default",
    steps: int | None = None,
    ckpt_every: int | None = None,
    seed: int | None = None,
    output: str | None = None,
    resume: str | None = None,
    overrides: dict[str, object] | None = None,
    builder_opts: list[str] | None = None,
) -> list[str]:
    """The worker's argument list for these options (None: keep the params value)."""
    args = ["--params", str(params), "--builder", builder]
    for flag, value in (
        ("--steps", steps),
        ("--ckpt-every", ckpt_every),
        ("--seed", seed),
        ("--output", output),
        ("--resume", resume),
    ):
        if value is not None:
            args += [flag, str(value)]
    for key, value in (overrides or {}).items():
        args += ["--override", f"{key}={value}"]
    for opt in builder_opts or []:
        args += ["--builder-opt", opt]
    return args


def train_command(
    params: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="The params.yaml to read."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps of this run (default: train.steps)."),
    ckpt_every: int = typer.Option(None, "--ckpt-every", help="Checkpoint every K steps (default: train.ckpt_every)."),
    nproc_per_node: int = typer.Option(
        None, "--nproc-per-node", help="Worker processes on this node (default: train.nproc_per_node)."
    ),
    seed: int = typer.Option(None, "--seed", help="Global seed (default: train.seed)."),
    output: str = typer.Option(None, "--output", "-o", help="Output folder (default: train.output)."),
    resume: str = typer.Option(
        None, "--resume", help="auto (newest complete checkpoint), none, or a checkpoint folder (default: train.resume)."
    ),
    builder: str = typer.Option("default", "--builder", hidden=True, help="Components builder (toy: engine self-test)."),
    builder_opt: list[str] = typer.Option(
        [], "--builder-opt", hidden=True, help="KEY=VALUE keyword argument for the builder (repeatable)."
    ),
) -> None:
    """Train the model: torchrun workers (DDP/FSDP2), checkpoints, exact resume, final model folder."""
    from flows.train import train_flow

    try:
        train_flow(
            params_path=str(params), steps=steps, ckpt_every=ckpt_every, nproc_per_node=nproc_per_node,
            seed=seed, output=output, resume=resume, builder=builder, builder_opts=list(builder_opt),
        )
    except TrainingLaunchError as err:
        typer.echo(f"soraflow train: {err}", err=True)
        raise typer.Exit(err.returncode if err.returncode > 0 else 1) from None
