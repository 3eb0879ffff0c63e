"""``soraflow sample``: generate videos from a local model folder or an MLflow model URI."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

log = logging.getLogger(__name__)


def sample_command(
    params: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="The params.yaml to read (sample and buckets sections)."),
    model: str = typer.Option(
        None, "--model", "-m",
        help="Model folder or MLflow URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model (default: sample.model).",
    ),
    prompt: list[str] = typer.Option(
        None, "--prompt", help="A prompt (repeatable). Default: the sample.prompts set of params.yaml."
    ),
    num_frames: int = typer.Option(None, "--num-frames", help="Frames per loop; 1 = text-to-image (default: sample.num_frames)."),
    height: int = typer.Option(None, "--height", help="Height in pixels, a training bucket size (default: sample.height)."),
    width: int = typer.Option(None, "--width", help="Width in pixels, a training bucket size (default: sample.width)."),
    fps: float = typer.Option(None, "--fps", help="Playback fps, also the model's fps condition (default: 24 / frame_interval)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the noise; same seed, same videos (default: sample.seed)."),
    steps: int = typer.Option(None, "--steps", help="Sampling steps (default: the model's diffusion config)."),
    sampler: str = typer.Option(None, "--sampler", help="iddpm | dpm-solver (IDDPM models) | euler (rectified flow)."),
    guidance: float = typer.Option(None, "--guidance", help="Classifier-free guidance scale; 1 turns it off."),
    reference: list[Path] = typer.Option(
        None, "--reference", help="Reference image or video (repeatable; ref_id 0, 1, ... in the mask strategy)."
    ),
    mask_strategy: str = typer.Option(
        None, "--mask-strategy",
        help="Open-Sora 1.1 'loop,ref,ref_start,target_start,length,edit_ratio;...' or a recipe: "
        "image_to_video, extend, extend_forward, first_last, edit. Default with --reference: image_to_video.",
    ),
    loops: int = typer.Option(1, "--loops", help="Long video: N loops, each continuing the last frames of the previous one."),
    use_ema: bool = typer.Option(None, "--ema/--no-ema", help="Sample with the EMA weights (default: sample.use_ema)."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (default: sample.device)."),
    precision: str = typer.Option(
        None, "--precision",
        help="fp32 | bf16 | auto: the denoiser under bf16 autocast (auto: on CUDA and CPUs with native bf16; default: sample.mixed_precision).",
    ),
    min_display_size: int = typer.Option(
        None, "--min-display-size", help="Scale files up (nearest neighbour) to at least this many pixels; 0 = raw size."
    ),
    any_size: bool = typer.Option(False, "--any-size", help="Allow sizes outside the training buckets (still multiples of VAE x patch)."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder (default: sample.output)."),
    track: bool = typer.Option(
        None, "--track/--no-track",
        help="Run as the `sample` stage (Prefect flow, videos logged to MLflow). Default: track when no --prompt is given.",
    ),
) -> None:
    """Generate videos (mp4 + GIF per prompt, a grid GIF and samples.json) from a trained model."""
    from soraflow.sampling.render import load_sample_settings, render_from_config

    overrides = {
        "model": model, "prompts": list(prompt) if prompt else None, "num_frames": num_frames, "height": height,
        "width": width, "fps": fps, "seed": seed, "steps": steps, "sampler": sampler, "guidance": guidance,
        "use_ema": use_ema, "device": device, "mixed_precision": precision, "min_display_size": min_display_size,
        "output": str(output) if output is not None else None,
    }
    refs = [str(r) for r in reference] if reference else None
    if track is None:
        track = not prompt
    if track:
        from flows.sample import sample_flow

        index = sample_flow(
            params_path=str(params), overrides={k: v for k, v in overrides.items() if v is not None},
            reference=refs, mask_strategy=mask_strategy, loops=loops, any_size=any_size,
        )
    else:
        cfg, buckets = load_sample_settings(params, overrides)
        index = render_from_config(
            cfg, None if any_size else buckets, reference=refs, mask_strategy=mask_strategy, loops=loops, progress=True
        )
    out = Path(index["output"])
    for s in index["samples"]:
        typer.echo(f"{out / s['mp4']}  {s['prompt']}")
    typer.echo(f"{len(index['samples'])} samples in {out} (index: {out / 'samples.json'})")
