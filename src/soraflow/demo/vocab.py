"""The demo corpus vocabulary and the one caption template every stage shares.

Object colours (:data:`COLORS`) and background colours (:data:`BACKGROUND_COLORS`) are two
disjoint palettes on purpose: an evaluator that looks for "red" pixels in a generated video
never finds them in the background. Within a scene the object and background tones are also
kept far apart in RGB (:func:`colors_compatible`), so the object is always clearly visible.
"""

from __future__ import annotations

import math

RGB = tuple[int, int, int]

#: Object colours: saturated, far from each other and from every background tone.
COLORS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
}

#: Background colours (the base tone of plain, gradient and textured backgrounds).
BACKGROUND_COLORS: dict[str, RGB] = {
    "black": (15, 15, 15),
    "white": (235, 235, 235),
    "gray": (120, 120, 120),
    "navy": (20, 25, 90),
    "purple": (110, 40, 150),
    "teal": (0, 110, 130),
    "pink": (245, 170, 200),
    "brown": (110, 70, 35),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Object motion relative to the frame; ``none`` is "standing still".
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down", "none")
MOVING_DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "texture")
#: Camera pan direction: ``right`` means the camera turns right, so the background scrolls left.
CAMERA_PANS: tuple[str, ...] = ("none", "left", "right")
TEXTURES: tuple[str, ...] = ("checker", "stripes", "noise")
TEXT_STYLES: tuple[str, ...] = ("none", "title", "subtitle")

#: Burned-in text: large titles (centred) and subtitles (bottom line).
TITLES: tuple[str, ...] = (
    "BREAKING NEWS",
    "THE END",
    "CHAPTER ONE",
    "HELLO WORLD",
    "SUMMER SALE",
    "LIVE",
    "COMING SOON",
    "GAME OVER",
)
SUBTITLES: tuple[str, ...] = (
    "Where are we going?",
    "I told you so.",
    "Welcome back to the show",
    "Look at it move!",
    "This is not a drill",
    "See you tomorrow",
    "Nobody saw it coming",
    "Keep watching",
)

#: Fractions of the tone range a background spans: gradients and textures go from
#: ``base * DARK`` to ``base + (255 - base) * LIGHT``.
BACKGROUND_DARK = 0.6
BACKGROUND_LIGHT = 0.3
#: Smallest RGB distance between an object colour and any tone of its background.
MIN_OBJECT_BACKGROUND_DISTANCE = 120.0
#: Smallest RGB distance between the base tones of two consecutive scenes' backgrounds.
MIN_CUT_BACKGROUND_DISTANCE = 90.0

_DIRECTION_PHRASES = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "none": "standing still",
}
_BACKGROUND_PHRASES = {"plain": "", "gradient": " gradient", "texture": " textured"}


def background_tones(background_color: str) -> tuple[RGB, RGB, RGB]:
    """The darkest, base and lightest RGB a background of this colour uses."""
    base = BACKGROUND_COLORS[background_color]
    dark = tuple(int(round(c * BACKGROUND_DARK)) for c in base)
    light = tuple(int(round(c + (255 - c) * BACKGROUND_LIGHT)) for c in base)
    return dark, base, light  # type: ignore[return-value]


def rgb_distance(a: RGB, b: RGB) -> float:
    return math.dist(a, b)


def colors_compatible(color: str, background_color: str) -> bool:
    """True when an object of ``color`` stands out against every tone of the background."""
    obj = COLORS[color]
    return all(rgb_distance(obj, t) >= MIN_OBJECT_BACKGROUND_DISTANCE for t in background_tones(background_color))


def caption_for(
    shape: str,
    color: str,
    direction: str | None,
    background: str,
    background_color: str | None = None,
    camera_pan: str = "none",
    text: str = "",
    text_style: str = "title",
) -> str:
    """The caption of a scene, built only from its attributes.

    ``"a red circle moving left on a navy background"``,
    ``"a green square standing still on a gray textured background, camera panning right"``,
    ``... , with the title "THE END"``. ``direction=None`` leaves motion out (still images).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; expected one of {tuple(COLORS)}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {BACKGROUNDS}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
    if camera_pan not in CAMERA_PANS:
        raise ValueError(f"unknown camera pan {camera_pan!r}; expected one of {CAMERA_PANS}")
    parts = [f"{_article(color)} {color} {shape}"]
    if direction is not None:
        parts.append(f" {_DIRECTION_PHRASES[direction]}")
    kind = _BACKGROUND_PHRASES[background] or ("" if background_color else " plain")
    bg_words = f"{background_color or ''}{kind} background".strip()
    parts.append(f" on {_article(bg_words)} {bg_words}")
    if camera_pan != "none":
        parts.append(f", camera panning {camera_pan}")
    if text:
        label = "subtitle" if text_style == "subtitle" else "title"
        parts.append(f', with the {label} "{text}"')
    return "".join(parts)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
