"""Resolution tables: the original's ten, exactly, and user tables by the original's rounding rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from soraflow.buckets.assign import closest_ratio_index
from soraflow.buckets.tables import (
    BUILTIN_RESOLUTIONS,
    ResolutionTable,
    builtin_tables,
    parse_ratio,
    size_for_ratio,
    table_from_ratios,
    table_from_sizes,
)

REFERENCE = Path("/work/shared/reference/aspect_ratios.json")
PACKAGED = Path(__file__).resolve().parents[1] / "src" / "soraflow" / "buckets" / "aspect_ratios.json"


def test_builtin_tables_are_the_originals_exactly():
    data = json.loads((REFERENCE if REFERENCE.exists() else PACKAGED).read_text())
    tables = builtin_tables()
    assert tuple(tables) == BUILTIN_RESOLUTIONS == tuple(data)
    assert len(tables) == 10
    for name, entry in data.items():
        t = tables[name]
        assert t.pixels == entry["pixels"]
        assert [k for k, _, _ in t.ratios] == list(entry["ratios"])  # keys as written, in order
        assert {k: [h, w] for k, h, w in t.ratios} == entry["ratios"]
    # A few well-known sizes of the original.
    assert tables["144p"].size("0.56") == (144, 256)
    assert tables["240p"].size("0.56") == (240, 426)
    assert tables["720p"].size("1.78") == (1280, 720)
    assert tables["256"].size("0.5") == (176, 352)  # this table writes keys without trailing zeros


def test_rounding_rule_reproduces_the_360p_table():
    # The original computed its 16:9-family tables with get_h_w(ratio, pixels) (eps 1e-4,
    # round to even); 360p came out untouched, so the rule must reproduce it exactly.
    exact = {"0.38": 3 / 8, "0.43": 9 / 21, "0.48": 12 / 25, "0.50": 1 / 2, "0.53": 9 / 17, "0.54": 27 / 50,
             "0.56": 9 / 16, "0.62": 5 / 8, "0.67": 2 / 3, "0.75": 3 / 4, "1.00": 1.0, "1.33": 4 / 3,
             "1.50": 3 / 2, "1.78": 16 / 9, "1.89": 17 / 9, "2.00": 2.0, "2.08": 25 / 12}
    t360 = builtin_tables()["360p"]
    for key, ratio in exact.items():
        assert size_for_ratio(ratio, t360.pixels) == t360.size(key), key
    # 9:16 at 360*640 pixels: h = sqrt(230400 * 0.5625) = 360 (+eps -> ceil 361 odd -> floor 360);
    # w = 360 / 0.5625 = 640 (+eps -> ceil 641 odd -> floor 640).
    assert size_for_ratio(9 / 16, 360 * 640) == (360, 640)


def test_user_table_from_ratios_and_snap():
    t = table_from_ratios("64px", 64 * 64, ["9:16", 1.0, "16:9"])
    # 9:16: h = sqrt(4096 * 0.5625) = 48; w = 48 / 0.5625 = 85.33 -> ceil 86 (even) -> 86.
    assert t.size("0.56") == (48, 86)
    assert t.size("1.00") == (64, 64)
    assert t.size("1.78") == (86, 48)
    snapped = table_from_ratios("64px", 64 * 64, ["9:16", 1.0, "16:9"], snap=16)
    assert snapped.size("0.56") == (48, 80)  # 86 / 16 = 5.375 -> 5 * 16
    for _, h, w in snapped.ratios:
        assert h % 16 == 0 and w % 16 == 0
    explicit = table_from_sizes("tiny", 1024, {"1.00": [32, 32], "0.50": [24, 48]})
    assert explicit.keys == ["1.00", "0.50"]
    with pytest.raises(ValueError, match="collide"):
        table_from_ratios("x", 1024, [0.561, 0.559])  # both "0.56"


def test_parse_ratio():
    assert parse_ratio("9:16") == pytest.approx(0.5625)
    assert parse_ratio(2) == 2.0
    assert parse_ratio("1.5") == 1.5
    for bad in ["a:b", "1:0", -1, 0, "x", True]:
        with pytest.raises(ValueError):
            parse_ratio(bad)


def test_closest_ratio_matches_the_originals_min_including_ties():
    rng = np.random.default_rng(0)
    for table in builtin_tables().values():
        h = rng.integers(16, 4000, size=400)
        w = rng.integers(16, 4000, size=400)
        got = closest_ratio_index(table, h, w)
        keys = table.keys
        assert [keys[i] for i in got] == [table.closest_key(int(a), int(b)) for a, b in zip(h, w)]
    # An exact tie: H/W = 0.5 lies halfway between keys 0.25 and 0.75; the first in table order wins.
    t = ResolutionTable("tie", 100, (("0.75", 9, 12), ("0.25", 5, 20)))
    assert t.closest_key(1, 2) == "0.75"
    assert closest_ratio_index(t, np.array([1]), np.array([2]))[0] == 0
    t2 = ResolutionTable("tie2", 100, (("0.25", 5, 20), ("0.75", 9, 12)))
    assert closest_ratio_index(t2, np.array([1]), np.array([2]))[0] == 0


def test_table_rejects_duplicate_ratio_values():
    with pytest.raises(ValueError, match="same ratio"):
        ResolutionTable("dup", 100, (("0.5", 5, 10), ("0.50", 6, 12)))
