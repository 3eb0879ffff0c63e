"""params.yaml reads the same before and after DVC writes it back (`dvc exp run -S`)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from soraflow.config import load_params
from soraflow.config_base import ConfigError, read_yaml
from soraflow.yaml12 import load_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_1_1_only_scalars_read_as_yaml_1_2():
    doc = load_yaml(
        "ratio: 16:9\nanswer: yes\nswitch: on\nsmall: 1e-3\nlead: 010\nhex: 0x1f\noct: 0o17\nflag: true\n"
        "big: 1_000\nday: 2026-12-04\nnothing: ~\ninf: -.inf\nneg: -3\nplain: 2.5\n"
    )
    assert doc == {
        "ratio": "16:9", "answer": "yes", "switch": "on", "small": 0.001, "lead": 10, "hex": 31, "oct": 15,
        "flag": True, "big": "1_000", "day": "2026-12-04", "nothing": None, "inf": -math.inf, "neg": -3,
        "plain": 2.5,
    }
    assert isinstance(doc["lead"], int) and isinstance(doc["small"], float)


def test_params_yaml_survives_dvc_writing_it_back(tmp_path):
    """`dvc exp run -S train.seed=1` rewrites params.yaml with ruamel.yaml (YAML 1.2), which drops
    the quotes of "16:9": PyYAML's YAML 1.1 then read 969 and the train stage failed."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = read_yaml(params)
    hydra.apply_overrides(params, ["train.seed=1"])  # what `dvc exp run -S train.seed=1` does to the file
    text = params.read_text()
    assert "- 16:9" in text  # the quotes are gone: the case this module exists for
    after = read_yaml(params)
    assert after["train"].pop("seed") == 1
    before["train"].pop("seed")
    assert after == before
    assert load_params(params).demo.aspect_ratios == load_params(ROOT / "params.yaml").demo.aspect_ratios


def test_bad_yaml_is_still_a_config_error(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(bad)
