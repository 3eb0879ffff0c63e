"""Generate the demo corpus: media files, caption sidecars and the ground-truth manifests.

Layout under ``output_dir``::

    raw/<name>.mp4 | .png | .jpg     the media
    raw/<name>.<ext>.json            {"scenes": [{"start_frame", "end_frame", "caption"}]}
    videos.parquet                   one row per media file
    scenes.parquet                   one row per scene (the ground truth)

The plan (every spec) is drawn in the calling process; files are rendered and encoded in a
pool of ``config.workers`` processes. Manifests come from the specs alone, so the same seed
gives byte-identical manifests whatever the worker count.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from soraflow.demo.config import DemoConfig
from soraflow.demo.spec import CorpusPlan, MediaSpec, plan_corpus
from soraflow.demo.writer import write_media

logger = logging.getLogger(__name__)

RAW_DIR = "raw"
VIDEOS_MANIFEST = "videos.parquet"
SCENES_MANIFEST = "scenes.parquet"

VIDEOS_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("kind", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("num_frames", pa.int32()),
        ("cut_frames", pa.list_(pa.int32())),
        ("num_scenes", pa.int32()),
        ("duration_s", pa.float64()),
    ]
)

SCENES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("scene_index", pa.int32()),
        ("start_frame", pa.int32()),
        ("end_frame", pa.int32()),
        ("shape", pa.string()),
        ("color", pa.string()),
        ("background", pa.string()),
        ("background_color", pa.string()),
        ("direction", pa.string()),
        ("speed", pa.float64()),
        ("camera_pan", pa.string()),
        ("static", pa.bool_()),
        ("has_text", pa.bool_()),
        ("text", pa.string()),
        ("caption", pa.string()),
        # Extras beyond the agreed columns (renderer parameters useful to later stages).
        ("pan_speed", pa.float64()),
        ("object_size", pa.float64()),
        ("text_style", pa.string()),
        ("texture", pa.string()),
    ]
)


@dataclass(frozen=True)
class CorpusSummary:
    """Counts of a generated corpus. Scene counts and fractions are over video scenes."""

    output_dir: str
    num_videos: int
    num_images: int
    num_scenes: int
    num_static_scenes: int
    num_text_scenes: int
    num_pan_scenes: int
    total_frames: int
    total_bytes: int
    seconds: float

    @property
    def static_fraction(self) -> float:
        return self.num_static_scenes / max(1, self.num_scenes)

    @property
    def text_fraction(self) -> float:
        return self.num_text_scenes / max(1, self.num_scenes)

    @property
    def total_mb(self) -> float:
        return self.total_bytes / 1e6

    def as_metrics(self) -> dict[str, float]:
        """Numbers only, for ``mlflow.log_metrics``."""
        out = {k: float(v) for k, v in asdict(self).items() if k != "output_dir"}
        out.update(static_fraction=self.static_fraction, text_fraction=self.text_fraction, total_mb=self.total_mb)
        return out


def media_path(media: MediaSpec) -> str:
    """Path of a media file relative to the corpus folder (as stored in the manifests)."""
    return f"{RAW_DIR}/{media.name}"


def scene_rows(media: MediaSpec) -> list[dict]:
    """Ground-truth rows of ``scenes.parquet`` for one media file."""
    still = media.kind == "image"
    rows = []
    for i, (scene, (start, end)) in enumerate(zip(media.scenes, media.scene_bounds)):
        rows.append(
            {
                "path": media_path(media),
                "scene_index": i,
                "start_frame": start,
                "end_frame": end,
                "shape": scene.shape,
                "color": scene.color,
                "background": scene.background,
                "background_color": scene.background_color,
                "direction": "none" if still else scene.moving_direction,
                "speed": 0.0 if still else float(scene.speed),
                "camera_pan": "none" if still else scene.camera_pan,
                "static": True if still else scene.static,
                "has_text": scene.has_text,
                "text": scene.text,
                "caption": scene.caption(still_image=still),
                "pan_speed": 0.0 if still else float(scene.pan_speed),
                "object_size": float(scene.object_size),
                "text_style": scene.text_style,
                "texture": scene.texture if scene.background == "texture" else "",
            }
        )
    return rows


def video_row(media: MediaSpec) -> dict:
    fps = float(media.fps) if media.kind == "video" else 0.0
    return {
        "path": media_path(media),
        "kind": media.kind,
        "width": media.width,
        "height": media.height,
        "fps": fps,
        "num_frames": media.num_frames,
        "cut_frames": media.cut_frames,
        "num_scenes": len(media.scenes),
        "duration_s": media.num_frames / fps if fps else 0.0,
    }


def sidecar(media: MediaSpec) -> dict:
    return {
        "scenes": [
            {"start_frame": r["start_frame"], "end_frame": r["end_frame"], "caption": r["caption"]}
            for r in scene_rows(media)
        ]
    }


def write_sidecar(media: MediaSpec, raw_dir: Path) -> None:
    """``<media file>.json`` next to the file: its scenes' frame ranges and captions."""
    side = raw_dir / f"{media.name}.json"
    side.write_text(json.dumps(sidecar(media), indent=2) + "\n")


