"""The dataset transform on a small H.264 video written here with PyAV (each frame's grey level
encodes its frame number) and on a still image."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from soraflow.buckets.config import BucketsConfig
from soraflow.buckets.dataset import VideoClipDataset, frame_indices, load_clip, resize_crop_to_fill
from soraflow.buckets.sampler import BucketSampler, ClipRequest

N_FRAMES, H, W = 40, 48, 64


def level(i: int) -> int:
    return 20 + 5 * i


def frame_numbers(video: torch.Tensor) -> list[int]:
    """Recover each frame's number from its mean grey level ([C, T, H, W] in [-1, 1])."""
    means = ((video + 1) * 127.5).mean(dim=(0, 2, 3))
    return [int(round((m.item() - 20) / 5)) for m in means]


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "grey.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(N_FRAMES):
            img = np.full((H, W, 3), level(i), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, 24)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("stills") / "still.png"
    img = np.zeros((30, 50, 3), dtype=np.uint8)
    img[:, 25:] = 255  # left half black, right half white
    Image.fromarray(img).save(path)
    return path


def test_load_clip_reads_strided_frames_from_a_seeded_start(video_path):
    rng = np.random.default_rng(7)
    video = load_clip(video_path, 4, 3, 32, 32, rng)
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1.0 and video.max() <= 1.0
    got = frame_numbers(video)
    expected = frame_indices(N_FRAMES, 4, 3, np.random.default_rng(7)).tolist()
    assert got == expected
    assert np.all(np.diff(got) == 3) and 0 <= got[0] <= N_FRAMES - 12
    # Same seed, same frames; the starts spread over the allowed window.
    assert torch.equal(load_clip(video_path, 4, 3, 32, 32, np.random.default_rng(7)), video)
    starts = {frame_numbers(load_clip(video_path, 2, 3, 16, 16, np.random.default_rng(s)))[0] for s in range(30)}
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= N_FRAMES - 6


def test_window_start_can_be_capped(video_path):
    starts = {int(frame_indices(100, 8, 2, np.random.default_rng(s), max_start=4)[0]) for s in range(60)}
    assert starts == {0, 1, 2, 3, 4}
    free = {int(frame_indices(100, 8, 2, np.random.default_rng(s))[0]) for s in range(60)}
    assert max(free) > 20
    # A cap beyond the last possible start changes nothing; a short clip starts at 0.
    assert frame_indices(20, 8, 2, np.random.default_rng(3), max_start=50).tolist() == frame_indices(20, 8, 2, np.random.default_rng(3)).tolist()
    assert frame_indices(10, 8, 2, np.random.default_rng(3), max_start=2)[0] == 0
    got = frame_numbers(load_clip(video_path, 4, 3, 32, 32, np.random.default_rng(5), max_window_start=2))
    assert got[0] <= 2 and np.all(np.diff(got) == 3)


def test_load_clip_inside_a_longer_file(video_path):
    # Clip = frames [20, 40) of the file: every frame read must come from there.
    for s in range(10):
        video = load_clip(video_path, 5, 2, 24, 32, np.random.default_rng(s), start_frame=20, clip_frames=20)
        got = frame_numbers(video)
        assert all(20 <= g < 40 for g in got) and np.all(np.diff(got) == 2)


def test_resize_crop_to_fill_covers_and_centre_crops():
    # A 40x80 frame whose value is the column index; target 32x32: scale max(32/40, 32/80) = 0.8
    # -> 32x64, crop columns 16..48 -> the middle half of the original columns (20..60).
    x = torch.arange(80, dtype=torch.float32).repeat(1, 3, 40, 1)
    y = resize_crop_to_fill(x, 32, 32)
    assert y.shape == (1, 3, 32, 32)
    assert y[0, 0, 0].min() > 18 and y[0, 0, 0].max() < 61
    assert y.mean().item() == pytest.approx(39.5, abs=1.0)
    assert torch.allclose(y[:, :, 0], y[:, :, -1])  # rows untouched by the crop
    # Upscaling a small frame to a larger bucket covers it too.
    assert resize_crop_to_fill(torch.rand(2, 3, 10, 10), 16, 48).shape == (2, 3, 16, 48)


def test_images_give_one_frame(image_path):
    img = load_clip(image_path, 1, 3, 32, 32, np.random.default_rng(0))
    assert img.shape == (3, 1, 32, 32)
    # 30x50 -> cover 32x32: scale 32/30 -> 32x53, centre crop keeps both halves.
    assert img[:, 0, :, :4].mean() < -0.9 and img[:, 0, :, -4:].mean() > 0.9
    with pytest.raises(ValueError, match="1-frame bucket"):
        load_clip(image_path, 2, 1, 32, 32, np.random.default_rng(0))


def test_dataset_with_sampler_and_dataloader(video_path, image_path):
    root = video_path.parent
    df = pd.DataFrame(
        {
            "id": [10, 11, 12, 13],
            "path": [video_path.name, video_path.name, video_path.name, str(image_path)],
            "start_frame": [0, 20, 0, 0],
            "num_frames": [20, 20, 40, 1],
            "height": [H, H, H, 30],
            "width": [W, W, W, 50],
            "fps": [24.0, 24.0, 24.0, np.nan],
            "text": ["a", "b", "c", "d"],
        }
    )
    # 48x64 = 3072 px: 64px needs 0.8 * 4096 = 3276.8 -> too small; 32px (1024) fits.
    # T=20 and 40 > 4 * 3 -> frame bucket 4; H/W = 0.75 -> key 0.56 (|0.19| < |0.25|) -> 32x48.
    # The image (30x50 = 1500 px) fits 32px too: frame bucket 1, H/W 0.6 -> 0.56 -> 32x48.
    config = BucketsConfig(
            bucket_config={"32px": {4: [1.0, 3], 1: [1.0, 1]}},
            extra_resolutions={"32px": {"pixels": 1024, "aspect_ratios": ["9:16", "1:1", "16:9"], "snap": 16}},
            frame_interval=3,
            seed=1,
        )
    sampler = BucketSampler(df, config)
    dataset = VideoClipDataset(df, root, frame_interval=3)
    batches = list(DataLoader(dataset, batch_sampler=sampler, num_workers=0))
    assert len(batches) == 2
    shapes = sorted(tuple(b["video"].shape) for b in batches)
    assert shapes == [(1, 3, 1, 32, 48), (3, 3, 4, 32, 48)]
    videos = next(b for b in batches if b["video"].shape[2] == 4)
    assert videos["fps"].tolist() == [8.0, 8.0, 8.0]
    for idx, clip in zip(videos["index"].tolist(), videos["video"]):
        got = frame_numbers(clip)
        lo = 20 if idx == 1 else 0
        hi = 40 if idx != 0 else 20
        assert all(lo <= g < hi for g in got)
    # A request is all a worker needs: the same request loads the same pixels.
    req = ClipRequest(2, 4, 32, 48, 0.56, 1234)
    assert torch.equal(dataset[req]["video"], dataset[req]["video"])
