"""Stage ``features``: VAE latents at each clip's bucket size and caption states, cached in
shards under ``features.output`` (see :mod:`soraflow.features.cache`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger

from soraflow.config import load_params


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@flow(name="features", log_prints=True)
def features_flow(params_path: str = "params.yaml") -> dict:
    import mlflow

    from soraflow.buckets import bucket_statistics
    from soraflow.encoders import load_text_encoder, load_vae
    from soraflow.features.cache import FeatureCache, build_feature_cache
    from soraflow.tracking import stage_run

    logger = get_run_logger()
    params = load_params(params_path)
    device = pick_device(params.features.device)
    clips = pd.read_parquet(Path(params.curate.output) / "clips.parquet")
    with stage_run("features", params, params_path=params_path):
        vae = load_vae(params.vae, device=device)
        text_encoder = load_text_encoder(params.text_encoder, device=device)
        mlflow.set_tags({"soraflow.vae": params.vae.source, "soraflow.text_encoder": params.text_encoder.pretrained})
        summary = build_feature_cache(clips, vae, text_encoder, params.buckets, params.features, params.features.output)
        mlflow.log_metrics(summary.as_metrics())
        cache = FeatureCache(params.features.output, split=None)
        table, fig = bucket_statistics(cache.index, vae_downsample=vae.downsample_factor)
        mlflow.log_table(table, "bucket_statistics.json")
        mlflow.log_figure(fig, "bucket_statistics.png")
        logger.info(
            "feature cache %s: %d samples of %d clips (%d skipped), %.1f MB in %.1f s",
            params.features.output, summary.rows, summary.clips, summary.skipped, summary.bytes / 1e6, summary.seconds,
        )
    return summary.as_metrics()


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("features")
