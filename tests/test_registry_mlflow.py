"""Registry on a real MLflow store: register -> challenger, promotion rule, previous + rollback,
every decision logged, nothing half-written on bad input, fresh-process reproduction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sampling_helpers import mlflow_template_db, use_mlflow_store, write_model_folder, write_vae_folder  # noqa: F401
from soraflow.registry import (
    RegistryConfig,
    RegistryError,
    build_bundle,
    get_client,
    log_and_register,
    promote,
    rollback,
    validate_model_folder,
)
from soraflow.tracking import stage_run

BASE = {"color_accuracy": 0.5, "color_accuracy_chance": 0.25, "shape_accuracy": 0.5, "direction_accuracy": 0.4, "fid": 20.0}
SIZE = dict(num_frames=4, height=16, width=16, steps=2)


@pytest.fixture
def project(tmp_path, monkeypatch, mlflow_template_db):
    """A project folder (cwd) with a tiny final model, its VAE, eval metrics and a private MLflow store."""
    use_mlflow_store(tmp_path / "store", mlflow_template_db, monkeypatch)
    monkeypatch.chdir(tmp_path)
    write_vae_folder(tmp_path / "models" / "vae")
    write_model_folder(tmp_path / "models" / "train" / "final", "models/vae")
    (tmp_path / "metrics").mkdir()
    _metrics(BASE)
    return tmp_path


def _metrics(values: dict) -> None:
    Path("metrics/eval.json").write_text(json.dumps(values))


def _register(cfg: RegistryConfig):
    with stage_run("register", None):
        return log_and_register(cfg)


def test_register_promote_rollback_lifecycle(project) -> None:
    Path("dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  features:\n    cmd: soraflow features\n    outs:\n"
        "    - path: data/features\n      md5: abc123.dir\n"
    )
    cfg = RegistryConfig()
    client = get_client()

    v1 = _register(cfg)
    mv = client.get_model_version(cfg.model_name, v1.version)
    assert client.get_model_version_by_alias(cfg.model_name, "challenger").version == int(v1.version)
    assert float(mv.tags["metric.color_accuracy"]) == 0.5 and float(mv.tags["metric.fid"]) == 20.0
    assert mv.tags["dvc.features_md5"] == "abc123.dir" and len(mv.tags["dvc.lock_md5"]) == 32
    assert mv.tags["git_commit"] and mv.tags["soraflow.train_step"] == "3"
    assert mv.run_id == v1.run_id

    r = promote(cfg)
    assert r.decision.promote and "no champion yet" in r.decision.reason
    assert client.get_model_version_by_alias(cfg.model_name, "champion").version == int(v1.version)

    _metrics({**BASE, "color_accuracy": 0.75})  # better on one, equal elsewhere
    v2 = _register(cfg)
    r = promote(cfg)
    assert r.decision.promote and r.champion_after == v2.version and r.previous_after == v1.version
    assert client.get_model_version_by_alias(cfg.model_name, "champion").version == int(v2.version)
    assert client.get_model_version_by_alias(cfg.model_name, "previous").version == int(v1.version)

    v3 = _register(cfg)  # same metrics as the champion: a tie
    r = promote(cfg)
    assert not r.decision.promote and "tie" in r.decision.reason
    tags = client.get_model_version(cfg.model_name, v3.version).tags
    assert tags["soraflow.decision"] == "rejected" and "tie" in tags["soraflow.decision_reason"]
    assert client.get_model_version_by_alias(cfg.model_name, "challenger").version == int(v3.version)
    assert client.get_model_version_by_alias(cfg.model_name, "champion").version == int(v2.version)

    _metrics({k: v for k, v in {**BASE, "color_accuracy": 0.99}.items() if k != "fid"})
    v4 = _register(cfg)
    r = promote(cfg)
    assert not r.decision.promote and "fid missing for the challenger" in r.decision.reason
    assert client.get_model_version_by_alias(cfg.model_name, "champion").version == int(v2.version)

    r = rollback(cfg)
    assert r.champion_before == v2.version and r.champion_after == v1.version and r.previous_after is None
    assert client.get_model_version_by_alias(cfg.model_name, "champion").version == int(v1.version)
    assert client.get_model_version(cfg.model_name, v2.version).tags["soraflow.decision"] == "rolled_back"
    with pytest.raises(RegistryError, match="no 'previous'"):
        rollback(cfg)

    # every decision: a version tag (above), the registered model's last decision, the files
    last = json.loads(client.get_registered_model(cfg.model_name).tags["soraflow.last_decision"])
    assert last["action"] == "rollback" and last["champion_after"] == v1.version
    assert json.loads(Path(cfg.decision_path).read_text())["action"] == "rollback"
    history = [json.loads(line) for line in Path("metrics/promotion_history.jsonl").read_text().splitlines()]
    assert [(h["action"], h["promoted"]) for h in history] == [
        ("promote", True), ("promote", True), ("promote", False), ("promote", False), ("rollback", True)
    ]
    assert v4.version == "4"


def test_bad_inputs_leave_the_registry_untouched(project) -> None:
    cfg = RegistryConfig()
    client = get_client()
    final = Path("models/train/final")

    Path("metrics/eval.json").unlink()
    with pytest.raises(RegistryError, match="evaluation metrics not found"):
        _register(cfg)
    Path("metrics/eval.json").write_text("{broken")
    with pytest.raises(RegistryError, match="not valid JSON"):
        _register(cfg)
    _metrics(BASE)

    weights = (final / "model.safetensors").read_bytes()
    (final / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(RegistryError, match="unreadable weights"):
        _register(cfg)
    (final / "model.safetensors").write_bytes(weights)
    Path("models/vae/config.json").unlink()
    with pytest.raises(RegistryError, match="VAE folder without config.json"):
        _register(cfg)
    (final / "encoders.json").unlink()
    with pytest.raises(RegistryError, match="encoders.json"):
        validate_model_folder(final)

    assert client.search_registered_models() == []
    assert client.search_model_versions(f"name='{cfg.model_name}'") == []
    with pytest.raises(RegistryError, match="does not exist"):
        promote(cfg)


def test_bundle_carries_the_vae_and_the_chosen_weights(project, tmp_path) -> None:
    final = Path("models/train/final")
    bundle = build_bundle(final, tmp_path / "b1", use_ema=True)
    assert (bundle / "model.safetensors").read_bytes() == (final / "ema.safetensors").read_bytes()
    enc = json.loads((bundle / "encoders.json").read_text())
    assert enc["vae"] == "vae" and enc["vae_source"] == "models/vae" and enc["weights"] == "ema"
    assert (bundle / "vae" / "config.json").is_file()
    raw = build_bundle(final, tmp_path / "b2")
    assert (raw / "model.safetensors").read_bytes() == (final / "model.safetensors").read_bytes()


def test_champion_reproduces_in_a_fresh_process(project, monkeypatch) -> None:
    import av
    import mlflow
    import pandas as pd

    from soraflow.sampling import VideoGenerator

    cfg = RegistryConfig()
    _register(cfg)
    assert promote(cfg).decision.promote
    here = VideoGenerator.from_folder("models/train/final", device="cpu").generate(["a red circle moving left"], seed=11, **SIZE)

    script = textwrap.dedent(f"""
        import numpy as np
        from soraflow.sampling import VideoGenerator
        gen = VideoGenerator.from_uri("models:/{cfg.model_name}@champion", device="cpu")
        np.save("fresh.npy", gen.generate(["a red circle moving left"], seed=11, **{SIZE!r}))
    """)
    scratch = Path("scratch-tmp")
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch.resolve())}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.array_equal(np.load("fresh.npy"), here)
    # the download was removed once loaded (sampling happened after that), not left in the temp dir
    assert list(scratch.glob("soraflow-model-*")) == []

    # the pyfunc flavour: prompt in, mp4 out (into a new temporary folder: kept under tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch.resolve()))
    model = mlflow.pyfunc.load_model(f"models:/{cfg.model_name}@champion")
    out = model.predict(pd.DataFrame({"prompt": ["a red circle moving left"], "seed": [11], "num_frames": [4],
                                      "height": [16], "width": [16], "steps": [2]}), params=None)
    assert list(out["prompt"]) == ["a red circle moving left"]
    assert Path(out["path"][0]).parent.name.startswith("soraflow-predict-")
    assert Path(out["path"][0]).parent.parent == scratch.resolve()
    with av.open(out["path"][0]) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    assert len(frames) == 4 and frames[0].shape == (128, 128, 3)
