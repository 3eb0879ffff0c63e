"""run_evaluation end to end on a tiny rendered corpus, with a render-based "oracle" generator;
the metrics file keys and plot files; quick_prompt_following. The real-model flow is slow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation_helpers import RenderGenerator, one_torch_thread, tiny_stdit, write_cache, write_corpus  # noqa: F401
from soraflow.config import Params
from soraflow.diffusion import DiffusionConfig, build_diffusion

REQUIRED = {
    "color_accuracy", "shape_accuracy", "direction_accuracy",
    "color_accuracy_chance", "shape_accuracy_chance", "direction_accuracy_chance",
    "classifier_real_color_accuracy", "classifier_real_shape_accuracy", "classifier_real_direction_accuracy",
    "fid", "fid_real_halves", "kid_mean", "kid_std", "heldout_loss",
    "flicker", "frame_consistency", "motion_magnitude_moving", "motion_magnitude_moving_real",
    "i2v_first_frame_psnr", "i2v_color_kept",
}


def _params(tmp_path: Path, **eval_overrides) -> Params:
    ev = {
        "num_prompts": 6, "samples_per_prompt": 2, "real_windows_per_clip": 2, "i2v_count": 2, "batch_size": 5,
        "kid_subsets": 5, "metrics_path": str(tmp_path / "metrics" / "eval.json"), "plots_dir": str(tmp_path / "metrics"),
        "classifier": {"width": 8, "feature_dim": 16, "epochs": 2, "windows_per_clip": 2, "batch_size": 8,
                       "output": str(tmp_path / "clf")},
    }
    ev.update(eval_overrides)
    return Params.model_validate({
        "curate": {"output": str(tmp_path / "curated")},
        "features": {"output": str(tmp_path / "features")},
        "eval": ev,
    })


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_corpus(root / "curated", np.random.default_rng(0), n_train=10, n_heldout=8)
    write_cache(root / "features", {"32px": (4, 2, 4, 4)})
    return root


@pytest.fixture(scope="module")
def classifier(corpus):
    from soraflow.evaluation import train_eval_classifier

    model, report = train_eval_classifier(_params(corpus), progress=False)
    assert report["train_clips"] == 10 and report["val_clips"] > 0
    assert (corpus / "clf" / "model.safetensors").is_file() and (corpus / "clf" / "report.json").is_file()
    return model


def _generator():
    return RenderGenerator(model=tiny_stdit(), diffusion=build_diffusion(DiffusionConfig()))


def test_run_evaluation_writes_the_metrics_file_and_plots(corpus, classifier):
    from soraflow.evaluation.runner import evaluate_model, write_outputs

    params = _params(corpus)
    gen = _generator()
    report = evaluate_model(params, gen, classifier=classifier, progress=False)
    paths = write_outputs(report, params.eval)
    metrics = json.loads((corpus / "metrics" / "eval.json").read_text())
    assert REQUIRED <= set(metrics), REQUIRED - set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["color_accuracy_chance"] == 0.25 and metrics["direction_accuracy_chance"] == 0.2
    # a lossless VAE sets no ceiling below the real clips' own
    for a in ("color", "shape", "direction"):
        assert metrics[f"classifier_vae_{a}_accuracy"] == metrics[f"classifier_real_{a}_accuracy"]
    assert metrics["fid"] >= 0 and metrics["fid_real_halves"] > 0
    assert metrics["fid_frames_generated"] <= metrics["fid_frames_real_half"]
    assert "heldout_loss_t091" in metrics and "heldout_loss_32px_2x16x16" in metrics
    # the oracle generator keeps the conditioning frame exactly (identity VAE): PSNR capped at 100 dB
    assert metrics["i2v_first_frame_psnr"] == 100.0 and 0.0 <= metrics["i2v_color_kept"] <= 1.0
    i2v = pd.read_csv(corpus / "metrics" / "eval_i2v.csv")
    for column, metric in (("predicted_direction", "i2v_direction_accuracy"),
                           ("predicted_direction_real", "i2v_direction_accuracy_real")):
        assert metrics[metric] == pytest.approx((i2v[column] == i2v["direction"]).mean())
    # prompts: held-out captions only, each sampled samples_per_prompt times with seeded batches
    clips = pd.read_parquet(corpus / "curated" / "clips.parquet")
    train_captions = set(clips.loc[clips["split"] == "train", "text"])
    prompts = report.prompts["prompt"].tolist()
    assert prompts and not set(prompts) & train_captions
    t2v_calls = [c for c in gen.calls if c["reference"] is None]
    assert sum(len(c["prompts"]) for c in t2v_calls) == 2 * len(prompts) == metrics["num_videos"]
    assert [c["seed"] for c in t2v_calls] == list(range(len(t2v_calls)))
    i2v_calls = [c for c in gen.calls if c["reference"] is not None]
    assert len(i2v_calls) == 2 and all(c["mask_strategy"] == "0" for c in i2v_calls)
    assert i2v_calls[0]["reference"][0].shape == (32, 32, 3)
    # dvc plot files
    by_t = pd.read_csv(corpus / "metrics" / "eval_loss_by_timestep.csv")
    assert list(by_t.columns) == ["timestep", "loss"] and len(by_t) == 10
    conf = pd.read_csv(corpus / "metrics" / "eval_confusion_direction.csv")
    assert list(conf.columns) == ["actual", "predicted"] and len(conf) == metrics["num_videos"]
    assert {p.name for p in paths} >= {"eval.json", "eval_loss_by_timestep.csv", "eval_loss_by_bucket.csv",
                                       "eval_confusion_color.csv", "eval_confusion_shape.csv", "eval_i2v.csv",
                                       "eval_prompts.csv"}
    # per prompt: every prompt once, in drawing order, its samples' readings adding up to the accuracies
    per_prompt = pd.read_csv(corpus / "metrics" / "eval_prompts.csv")
    assert per_prompt["prompt"].tolist() == prompts
    assert (per_prompt["samples"] == 2).all()
    for a in ("color", "shape", "direction"):
        assert per_prompt[f"{a}_correct"].sum() / metrics["num_videos"] == pytest.approx(metrics[f"{a}_accuracy"])
        readings = per_prompt[f"predicted_{a}"].str.split(" ")
        assert [sum(r == lab for r in rs) for rs, lab in zip(readings, per_prompt[a])] == per_prompt[f"{a}_correct"].tolist()
    assert any("clipsim" in n for n in report.notes)  # absent, with its reason
    # the MLflow figures render
    from soraflow.evaluation.plots import confusion_figure, loss_by_timestep_figure, sample_grid_figure

    confusion_figure({a: report.confusion(a) for a in ("color", "shape", "direction")})
    loss_by_timestep_figure(report.loss.by_timestep(), report.loss.table)
    sample_grid_figure(report.videos[:3], ["a", "b", "c"])


@pytest.fixture(scope="module")
def trained_classifier():
    """A classifier that reads shape and motion: trained on 40 renders for 12 epochs."""
    from evaluation_helpers import labelled

    from soraflow.evaluation.classifier import ClassifierSpec, train_classifier

    spec = ClassifierSpec(width=8, feature_dim=16, num_frames=8, height=32, width_px=32, frame_interval=2)
    torch.manual_seed(0)
    clf, _ = train_classifier(labelled(np.random.default_rng(1), 40), [], spec, epochs=12, windows_per_clip=4,
                              batch_size=16, lr=3e-3, seed=0, progress=False)
    return clf


def test_a_generator_that_ignores_motion_scores_lower_on_direction(corpus, trained_classifier):
    """With a classifier that reads motion (trained on 40 renders), a generator that reverses
    every direction scores far below the faithful one on direction, not on colour."""
    from soraflow.evaluation import run_evaluation

    params = _params(corpus, heldout_loss=False, i2v=False, num_prompts=8, samples_per_prompt=2)
    clf = trained_classifier
    good = run_evaluation(params, RenderGenerator(), classifier=clf, progress=False, write=False)
    bad = run_evaluation(params, RenderGenerator(wrong_direction=True), classifier=clf, progress=False, write=False)
    assert good["direction_accuracy"] >= 0.6, good
    assert bad["direction_accuracy"] <= good["direction_accuracy"] - 0.4, (good, bad)
    assert abs(bad["color_accuracy"] - good["color_accuracy"]) <= 0.25
    assert good["motion_magnitude_moving"] > 1.0 and good["motion_magnitude_moving_real"] > 0.5
    assert "heldout_loss" not in good and "i2v_first_frame_psnr" not in good


class BlockVAE:
    """A VAE that keeps only the mean colour of each 8x8 block: colours survive, shapes do not."""

    device = torch.device("cpu")
    dtype = torch.float32

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        z = torch.nn.functional.avg_pool2d(x.transpose(1, 2).reshape(b * t, c, h, w), 8)
        return z.reshape(b, t, c, h // 8, w // 8).transpose(1, 2)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = z.shape
        x = torch.nn.functional.interpolate(z.transpose(1, 2).reshape(b * t, c, h, w), scale_factor=8, mode="nearest")
        return x.reshape(b, t, c, h * 8, w * 8).transpose(1, 2)


def test_the_vae_ceiling_is_the_classifier_on_round_tripped_clips(corpus, trained_classifier):
    """classifier_vae_* measures the held-out clips after the generator's VAE: a VAE that
    keeps 8x8 blocks only loses the shapes the real clips show, and the report says so."""
    from soraflow.evaluation import run_evaluation
    from soraflow.evaluation.runner import evaluate_model

    params = _params(corpus, heldout_loss=False, i2v=False, num_prompts=4, samples_per_prompt=1)
    gen = RenderGenerator()
    gen.vae = BlockVAE()
    m = run_evaluation(params, gen, classifier=trained_classifier, progress=False, write=False)
    assert m["classifier_real_shape_accuracy"] >= 0.8, m
    assert m["classifier_vae_shape_accuracy"] <= m["classifier_real_shape_accuracy"] - 0.3, m
    gen.vae = None  # no VAE: not measured, and the report says why
    report = evaluate_model(params, gen, classifier=trained_classifier, progress=False)
    assert "classifier_vae_shape_accuracy" not in report.metrics
    assert any("classifier_vae" in n for n in report.notes)


def test_clip_features_and_clipsim_when_clip_weights_are_configured(corpus, classifier, tmp_path):
    from evaluation_helpers import tiny_clip_weights

    from soraflow.evaluation.runner import evaluate_model

    arch, weights = tiny_clip_weights(tmp_path)
    params = _params(corpus, heldout_loss=False, i2v=False, num_prompts=4, samples_per_prompt=1,
                     feature_extractor=str(weights), clip_model=arch)
    report = evaluate_model(params, RenderGenerator(), classifier=classifier, progress=False)
    m = report.finite_metrics()
    assert m["fid_uses_clip"] == 1.0 and 0.0 <= m["clipsim"] <= 100.0 and 0.0 <= m["clipsim_real"] <= 100.0
    assert "clipsim" in report.predictions.columns and not any("clipsim" in n for n in report.notes)


def test_eval_threads_hold_while_measuring_and_are_restored(corpus, classifier):
    from soraflow.evaluation.runner import evaluate_model

    class ThreadRecorder(RenderGenerator):
        def generate(self, prompts, **kwargs):
            self.calls_threads = [*getattr(self, "calls_threads", []), torch.get_num_threads()]
            return super().generate(prompts, **kwargs)

    before = torch.get_num_threads()
    params = _params(corpus, heldout_loss=False, i2v=False, num_prompts=2, samples_per_prompt=1, threads=before + 1)
    gen = ThreadRecorder()
    evaluate_model(params, gen, classifier=classifier, progress=False)
    assert set(gen.calls_threads) == {before + 1} and torch.get_num_threads() == before


def test_quick_prompt_following(corpus, classifier):
    from soraflow.evaluation import quick_prompt_following

    gen = RenderGenerator()
    prompts = ["a red circle moving left on a navy background", "a blue square standing still on a white background"]
    out = quick_prompt_following(gen, classifier, prompts, num_frames=8, height=32, width=32, samples_per_prompt=2,
                                 steps=3, seed=5)
    assert out["num_videos"] == 4.0 and out["direction_accuracy_chance"] == 0.2
    assert {"color_accuracy", "shape_accuracy", "direction_accuracy"} <= set(out)
    assert gen.calls[0]["seed"] == 5 and gen.calls[0]["steps"] == 3
    with pytest.raises(ValueError, match="demo template"):
        quick_prompt_following(gen, classifier, ["a cat"], num_frames=8, height=32, width=32)
    from soraflow.evaluation import quick_prompts

    held = quick_prompts(_params(corpus), 3)
    clips = pd.read_parquet(corpus / "curated" / "clips.parquet")
    assert len(held) == 3 and not set(held) & set(clips.loc[clips["split"] == "train", "text"])


def _two_ranks(fn):
    """``fn(rank, gather)`` on two threads joined by an all-gather; their results."""
    import threading

    parts: list = [None, None]
    results: list = [None, None]
    barrier = threading.Barrier(2, timeout=60)

    def rank(r: int) -> None:
        def gather(obj):
            parts[r] = obj
            barrier.wait()
            return list(parts)

        results[r] = fn(r, gather)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_prompt_following_shared_by_two_ranks_equals_one(corpus, classifier):
    """Two ranks each generate every other batch with that batch's own seed and gather them:
    the same videos, in the same order, and the same scores as one rank alone."""
    from soraflow.evaluation import quick_prompt_following, quick_prompts
    from soraflow.evaluation.runner import _generate

    prompts = quick_prompts(_params(corpus), 5) * 2  # 10 videos in 4 batches of 3
    kwargs = dict(size=(8, 32, 32), options={"steps": 2}, seed=3, batch_size=3)
    alone = RenderGenerator()
    expected = _generate(alone, prompts, **kwargs)
    assert [c["seed"] for c in alone.calls] == [3, 4, 5, 6]
    gens = [RenderGenerator(), RenderGenerator()]
    shared = _two_ranks(lambda r, gather: _generate(gens[r], prompts, **kwargs, shard=(r, 2), gather=gather))
    assert [c["seed"] for c in gens[0].calls] == [3, 5] and [c["seed"] for c in gens[1].calls] == [4, 6]
    assert all(np.array_equal(v, expected) for v in shared)

    size = dict(num_frames=8, height=32, width=32, seed=3, batch_size=3)
    one = quick_prompt_following(RenderGenerator(wrong_direction=True), classifier, prompts, **size)
    two = _two_ranks(lambda r, gather: quick_prompt_following(
        RenderGenerator(wrong_direction=True), classifier, prompts, **size, shard=(r, 2), gather=gather))
    assert two[0] == two[1] == one and one["direction_accuracy"] < 0.5
    with pytest.raises(ValueError, match="needs gather"):
        _generate(RenderGenerator(), prompts, **kwargs, shard=(0, 2))
    with pytest.raises(RuntimeError, match=r"batches \[1, 3\] of 4"):  # a gather that lost a rank
        _generate(RenderGenerator(), prompts, **kwargs, shard=(0, 2), gather=lambda made: [made])


def test_missing_inputs_are_clear_errors(tmp_path, classifier):
    from soraflow.evaluation import run_evaluation

    with pytest.raises(FileNotFoundError, match="curate"):
        run_evaluation(_params(tmp_path), RenderGenerator(), classifier=classifier, progress=False)
    with pytest.raises(FileNotFoundError, match="eval-classifier"):
        run_evaluation(_params(tmp_path), RenderGenerator(), progress=False)


@pytest.mark.slow
def test_flows_with_a_real_tiny_model(corpus, tmp_path, mlflow_store, prefect_harness, monkeypatch):
    """eval_classifier + evaluate flows on a real (random, tiny) STDiT2 + VAE + MiniLM folder,
    logged to a private MLflow store."""
    import mlflow
    import yaml

    from sampling_helpers import TEXT_MAX_LENGTH, write_model_folder, write_vae_folder

    vae = write_vae_folder(tmp_path / "vae")
    model = write_model_folder(tmp_path / "model", str(vae))
    # held-out latents as the features stage would cache them for this model (MiniLM: 384 channels)
    write_cache(tmp_path / "features", {"32px": (3, 8, 16, 16)}, caption_channels=384, caption_len=TEXT_MAX_LENGTH)
    params = _params(corpus, i2v_count=1, num_prompts=4, samples_per_prompt=1)
    data = params.model_dump(mode="json")
    data["eval"]["classifier"]["output"] = str(tmp_path / "clf")
    data["features"]["output"] = str(tmp_path / "features")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({k: data[k] for k in ("curate", "features", "eval")}))
    monkeypatch.chdir(tmp_path)
    from flows.evaluate import eval_classifier_flow, evaluate_flow

    clf_metrics = eval_classifier_flow(params_path=str(tmp_path / "params.yaml"))
    assert 0.0 <= clf_metrics["val_color_accuracy"] <= 1.0
    assert Path("metrics/eval_classifier.json").is_file()
    metrics = evaluate_flow(params_path=str(tmp_path / "params.yaml"), model=str(model))
    assert REQUIRED - {"motion_magnitude_moving", "motion_magnitude_moving_real"} <= set(metrics)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`soraflow.stage` = 'evaluate'")
    assert len(runs) == 1 and runs["metrics.fid"].notna().all()
    run_id = runs["run_id"].iloc[0]
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "eval")}
    assert {"eval/confusion.png", "eval/samples.png", "eval/heldout_loss.png", "eval/eval.json"} <= names
    assert torch.get_num_threads() >= 1
