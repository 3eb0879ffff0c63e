"""Measure curation against a corpus with known truth (the demo corpus's manifests).

- :func:`cut_scores`: scene-cut precision/recall, a detected cut matching a true cut within
  ``tolerance`` frames (one-to-one, greedy by distance);
- :func:`label_clips`: every scored clip (kept or rejected) joined to the true scene it
  overlaps most, so a filter's decisions can be compared with the scene's truth
  (``static``, ``has_text``);
- :func:`rule_rates`: of the scenes with a property, the fraction a rule rejects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def cut_scores(detected: dict[str, list[int]], truth: dict[str, list[int]], tolerance: int = 2) -> dict[str, float]:
    """Precision and recall of detected cuts over files (keys: file names present in ``truth``)."""
    tp = fp = fn = 0
    for name, true_cuts in truth.items():
        det = sorted(detected.get(name, []))
        pairs = sorted(
            (abs(d - t), i, j) for i, d in enumerate(det) for j, t in enumerate(true_cuts) if abs(d - t) <= tolerance
        )
        used_d, used_t = set(), set()
        for _, i, j in pairs:
            if i not in used_d and j not in used_t:
                used_d.add(i)
                used_t.add(j)
        tp += len(used_d)
        fp += len(det) - len(used_d)
        fn += len(true_cuts) - len(used_t)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def detected_cuts(sources: list[dict]) -> dict[str, list[int]]:
    """``{file name: cuts}`` from the ``source.json`` facts of curated sources."""
    return {Path(s["source_path"]).name: list(s.get("cuts", [])) for s in sources if "probe" in s}


def true_cuts(videos: pd.DataFrame) -> dict[str, list[int]]:
    """``{file name: cut_frames}`` from a demo ``videos.parquet``."""
    vids = videos[videos["kind"] == "video"]
    return {Path(p).name: [int(c) for c in cuts] for p, cuts in zip(vids["path"], vids["cut_frames"], strict=True)}


def label_clips(clips: pd.DataFrame, rejected: pd.DataFrame, scenes: pd.DataFrame) -> pd.DataFrame:
    """Scored clips (kept and rejected) with the truth of the scene each overlaps most.

    Returns one row per clip with ``name``, ``start_frame``, ``end_frame``, the score columns,
    ``kept`` (bool), ``rule`` (the rejecting rule or None) and the scene's ``static``,
    ``has_text``, ``camera_pan``, ``direction``, ``overlap`` (fraction of the clip in the scene).
    """
    cols = ["source_path", "start_frame", "end_frame", "motion", "ocr_boxes", "ocr_area", "kind"]
    parts = [clips[cols].assign(kept=True, rule=None)]
    scored = rejected[rejected["start_frame"].notna()]
    if len(scored):
        parts.append(scored[cols].assign(kept=False, rule=scored["rule"].astype(object)))
    df = pd.concat(parts, ignore_index=True)
    df["name"] = [Path(p).name for p in df["source_path"]]
    sc = scenes.assign(name=[Path(p).name for p in scenes["path"]])
    by_name = {n: g for n, g in sc.groupby("name")}
    truth = []
    for row in df.itertuples(index=False):
        g = by_name.get(row.name)
        if g is None:
            truth.append({})
            continue
        a, b = int(row.start_frame), int(row.end_frame)
        ov = np.minimum(b, g["end_frame"].to_numpy()) - np.maximum(a, g["start_frame"].to_numpy())
        k = int(np.argmax(ov))
        s = g.iloc[k]
        truth.append(
            {
                "static": bool(s["static"]),
                "has_text": bool(s["has_text"]),
                "camera_pan": s["camera_pan"],
                "direction": s["direction"],
                "overlap": max(0, int(ov[k])) / max(1, b - a),
            }
        )
    return pd.concat([df, pd.DataFrame(truth, index=df.index)], axis=1)


def rule_rates(values: pd.Series, positive: pd.Series, reject: callable) -> dict[str, float]:
    """Rates of ``reject(value)`` among positive and negative rows (NaN values are dropped)."""
    ok = values.notna()
    v, pos = values[ok], positive[ok].astype(bool)
    rej = v.map(reject).astype(bool)
    return {
        "reject_positive": float(rej[pos].mean()) if pos.any() else float("nan"),
        "keep_negative": float((~rej[~pos]).mean()) if (~pos).any() else float("nan"),
        "n_positive": int(pos.sum()),
        "n_negative": int((~pos).sum()),
    }
