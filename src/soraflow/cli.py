"""The ``soraflow`` command: one subcommand per pipeline stage, ``--help`` on each.

Stage commands run the stage's Prefect flow (``flows/``); the flows call library code in
``soraflow``. Each stage package that has commands exposes a typer app or command function
in ``soraflow.<stage>.cli`` and is registered here.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

from soraflow.allocator import keep_freed_memory
from soraflow.config import ConfigError

app = typer.Typer(
    name="soraflow",
    help="Train text-to-video diffusion models the Open-Sora 1.1 way: curate, bucket, train, evaluate, register.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PARAMS_OPTION = typer.Option(Path("params.yaml"), "--params", "-p", help="The params.yaml to read.")


#: Libraries whose INFO lines are noise in a stage's log: httpx logs every request a flow makes
#: to the Prefect API (a line per batch of log records). Their warnings and errors still show.
#: (great-expectations is quieted where it is imported: ``soraflow.curation.validation``.)
QUIET_LOGGERS = ("httpx", "httpcore")


def setup_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with ``verbose``) for soraflow, Prefect and MLflow; WARNING for :data:`QUIET_LOGGERS`."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


@app.command("demo-data")
def demo_data(
    params: Path = PARAMS_OPTION,
    output: Path = typer.Option(None, "--output", "-o", help="Folder for the corpus (default: demo.output in params)."),
) -> None:
    """Generate the demo video corpus (videos, stills, ground-truth manifest)."""
    from flows.demo_data import demo_data_flow

    demo_data_flow(params_path=str(params), output=str(output) if output else None)


@app.command("vae")
def vae(params: Path = PARAMS_OPTION) -> None:
    """Stage vae: train the demo's small AutoencoderKL (or check a pretrained VAE's reconstruction)."""
    from flows.vae import vae_flow

    vae_flow(params_path=str(params))


@app.command("features")
def features(params: Path = PARAMS_OPTION) -> None:
    """Stage features: cache VAE latents at each clip's bucket size and caption states, in shards."""
    from flows.features import features_flow

    features_flow(params_path=str(params))


@app.command("nightly")
def nightly(
    params: Path = PARAMS_OPTION,
    stage: list[str] = typer.Option(
        None, "--stage", metavar="STAGE", help="A stage to run, in the order given (repeatable; default: features, train, evaluate, register)."
    ),
    deployment: list[str] = typer.Option(
        None, "--deployment", metavar="STAGE=DEPLOYMENT",
        help="Run that stage as a flow run of a Prefect deployment, e.g. train=train/train-gpu (repeatable).",
    ),
) -> None:
    """The nightly flow (flows/pipeline.py): the stages one after the other in one flow run; a failing stage stops it."""
    from flows.pipeline import nightly_flow

    deployments: dict[str, str] = {}
    for item in deployment or []:
        name, sep, target = item.partition("=")
        if not (sep and name and target):
            raise typer.BadParameter(f"{item!r}: expected STAGE=DEPLOYMENT", param_hint="--deployment")
        deployments[name] = target
    out = nightly_flow(params_path=str(params), stages=stage or None, deployments=deployments or None)
    typer.echo(json.dumps(out, indent=2, default=str))


@app.command("check-params")
def check_params(params: Path = PARAMS_OPTION) -> None:
    """Validate params.yaml and print the resolved configuration."""
    from soraflow.config import load_params

    p = load_params(params)
    typer.echo(p.model_dump_json(indent=2))


from soraflow.buckets.cli import app as buckets_app  # noqa: E402

app.add_typer(buckets_app, name="buckets")

from soraflow.models.cli import app as model_app  # noqa: E402

app.add_typer(model_app, name="model")

from soraflow.curation.cli import curate_command  # noqa: E402

app.command("curate")(curate_command)

from soraflow.training.cli import train_command  # noqa: E402

app.command("train")(train_command)

from soraflow.evaluation.cli import eval_classifier_command, evaluate_command  # noqa: E402

app.command("evaluate")(evaluate_command)
app.command("eval-classifier")(eval_classifier_command)

from soraflow.sampling.cli import sample_command  # noqa: E402

app.command("sample")(sample_command)

from soraflow.registry.cli import promote_command, register_command, serve_command  # noqa: E402

app.command("register")(register_command)
app.command("promote")(promote_command)
app.command("serve")(serve_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: config errors become one clear line and exit code 2, not a traceback.

    ``argv`` replaces ``sys.argv[1:]`` (the command line after ``soraflow``)."""
    setup_logging()
    keep_freed_memory()  # CPU steps stop page-faulting (soraflow.allocator)
    try:
        app(args=argv, prog_name="soraflow")
    except ConfigError as err:
        print(f"soraflow: bad configuration: {err}", file=sys.stderr)
        sys.exit(2)


def run_as_command(command: str) -> None:
    """``python flows/<stage>.py [OPTIONS]`` is ``soraflow <command> [OPTIONS]``: the same options,
    ``--help`` and errors. (The flow files ignored their arguments before, so asking one for
    ``--help`` ran the stage.)"""
    main([command, *sys.argv[1:]])


if __name__ == "__main__":
    main()
