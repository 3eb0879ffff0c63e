"""Demo VAE training: PSNR definition, a short real training run, save/reload, the figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from soraflow.encoders import (
    VAEDemoTrainConfig,
    VideoVAE,
    frames_to_uint8_list,
    psnr,
    reconstruction_figure,
    synthetic_frames,
    train_demo_vae,
)

TINY = dict(
    block_out_channels=[8, 16, 16],
    norm_num_groups=4,
    image_size=16,
    resize_short_side=None,
    batch_size=8,
    lr=3e-3,
    warmup_steps=5,
    steps=60,
    init_logvar=-10.0,
    seed=3,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions: one thread is as fast, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_psnr_closed_form() -> None:
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] += 0.1  # mse 0.01 -> 10 log10(4 / 0.01)
    y[1, :, :2] = 1.0  # half the pixels off by 1 -> mse 0.5 -> 10 log10(4 / 0.5)
    got = psnr(y, x)
    expected = torch.tensor([10 * math.log10(4 / 0.01), 10 * math.log10(8.0)], dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    assert abs(float(psnr(y[:1] * 127.5, x[:1], data_range=255.0)[0]) - 10 * math.log10(255**2 / 162.5625)) < 1e-9
    assert float(psnr(x, x)[0]) > 100  # identical: finite and huge
    with pytest.raises(ValueError):
        psnr(x, x[:1])


def test_frame_inputs_are_normalised() -> None:
    hwc = synthetic_frames(3, (12, 20), seed=1)
    as_list = frames_to_uint8_list(list(hwc))
    assert [tuple(f.shape) for f in as_list] == [(3, 12, 20)] * 3
    chw_float = torch.from_numpy(hwc).permute(0, 3, 1, 2).float() / 127.5 - 1
    again = frames_to_uint8_list(chw_float)
    assert all(torch.equal(a, b) for a, b in zip(as_list, again))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        frames_to_uint8_list(chw_float * 3)


def test_prepare_frames_resizes_and_crops() -> None:
    from soraflow.encoders.vae_train import prepare_frames

    frames = [synthetic_frames(1, (90, 160), seed=3)[0], synthetic_frames(1, (20, 20), seed=4)[0]]
    cfg = VAEDemoTrainConfig(image_size=32, resize_short_side=36)
    out = prepare_frames(frames, cfg)
    # 90x160 -> 36x64; 20x20 -> 36x36 (upscaled); then cropped to multiples of 4
    assert [tuple(f.shape) for f in out] == [(3, 36, 64), (3, 36, 36)]
    assert all(f.dtype == torch.uint8 for f in out)
    # A plain frame keeps its colour through the resize.
    flat = np.full((1, 40, 80, 3), (200, 30, 60), np.uint8)
    (small,) = prepare_frames(flat, VAEDemoTrainConfig(image_size=16, resize_short_side=20))
    assert tuple(small.shape) == (3, 20, 40) and (small[:, 0, 0].tolist() == [200, 30, 60])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    frames = synthetic_frames(40, 16, seed=0, backgrounds=("plain",))
    # Frames of another size (not a multiple of 4) must be cropped to fit, and work too.
    odd = synthetic_frames(4, (18, 22), seed=1, backgrounds=("plain",))
    out = tmp_path_factory.mktemp("demo_vae")
    cfg = VAEDemoTrainConfig(**TINY)
    result = train_demo_vae(list(frames) + list(odd), cfg, out, progress=False)
    return cfg, result


def test_training_reduces_loss_and_saves_a_loadable_vae(trained) -> None:
    cfg, r = trained
    assert r.steps == cfg.steps and len(r.losses) == cfg.steps
    first, last = np.mean(r.mse[:10]), np.mean(r.mse[-10:])
    assert last < 0.8 * first, (first, last)
    assert r.num_val_frames == round(0.1 * 44) and r.num_train_frames == 44 - r.num_val_frames
    assert r.downsample_factor == 4 and r.latent_channels == 4
    saved = json.loads((r.path / "config.json").read_text())
    assert saved["scaling_factor"] == pytest.approx(1 / r.latent_std)
    assert saved["shift_factor"] == pytest.approx(r.latent_mean)
    info = json.loads((r.path / "training.json").read_text())
    assert info["psnr"] == pytest.approx(r.psnr) and info["config"]["steps"] == cfg.steps
    # Reload through the loading code: same reconstructions, same PSNR.
    vae = VideoVAE.from_pretrained(str(r.path))
    assert vae.scaling_factor == pytest.approx(1 / r.latent_std)
    originals = torch.stack([o for o in r.originals if o.shape == r.originals[0].shape])
    recons = torch.stack([x for o, x in zip(r.originals, r.reconstructions) if o.shape == r.originals[0].shape])
    again = vae.decode_frames(vae.encode_frames(originals))
    torch.testing.assert_close(again, recons, atol=1e-5, rtol=1e-5)
    if len(originals) == r.num_val_frames:
        assert float(psnr(again, originals).mean()) == pytest.approx(r.psnr, abs=1e-3)
    # 60 tiny steps learn little, but clearly more than "predict grey".
    assert r.psnr > float(psnr(torch.zeros_like(originals), originals).mean()) + 1


def test_the_same_training_writes_the_same_folder(tmp_path) -> None:
    """Byte for byte (DVC hashes ``models/vae``; a changed hash re-runs every later stage)."""
    frames = list(synthetic_frames(24, 16, seed=2, backgrounds=("plain",)))
    cfg = VAEDemoTrainConfig(**{**TINY, "steps": 10})
    folders = [train_demo_vae(frames, cfg, tmp_path / name, progress=False).path for name in ("a", "b")]
    files = [{p.name: p.read_bytes() for p in sorted(f.iterdir())} for f in folders]
    assert set(files[0]) == {"config.json", "diffusion_pytorch_model.safetensors", "training.json"}
    assert files[0] == files[1]


def test_scaled_latents_have_unit_scale(trained) -> None:
    _, r = trained
    vae = VideoVAE.from_pretrained(str(r.path))
    frames = torch.from_numpy(synthetic_frames(16, 16, seed=0, backgrounds=("plain",))).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = vae.encode(frames.permute(1, 0, 2, 3)[None])  # one 16-frame video
    assert z.shape == (1, 4, 16, 4, 4)
    assert 0.5 < float(z.std()) < 2.0 and abs(float(z.mean())) < 0.5


def test_per_channel_stats_give_unit_variance_channels(tmp_path) -> None:
    """per_channel_stats: every latent channel of the training frames comes out at mean 0, std 1."""
    frames = synthetic_frames(24, 16, seed=1, backgrounds=("plain", "gradient"))
    cfg = VAEDemoTrainConfig(**{**TINY, "steps": 20, "per_channel_stats": True, "val_fraction": 0.2})
    r = train_demo_vae(frames, cfg, tmp_path / "vae", progress=False)
    saved = json.loads((r.path / "config.json").read_text())
    assert len(saved["latents_mean"]) == len(saved["latents_std"]) == 4 and saved["scaling_factor"] == 1.0
    vae = VideoVAE.from_pretrained(str(r.path))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = vae.encode_frames(x).transpose(0, 1).flatten(1)  # [C, N*h*w]
    # the statistics come from the training frames (80% of these); all frames are close
    assert z.mean(dim=1).abs().max() < 0.25
    assert ((z.std(dim=1) - 1).abs() < 0.25).all(), z.std(dim=1)


def test_training_is_deterministic(tmp_path) -> None:
    frames = synthetic_frames(12, 16, seed=2, backgrounds=("plain",))
    cfg = VAEDemoTrainConfig(**{**TINY, "steps": 4})
    a = train_demo_vae(frames, cfg, tmp_path / "a", progress=False)
    b = train_demo_vae(frames, cfg, tmp_path / "b", progress=False)
    assert a.losses == b.losses and a.psnr == b.psnr


def test_bf16_training_learns_and_saves_plain_fp32_weights(trained, tmp_path) -> None:
    """mixed_precision=bf16: autocast + channels-last steps, the same recipe's loss curve to
    bf16 rounding, and an ordinary contiguous fp32 VAE on disk."""
    cfg, fp32 = trained
    frames = synthetic_frames(40, 16, seed=0, backgrounds=("plain",))
    odd = synthetic_frames(4, (18, 22), seed=1, backgrounds=("plain",))
    r = train_demo_vae(list(frames) + list(odd), cfg.model_copy(update={"mixed_precision": "bf16"}), tmp_path, progress=False)
    assert r.losses != fp32.losses  # another compute path ...
    assert abs(np.mean(r.mse[-10:]) - np.mean(fp32.mse[-10:])) < 0.25 * np.mean(fp32.mse[-10:])  # ... the same learning
    assert np.mean(r.mse[-10:]) < 0.8 * np.mean(r.mse[:10])
    from safetensors.torch import load_file

    weights = load_file(str(r.path / "diffusion_pytorch_model.safetensors"))
    assert all(w.dtype == torch.float32 and w.is_contiguous() for w in weights.values())
    vae = VideoVAE.from_pretrained(str(r.path))
    originals = torch.stack([o for o in r.originals if o.shape == r.originals[0].shape])
    recons = torch.stack([x for o, x in zip(r.originals, r.reconstructions) if o.shape == r.originals[0].shape])
    torch.testing.assert_close(vae.decode_frames(vae.encode_frames(originals)), recons, atol=1e-5, rtol=1e-5)


def test_fused_kernels_learn_the_same_and_save_plain_fp32_weights(trained, tmp_path) -> None:
    """fused_kernels: channels-last fp32 convolutions and the fused AdamW kernel, another
    rounding of the same recipe; the saved VAE is ordinary contiguous fp32 weights."""
    cfg, plain = trained
    frames = synthetic_frames(40, 16, seed=0, backgrounds=("plain",))
    odd = synthetic_frames(4, (18, 22), seed=1, backgrounds=("plain",))
    r = train_demo_vae(list(frames) + list(odd), cfg.model_copy(update={"fused_kernels": True}), tmp_path, progress=False)
    assert r.losses != plain.losses  # another compute path ...
    assert abs(np.mean(r.mse[-10:]) - np.mean(plain.mse[-10:])) < 0.25 * np.mean(plain.mse[-10:])  # ... the same learning
    from safetensors.torch import load_file

    weights = load_file(str(r.path / "diffusion_pytorch_model.safetensors"))
    assert all(w.dtype == torch.float32 and w.is_contiguous() for w in weights.values())
    assert VideoVAE.from_pretrained(str(r.path)).scaling_factor == pytest.approx(1 / r.latent_std)


def test_reconstruction_figure(trained, tmp_path) -> None:
    _, r = trained
    fig = reconstruction_figure(r.originals, r.reconstructions, max_items=3)
    assert len(fig.axes) == 6
    assert fig.axes[3].get_xlabel().endswith("dB")
    fig.savefig(tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 1000


@pytest.mark.slow
def test_default_demo_vae_reaches_target_psnr(tmp_path) -> None:
    """The params.yaml demo recipe on frames of the demo's kind: >= 28 dB held-out already at
    half its steps (1500 of 3000: 30.6 dB in 2.5 min on 2 cores; the full recipe, 34.4 dB, is
    measured by every `make demo` in metrics/vae.json and took 4.5 min here).

    Frames come from the demo corpus renderer at the training scale (32 px). The image-to-video
    target needs >= 25 dB after the VAE round trip, so 28 dB leaves the diffusion model room.
    """
    from pathlib import Path

    from soraflow.config import load_params
    from soraflow.demo.render import sample_demo_frames

    cfg = load_params(Path(__file__).resolve().parents[1] / "params.yaml").vae.demo_train
    cfg = cfg.model_copy(update={"steps": cfg.steps // 2})
    frames = sample_demo_frames(300, 32, seed=5)
    r = train_demo_vae(frames, cfg, tmp_path / "vae", progress=False)
    assert r.psnr >= 28.0, r.psnr
    assert np.mean(r.mse[-100:]) < 0.05 * np.mean(r.mse[:20])
    vae = VideoVAE.from_pretrained(str(r.path))
    assert vae.downsample_factor == 2 ** (len(cfg.block_out_channels) - 1)
    assert vae.latent_channels == cfg.latent_channels
    originals = torch.stack(r.originals)
    z = vae.encode(originals.permute(1, 0, 2, 3)[None])
    assert 0.5 < float(z.std()) < 2.0
