"""The ``train`` section: defaults of the original, ranges, cross-field rules, registration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from soraflow.config import ConfigError, Params, load_params
from soraflow.training.config import TrainConfig
from soraflow.training.worker import apply_overrides, load_params_with_overrides, main

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_follow_the_original():
    c = TrainConfig()
    assert (c.lr, c.weight_decay, c.warmup_steps, c.grad_clip) == (2e-5, 0.0, 0, 1.0)
    assert (c.ema_decay, c.caption_dropout, c.ckpt_every) == (0.9999, 0.1, 500)
    assert c.betas == (0.9, 0.999)
    assert c.resume == "auto" and c.strategy == "ddp" and c.mixed_precision == "auto"
    assert Params().train == c


def test_repository_params_has_a_valid_train_section():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert "train" in raw
    params = load_params(ROOT / "params.yaml")
    assert params.train.output == "models/train"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("steps", 0),
        ("lr", 0.0),
        ("lr", -1e-4),
        ("grad_clip", -1.0),
        ("grad_accum_steps", 0),
        ("ema_decay", 1.5),
        ("caption_dropout", 1.2),
        ("mixed_precision", "fp16"),
        ("strategy", "zero3"),
        ("backend", "mpi"),
        ("keep_last_k", -1),
        ("rdzv_endpoint", "no-port"),
        ("rdzv_endpoint", "host:99999"),
        ("resume", " "),
        ("nproc_per_node", 0),
        ("betas", [0.9, 1.0]),
        ("betas", [-0.1, 0.99]),
        ("betas", [0.9]),
    ],
)
def test_bad_values_name_the_key(tmp_path, key, value):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"train": {key: value}}))
    with pytest.raises(ConfigError) as err:
        load_params(p)
    assert f"train.{key}" in str(err.value)


def test_cross_field_rules():
    with pytest.raises(ValueError, match="node_rank"):
        TrainConfig(nnodes=2, node_rank=2)
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(init_optimizer=True)
    assert TrainConfig(nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400").node_rank == 1
    assert TrainConfig(init_from="models/stage1/final", init_optimizer=True).init_optimizer


def test_overrides_are_dotted_and_validated(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"train": {"steps": 5}}))
    params = load_params_with_overrides(p, {"train.lr": 1e-3, "train.output": "x"})
    assert (params.train.steps, params.train.lr, params.train.output) == (5, 1e-3, "x")
    assert apply_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}
    with pytest.raises(ConfigError, match="train.lr"):
        load_params_with_overrides(p, {"train.lr": -1})


def test_worker_exits_2_on_bad_config(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"train": {"steps": 5}}))
    assert main(["--params", str(p), "--builder", "toy", "--override", "train.grad_clip=-3"]) == 2
    assert "train.grad_clip" in capsys.readouterr().err
