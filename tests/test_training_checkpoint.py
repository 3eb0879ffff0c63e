"""Checkpoint folders: atomic commit, discovery ignores half-written folders, keep-last-K,
no NaN weights on disk, weights_only loading, RNG state round trip."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from soraflow.training.checkpoint import (
    COMPLETE,
    CheckpointError,
    atomic_folder,
    checkpoint_name,
    checkpoints_dir,
    latest_checkpoint,
    list_checkpoints,
    load_train_state,
    load_weights,
    prune_checkpoints,
    remove_stale_temp,
    resolve_resume,
    save_checkpoint,
    write_weights,
)
from soraflow.training.rng import capture_rng, restore_rng

SRC = Path(__file__).resolve().parents[1] / "src" / "soraflow" / "training"


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(4, 3, generator=g), "a.bias": torch.randn(4, generator=g)}


def save(out: Path, step: int, **kw) -> Path:
    state = {"step": step, "optimizer": {"state": {}, "param_groups": []}, "ranks": [{"rng": capture_rng()}]}
    return save_checkpoint(out, step, kw.get("model", weights(step)), kw.get("ema", weights(step + 1)), state, {"k": 1})


def test_round_trip_and_layout(tmp_path):
    path = save(tmp_path, 20)
    assert path == tmp_path / "checkpoints" / "step-00000020"
    assert checkpoint_name(7) == "step-00000007"
    assert sorted(p.name for p in path.iterdir()) == [
        COMPLETE, "config.json", "ema.safetensors", "model.safetensors", "state.pt"
    ]
    for name, t in load_weights(path).items():
        assert torch.equal(t, weights(20)[name])
    state = load_train_state(path)
    assert state["step"] == 20
    assert isinstance(state["ranks"][0]["rng"]["torch"], torch.Tensor)
    assert not any(p.name.startswith(".tmp") for p in checkpoints_dir(tmp_path).iterdir())


def test_weights_files_with_the_same_contents_are_the_same_bytes(tmp_path):
    """safetensors writes metadata in a hash map's order, drawn afresh per map: eight writes of
    the same weights with four metadata keys gave several different files before the keys were
    sorted. Tensors, offsets and metadata read back unchanged."""
    from safetensors import safe_open

    meta = {"step": "20", "format": "soraflow-train-1", "ema_decay": "0.9999", "note": "é"}
    files = []
    for i in range(8):
        write_weights(tmp_path / f"w{i}.safetensors", weights(3), meta)
        files.append((tmp_path / f"w{i}.safetensors").read_bytes())
    assert len(set(files)) == 1
    header = files[0][8 : 8 + int.from_bytes(files[0][:8], "little")]
    assert header.startswith(b'{"__metadata__":{"ema_decay":"0.9999","format":"soraflow-train-1","note":')
    with safe_open(tmp_path / "w0.safetensors", "pt") as f:
        assert f.metadata() == meta
        assert all(torch.equal(f.get_tensor(k), v) for k, v in weights(3).items())


def test_half_written_folders_are_ignored_and_cleaned(tmp_path):
    good = save(tmp_path, 10)
    root = checkpoints_dir(tmp_path)
    # A writer killed before its rename: newer step, files present, still a temp name.
    tmp = root / ".tmp-step-00000030-deadbeef"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"partial")
    (tmp / COMPLETE).write_text("{}")
    # A folder with the final name but no COMPLETE marker (e.g. copied by hand, half done).
    (root / "step-00000040").mkdir()
    assert latest_checkpoint(tmp_path) == good
    assert resolve_resume("auto", tmp_path) == good
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        resolve_resume(str(root / "step-00000040"), tmp_path)
    remove_stale_temp(tmp_path)
    assert not tmp.exists() and good.exists()


def test_resolve_resume_modes(tmp_path):
    assert resolve_resume("auto", tmp_path) is None
    path = save(tmp_path, 3)
    assert resolve_resume("none", tmp_path) is None
    assert resolve_resume(str(path), tmp_path) == path


def test_keep_last_k(tmp_path):
    for step in (2, 4, 6, 8, 10):
        save(tmp_path, step)
        prune_checkpoints(tmp_path, 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000008", "step-00000010"]
    assert len(list(checkpoints_dir(tmp_path).iterdir())) == 2
    save(tmp_path, 12)
    assert prune_checkpoints(tmp_path, 0) == []  # 0 keeps all
    assert len(list_checkpoints(tmp_path)) == 3


def test_nan_weights_are_never_written(tmp_path):
    save(tmp_path, 5)
    bad = weights(6)
    bad["a.bias"][1] = float("nan")
    with pytest.raises(CheckpointError, match="a.bias"):
        save(tmp_path, 6, model=bad)
    bad_ema = weights(6)
    bad_ema["a.weight"][0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="EMA"):
        save(tmp_path, 6, ema=bad_ema)
    assert [p.name for p in checkpoints_dir(tmp_path).iterdir()] == ["step-00000005"]


def test_failed_write_leaves_nothing(tmp_path):
    dest = tmp_path / "checkpoints" / "step-00000001"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(dest) as tmp:
            (tmp / "model.safetensors").write_bytes(b"x" * 100)
            raise RuntimeError("boom")
    assert not dest.exists()
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_existing_folder_is_replaced_whole(tmp_path):
    save(tmp_path, 4, model=weights(1))
    save(tmp_path, 4, model=weights(2))
    got = load_weights(checkpoints_dir(tmp_path) / "step-00000004")
    assert torch.equal(got["a.weight"], weights(2)["a.weight"])
    assert [p.name for p in checkpoints_dir(tmp_path).iterdir()] == ["step-00000004"]


def test_rng_states_round_trip_through_weights_only(tmp_path):
    gen = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(4)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng({"g": gen})
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.normal(), np.random.rand(), torch.rand(3), torch.rand(2, generator=gen))
    restored = torch.load(tmp_path / "rng.pt", weights_only=True)
    restore_rng(restored, {"g": gen})
    got = (random.random(), np.random.normal(), np.random.rand(), torch.rand(3), torch.rand(2, generator=gen))
    assert got[:3] == expected[:3]
    assert torch.equal(got[3], expected[3]) and torch.equal(got[4], expected[4])
    with pytest.raises(KeyError, match="'g'"):
        restore_rng(restored, {})


def test_every_torch_load_in_training_is_weights_only():
    calls = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            depth, i = 1, m.end()
            while depth:  # the call's arguments, nested parentheses included
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            calls.append((path.name, text[m.end() : i - 1]))
    assert calls, "expected at least one torch.load in soraflow.training"
    for name, args in calls:
        assert "weights_only=True" in args, f"{name}: torch.load({args}) without weights_only=True"
