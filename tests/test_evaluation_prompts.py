"""Caption parsing against the demo vocabulary, chance levels, and the held-out prompt rule."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from soraflow.demo import vocab
from soraflow.evaluation.config import EvalConfig
from soraflow.evaluation.prompts import (
    chance_levels,
    parse_caption,
    select_heldout_prompts,
    try_parse_caption,
)


@pytest.mark.parametrize("background", vocab.BACKGROUNDS)
@pytest.mark.parametrize("pan", vocab.CAMERA_PANS)
def test_every_caption_the_demo_writes_parses_back(background, pan):
    for shape, color, direction in itertools.product(vocab.SHAPES, vocab.COLORS, (*vocab.DIRECTIONS, None)):
        for bg_color, text in (("navy", ""), ("gray", "THE END"), (None, "")):
            cap = vocab.caption_for(shape, color, direction, background, bg_color, camera_pan=pan, text=text)
            a = parse_caption(cap)
            assert (a.color, a.shape, a.direction) == (color, shape, direction), cap
            assert a.camera_pan == pan
            if direction is not None:
                c, s, d = a.labels
                assert (vocab.SHAPES[s], list(vocab.COLORS)[c], vocab.DIRECTIONS[d]) == (shape, color, direction)


@pytest.mark.parametrize(
    "text",
    ["real footage", "a purple circle moving left on a gray background", "a red hexagon moving up on a navy background",
     "", "red circle moving left"],
)
def test_captions_outside_the_template_are_rejected(text):
    assert try_parse_caption(text) is None
    with pytest.raises(ValueError, match="demo template"):
        parse_caption(text)


def test_still_image_caption_has_no_direction_label():
    a = parse_caption("a blue square on a gray gradient background")
    assert a.direction is None and a.background == "gray gradient"
    with pytest.raises(ValueError):
        _ = a.labels


def test_chance_levels_follow_the_vocabulary():
    c = chance_levels()
    assert c["color_accuracy_chance"] == pytest.approx(1 / len(vocab.COLORS)) == pytest.approx(0.25)
    assert c["shape_accuracy_chance"] == pytest.approx(1 / 3)
    assert c["direction_accuracy_chance"] == pytest.approx(1 / 5)  # left/right/up/down + standing still


def _table() -> pd.DataFrame:
    rows = [
        # train
        ("a red circle moving left on a navy background", "train", "video"),
        ("a blue square moving up on a white background", "train", "video"),
        ("a green triangle moving down on a gray background", "train", "video"),
        ("a yellow circle on a teal background", "train", "image"),
        # held-out: the same caption as a training clip -> never a prompt
        ("a red circle moving left on a navy background", "heldout", "video"),
        # held-out: known combination (red circle left), new background -> allowed, after novel ones
        ("a red circle moving left on a white gradient background", "heldout", "video"),
        # held-out: novel combinations
        ("a yellow triangle moving right on a navy background", "heldout", "video"),
        ("a green square standing still on a pink textured background, camera panning left", "heldout", "video"),
        ("a blue circle moving down on a teal background", "heldout", "video"),
        # held-out still image (no motion) and a non-demo caption: never prompts
        ("a red square on a gray background", "heldout", "image"),
        ("real footage", "heldout", "video"),
    ]
    return pd.DataFrame(rows, columns=["text", "split", "kind"])


def test_heldout_prompts_never_come_from_the_training_split():
    table = _table()
    prompts = select_heldout_prompts(table, num_prompts=10, seed=3)
    train_captions = set(table.loc[table["split"] == "train", "text"])
    assert not set(prompts["prompt"]) & train_captions
    assert len(prompts) == 4 and prompts["prompt"].is_unique
    assert set(table.loc[prompts["clip_index"], "split"]) == {"heldout"}
    # novel combinations first, the known one last
    assert prompts["novel_combination"].tolist() == [True, True, True, False]
    assert prompts.iloc[-1]["prompt"] == "a red circle moving left on a white gradient background"
    assert set(prompts["direction"]) == {"right", "none", "down", "left"}
    assert prompts["half"].tolist() == ["A", "B", "A", "B"]


def test_captions_trained_through_augmentation_are_never_prompts():
    """A mirrored training window of "... moving left ..." trains the model on "... moving right ...":
    that caption is then a training caption, and its combination is not novel."""
    table = _table()
    mirrored = "a yellow triangle moving right on a navy background"  # a held-out caption above
    prompts = select_heldout_prompts(table, num_prompts=10, seed=3, trained_captions=[mirrored, "real footage"])
    assert mirrored not in set(prompts["prompt"]) and len(prompts) == 3
    # the mirror of a blue square moving up is not in the table; its combination stops being novel
    reversed_blue = "a blue circle moving down on a navy background"
    novel = select_heldout_prompts(table, num_prompts=10, seed=3, trained_captions=[reversed_blue])
    row = novel.set_index("prompt").loc["a blue circle moving down on a teal background"]
    assert not row["novel_combination"]


def test_heldout_prompts_are_capped_and_seeded():
    table = _table()
    a = select_heldout_prompts(table, num_prompts=2, seed=1)
    b = select_heldout_prompts(table, num_prompts=2, seed=1)
    assert len(a) == 2 and a["novel_combination"].all()
    pd.testing.assert_frame_equal(a, b)


def test_no_qualifying_heldout_caption_is_an_error():
    table = _table()
    table = table[table["split"] == "train"]
    with pytest.raises(ValueError, match="no held-out prompt"):
        select_heldout_prompts(table, num_prompts=4)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        EvalConfig(num_prompts=0)
    with pytest.raises(ValueError):
        EvalConfig(feature_extractor=" ")
    with pytest.raises(ValueError):
        EvalConfig(unknown=1)
    assert EvalConfig().classifier.output == "models/eval_classifier"
