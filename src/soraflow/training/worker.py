"""What ``torchrun`` runs on every rank: ``python -m soraflow.training.worker --params params.yaml``.

The worker reads params (plus command-line overrides), joins the process group, builds the
model/data/loss with one builder function and calls :func:`soraflow.training.loop.train`.
Rank 0 prints a ``SORAFLOW_METRICS {...}`` line per logged step (the launcher turns them into
callbacks) and appends its values except the speed and memory figures to ``<output>/metrics.jsonl``
(the same training writes the same file; see :mod:`soraflow.training.metrics`).

Exit codes: 0 done, 2 bad configuration, 3 non-finite loss (the message names the step and
the last good checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from soraflow.allocator import keep_freed_memory
from soraflow.config_base import ConfigError, parse_model, read_yaml
from soraflow.training.components import Components
from soraflow.training.distributed import DistContext, cleanup_distributed, init_distributed
from soraflow.training.loop import NonFiniteLossError, train
from soraflow.training.metrics import format_metrics_line, is_run_measurement
from soraflow.training.rng import seed_everything
from soraflow.training.toy import build_toy_components
from soraflow.yaml12 import load_yaml

log = logging.getLogger("soraflow.training.worker")

EXIT_CONFIG = 2
EXIT_NONFINITE = 3


def build_components(params: Any, ctx: DistContext) -> Components:
    """The real STDiT2 + feature cache + diffusion loss (``soraflow.training.builder``)."""
    from soraflow.training.builder import build_components as build_real

    return build_real(params, ctx)


#: Builders selectable with ``--builder``: ``(params, ctx, **opts) -> Components``.
BUILDERS: dict[str, Callable[..., Components]] = {
    "default": build_components,
    "toy": build_toy_components,
}


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), load_yaml(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m soraflow.training.worker", description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml", help="params.yaml to read")
    p.add_argument("--builder", default="default", choices=sorted(BUILDERS), help="what to train")
    p.add_argument("--steps", type=int, help="train.steps")
    p.add_argument("--ckpt-every", type=int, help="train.ckpt_every")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--output", help="train.output")
    p.add_argument("--resume", help="train.resume: auto | none | checkpoint folder")
    p.add_argument(
        "--override", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
        help="any params key, dotted (e.g. train.lr=1e-3); the value is parsed as YAML",
    )
    p.add_argument(
        "--builder-opt", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
        help="keyword argument for the builder (e.g. step_delay=0.1 for the toy)",
    )
    return p.parse_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, key in (
        ("steps", "train.steps"),
        ("ckpt_every", "train.ckpt_every"),
        ("seed", "train.seed"),
        ("output", "train.output"),
        ("resume", "train.resume"),
    ):
        value = getattr(args, flag)
        if value is not None:
            out[key] = value
    out.update(dict(args.override))
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``train.steps``) in a nested params dict (a copy)."""
    data = json.loads(json.dumps(data))
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {key} is not a section")
        node[leaf] = value
    return data


def load_params_with_overrides(path: str | Path, overrides: dict[str, Any]) -> Any:
    from soraflow.config import Params

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return parse_model(Params, apply_overrides(raw, overrides), str(path))


def metrics_writer(output: Path) -> Callable[[int, dict[str, float]], None]:
    """Print every metric of a logged step; append the ones the maths determines to the step log."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "metrics.jsonl"

    def write(step: int, metrics: dict[str, float]) -> None:
        line = format_metrics_line(step, metrics)
        print(line, flush=True)
        kept = {k: v for k, v in metrics.items() if not is_run_measurement(k)}
        with path.open("a") as f:
            f.write(json.dumps({"step": step, **kept}, sort_keys=True) + "\n")

    return write


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params_with_overrides(args.params, overrides_from_args(args))
    except ConfigError as err:
        print(f"soraflow train: bad configuration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    cfg = params.train
    keep_freed_memory()  # CPU steps stop page-faulting (soraflow.allocator)
    ctx = init_distributed(cfg.backend, force_group=cfg.strategy == "fsdp2")
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [rank {ctx.rank}] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        seed_everything(cfg.seed)  # same initial weights on every rank
        components = BUILDERS[args.builder](params, ctx, **dict(args.builder_opt))
        on_metrics = metrics_writer(Path(cfg.output)) if ctx.is_main else None
        result = train(cfg, components, ctx=ctx, on_metrics=on_metrics)
        log.info("done: step %d, final model %s", result.step, result.final_dir)
        return 0
    except NonFiniteLossError as err:
        log.error("%s", err)
        return EXIT_NONFINITE
    finally:
        cleanup_distributed(ctx)


if __name__ == "__main__":
    sys.exit(main())
