"""Scene and media specifications: everything a renderer needs, drawn from a seeded Generator.

A :class:`SceneSpec` fully determines the pixels of a scene (together with the frame size
and frame count), so the manifest, the captions and the tests are all derived from specs,
never from decoded pixels. :func:`plan_corpus` draws the whole corpus up front in one
process (cheap), so rendering can run in any number of workers and stay deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from soraflow.demo import vocab

if TYPE_CHECKING:  # keep pydantic out of the render workers' imports
    from soraflow.demo.config import DemoConfig

#: Largest object, as a fraction of the shorter frame side.
MAX_OBJECT_SIZE = 0.9


@dataclass(frozen=True)
class SceneSpec:
    """One shot: an object of ``shape``/``color`` over a background, optional pan and text.

    ``start_x``/``start_y`` place the object centre at frame 0 as fractions of the frame;
    with ``enter_from_edge`` a moving object instead starts touching the border it moves away
    from (its start along the motion axis follows from its pixel size, so it is set at render);
    ``speed`` is the fraction of the frame extent along the motion axis travelled per frame;
    ``pan_speed`` is the fraction of the frame width the background scrolls per frame.
    The defaults make a spec from the caption attributes alone render something sensible.
    """

    shape: str
    color: str
    direction: str = "none"
    background: str = "plain"
    background_color: str = "gray"
    speed: float = 0.0
    camera_pan: str = "none"
    pan_speed: float = 0.0
    object_size: float = 0.3
    start_x: float = 0.5
    start_y: float = 0.5
    texture: str = "checker"
    gradient_angle: float = 0.0
    texture_seed: int = 0
    text: str = ""
    text_style: str = "none"
    enter_from_edge: bool = False

    def __post_init__(self) -> None:
        if self.shape not in vocab.SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.color not in vocab.COLORS:
            raise ValueError(f"unknown colour {self.color!r}")
        if self.direction not in vocab.DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.background not in vocab.BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")
        if self.background_color not in vocab.BACKGROUND_COLORS:
            raise ValueError(f"unknown background colour {self.background_color!r}")
        if self.camera_pan not in vocab.CAMERA_PANS:
            raise ValueError(f"unknown camera pan {self.camera_pan!r}")
        if self.texture not in vocab.TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}")
        if self.text_style not in vocab.TEXT_STYLES:
            raise ValueError(f"unknown text style {self.text_style!r}")
        if bool(self.text) != (self.text_style != "none"):
            raise ValueError("text and text_style must be both set or both empty/'none'")
        if not 0.0 < self.object_size <= MAX_OBJECT_SIZE:
            raise ValueError(f"object_size {self.object_size} outside (0, {MAX_OBJECT_SIZE}]")

    @property
    def static(self) -> bool:
        """No motion at all: the object stands still and the camera does not pan."""
        return self.moving_direction == "none" and self.camera_pan == "none"

    @property
    def moving_direction(self) -> str:
        return self.direction if self.speed > 0 else "none"

    @property
    def has_text(self) -> bool:
        return bool(self.text)

    def caption(self, still_image: bool = False) -> str:
        return vocab.caption_for(
            self.shape,
            self.color,
            None if still_image else self.moving_direction,
            self.background,
            self.background_color,
            camera_pan="none" if still_image else self.camera_pan,
            text=self.text,
            text_style=self.text_style,
        )


@dataclass(frozen=True)
class MediaSpec:
    """One output file: a video of consecutive scenes, or a still image (one scene, one frame)."""

    name: str  # file name under raw/, with extension
    kind: str  # "video" | "image"
    width: int
    height: int
    fps: int  # 0 for images
    scenes: tuple[SceneSpec, ...]
    scene_frames: tuple[int, ...]  # frames per scene

    @property
    def num_frames(self) -> int:
        return int(sum(self.scene_frames))

    @property
    def scene_bounds(self) -> list[tuple[int, int]]:
        """``[(start, end_exclusive), ...]`` per scene."""
        bounds, start = [], 0
        for n in self.scene_frames:
            bounds.append((start, start + n))
            start += n
        return bounds

    @property
    def cut_frames(self) -> list[int]:
        """First frame of every scene after the first: where a hard cut happens."""
        return [start for start, _ in self.scene_bounds[1:]]


@dataclass
class CorpusPlan:
    videos: list[MediaSpec] = field(default_factory=list)
    images: list[MediaSpec] = field(default_factory=list)

    @property
    def media(self) -> list[MediaSpec]:
        return self.videos + self.images


def frame_size(aspect: tuple[int, int], short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the given shorter side and aspect ``(w, h)``; both even."""
    aw, ah = aspect
    long_side = int(round(short_side * max(aw, ah) / min(aw, ah) / 2.0)) * 2
    return (long_side, short_side) if aw >= ah else (short_side, long_side)


