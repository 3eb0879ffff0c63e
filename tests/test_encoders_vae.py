"""VideoVAE: a tiny AutoencoderKL (sampling_helpers), saved, and loaded by path through soraflow's code."""

from __future__ import annotations

import pytest
import torch

from sampling_helpers import tiny_autoencoder
from soraflow.config_base import ConfigError, parse_model
from soraflow.encoders import EncoderNotFoundError, VAEConfig, VideoVAE, load_vae
from soraflow.encoders.config import VAEDemoTrainConfig


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tiny_vae")
    tiny_autoencoder(shift=0.25).save_pretrained(folder)
    return folder


def _video(b: int = 2, t: int = 5, h: int = 16, w: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def test_encode_decode_shapes_and_frozen(tiny_vae_dir) -> None:
    vae = load_vae(VAEConfig(pretrained=str(tiny_vae_dir), micro_batch_frames=3))
    assert vae.downsample_factor == 2 and vae.latent_channels == 4
    assert vae.scaling_factor == 0.5 and vae.shift_factor == 0.25
    video = _video()
    z = vae.encode(video)
    assert z.shape == (2, 4, 5, 8, 6) and z.dtype == torch.float32
    x = vae.decode(z)
    assert x.shape == video.shape and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert not z.requires_grad and not x.requires_grad
    assert not any(p.requires_grad for p in vae.parameters())
    container = torch.nn.Sequential(vae)
    container.train()
    assert not vae.module.training
    assert vae.latent_size(16, 32, 64) == (16, 16, 32)
    with pytest.raises(ValueError, match="multiple"):
        vae.encode(_video(h=15))


def test_latents_are_scaled_shifted_posterior_means_per_frame(tiny_vae_dir) -> None:
    ref = tiny_autoencoder(shift=0.25)
    vae = VideoVAE.from_pretrained(str(tiny_vae_dir), micro_batch_frames=4)
    video = _video(b=2, t=3)
    z = vae.encode(video)
    for b in range(2):
        for t in range(3):
            with torch.no_grad():
                mean = ref.encode(video[b : b + 1, :, t]).latent_dist.mean
            torch.testing.assert_close(z[b, :, t], ((mean - 0.25) * 0.5)[0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        expected = ref.decode(z[:, :, 1] / 0.5 + 0.25).sample.clamp(-1, 1)
    torch.testing.assert_close(vae.decode(z)[:, :, 1], expected, atol=1e-5, rtol=1e-5)


def test_micro_batching_does_not_change_results(tiny_vae_dir) -> None:
    video = _video(b=2, t=4)
    whole = VideoVAE.from_pretrained(str(tiny_vae_dir), micro_batch_frames=0)
    small = VideoVAE.from_pretrained(str(tiny_vae_dir), micro_batch_frames=3)
    torch.testing.assert_close(small.encode(video), whole.encode(video), atol=1e-5, rtol=1e-5)
    z = whole.encode(video)
    torch.testing.assert_close(small.decode(z), whole.decode(z), atol=1e-5, rtol=1e-5)


def test_posterior_sample_and_scaling_override(tiny_vae_dir) -> None:
    video = _video(b=1, t=2)
    mean_vae = load_vae(VAEConfig(pretrained=str(tiny_vae_dir)))
    sampler = load_vae(VAEConfig(pretrained=str(tiny_vae_dir), sample_posterior=True))
    a = sampler.encode(video, generator=torch.Generator().manual_seed(1))
    b = sampler.encode(video, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, mean_vae.encode(video))
    override = load_vae(VAEConfig(pretrained=str(tiny_vae_dir), scaling_factor=0.18215))
    torch.testing.assert_close(override.encode(video) / 0.18215, mean_vae.encode(video) / 0.5)


def test_dtype_and_demo_output_fallback(tiny_vae_dir) -> None:
    vae = load_vae(VAEConfig(pretrained=None, demo_output=str(tiny_vae_dir), dtype="bfloat16"))
    assert vae.dtype == torch.bfloat16
    z = vae.encode(_video(b=1, t=2))
    assert z.dtype == torch.float32 and torch.isfinite(z).all()


def test_missing_vae_fails_fast(tmp_path) -> None:
    with pytest.raises(EncoderNotFoundError, match="run the `vae` stage"):
        load_vae(VAEConfig(pretrained=None, demo_output=str(tmp_path / "nope")))
    with pytest.raises(EncoderNotFoundError, match="not in the Hugging Face cache"):
        load_vae(VAEConfig(pretrained="stabilityai/sd-vae-ft-ema-not-cached-here"))


def test_config_validation() -> None:
    assert VAEConfig().source == "models/vae"
    assert VAEConfig(pretrained="x").source == "x"
    assert VAEDemoTrainConfig().downsample_factor == 4
    with pytest.raises(ConfigError, match="norm_num_groups"):
        parse_model(VAEConfig, {"demo_train": {"block_out_channels": [12, 24], "norm_num_groups": 8}}, "vae")
    with pytest.raises(ConfigError, match="micro_batch_frames"):
        parse_model(VAEConfig, {"micro_batch_frames": -1}, "vae")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_model(VAEConfig, {"scale": 0.1}, "vae")


def test_per_channel_latent_statistics(tmp_path) -> None:
    """A config with diffusers' latents_mean / latents_std standardises each channel on its own,
    and decode inverts it exactly."""
    ref = tiny_autoencoder()
    mean, std = [0.1, -0.2, 0.3, 0.0], [0.5, 1.0, 2.0, 4.0]
    ref.register_to_config(scaling_factor=1.0, latents_mean=mean, latents_std=std)
    ref.save_pretrained(tmp_path / "vae")
    vae = load_vae(VAEConfig(pretrained=str(tmp_path / "vae")))
    video = _video(b=1, t=2)
    z = vae.encode(video)
    with torch.no_grad():
        raw = ref.encode(video[:, :, 0]).latent_dist.mean[0]
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    torch.testing.assert_close(z[0, :, 0], (raw - m) / s, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        expected = ref.decode((z[:, :, 0] * s + m)).sample.clamp(-1, 1)
    torch.testing.assert_close(vae.decode(z)[:, :, 0], expected, atol=1e-5, rtol=1e-5)

    broken = tiny_autoencoder()
    broken.register_to_config(latents_mean=mean, latents_std=None)
    broken.save_pretrained(tmp_path / "broken")
    with pytest.raises(ValueError, match="latents_mean"):
        load_vae(VAEConfig(pretrained=str(tmp_path / "broken")))
