"""Caption attributes and the held-out prompt set.

Captions are the demo's template (:func:`soraflow.demo.vocab.caption_for`), e.g.
``"a red circle moving left on a navy background"``: the object's colour, shape and motion
are read back with the demo vocabulary, nothing else.

The held-out prompt rule (never a training prompt):

1. candidates are captions of HELD-OUT video clips (still images have no motion) whose
   caption string never appears in the training split;
2. among them, captions whose (colour, shape, direction) combination never appears in the
   training split come first (``novel_combination``), then the rest; ties are ordered by a
   seeded shuffle;
3. one prompt per distinct caption, at most ``num_prompts``.

Each prompt keeps the held-out clip it came from (its real frames are the FID reference) and
a ``half`` (``A``/``B``, alternating over the seeded order): FID compares the generated
videos of half-A prompts with the real clips of half B, mirroring ``fid_real_halves``
(real half A vs real half B).
"""

from __future__ import annotations

from collections.abc import Iterable

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from soraflow.demo.vocab import COLORS, DIRECTIONS, SHAPES

__all__ = [
    "COLOR_LABELS",
    "DIRECTION_LABELS",
    "SHAPE_LABELS",
    "CaptionAttributes",
    "chance_levels",
    "parse_caption",
    "select_heldout_prompts",
    "try_parse_caption",
]

COLOR_LABELS: tuple[str, ...] = tuple(COLORS)
SHAPE_LABELS: tuple[str, ...] = tuple(SHAPES)
#: Includes ``none`` (standing still).
DIRECTION_LABELS: tuple[str, ...] = tuple(DIRECTIONS)

_MOTION = {"moving left": "left", "moving right": "right", "moving up": "up", "moving down": "down", "standing still": "none"}
_CAPTION_RE = re.compile(
    r"^an? (?P<color>[a-z]+) (?P<shape>[a-z]+)"
    r"(?: (?P<motion>moving (?:left|right|up|down)|standing still))?"
    r" on an? (?P<background>[^,]+?) background"
    r"(?:, camera panning (?P<pan>left|right))?"
)


@dataclass(frozen=True)
class CaptionAttributes:
    color: str
    shape: str
    #: ``left|right|up|down|none``; None when the caption says nothing of motion (a still image).
    direction: str | None
    background: str
    camera_pan: str = "none"

    @property
    def labels(self) -> tuple[int, int, int]:
        """Class indices ``(colour, shape, direction)``; direction must be known."""
        if self.direction is None:
            raise ValueError("this caption has no motion; it has no direction label")
        return COLOR_LABELS.index(self.color), SHAPE_LABELS.index(self.shape), DIRECTION_LABELS.index(self.direction)


def try_parse_caption(text: str) -> CaptionAttributes | None:
    """The attributes of a demo caption, or None when it does not follow the template."""
    m = _CAPTION_RE.match(str(text).strip().lower())
    if m is None or m["color"] not in COLORS or m["shape"] not in SHAPES:
        return None
    motion = m["motion"]
    return CaptionAttributes(
        color=m["color"],
        shape=m["shape"],
        direction=_MOTION[motion] if motion else None,
        background=m["background"].strip(),
        camera_pan=m["pan"] or "none",
    )


def parse_caption(text: str) -> CaptionAttributes:
    """Like :func:`try_parse_caption`, but a caption outside the template is a ``ValueError``."""
    attrs = try_parse_caption(text)
    if attrs is None:
        raise ValueError(
            f"caption {text!r} does not follow the demo template "
            f"'a <colour> <shape> <moving left|right|up|down|standing still> on a ... background' "
            f"(colours {COLOR_LABELS}, shapes {SHAPE_LABELS})"
        )
    return attrs


def chance_levels() -> dict[str, float]:
    """Accuracy of a uniform guess: 1 / number of classes of each attribute."""
    return {
        "color_accuracy_chance": 1.0 / len(COLOR_LABELS),
        "shape_accuracy_chance": 1.0 / len(SHAPE_LABELS),
        "direction_accuracy_chance": 1.0 / len(DIRECTION_LABELS),
    }


def with_attributes(clips: pd.DataFrame) -> pd.DataFrame:
    """``clips`` plus ``color``/``shape``/``direction`` parsed from ``text`` (rows that do not
    parse are dropped)."""
    parsed = [try_parse_caption(t) for t in clips["text"].astype(str)]
    keep = [p is not None for p in parsed]
    out = clips.loc[keep].copy()
    out["color"] = [p.color for p in parsed if p is not None]
    out["shape"] = [p.shape for p in parsed if p is not None]
    out["direction"] = [p.direction for p in parsed if p is not None]
    return out


def select_heldout_prompts(
    clips: pd.DataFrame, num_prompts: int, seed: int = 0, trained_captions: Iterable[str] = ()
) -> pd.DataFrame:
    """Held-out prompts (see the module docstring) as a table.

    ``trained_captions``: captions the model also trained on beyond the table's training rows
    (the feature cache's augmented windows); they are never prompts either, and their
    attribute combinations are not novel.

    Columns: ``prompt``, ``color``, ``shape``, ``direction``, ``novel_combination`` (bool),
    ``clip_index`` (row label in ``clips`` of the held-out clip the prompt came from), ``half``.
    Raises ``ValueError`` when no held-out caption qualifies.
    """
    if "split" not in clips.columns or "text" not in clips.columns:
        raise ValueError(f"the clip table needs 'split' and 'text' columns (has {list(clips.columns)})")
    table = with_attributes(clips)
    kind = table["kind"] if "kind" in table.columns else pd.Series("video", index=table.index)
    extra = sorted(set(map(str, trained_captions)))
    train = table[table["split"] == "train"]
    if extra:
        train = pd.concat([train, with_attributes(pd.DataFrame({"text": extra, "split": "train"}))])
    train_captions = set(train["text"].astype(str))
    train_combos = set(zip(train["color"], train["shape"], train["direction"]))
    held = table[(table["split"] == "heldout") & (kind == "video") & table["direction"].notna()]
    held = held[~held["text"].astype(str).isin(train_captions)]
    held = held.drop_duplicates(subset="text")
    if held.empty:
        raise ValueError(
            "no held-out prompt: no held-out video clip has a demo caption that the training split lacks "
            "(raise curate.heldout_fraction or check the captions)"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(held))
    held = held.iloc[order]
    novel = np.array([(c, s, d) not in train_combos for c, s, d in zip(held["color"], held["shape"], held["direction"])])
    held = pd.concat([held[novel], held[~novel]]).head(num_prompts)
    out = pd.DataFrame(
        {
            "prompt": held["text"].astype(str).to_numpy(),
            "color": held["color"].to_numpy(),
            "shape": held["shape"].to_numpy(),
            "direction": held["direction"].to_numpy(),
            "novel_combination": [(c, s, d) not in train_combos for c, s, d in zip(held["color"], held["shape"], held["direction"])],
            "clip_index": held.index.to_numpy(),
        }
    )
    out["half"] = np.where(np.arange(len(out)) % 2 == 0, "A", "B")
    return out
