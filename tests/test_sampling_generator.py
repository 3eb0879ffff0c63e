"""VideoGenerator on a tiny real STDiT2 + AutoencoderKL + MiniLM: every task, determinism, errors."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from sampling_helpers import mlflow_template_db, use_mlflow_store, write_model_folder, write_vae_folder  # noqa: F401
from soraflow.config_base import ConfigError
from soraflow.sampling import CorruptModelError, ModelNotFoundError, VideoGenerator

SIZE = dict(num_frames=4, height=16, width=16, steps=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    write_vae_folder(root / "vae")
    return write_model_folder(root / "final", str(root / "vae"))


@pytest.fixture(scope="module")
def gen(model_dir):
    return VideoGenerator.from_folder(model_dir, device="cpu")


def _colour_frames(t: int, rgb: tuple[int, int, int], size: int = 16) -> np.ndarray:
    frames = np.zeros((t, size, size, 3), np.uint8)
    frames[...] = rgb
    frames[:, :, : size // 2] = 255 - np.array(rgb, np.uint8)  # a left/right split, not flat
    return frames


def test_text_to_video_shapes_and_reproducibility(gen) -> None:
    prompts = ["a red circle moving left on a black background", "a blue square moving up on a white background"]
    a = gen.generate(prompts, seed=0, **SIZE)
    assert a.shape == (2, 4, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, gen.generate(prompts, seed=0, **SIZE))
    assert not np.array_equal(a, gen.generate(prompts, seed=1, **SIZE))
    assert a.std() > 1.0  # not a constant image


def test_prompt_and_guidance_change_the_sample(gen) -> None:
    red = gen.generate_latents(["a red circle moving left on a black background"], seed=3, **SIZE)
    blue = gen.generate_latents(["a blue square moving up on a white background"], seed=3, **SIZE)
    assert red.shape == (1, 4, 4, 8, 8)
    assert (red - blue).abs().max() > 1e-3  # the caption reaches the output
    unguided = gen.generate_latents(["a red circle moving left on a black background"], seed=3, guidance=1.0, **SIZE)
    assert (red - unguided).abs().max() > 1e-3


def test_text_to_image(gen) -> None:
    img = gen.generate(["a green triangle on a gray background"], num_frames=1, height=16, width=16, steps=2)
    assert img.shape == (1, 1, 16, 16, 3)


def test_image_to_video_keeps_the_reference_latent(gen, tmp_path) -> None:
    from PIL import Image

    ref = _colour_frames(1, (200, 40, 40))[0]
    path = tmp_path / "ref.png"
    Image.fromarray(ref).save(path)
    want = gen.encode_references([ref], 16, 16)[0]  # [C, 1, 8, 8]
    for reference in ([ref], str(path)):
        z = gen.generate_latents(["a red circle moving right"], reference=reference, seed=0, **SIZE)
        torch.testing.assert_close(z[0, :, 0], want[:, 0].cpu(), rtol=0, atol=1e-6)
        assert (z[0, :, 1] - want[:, 0].cpu()).abs().max() > 1e-3  # the others are generated
    z = gen.generate_latents(["a red circle"], reference=[ref], sampler="dpm-solver", seed=0, **SIZE)
    torch.testing.assert_close(z[0, :, 0], want[:, 0].cpu(), rtol=0, atol=1e-6)


def test_extension_first_last_and_edit(gen) -> None:
    video = np.concatenate([_colour_frames(3, (30, 70, 220)), _colour_frames(3, (245, 215, 30))])
    ref = gen.encode_references([video], 16, 16)[0].cpu()  # [C, 6, 8, 8]
    # forward extension: the reference's last 2 frames open the clip
    z = gen.generate_latents(["a blue square"], reference=[video], mask_strategy="0,0,-2,0,2", seed=0, **SIZE)
    torch.testing.assert_close(z[0, :, :2], ref[:, -2:], rtol=0, atol=1e-6)
    # first-and-last frame: reference 0 first, reference 1 last
    a, b = _colour_frames(1, (220, 30, 30)), _colour_frames(1, (30, 180, 40))
    ra, rb = (gen.encode_references([x], 16, 16)[0].cpu() for x in (a, b))
    z = gen.generate_latents(["a circle"], reference=[a, b], mask_strategy="first_last", seed=0, **SIZE)
    torch.testing.assert_close(z[0, :, 0], ra[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(z[0, :, -1], rb[:, 0], rtol=0, atol=1e-6)
    # editing: every frame re-generated in the last half of the steps -> starts from the reference, ends elsewhere
    z = gen.generate_latents(["a green square"], reference=[video], mask_strategy="0,0,0,0,4,0.5", seed=0, **SIZE)
    assert z.shape == (1, 4, 4, 8, 8) and (z[0] - ref[:, :4]).abs().max() > 1e-3


def test_loops_extend_the_first_clip(gen) -> None:
    one = gen.generate_latents(["a red circle moving right"], seed=5, **SIZE)
    three = gen.generate_latents(["a red circle moving right"], seed=5, loops=3, condition_frames=1, **SIZE)
    assert three.shape == (1, 4, 4 + 2 * 3, 8, 8)
    torch.testing.assert_close(three[:, :, :4], one, rtol=0, atol=0)  # loop 0 is the plain clip
    video = gen.decode(three)
    assert video.shape == (1, 10, 16, 16, 3)


def test_bad_sizes_name_the_allowed_ones(gen) -> None:
    from soraflow.buckets.config import BucketsConfig

    with pytest.raises(ConfigError, match="multiples of 4"):
        gen.generate(["x"], num_frames=4, height=18, width=16)
    buckets = BucketsConfig(
        bucket_config={"32px": {1: [1.0, 4], 4: [1.0, 2], 16: [0.0, None]}},
        extra_resolutions={"32px": {"pixels": 1024, "aspect_ratios": ["1:1", "16:9"], "snap": 16}},
    )
    gen.buckets = buckets
    try:
        with pytest.raises(ConfigError, match=r"not a training bucket.*32x32 \(1/4 frames\)"):
            gen.generate(["x"], num_frames=4, height=16, width=16)
        with pytest.raises(ConfigError, match="num_frames=8 at 32x32.*allowed: 1/4 frames"):
            gen.generate(["x"], num_frames=8, height=32, width=32)
        assert gen.allowed_sizes()[(32, 32)] == [1, 4]
        assert gen.generate(["x"], num_frames=1, height=32, width=32, steps=1).shape == (1, 1, 32, 32, 3)
    finally:
        gen.buckets = None
    with pytest.raises(ConfigError, match="loops"):
        gen.generate(["x"], loops=2, condition_frames=4, **SIZE)
    with pytest.raises(ConfigError, match="sampler='euler'.*iddpm"):
        gen.generate(["x"], num_frames=4, height=16, width=16, sampler="euler")


def test_long_prompts_are_truncated_with_a_warning(gen, caplog) -> None:
    long = "a red circle moving left on a black background " * 6
    with caplog.at_level(logging.WARNING):
        out = gen.generate([long], **SIZE)
    assert out.shape[0] == 1
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_ema_weights_are_used(model_dir, gen) -> None:
    ema = VideoGenerator.from_folder(model_dir, device="cpu", use_ema=True, vae=gen.vae, text_encoder=gen.text_encoder)
    a = gen.generate_latents(["a red circle"], seed=0, **SIZE)
    b = ema.generate_latents(["a red circle"], seed=0, **SIZE)
    assert (a - b).abs().max() > 1e-4


def test_bad_model_references(model_dir, tmp_path, mlflow_template_db, monkeypatch) -> None:
    use_mlflow_store(tmp_path / "store", mlflow_template_db, monkeypatch)
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        VideoGenerator.from_uri(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="models:/soraflow-missing@champion"):
        VideoGenerator.from_uri("models:/soraflow-missing@champion")
    # corrupt folders: truncated weights, missing encoders.json, broken JSON, wrong channel count
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CorruptModelError, match="cannot load the model"):
        VideoGenerator.from_uri(bad)
    shutil.rmtree(bad)
    shutil.copytree(model_dir, bad)
    (bad / "encoders.json").write_text("{not json")
    with pytest.raises(CorruptModelError, match="not valid JSON"):
        VideoGenerator.from_folder(bad)
    (bad / "encoders.json").unlink()
    with pytest.raises(CorruptModelError, match="encoders.json"):
        VideoGenerator.from_folder(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptModelError, match="not a model folder"):
        VideoGenerator.from_uri(tmp_path / "empty")


def test_unreadable_references(gen, tmp_path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "broken.mp4").write_bytes(b"not a video either")
    for ref, msg in (
        (tmp_path / "broken.png", "cannot be read as an image"),
        (tmp_path / "broken.mp4", "cannot be read"),
        (tmp_path / "missing.png", "file not found"),
        (np.zeros((16, 16), np.uint8), "expected"),
    ):
        with pytest.raises(ConfigError, match=msg):
            gen.generate(["x"], reference=[ref], **SIZE)
    with pytest.raises(ConfigError, match="ref_id=1"):
        gen.generate(["x"], reference=[_colour_frames(1, (1, 2, 3))], mask_strategy="0;0,1,0,-1,1", **SIZE)


def test_encoders_json_is_read(model_dir, gen) -> None:
    enc = json.loads((model_dir / "encoders.json").read_text())
    assert gen.frame_interval == enc["frame_interval"] == 2
    assert gen.default_fps == 12.0
    assert gen.diffusion_config.resolved_steps == enc["diffusion"]["sampling_steps"]
    assert gen.text_encoder.max_length == enc["text_max_length"]


def test_bf16_sampling_runs_the_denoiser_under_autocast(gen) -> None:
    seen: list[bool] = []
    hook = gen.model.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    prompts = ["a red circle moving left on a black background", "a blue square moving up on a white background"]
    try:
        bf16 = VideoGenerator(gen.model, gen.vae, gen.text_encoder, gen.diffusion_config, mixed_precision="bf16")
        assert bf16.autocast_bf16 and not gen.autocast_bf16
        z16 = bf16.generate_latents(prompts, seed=0, **SIZE)
        assert seen and all(seen)
        seen.clear()
        z32 = gen.generate_latents(prompts, seed=0, **SIZE)
        assert seen and not any(seen)
    finally:
        hook.remove()
    assert z16.dtype == torch.float32 and torch.isfinite(z16).all()
    assert torch.equal(z16, bf16.generate_latents(prompts, seed=0, **SIZE))  # seeded: reproducible in bf16 too
    diff = (z16 - z32).abs()
    assert 0 < float(diff.mean()) < 0.02 * float(z32.std())  # bf16 rounding, not another sample
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the call


def test_bad_precision_is_a_config_error(gen) -> None:
    with pytest.raises(ConfigError, match="mixed_precision"):
        VideoGenerator(gen.model, gen.vae, gen.text_encoder, gen.diffusion_config, mixed_precision="fp16")
