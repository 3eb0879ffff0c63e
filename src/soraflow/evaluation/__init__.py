"""Evaluation (issue 7): held-out loss, FID/KID, prompt following, temporal proxies, image-to-video.

Public API::

    from soraflow.evaluation import run_evaluation, quick_prompt_following, train_eval_classifier
    model, report = train_eval_classifier(params)            # the in-domain attribute classifier
    metrics = run_evaluation(params, generator)               # writes metrics/eval.json + plot CSVs
    curve = quick_prompt_following(generator, classifier, prompts, num_frames=8, height=32, width=32)

Names are imported lazily so that reading the config (``soraflow.evaluation.config``) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EvalConfig": "config",
    "EvalClassifierConfig": "config",
    "AttributeClassifier": "classifier",
    "ClassifierSpec": "classifier",
    "FrameFeatureExtractor": "classifier",
    "LabelledClip": "classifier",
    "load_classifier": "classifier",
    "predict_videos": "classifier",
    "save_classifier": "classifier",
    "train_classifier": "classifier",
    "CaptionAttributes": "prompts",
    "chance_levels": "prompts",
    "parse_caption": "prompts",
    "select_heldout_prompts": "prompts",
    "try_parse_caption": "prompts",
    "fid_kid": "metrics",
    "flicker": "metrics",
    "frame_consistency": "metrics",
    "frechet_distance": "metrics",
    "object_speed": "metrics",
    "psnr": "metrics",
    "HeldoutLoss": "heldout_loss",
    "heldout_loss": "heldout_loss",
    "EvalReport": "runner",
    "eval_size": "runner",
    "evaluate_model": "runner",
    "quick_prompt_following": "runner",
    "quick_prompts": "runner",
    "run_evaluation": "runner",
    "train_eval_classifier": "runner",
    "write_outputs": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"soraflow.evaluation.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'soraflow.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
