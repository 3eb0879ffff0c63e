"""The MLflow pyfunc flavour of a soraflow model: a prompt in, a video file out.

``mlflow.pyfunc.load_model("models:/soraflow-stdit@champion").predict(df)`` takes a
DataFrame with a ``prompt`` column and optional per-row ``seed``, ``num_frames``,
``height``, ``width``, ``fps``, ``steps``, ``guidance`` columns, and returns one row per
prompt with the mp4 written (``path``), its bytes base64-encoded (``mp4_base64``, so the
answer survives a JSON model server) and the settings used. Rows are sampled one by one,
each with its own seed, so a row's video does not depend on the other rows.

Videos go to ``output_dir`` given in ``params`` (``predict(df, params={"output_dir": ...})``)
or to a new temporary folder.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from soraflow.registry.bundle import BUNDLE_NAME

__all__ = ["DEFAULTS", "SoraflowVideoModel"]

#: Defaults of the optional input columns (the demo's training bucket).
DEFAULTS: dict[str, Any] = {"seed": 0, "num_frames": 8, "height": 32, "width": 32, "fps": None, "steps": None, "guidance": None}


class SoraflowVideoModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper around :class:`soraflow.sampling.VideoGenerator`."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = {**DEFAULTS, **(defaults or {})}
        self.generator = None

    def load_context(self, context):  # no type hints: MLflow 3 would infer a signature from them
        from soraflow.sampling.generator import VideoGenerator

        folder = Path(context.artifacts[BUNDLE_NAME])
        self.generator = VideoGenerator.from_folder(folder, device="auto")

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from soraflow.sampling.render import slugify
        from soraflow.sampling.writers import write_mp4

        if self.generator is None:
            self.load_context(context)
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "prompt" not in df.columns:
            raise ValueError(f"model input needs a 'prompt' column, got {list(df.columns)}")
        params = dict(params or {})
        out_dir = Path(params.get("output_dir") or tempfile.mkdtemp(prefix="soraflow-predict-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, row in enumerate(df.to_dict("records")):
            s = {k: _get(row, k, v) for k, v in self.defaults.items()}
            gen = self.generator
            fps = float(s["fps"]) if s["fps"] is not None else gen.default_fps
            video = gen.generate(
                [str(row["prompt"])], num_frames=int(s["num_frames"]), height=int(s["height"]), width=int(s["width"]),
                fps=fps, seed=int(s["seed"]), steps=None if s["steps"] is None else int(s["steps"]),
                guidance=None if s["guidance"] is None else float(s["guidance"]),
            )[0]
            path = write_mp4(video, out_dir / f"{i:03d}-{slugify(str(row['prompt']))}-s{int(s['seed'])}.mp4", fps)
            rows.append({
                "prompt": str(row["prompt"]), "seed": int(s["seed"]), "num_frames": int(video.shape[0]),
                "height": int(video.shape[1]), "width": int(video.shape[2]), "fps": fps, "path": str(path),
                "mp4_base64": base64.b64encode(path.read_bytes()).decode("ascii"),
            })
        return pd.DataFrame(rows)


def _get(row: dict[str, Any], key: str, default: Any) -> Any:
    v = row.get(key, default)
    try:
        import pandas as pd

        if v is not None and not isinstance(v, str) and pd.isna(v):
            return default
    except (TypeError, ValueError):
        pass
    return v
