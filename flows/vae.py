"""Stage ``vae``: the frozen image VAE. With ``vae.pretrained`` set, it is only checked
(reconstruction PSNR on held-out frames); otherwise the demo trains its own small
``AutoencoderKL`` on frames of the curated training clips and writes it to ``vae.demo_output``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger

from soraflow.config import load_params


@flow(name="vae", log_prints=True)
def vae_flow(params_path: str = "params.yaml") -> dict:
    import mlflow
    import torch

    from soraflow.encoders import load_vae, psnr, reconstruction_figure, train_demo_vae
    from soraflow.features.frames import sample_clip_frames
    from soraflow.tracking import stage_run

    logger = get_run_logger()
    params = load_params(params_path)
    cfg = params.vae
    clips = pd.read_parquet(Path(params.curate.output) / "clips.parquet")
    train_clips = clips[clips["split"] == "train"]
    val_clips = clips[clips["split"] == "heldout"]
    if val_clips.empty:  # tiny corpora: hold out frames of the training clips instead
        val_clips = None
    out = Path(cfg.demo_output)
    metrics_path = Path("metrics/vae.json")
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    with stage_run("vae", params, params_path=params_path):
        if cfg.pretrained is not None:
            vae = load_vae(cfg)
            frames = sample_clip_frames(val_clips if val_clips is not None else train_clips, per_clip=2)
            scores = []
            with torch.inference_mode():
                for f in frames[:256]:
                    x = torch.from_numpy(f).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1
                    scores.append(float(psnr(vae.decode(vae.encode(x))[:, :, 0], x[:, :, 0]).mean()))
            metrics = {"psnr": sum(scores) / len(scores), "trained": 0.0}
            out.mkdir(parents=True, exist_ok=True)
            (out / "pretrained.json").write_text(json.dumps({"pretrained": cfg.pretrained, **metrics}, indent=2))
            mlflow.set_tag("soraflow.vae", cfg.pretrained)
        else:
            per_clip = 4
            train_frames = sample_clip_frames(train_clips, per_clip, desc="vae frames")
            val_frames = sample_clip_frames(val_clips, 2, desc="vae val frames") if val_clips is not None else None
            result = train_demo_vae(train_frames, cfg.demo_train, out, val_frames=val_frames)
            metrics = {
                "psnr": result.psnr,
                "trained": 1.0,
                "steps": float(result.steps),
                "train_seconds": result.seconds,
                "final_loss": result.final_loss,
                "scaling_factor": result.scaling_factor,
                "train_frames": float(result.num_train_frames),
                "val_frames": float(result.num_val_frames),
                "parameters": float(result.num_parameters),
            }
            for i, loss in enumerate(result.losses):
                if i % 10 == 0 or i == len(result.losses) - 1:
                    mlflow.log_metric("vae_loss", loss, step=i)
            mlflow.log_figure(
                reconstruction_figure(result.originals, result.reconstructions, title="held-out frames: original / reconstruction"),
                "vae_reconstructions.png",
            )
            mlflow.log_artifacts(str(out), "vae")
        mlflow.log_metrics(metrics)
        metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        logger.info("VAE %s: PSNR %.2f dB on held-out frames", cfg.source, metrics["psnr"])
    return metrics


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("vae")
