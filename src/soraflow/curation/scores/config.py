"""``curate.scores`` section of params.yaml: how each per-clip score is computed.

Units and definitions are in :mod:`soraflow.curation.scores` (package docstring). Models that
need weights this machine cannot download (CLIP, the aesthetic head, RAFT, a captioner) are
given by path or ``hf-hub:`` id (resolved in the local Hugging Face cache only); left ``null``
their columns stay empty and the reason is recorded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from soraflow.config_base import StrictModel


class ScoresConfig(StrictModel):
    # --- motion (optical flow) -------------------------------------------------------------
    # Flow is computed on grayscale frames resized so that the SHORT side is
    # ``flow_short_side`` px (aspect kept; the long side is capped at ``flow_max_long_side``,
    # extreme aspects are squeezed along the long side; both sides rounded to a multiple of 8).
    # ``motion`` is therefore in "pixels per frame of a frame whose short side is 256 px":
    # the same content at 480p and 1080p gives the same value.
    flow_method: Literal["dis", "farneback", "raft"] = "dis"
    dis_preset: Literal["ultrafast", "fast", "medium"] = "ultrafast"
    flow_short_side: int = Field(256, ge=32, le=1024)
    flow_max_long_side: int = Field(512, ge=32, le=4096)
    flow_pairs: int = Field(3, ge=1, le=64, description="frame pairs sampled per clip")
    flow_gap: int = Field(2, ge=1, le=120, description="frames between the two frames of a pair")
    # A pair where fewer than ``flow_still_fraction`` of the pixels changed by
    # ``flow_change_min`` grey levels (5x5 box-filtered) counts as still (flow 0): DIS fills
    # flat, barely re-coded areas with spurious flow (0.9 px/frame on a still gradient).
    # Demo corpus: still pairs <= 0.06% changed pixels, moving pairs >= 0.7% (1st pct).
    flow_change_min: float = Field(2.0, ge=0.0, le=255.0)
    flow_still_fraction: float = Field(0.002, ge=0.0, le=1.0, description="0 disables the rule")
    raft_weights: str | None = Field(
        None, description="torchvision RAFT state dict (.pth/.pt/.safetensors); needed by flow_method raft"
    )
    raft_arch: Literal["raft_small", "raft_large"] = "raft_small"
    raft_iters: int = Field(12, ge=1, le=64)

    # --- camera motion label ---------------------------------------------------------------
    # Per pair: global translation = median flow, zoom = median radial rate x mean radius
    # (px per frame at the working size). Below ``camera_static_px`` the camera is static; when
    # the median residual of the translation+zoom model exceeds ``camera_complex_ratio`` x the
    # model's magnitude the label is complex. Majority vote over pairs.
    camera_static_px: float = Field(0.25, ge=0.0)
    camera_complex_ratio: float = Field(1.0, gt=0.0)
    # Flow far from any image structure is filled in by the estimator, not measured: pixels
    # farther than ``camera_texture_radius`` px from a gradient of ``camera_texture_grad``
    # grey levels/px vote "no camera motion" (0 disables the rule).
    camera_texture_grad: float = Field(1.0, ge=0.0)
    camera_texture_radius: int = Field(16, ge=0, le=256)

    # --- OCR (PP-OCRv4 DB text detector shipped in rapidocr-onnxruntime) --------------------
    ocr_frames: int = Field(1, ge=0, le=16, description="frames scanned for text (0 disables OCR)")
    # The detector input keeps the frame's aspect: its short side is ``ocr_short_side`` and its
    # long side at most ``ocr_size`` (each rounded to a multiple of 32). Text size follows the
    # frame's height, so a square or 4:3 frame needs no more pixels than a 16:9 one (which gets
    # 192 x 320 either way); null: the long side alone sets the size.
    ocr_size: int = Field(320, ge=64, le=2048, description="max long side of the detector input, px (original: 1024)")
    ocr_short_side: int | None = Field(
        192, ge=32, le=2048, description="short side of the detector input, px; null: only ocr_size applies"
    )
    ocr_box_threshold: float = Field(0.3, ge=0.0, le=1.0, description="min box confidence (original 0.3)")
    ocr_min_aspect: float = Field(
        2.0,
        ge=1.0,
        le=50.0,
        description="min long/short side of a box to count as text; the DB detector also fires on "
        "solid blobs (~1:1); 1.0 counts every box as the original did",
    )
    ocr_pixel_threshold: float = Field(0.3, ge=0.0, le=1.0, description="DB probability-map binarisation")
    ocr_threads: int = Field(1, ge=0, le=256, description="onnxruntime intra-op threads (0 = all cores)")

    # --- aesthetic and caption-match (open_clip) --------------------------------------------
    clip_model: str = Field("ViT-L-14", description="open_clip architecture name (ignored for dirs/hub ids)")
    clip_pretrained: str | None = Field(
        None, description="open_clip weights: file, folder with open_clip_config.json, or hf-hub:org/repo"
    )
    aesthetic_head: str | None = Field(
        None, description="LAION improved-aesthetic-predictor MLP state dict (e.g. sac+logos+ava1-l14-linearMSE.pth)"
    )
    clip_frames: int = Field(3, ge=1, le=16, description="frames embedded for aesthetic (10%..90% of the clip)")

    # --- captioner (transformers image-to-text) --------------------------------------------
    captioner: str | None = Field(None, description="folder or hf-hub:org/repo of an image-to-text model")
    caption_max_new_tokens: int = Field(60, ge=1, le=1024)
    caption_prompt: str | None = Field(None, description="text prompt for image-text-to-text models")

    device: str = Field("cpu", description="torch device for CLIP/RAFT/captioner: cpu, cuda, cuda:N or auto")

    @model_validator(mode="after")
    def _check(self) -> ScoresConfig:
        if self.flow_method == "raft" and not self.raft_weights:
            raise ValueError("flow_method 'raft' needs raft_weights (a path to a torchvision RAFT state dict)")
        if self.flow_method == "raft" and self.flow_short_side < 128:
            raise ValueError("flow_method 'raft' needs flow_short_side >= 128 (RAFT's correlation pyramid)")
        if self.flow_max_long_side < self.flow_short_side:
            raise ValueError("flow_max_long_side must be >= flow_short_side")
        if self.aesthetic_head and not self.clip_pretrained:
            raise ValueError("aesthetic_head needs clip_pretrained (the head scores CLIP image embeddings)")
        dev = self.device
        if not (dev in ("cpu", "cuda", "auto", "mps") or dev.startswith("cuda:")):
            raise ValueError(f"device must be cpu, cuda, cuda:N, mps or auto (got {dev!r})")
        return self
