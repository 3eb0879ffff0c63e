"""Text-to-video sampling with a trained STDiT2: prompts (+ references) -> uint8 videos.

:class:`VideoGenerator` wires the frozen text encoder, the STDiT2, the diffusion sampler and
the per-frame VAE together (a diffusers-style pipeline: components in, ``generate`` out)::

    gen = VideoGenerator.from_uri("models:/soraflow-stdit@champion")   # or a local folder
    videos = gen.generate(["a red circle moving left on a black background"],
                          num_frames=8, height=32, width=32, seed=0)   # [B, T, H, W, 3] uint8

Every Open-Sora 1.1 task goes through the same call: text-to-video, text-to-image
(``num_frames=1``), and, with ``reference=`` and ``mask_strategy=`` (the original's
``loop,ref,ref_start,target_start,length,edit_ratio`` strings or a recipe name from
:data:`soraflow.masks.RECIPES`), image-to-video, video extension, first-and-last frame,
editing; ``loops=N`` makes long videos, each loop conditioned on the last frames of the
previous one.

Classifier-free guidance follows the training convention: caption dropout replaced the
caption states by the null caption but kept the prompt's token mask, so the unconditional
branch reads the null caption through the prompt's own mask.

Reproducibility: one CPU ``torch.Generator`` seeded with ``seed`` draws all noise of a call,
so the same prompts, seed and settings give the same videos, in this process or another
(on the same device type). A sample depends on its batch (the noise is drawn per batch).

Precision: ``mixed_precision="bf16"`` (or ``"auto"``: bf16 on CUDA and on CPUs with native
bf16 units, as ``train.mixed_precision``) runs the denoiser's forward passes under bf16
autocast, as the model was trained; the sampler's state, guidance arithmetic and the VAE stay
fp32. On the demo's 2-core AVX512-BF16 CPU a 16-prompt batch sampled 1.6-1.9x faster (the
latents differ from fp32 sampling by ~0.008 on average). ``"fp32"`` (the default) samples in
the weights' dtype.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from soraflow.config_base import ConfigError, Precision
from soraflow.precision import use_bf16_autocast
from soraflow.sampling.references import Reference, as_reference_list, load_reference_frames, reference_tensor
from soraflow.sampling.sizes import SizeRule, bucket_sizes, check_size
from soraflow.sampling.uri import ENCODERS_NAME, CorruptModelError, is_mlflow_uri, resolve_model_uri

log = logging.getLogger(__name__)

__all__ = ["IMAGE_FPS", "VideoGenerator", "latents_to_uint8", "read_encoders", "resolve_device"]

#: Values of ``mixed_precision`` (the configs' :data:`soraflow.config_base.Precision`).
PRECISIONS = get_args(Precision)
#: fps micro-condition of still images (Open-Sora's value; the feature cache uses the same).
IMAGE_FPS = 120.0
#: fps of the demo corpus sources before frame_interval subsampling (the default playback rate).
SOURCE_FPS = 24.0
EMA_NAME = "ema.safetensors"
WEIGHTS_NAME = "model.safetensors"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def latents_to_uint8(video: torch.Tensor) -> np.ndarray:
    """Decoded ``[B, 3, T, H, W]`` in [-1, 1] -> ``[B, T, H, W, 3]`` uint8."""
    x = ((video.float().clamp(-1, 1) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()


def read_encoders(model_dir: str | Path) -> dict[str, Any]:
    """``encoders.json`` of a model folder, validated (:class:`CorruptModelError` otherwise)."""
    path = Path(model_dir) / ENCODERS_NAME
    if not path.is_file():
        raise CorruptModelError(f"{model_dir}: no {ENCODERS_NAME} (the frozen encoders the model was trained with)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptModelError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise CorruptModelError(f"{path}: expected a JSON object")
    for key in ("vae", "text_encoder", "text_max_length"):
        if not doc.get(key):
            raise CorruptModelError(f"{path}: missing {key!r}")
    return doc


def _resolve_local_ref(ref: str, model_dir: Path) -> str:
    """A relative folder reference is looked up next to the model first (bundled encoders)."""
    if ref.startswith("package:"):
        return ref
    p = Path(ref)
    if not p.is_absolute() and (model_dir / p).is_dir():
        return str((model_dir / p).resolve())
    return ref


class VideoGenerator:
    """Frozen text encoder + STDiT2 + diffusion + VAE: ``generate(prompts, ...)`` -> videos."""

    def __init__(
        self,
        model: torch.nn.Module,
        vae: Any,
        text_encoder: Any,
        diffusion_config: Any = None,
        *,
        frame_interval: int = 1,
        buckets: Any = None,
        source: str = "",
        mixed_precision: str = "fp32",
    ) -> None:
        from soraflow.diffusion import DiffusionConfig, build_diffusion

        self.model = model.eval()
        self.vae = vae
        self.text_encoder = text_encoder
        self.diffusion_config = diffusion_config or DiffusionConfig()
        self.diffusion = build_diffusion(self.diffusion_config)
        self.frame_interval = int(frame_interval)
        #: Optional :class:`soraflow.buckets.BucketsConfig`: restricts sizes to the training buckets.
        self.buckets = buckets
        self.source = source
        if mixed_precision not in PRECISIONS:
            raise ConfigError(f"mixed_precision must be one of {list(PRECISIONS)}, got {mixed_precision!r}")
        self.mixed_precision = mixed_precision
        cfg = model.config
        if vae.latent_channels != cfg.in_channels:
            raise CorruptModelError(
                f"{source}: the VAE has {vae.latent_channels} latent channels, the model takes {cfg.in_channels}"
            )
        if text_encoder.caption_channels != cfg.caption_channels:
            raise CorruptModelError(
                f"{source}: the text encoder gives {text_encoder.caption_channels} channels, the model takes {cfg.caption_channels}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_folder(
        cls,
        model_dir: str | Path,
        *,
        device: str | torch.device | None = None,
        use_ema: bool = False,
        vae: Any = None,
        text_encoder: Any = None,
        buckets: Any = None,
        mixed_precision: str = "fp32",
    ) -> VideoGenerator:
        """Load a final-model folder (``config.json``, ``model.safetensors``, ``ema.safetensors``,
        ``encoders.json``). ``vae``/``text_encoder``: a loaded module or a reference that
        replaces the one in ``encoders.json``. Relative encoder folders are looked up next to
        the model first (an MLflow model bundles its VAE that way)."""
        from soraflow.diffusion import DiffusionConfig
        from soraflow.encoders import TextEncoder, VideoVAE
        from soraflow.models import load_model

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise CorruptModelError(f"{model_dir}: not a folder")
        dev = resolve_device(device)
        enc = read_encoders(model_dir)
        try:
            model = load_model(model_dir, device=dev)
            if use_ema:
                model = _load_ema(model, model_dir / EMA_NAME, dev)
        except CorruptModelError:
            raise
        except Exception as err:  # safetensors/json/pydantic/torch errors: all mean "corrupt"
            raise CorruptModelError(f"{model_dir}: cannot load the model ({type(err).__name__}: {err})") from None
        try:
            diffusion = DiffusionConfig.model_validate(enc.get("diffusion") or {})
        except Exception as err:
            raise CorruptModelError(f"{model_dir}/{ENCODERS_NAME}: bad 'diffusion' ({err})") from None
        if vae is None or isinstance(vae, (str, Path)):
            ref = _resolve_local_ref(str(vae if vae is not None else enc["vae"]), model_dir)
            vae = VideoVAE.from_pretrained(ref, scaling_factor=enc.get("vae_scaling_factor"), device=dev)
        if text_encoder is None or isinstance(text_encoder, (str, Path)):
            ref = _resolve_local_ref(str(text_encoder if text_encoder is not None else enc["text_encoder"]), model_dir)
            text_encoder = TextEncoder.from_pretrained(
                ref, max_length=int(enc["text_max_length"]), device=dev,
                hidden_layer=int(enc.get("text_hidden_layer", -1)),  # models saved before the option: the last
            )
        return cls(
            model,
            vae,
            text_encoder,
            diffusion,
            frame_interval=int(enc.get("frame_interval") or 1),
            buckets=buckets,
            source=str(model_dir),
            mixed_precision=mixed_precision,
        )

    @classmethod
    def from_uri(
        cls,
        uri: str | Path,
        *,
        device: str | torch.device | None = None,
        use_ema: bool = False,
        buckets: Any = None,
        dst_path: str | Path | None = None,
        **kwargs: Any,
    ) -> VideoGenerator:
        """Load from a local folder or an MLflow URI (``models:/NAME@ALIAS``,
        ``models:/NAME/VERSION``, ``runs:/ID/model``); see :mod:`soraflow.sampling.uri`.

        An MLflow model is downloaded into ``dst_path``, or, without one, into a temporary
        folder that is removed once everything is loaded (each call used to leave a copy behind).
        """
        with contextlib.ExitStack() as stack:
            if dst_path is None and is_mlflow_uri(str(uri).strip()):
                dst_path = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="soraflow-model-", ignore_cleanup_errors=True)
                )
            folder = resolve_model_uri(uri, dst_path=dst_path)
            gen = cls.from_folder(folder, device=device, use_ema=use_ema, buckets=buckets, **kwargs)
        gen.source = str(uri)
        return gen

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def autocast_bf16(self) -> bool:
        """Whether the denoiser runs under bf16 autocast (``mixed_precision`` on this device)."""
        return use_bf16_autocast(self.mixed_precision, self.device)

    @property
    def size_rule(self) -> SizeRule:
        pt, ph, pw = self.model.config.patch_size
        f = self.vae.downsample_factor
        return SizeRule(spatial_multiple=int(np.lcm(f * ph, f * pw)), frame_multiple=int(pt))

    @property
    def default_fps(self) -> float:
        """Playback/conditioning fps when none is given: 24 / frame_interval (the training clips' rate)."""
        return SOURCE_FPS / self.frame_interval

    def allowed_sizes(self) -> dict[tuple[int, int], list[int]] | None:
        """``{(H, W): frame counts}`` of the training buckets, or None when any multiple is allowed."""
        return bucket_sizes(self.buckets) if self.buckets is not None else None

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise :class:`ConfigError` naming the allowed sizes when this size cannot be sampled."""
        check_size(num_frames, height, width, self.size_rule, self.buckets)

    # ------------------------------------------------------------------ encoders
    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption states ``[B, L, C]`` and token mask ``[B, L]`` (long prompts truncated with a warning)."""
        return self.text_encoder.encode(list(prompts))

    def encode_references(self, reference: Reference | Sequence[Reference] | None, height: int, width: int) -> list[torch.Tensor]:
        """Each reference as latents ``[C, T_ref, h, w]`` at the sample size."""
        out = []
        for ref in as_reference_list(reference):
            frames = load_reference_frames(ref, self.frame_interval)
            x = reference_tensor(frames, height, width)[None].to(self.vae.device)
            out.append(self.vae.encode(x)[0].to(self.device))
        return out

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents ``[B, C, T, h, w]`` -> ``[B, T, H, W, 3]`` uint8."""
        return latents_to_uint8(self.vae.decode(latents.to(self.vae.device)))

    # ------------------------------------------------------------------ sampling
    def generate_latents(
        self,
        prompts: Sequence[str],
        *,
        num_frames: int,
        height: int,
        width: int,
        fps: float | None = None,
        seed: int = 0,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        reference: Reference | Sequence[Reference] | None = None,
        mask_strategy: str | None = None,
        loops: int = 1,
        condition_frames: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Sample latents ``[B, C, T_total, h, w]`` (float32, CPU) for ``prompts``.

        ``num_frames`` frames per loop; ``T_total = num_frames + (loops - 1) * (num_frames - k)``
        with ``k = condition_frames`` (default ``max(1, num_frames // 4)``) frames of overlap.
        ``reference``: paths or uint8 arrays, the same list for every prompt (``ref_id`` indexes
        it); with a reference and no ``mask_strategy`` the first reference frame starts the
        clip (image-to-video). ``mask_strategy``: a strategy string or a name in
        :data:`soraflow.masks.RECIPES`. ``steps``/``sampler``/``guidance``: None = the
        model's diffusion config.
        """
        from soraflow.masks import RECIPES, append_loop_reference, apply_mask_strategy, parse_mask_strategy, stitch_loops
        from soraflow.diffusion.schedule import randn

        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("generate needs at least one prompt")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ConfigError(f"prompt {i}: must be a non-empty string, got {p!r}")
        self.check_size(num_frames, height, width)
        if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
            raise ConfigError(f"sample.loops: must be an integer >= 1, got {loops!r}")
        k = condition_frames if condition_frames is not None else max(1, num_frames // 4)
        if loops > 1 and not 1 <= k < num_frames:
            raise ConfigError(
                f"sample.loops={loops}: each loop keeps {k} frames of the previous one; needs 1 <= condition_frames < num_frames={num_frames}"
            )
        from soraflow.diffusion.config import SAMPLERS_BY_TYPE

        if sampler is not None and sampler not in SAMPLERS_BY_TYPE[self.diffusion_config.type]:
            raise ConfigError(
                f"sample.sampler={sampler!r} does not work with this model's {self.diffusion_config.type} diffusion; "
                f"choose one of {list(SAMPLERS_BY_TYPE[self.diffusion_config.type])}"
            )
        if steps is not None and (isinstance(steps, bool) or int(steps) < 1):
            raise ConfigError(f"sample.steps: must be >= 1, got {steps!r}")
        if seed is None or int(seed) < 0:
            raise ConfigError(f"sample.seed: must be an integer >= 0, got {seed!r}")
        if mask_strategy is not None and mask_strategy.strip() in RECIPES:
            mask_strategy = RECIPES[mask_strategy.strip()]
        refs = self.encode_references(reference, height, width)
        if refs and not (mask_strategy or "").strip():
            mask_strategy = RECIPES["image_to_video"]
        parse_mask_strategy(mask_strategy)  # fail early on a bad string

        b = len(prompts)
        device = self.device
        f = self.vae.downsample_factor
        shape = (b, self.model.config.in_channels, num_frames, height // f, width // f)
        y, mask = self.encode_prompts(prompts)
        y, mask = y.to(device), mask.to(device)
        y_null = self.model.null_caption(b, y.shape[1])[0].to(device=device, dtype=y.dtype)
        cond_fps = IMAGE_FPS if num_frames == 1 else float(fps or self.default_fps)
        model_kwargs = {
            "y": y,
            "mask": mask,
            "height": torch.full((b,), float(height), device=device),
            "width": torch.full((b,), float(width), device=device),
            "num_frames": torch.full((b,), float(num_frames), device=device),
            "fps": torch.full((b,), cond_fps, device=device),
        }
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        bf16 = self.autocast_bf16
        sample_refs: list[list[torch.Tensor]] = [list(refs) for _ in range(b)]
        strategies: list[str | None] = [mask_strategy] * b
        clips = []
        for loop_i in range(loops):
            noise = randn(shape, generator, device)
            x_cond = x_mask = None
            if any(s for s in strategies):
                x_cond, x_mask = apply_mask_strategy(noise, sample_refs, strategies, loop_i)
                if bool((x_mask == 1).all()):
                    x_cond = x_mask = None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # the model's outputs are cast to fp32 before guidance and the sampler's update
                latents = self.diffusion.sample(
                    self.model,
                    shape,
                    model_kwargs,
                    y_null=y_null,
                    mask_null=mask,  # the training convention: null states read through the prompt's mask
                    guidance_scale=guidance,
                    steps=steps,
                    sampler=sampler,
                    generator=generator,
                    noise=noise,
                    x_cond=x_cond,
                    x_mask=x_mask,
                    progress=progress,
                )
            clips.append(latents.float())
            if loop_i + 1 < loops:
                for j in range(b):
                    sample_refs[j], strategies[j] = append_loop_reference(
                        sample_refs[j], strategies[j], latents[j], loop_i + 1, k
                    )
        out = stitch_loops(clips, k, frame_dim=2) if loops > 1 else clips[0]
        return out.cpu()

    def generate(
        self,
        prompts: Sequence[str],
        *,
        num_frames: int,
        height: int,
        width: int,
        fps: float | None = None,
        seed: int = 0,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        reference: Reference | Sequence[Reference] | None = None,
        mask_strategy: str | None = None,
        loops: int = 1,
        condition_frames: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Videos ``[B, T, H, W, 3]`` uint8 for ``prompts``; see :meth:`generate_latents`."""
        latents = self.generate_latents(
            prompts,
            num_frames=num_frames,
            height=height,
            width=width,
            fps=fps,
            seed=seed,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            reference=reference,
            mask_strategy=mask_strategy,
            loops=loops,
            condition_frames=condition_frames,
            progress=progress,
        )
        return self.decode(latents)


def _load_ema(model: torch.nn.Module, path: Path, device: torch.device) -> torch.nn.Module:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CorruptModelError(f"{path.parent}: use_ema is set but there is no {path.name}")
    state = load_file(str(path), device=str(device))
    model.load_state_dict(state, strict=True)
    return model.eval()