def _choice(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def random_scene(
    rng: np.random.Generator,
    config: DemoConfig,
    *,
    static: bool,
    with_text: bool,
    previous: SceneSpec | None = None,
    allow_motion: bool = True,
) -> SceneSpec:
    """Draw one scene; its background differs clearly from ``previous`` (for a visible cut)."""
    # Background colour: far from the previous scene's, and from every object tone.
    bg_names = list(vocab.BACKGROUND_COLORS)
    if previous is not None:
        prev = vocab.BACKGROUND_COLORS[previous.background_color]
        far = vocab.MIN_CUT_BACKGROUND_DISTANCE
        bg_names = [b for b in bg_names if vocab.rgb_distance(prev, vocab.BACKGROUND_COLORS[b]) >= far]
    background_color = _choice(rng, bg_names)
    colors = [c for c in vocab.COLORS if vocab.colors_compatible(c, background_color)]
    color = _choice(rng, colors)
    shape = _choice(rng, vocab.SHAPES)

    if static or not allow_motion:
        direction, camera_pan = "none", "none"
    else:
        camera_pan = _choice(rng, ("left", "right")) if rng.random() < config.pan_fraction else "none"
        # Without a pan the object must move (else the scene is static); with one it may stand still.
        direction = _choice(rng, vocab.DIRECTIONS if camera_pan != "none" else vocab.MOVING_DIRECTIONS)

    # A pan is only clearly visible on a texture (a smooth gradient barely changes when it scrolls).
    background = "texture" if camera_pan != "none" else _choice(rng, vocab.BACKGROUNDS)
    texture = _choice(rng, vocab.TEXTURES)
    angles = (0.0, 45.0, 90.0, 135.0)
    gradient_angle = float(angles[int(rng.integers(len(angles)))])

    speed = float(rng.uniform(*config.speed_range)) if direction != "none" else 0.0
    pan_speed = float(rng.uniform(*config.pan_speed_range)) if camera_pan != "none" else 0.0
    object_size = float(rng.uniform(*config.object_size_range))
    # Keep a standing object fully inside the frame; a moving one wraps, any start works.
    margin = object_size / 2 + 0.02
    start_x = float(rng.uniform(margin, 1 - margin)) if direction not in ("left", "right") else float(rng.random())
    start_y = float(rng.uniform(margin, 1 - margin)) if direction not in ("up", "down") else float(rng.random())

    text, text_style = "", "none"
    if with_text:
        text_style = _choice(rng, ("title", "subtitle"))
        text = _choice(rng, vocab.TITLES if text_style == "title" else vocab.SUBTITLES)
    return SceneSpec(
        shape=shape,
        color=color,
        direction=direction,
        background=background,
        background_color=background_color,
        speed=round(speed, 6),
        camera_pan=camera_pan,
        pan_speed=round(pan_speed, 6),
        object_size=round(object_size, 6),
        start_x=round(start_x, 6),
        start_y=round(start_y, 6),
        texture=texture,
        gradient_angle=gradient_angle,
        texture_seed=int(rng.integers(2**31 - 1)),
        text=text,
        text_style=text_style,
        enter_from_edge=config.object_start == "entry_edge" and direction in vocab.MOVING_DIRECTIONS,
    )


def _split_frames(rng: np.random.Generator, total: int, num_scenes: int, min_frames: int) -> tuple[int, ...]:
    """Split ``total`` frames into ``num_scenes`` parts of at least ``min_frames`` each."""
    spare = total - num_scenes * min_frames
    weights = rng.dirichlet(np.full(num_scenes, 2.0))
    extra = np.floor(weights * spare).astype(int)
    extra[int(rng.integers(num_scenes))] += spare - int(extra.sum())
    return tuple(int(min_frames + e) for e in extra)


def _random_size(rng: np.random.Generator, config: DemoConfig) -> tuple[int, int]:
    aspects = config.aspect_pairs()
    aspect = aspects[int(rng.integers(len(aspects)))]
    short = config.short_sides[int(rng.integers(len(config.short_sides)))]
    return frame_size(aspect, short)


def plan_corpus(config: DemoConfig) -> CorpusPlan:
    """Draw every video and image spec of the corpus from ``config.seed``.

    Static and text scenes are assigned by exact quotas (``round(fraction * scenes)``) over
    all video scenes, not coin flips, so small corpora still hit the fractions. Images come
    from a separate random stream: changing ``num_images`` leaves the videos unchanged.
    """
    video_ss, image_ss = np.random.SeedSequence([config.seed, 0x50F1A]).spawn(2)
    rng = np.random.default_rng(video_ss)
    n = config.num_videos

    # Scene counts cycle through 1..max_scenes, shuffled.
    counts = np.resize(np.arange(1, config.max_scenes + 1), n)
    rng.shuffle(counts)

    # Durations: log-uniform, bounded below by what the scenes need; one short, one long video.
    lo, hi = config.min_seconds, config.max_seconds
    durations = []
    for k in counts:
        low = max(lo, k * config.min_scene_seconds)
        low = min(low, hi)
        durations.append(float(math.exp(rng.uniform(math.log(low), math.log(hi)))))
    if n >= 2 and lo < 0.97 and hi > 10.0:
        short_i, long_i = (int(i) for i in rng.choice(n, size=2, replace=False))
        counts[short_i] = 1
        durations[short_i] = float(rng.uniform(lo, min(0.97, hi)))
        durations[long_i] = float(rng.uniform(min(10.2, hi), hi))

    layouts = []
    for i in range(n):
        fps = int(config.fps_choices[int(rng.integers(len(config.fps_choices)))])
        width, height = _random_size(rng, config)
        total = max(1, int(round(durations[i] * fps)))
        min_frames = max(1, int(math.ceil(config.min_scene_seconds * fps)))
        k = int(min(counts[i], max(1, total // min_frames)))
        frames = _split_frames(rng, total, k, min(min_frames, total // k))
        layouts.append((fps, width, height, frames))

    num_scenes = sum(len(f) for *_, f in layouts)
    static_flags = np.zeros(num_scenes, dtype=bool)
    static_flags[rng.permutation(num_scenes)[: int(round(config.static_fraction * num_scenes))]] = True
    text_flags = np.zeros(num_scenes, dtype=bool)
    text_flags[rng.permutation(num_scenes)[: int(round(config.text_fraction * num_scenes))]] = True

    plan = CorpusPlan()
    j = 0
    for i, (fps, width, height, frames) in enumerate(layouts):
        scenes: list[SceneSpec] = []
        for _ in frames:
            prev = scenes[-1] if scenes else None
            static, text = bool(static_flags[j]), bool(text_flags[j])
            scenes.append(random_scene(rng, config, static=static, with_text=text, previous=prev))
            j += 1
        plan.videos.append(
            MediaSpec(f"video_{i:04d}.mp4", "video", width, height, fps, tuple(scenes), tuple(frames))
        )

    irng = np.random.default_rng(image_ss)
    for i in range(config.num_images):
        width, height = _random_size(irng, config)
        scene = random_scene(irng, config, static=True, with_text=irng.random() < config.text_fraction)
        ext = "png" if i % 2 == 0 else "jpg"
        plan.images.append(MediaSpec(f"image_{i:04d}.{ext}", "image", width, height, 0, (scene,), (1,)))
    return plan
