"""``eval`` section of params.yaml: the attribute classifier, the held-out prompts, the metrics.

Sizes, sampler, steps and guidance left ``null`` fall back to the ``sample`` section (the size
the model is sampled at everywhere else), so evaluation measures the model as it is used.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from soraflow.config_base import Precision, StrictModel


class EvalClassifierConfig(StrictModel):
    """The in-domain attribute classifier (colour, shape, motion direction) and its training.

    It is trained on the curated TRAIN clips and validated on the HELD-OUT clips, at the
    evaluation size; its held-out accuracy is the ceiling of every prompt-following figure.
    """

    #: Width of the first conv layer (later layers are 2x); features are ``feature_dim`` wide.
    width: int = Field(16, ge=4, le=512)
    #: Width of the per-frame features: the FID/KID features on the demo.
    feature_dim: int = Field(64, ge=4, le=2048)
    #: Passes over the training clips; one epoch draws ``windows_per_clip`` random windows per clip.
    epochs: int = Field(20, ge=1, le=10_000)
    windows_per_clip: int = Field(8, ge=1, le=1024)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    #: Augmentation probabilities. Horizontal flip swaps left/right; vertical flip swaps up/down
    #: (never applied to triangles, whose flipped form the corpus never shows); time reversal
    #: swaps both; freeze repeats one frame (label "none": a still scene).
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.5, ge=0.0, le=1.0)
    reverse: float = Field(0.5, ge=0.0, le=1.0)
    freeze: float = Field(0.1, ge=0.0, le=1.0)
    #: Deterministic windows per held-out clip for the validation accuracy.
    val_windows_per_clip: int = Field(4, ge=1, le=1024)
    seed: int = Field(0, ge=0)
    output: str = "models/eval_classifier"
    #: Torch threads for the classifier training (null: torch's default). One is fastest for
    #: a network this small, and much faster when other work shares the cores.
    threads: int | None = Field(1, ge=1, le=1024)


class EvalConfig(StrictModel):
    """What the ``evaluate`` stage measures and where it writes it."""

    #: The model to evaluate: a folder or an MLflow URI; null = ``sample.model``.
    model: str | None = None
    #: Evaluation size; null = the ``sample`` section's (a training bucket).
    num_frames: int | None = Field(None, ge=1, le=1024)
    height: int | None = Field(None, ge=8, le=8192)
    width: int | None = Field(None, ge=8, le=8192)
    #: Held-out prompts: captions of held-out clips never seen as a training caption (see
    #: ``soraflow.evaluation.prompts``); at most this many, each sampled ``samples_per_prompt`` times.
    num_prompts: int = Field(32, ge=1, le=100_000)
    samples_per_prompt: int = Field(4, ge=1, le=1024)
    #: Real windows per held-out clip for FID/KID and the real references.
    real_windows_per_clip: int = Field(4, ge=1, le=1024)
    #: Sampling; null = the ``sample`` section's (which in turn defers to the model's diffusion).
    sampler: Literal["iddpm", "dpm-solver", "euler"] | None = None
    steps: int | None = Field(None, ge=1, le=10_000)
    guidance: float | None = Field(None, ge=0.0, le=100.0)
    use_ema: bool | None = None
    #: fp32 | bf16 | auto for generating (held-out loss, caption sensitivity stay fp32); null = sample's.
    mixed_precision: Precision | None = None
    #: Videos per generator call.
    batch_size: int = Field(16, ge=1, le=4096)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    device: str = "auto"
    #: Torch intra-op threads while the stage measures (null: unchanged; ``make`` starts every
    #: stage with one, OMP_NUM_THREADS=1). The stage runs alone, so it may use every core.
    threads: int | None = Field(None, ge=1, le=1024)
    #: Image-to-video: condition on the first frame of held-out clips (mask strategy "0").
    i2v: bool = True
    i2v_count: int = Field(8, ge=1, le=10_000)
    #: ``classifier`` (the in-domain network) or a path to open_clip weights (file or folder):
    #: then FID/KID use CLIP image features and CLIPSIM is computed.
    feature_extractor: str = "classifier"
    clip_model: str = "ViT-B-32"
    #: KID subset size (capped by the number of frames on either side) and subsets.
    kid_subset_size: int = Field(50, ge=2, le=100_000)
    kid_subsets: int = Field(50, ge=1, le=10_000)
    #: Held-out diffusion loss on the cached held-out latents.
    heldout_loss: bool = True
    loss_timesteps: int = Field(10, ge=1, le=1000)
    loss_batch_size: int = Field(32, ge=1, le=4096)
    #: Held-out clips for the caption-sensitivity metrics (loss with one attribute word swapped,
    #: :mod:`soraflow.evaluation.caption_sensitivity`); 0 = off.
    caption_sensitivity_clips: int = Field(48, ge=0, le=100_000)
    #: Videos in the MLflow sample grid.
    grid_samples: int = Field(16, ge=1, le=1024)
    #: Outputs: the dvc metrics file and the folder of plot CSVs.
    metrics_path: str = "metrics/eval.json"
    plots_dir: str = "metrics"
    classifier: EvalClassifierConfig = EvalClassifierConfig()

    @field_validator("feature_extractor")
    @classmethod
    def _extractor_given(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be 'classifier' or a path to open_clip weights")
        return v