def write_manifests(plan: CorpusPlan, output_dir: Path) -> None:
    videos = [video_row(m) for m in plan.media]
    scenes = [r for m in plan.media for r in scene_rows(m)]
    pq.write_table(pa.Table.from_pylist(videos, schema=VIDEOS_SCHEMA), output_dir / VIDEOS_MANIFEST)
    pq.write_table(pa.Table.from_pylist(scenes, schema=SCENES_SCHEMA), output_dir / SCENES_MANIFEST)


def generate_corpus(config: DemoConfig, output_dir: Path | str, *, progress: bool = True) -> CorpusSummary:
    """Write the whole demo corpus to ``output_dir`` (its ``raw/`` folder is replaced)."""
    t0 = time.perf_counter()
    output_dir = Path(output_dir)
    raw_dir = output_dir / RAW_DIR
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    raw_dir.mkdir(parents=True)

    plan = plan_corpus(config)
    # Biggest jobs first so the last worker is not left alone with a long video.
    jobs = sorted(plan.media, key=lambda m: m.width * m.height * m.num_frames, reverse=True)
    total_bytes = 0
    bar = tqdm(total=len(jobs), desc="demo corpus", unit="file", disable=not progress)
    try:
        if config.workers == 1 or len(jobs) <= 1:
            for m in jobs:
                total_bytes += write_media(m, str(raw_dir), config.crf, config.preset)[2]
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")  # safe even if the caller imported torch
            with ProcessPoolExecutor(max_workers=config.workers, mp_context=ctx) as pool:
                futures = [pool.submit(write_media, m, str(raw_dir), config.crf, config.preset) for m in jobs]
                for fut in as_completed(futures):
                    total_bytes += fut.result()[2]
                    bar.update()
    finally:
        bar.close()
    for m in plan.media:
        write_sidecar(m, raw_dir)
    write_manifests(plan, output_dir)

    video_scenes = [s for m in plan.videos for s in m.scenes]
    summary = CorpusSummary(
        output_dir=str(output_dir),
        num_videos=len(plan.videos),
        num_images=len(plan.images),
        num_scenes=len(video_scenes),
        num_static_scenes=sum(s.static for s in video_scenes),
        num_text_scenes=sum(s.has_text for s in video_scenes),
        num_pan_scenes=sum(s.camera_pan != "none" for s in video_scenes),
        total_frames=sum(m.num_frames for m in plan.videos),
        total_bytes=total_bytes,
        seconds=round(time.perf_counter() - t0, 3),
    )
    logger.info(
        "demo corpus: %d videos, %d images, %d scenes (%.0f%% static, %.0f%% text), %.1f MB in %.1f s",
        summary.num_videos,
        summary.num_images,
        summary.num_scenes,
        100 * summary.static_fraction,
        100 * summary.text_fraction,
        summary.total_mb,
        summary.seconds,
    )
    return summary
