"""Frozen encoders: the per-frame video VAE and the caption text encoder (issue 6).

Names are imported lazily (PEP 562), so ``soraflow.encoders.config`` (read by
``soraflow.config``) loads without torch; diffusers and transformers load only with a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers and IDEs
    from soraflow.encoders.config import TextEncoderConfig, VAEConfig, VAEDemoTrainConfig
    from soraflow.encoders.figures import reconstruction_figure
    from soraflow.encoders.resolve import EncoderNotFoundError, resolve_pretrained
    from soraflow.encoders.synthetic import synthetic_frames
    from soraflow.encoders.text import TextEncoder, load_text_encoder
    from soraflow.encoders.vae import VideoVAE, load_autoencoder_kl, load_vae
    from soraflow.encoders.vae_train import (
        VAETrainResult,
        build_demo_autoencoder,
        frames_to_uint8_list,
        prepare_frames,
        psnr,
        train_demo_vae,
    )

_EXPORTS = {
    "TextEncoderConfig": "config",
    "VAEConfig": "config",
    "VAEDemoTrainConfig": "config",
    "reconstruction_figure": "figures",
    "EncoderNotFoundError": "resolve",
    "resolve_pretrained": "resolve",
    "TextEncoder": "text",
    "load_text_encoder": "text",
    "VideoVAE": "vae",
    "load_autoencoder_kl": "vae",
    "load_vae": "vae",
    "VAETrainResult": "vae_train",
    "build_demo_autoencoder": "vae_train",
    "frames_to_uint8_list": "vae_train",
    "prepare_frames": "vae_train",
    "psnr": "vae_train",
    "train_demo_vae": "vae_train",
    "synthetic_frames": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'soraflow.encoders' has no attribute {name!r}")
    return getattr(importlib.import_module(f"soraflow.encoders.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
