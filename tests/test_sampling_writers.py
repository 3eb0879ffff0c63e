"""mp4 / GIF writers (decoded back with PyAV and Pillow), the sample grid, the render index and CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from soraflow.sampling import upscale_nearest, video_grid, write_gif, write_mp4

COLOURS = [(220, 30, 30), (30, 180, 40), (30, 70, 220), (245, 215, 30), (235, 235, 235)]


def _video(t: int = 5, h: int = 16, w: int = 16) -> np.ndarray:
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i] = COLOURS[i % len(COLOURS)]
        frames[i, : h // 2, : w // 2] = (15, 15, 15)  # a dark quarter, so frames are not flat
    return frames


def _decode(path) -> tuple[np.ndarray, Fraction, str]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
        return frames, s.average_rate, s.codec_context.name + "/" + s.codec_context.pix_fmt


def test_mp4_round_trip_scaled_up(tmp_path) -> None:
    video = _video()
    path = write_mp4(video, tmp_path / "a.mp4", fps=12)
    frames, rate, codec = _decode(path)
    assert codec == "h264/yuv420p"
    assert rate == 12
    assert frames.shape == (5, 128, 128, 3)  # 16 px scaled x8 with nearest neighbour
    want = upscale_nearest(video, 128).astype(int)
    err = np.abs(frames.astype(int) - want)
    # lossy, but every frame keeps its colour (centre of each quadrant, away from edges)
    assert np.median(err) <= 4
    assert err[:, 96, 96].max() <= 12 and err[:, 32, 32].max() <= 12


def test_mp4_raw_size_pads_odd_sides(tmp_path) -> None:
    video = _video(t=3, h=15, w=17)
    frames, rate, _ = _decode(write_mp4(video, tmp_path / "raw.mp4", fps=7.5, min_size=0))
    assert frames.shape == (3, 16, 18, 3)
    assert rate == Fraction(15, 2)
    assert np.abs(frames[:, 12, 12].astype(int) - video[:, 12, 12]).max() <= 16
    with pytest.raises(ValueError, match="fps"):
        write_mp4(video, tmp_path / "x.mp4", fps=0)
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(video.astype(np.float32), tmp_path / "x.mp4", fps=8)


def test_gif_round_trip(tmp_path) -> None:
    video = _video(t=4)
    path = write_gif(video, tmp_path / "a.gif", fps=10)
    with Image.open(path) as im:
        assert im.n_frames == 4 and im.size == (128, 128)
        assert im.info["duration"] == 100 and im.info.get("loop") == 0
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.array(im.convert("RGB")))
    frames = np.stack(frames)
    assert np.abs(frames.astype(int) - upscale_nearest(video, 128)).max() <= 8


def test_video_grid_places_and_captions_tiles() -> None:
    a, b, c = _video(t=3), _video(t=5), _video(t=1)
    grid = video_grid([a, b, c], ["a red circle", "a green square moving left on a purple background", "c"],
                      columns=2, tile_size=32, pad=4)
    assert grid.shape[0] == 5 and grid.dtype == np.uint8
    # tile 0 at (pad, pad), 32x32 (16 px x2); it holds its last frame after frame 2
    assert np.array_equal(grid[0, 4:36, 4:36], upscale_nearest(a, 32)[0])
    assert np.array_equal(grid[4, 4:36, 4:36], upscale_nearest(a, 32)[2])
    # tile 1 in the second column
    x1 = 4 + 32 + 4
    assert np.array_equal(grid[4, 4:36, x1 : x1 + 32], upscale_nearest(b, 32)[4])
    # a caption was drawn under tile 0 (dark pixels on the white strip)
    strip = grid[0, 36 + 2 : 36 + 2 + 11, 4:36]
    assert (strip < 128).any()
    with pytest.raises(ValueError):
        video_grid([a], ["one", "two"])


def test_render_and_cli(tmp_path) -> None:
    """``soraflow sample --no-track`` on a tiny model folder writes mp4, GIF, grid and samples.json."""
    from typer.testing import CliRunner

    from sampling_helpers import write_model_folder, write_vae_folder
    from soraflow.cli import app

    write_vae_folder(tmp_path / "vae")
    model = write_model_folder(tmp_path / "final", str(tmp_path / "vae"))
    out = tmp_path / "samples"
    args = ["sample", "--params", str(tmp_path / "none.yaml"), "--model", str(model),
            "--prompt", "a red circle moving left on a black background", "--prompt", "a blue square",
            "--num-frames", "4", "--height", "16", "--width", "16", "--steps", "2", "--seed", "7",
            "--min-display-size", "32", "--no-track", "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    index = json.loads((out / "samples.json").read_text())
    assert [s["prompt"] for s in index["samples"]] == ["a red circle moving left on a black background", "a blue square"]
    assert index["settings"]["seed"] == 7 and index["settings"]["fps"] == 12.0
    for s in index["samples"]:
        frames, rate, _ = _decode(out / s["mp4"])
        assert frames.shape == (4, 32, 32, 3) and rate == 12
        assert Image.open(out / s["gif"]).n_frames == 4
        raw = np.load(out / s["frames"])
        assert raw.shape == (4, 16, 16, 3)
    assert Image.open(out / "grid.gif").n_frames == 4
    # same seed and prompts -> the same frames again
    again = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    for s in index["samples"]:
        assert np.array_equal(np.load(out / s["frames"]), np.load(tmp_path / "again" / s["frames"]))
    # a size the model cannot take: clear error, exit code != 0, nothing written
    bad = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "bad")] + ["--height", "18"])
    assert bad.exit_code != 0 and "multiples of 4" in str(bad.exception)
    assert not (tmp_path / "bad" / "samples.json").exists()
