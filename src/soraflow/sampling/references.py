"""Reference images and videos for conditioned sampling (image-to-video, extension, editing).

A reference is a path (a still image, or a video decoded with PyAV) or a uint8 array
(``[H, W, 3]`` image or ``[T, H, W, 3]`` frames). Video files are subsampled by the model's
``frame_interval`` (the training clips were); arrays are taken as already sampled. Every
reference is resized to cover the sample size and centre-cropped (the training transform),
and returned in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from soraflow.config_base import ConfigError

__all__ = ["IMAGE_EXTENSIONS", "Reference", "load_reference_frames", "reference_tensor"]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
Reference = str | Path | np.ndarray


def _read_video(path: Path, frame_interval: int, max_frames: int) -> np.ndarray:
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ConfigError(f"reference {path}: no video stream")
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                if i % frame_interval == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if len(frames) >= max_frames:
                        break
    except ConfigError:
        raise
    except Exception as err:  # PyAV raises many types (InvalidDataError, OSError, ...)
        raise ConfigError(f"reference {path}: cannot be read as an image or a video ({type(err).__name__}: {err})") from None
    if not frames:
        raise ConfigError(f"reference {path}: no frame could be decoded")
    return np.stack(frames)


def load_reference_frames(ref: Reference, frame_interval: int = 1, max_frames: int = 256) -> np.ndarray:
    """One reference as ``[T, H, W, 3]`` uint8 frames; :class:`ConfigError` when unreadable."""
    if isinstance(ref, np.ndarray):
        arr = ref
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ConfigError(f"reference array: expected [H, W, 3] or [T, H, W, 3], got shape {ref.shape}")
        if arr.dtype != np.uint8:
            raise ConfigError(f"reference array: expected uint8 pixels, got {arr.dtype}")
        return arr
    path = Path(ref)
    if not path.is_file():
        raise ConfigError(f"reference {path}: file not found")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"))[None]
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ConfigError(f"reference {path}: cannot be read as an image ({err})") from None
    return _read_video(path, max(1, int(frame_interval)), max_frames)


def reference_tensor(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """``[T, h, w, 3]`` uint8 -> ``[3, T, height, width]`` float in [-1, 1] (resize to cover, centre crop)."""
    from soraflow.buckets.dataset import resize_crop_to_fill

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = resize_crop_to_fill(x, int(height), int(width))
    x = (x / 127.5 - 1.0).clamp_(-1.0, 1.0)
    return x.permute(1, 0, 2, 3).contiguous()


def as_reference_list(reference: Reference | Sequence[Reference] | None) -> list[Reference]:
    """Normalise the ``reference`` argument: one path/array or a list of them."""
    if reference is None:
        return []
    if isinstance(reference, (str, Path, np.ndarray)):
        return [reference]
    return list(reference)
