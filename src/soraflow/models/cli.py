"""``soraflow model ...``: inspect presets and convert Open-Sora checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="STDiT2 models: sizes, FLOPs, checkpoint conversion.", no_args_is_help=True)


@app.command("info")
def info(
    preset: str = typer.Option("STDiT2-XL/2", "--preset", help="Preset name (STDiT2-T/2, -S/2, -B/2, -XL/2)."),
    frames: int = typer.Option(16, "--frames", help="Latent frames T (= video frames for the per-frame 2-D VAE)."),
    height: int = typer.Option(30, "--height", help="Latent height H (pixels / 8; 30 = 240p)."),
    width: int = typer.Option(53, "--width", help="Latent width W (pixels / 8; 53 = 424 px)."),
    caption_channels: int = typer.Option(4096, "--caption-channels", help="Text encoder width (T5-XXL 4096, MiniLM 384)."),
    caption_len: int = typer.Option(200, "--caption-len", help="Caption tokens (T5 in Open-Sora 1.1: 200)."),
    backward: bool = typer.Option(False, "--backward", help="Also count the backward pass (training step)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Print a preset's parameter count and forward FLOPs per sample at a latent size.

    FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on the meta device
    (no memory is allocated; attention matmuls are included).
    """
    from soraflow.models.config import preset_config
    from soraflow.models.flops import count_flops, count_parameters

    config = preset_config(preset, caption_channels=caption_channels, caption_max_length=caption_len)
    params = count_parameters(config)
    fwd = count_flops(config, frames, height, width, batch=1, caption_len=caption_len)
    pt, ph, pw = config.patch_size
    tokens = -(-frames // pt) * -(-height // ph) * -(-width // pw)
    out = {
        "preset": preset,
        "config": config.model_dump(mode="json"),
        "parameters": params["total"],
        "trainable_parameters": params["trainable"],
        "buffer_elements": params["buffers"],
        "latent": [frames, height, width],
        "tokens_per_sample": tokens,
        "forward_flops_per_sample": fwd["total"],
        "flops_counted_on": "meta device, torch.utils.flop_counter.FlopCounterMode",
    }
    if backward:
        out["train_step_flops_per_sample"] = count_flops(
            config, frames, height, width, batch=1, caption_len=caption_len, backward=True
        )["total"]
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo(f"{preset}: width {config.hidden_size}, depth {config.depth}, heads {config.num_heads}, "
               f"caption {caption_channels} ch x {caption_len} tokens")
    typer.echo(f"parameters: {params['total']:,} ({params['total'] / 2**20:.2f} M as 2^20; "
               f"trainable {params['trainable']:,}; null-caption buffer {params['buffers']:,} values)")
    typer.echo(f"latent {frames}x{height}x{width} (pixels ~{frames}x{height * 8}x{width * 8}): {tokens:,} tokens per sample")
    typer.echo(f"forward FLOPs per sample: {fwd['total']:,} ({fwd['total'] / 1e12:.3f} TFLOP; counted on meta)")
    if backward:
        total = out["train_step_flops_per_sample"]
        typer.echo(f"forward+backward FLOPs per sample: {total:,} ({total / 1e12:.3f} TFLOP)")


@app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="Open-Sora 1.1 STDiT2 checkpoint (.pth/.pt/.bin via torch.load(weights_only=True), or .safetensors)."),
    dst: Path = typer.Argument(..., help="Model folder to write (config.json + model.safetensors)."),
    legacy_rope_before_norm: bool = typer.Option(
        True,
        "--legacy-rope-before-norm/--no-legacy-rope-before-norm",
        help="Keep 1.1's order (RoPE, then q/k norm), which its weights were trained with.",
    ),
    num_heads: int = typer.Option(None, "--num-heads", help="Heads, only if the checkpoint has neither q/k norm nor rope.freqs."),
    dtype: str = typer.Option("fp32", "--dtype", help="Stored weight dtype: fp32, bf16 or fp16."),
) -> None:
    """Convert an Open-Sora STDiT2 checkpoint into a soraflow model folder."""
    import torch

    from soraflow.models.convert import convert_opensora_checkpoint

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in dtypes:
        raise typer.BadParameter(f"--dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    config = convert_opensora_checkpoint(
        src, dst, legacy_rope_before_norm=legacy_rope_before_norm, num_heads=num_heads, dtype=dtypes[dtype]
    )
    typer.echo(
        f"wrote {dst}: width {config.hidden_size}, depth {config.depth}, heads {config.num_heads}, "
        f"caption {config.caption_channels}x{config.caption_max_length}, legacy_rope_before_norm={config.legacy_rope_before_norm}"
    )
