"""The ``buckets`` config: the original's bucket_config shape, and errors that name the entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from soraflow.buckets.config import PUBLISHED_STAGE2, BucketsConfig, parse_bucket_config
from soraflow.config import ConfigError, Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_published_stage2_config_is_accepted_with_string_keys_like_json():
    as_json = {name: {str(t): list(v) for t, v in frames.items()} for name, frames in PUBLISHED_STAGE2.items()}
    c = parse_bucket_config(as_json, frame_interval=3)
    assert c.bucket_config["480p"][32] == (0.0, None)
    assert c.bucket_config["144p"][16] == (1.0, 17)
    assert list(c.bucket_config) == list(PUBLISHED_STAGE2)


def test_yaml_integer_resolution_names_become_strings():
    raw = yaml.safe_load("256: {1: [1.0, 4]}\n512: {'16': [0.5, 2]}\n")
    c = parse_bucket_config(raw)
    assert set(c.bucket_config) == {"256", "512"}
    assert c.bucket_config["512"] == {16: (0.5, 2)}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"300p": {1: [1.0, 4]}}, "bucket_config['300p']: unknown resolution"),
        ({"240p": {16: [-0.1, 4]}}, "bucket_config['240p'][16]: keep probability must be in [0, 1]"),
        ({"240p": {16: [1.5, 4]}}, "bucket_config['240p'][16]: keep probability must be in [0, 1]"),
        ({"240p": {16: [0.5, None]}}, "bucket_config['240p'][16]: batch size missing"),
        ({"240p": {16: [0.5]}}, "bucket_config['240p'][16]: expected [keep_prob, batch_size]"),
        ({"240p": {0: [1.0, 4]}}, "bucket_config['240p'][0]: frame count must be a positive integer"),
        ({"240p": {"-4": [1.0, 4]}}, "bucket_config['240p']['-4']: frame count must be a positive integer"),
        ({"240p": {"16.5": [1.0, 4]}}, "frame count must be a positive integer"),
        ({"240p": {"abc": [1.0, 4]}}, "bucket_config['240p']['abc']"),
        ({"240p": {16: [1.0, 0]}}, "bucket_config['240p'][16]: batch size must be a positive integer"),
        ({"240p": {16: [1.0, 2.5]}}, "bucket_config['240p'][16]: batch size must be a positive integer"),
        ({"240p": {16: ["high", 2]}}, "bucket_config['240p'][16]: keep probability must be a number"),
        ({"240p": {}}, "bucket_config['240p']: expected a non-empty mapping"),
        ({}, "bucket_config is empty"),
    ],
)
def test_bad_configs_name_the_entry(raw, fragment):
    with pytest.raises(ConfigError) as err:
        parse_bucket_config(raw, source="my_buckets.yaml")
    msg = str(err.value)
    assert fragment in msg
    assert msg.startswith("my_buckets.yaml")


def test_disabled_bucket_needs_no_batch_size():
    c = parse_bucket_config({"720p": {32: [0.0, None], 16: [0.1, 2]}})
    assert c.bucket_config["720p"][32] == (0.0, None)


def test_extra_resolutions_validation():
    with pytest.raises(ConfigError, match=r"extra_resolutions\['240p'\]: redefines a built-in"):
        parse_bucket_config({"240p": {1: [1.0, 1]}}, extra_resolutions={"240p": {"pixels": 100, "aspect_ratios": [1.0]}})
    with pytest.raises(ConfigError, match="exactly one of aspect_ratios or sizes"):
        parse_bucket_config({"x": {1: [1.0, 1]}}, extra_resolutions={"x": {"pixels": 100}})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_bucket_config({"x": {1: [1.0, 1]}}, extra_resolutions={"x": {"pixels": 100, "aspect_ratios": [1], "pixel": 3}})
    c = parse_bucket_config(
        {"tiny": {1: [1.0, 2]}, "wide": {1: [1.0, 2]}},
        extra_resolutions={"tiny": {"pixels": 1024, "sizes": {"1.00": [32, 32]}}, "wide": {"pixels": 4096, "aspect_ratios": ["1:2"], "snap": 16}},
    )
    assert c.tables()["tiny"].size("1.00") == (32, 32)
    assert c.tables()["wide"].size("0.50") == (48, 96)  # h=sqrt(2048)=45.3 -> ceil 46 -> 46 -> snap 48; w=92 -> 96


def test_params_yaml_section_and_defaults_agree():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params.buckets, BucketsConfig)
    assert params.buckets == Params().buckets  # the demo defaults live in both places
    assert {"32px", "64px"} <= set(params.buckets.tables())
    # every bucket of the demo config is a size divisible by 8 (the demo's 4x VAE, 2x2 patches)
    for name in params.buckets.bucket_config:
        for _, h, w in params.buckets.tables()[name].ratios:
            assert h % 8 == 0 and w % 8 == 0


def test_params_errors_carry_the_section_path(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("buckets:\n  bucket_config: {'240p': {16: [2.0, 4]}}\n")
    with pytest.raises(ConfigError, match=r"buckets.bucket_config.*'240p'\]\[16\]: keep probability"):
        load_params(p)
    p.write_text("buckets:\n  frame_interval: 0\n")
    with pytest.raises(ConfigError, match="buckets.frame_interval"):
        load_params(p)
