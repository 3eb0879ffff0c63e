"""The training loop: one function, :func:`train`, in the spirit of DiT's ``train.py``.

One optimizer step = ``grad_accum_steps`` micro-batches on every rank; steps are counted from
1 (``step-00000020`` holds the weights after 20 steps). Per step: caption dropout, forward
under autocast, backward (gradient all-reduce on the last micro-batch only), one small
all-reduce of the loss statistics, grad clipping, a NaN/inf check *before* the optimizer
touches the weights, AdamW, the LR schedule, the fp32 EMA. With ``average_every`` > 1 (local
SGD) the backward and the loss statistics stay on the rank, and the ranks average their weights
every ``average_every`` steps and before each checkpoint and evaluation; at a checkpoint they
also average the optimizer's moments, so the saved state is every rank's and a resume is exact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from soraflow.precision import use_bf16_autocast
from soraflow.training.checkpoint import (
    CONFIG_FILE,
    EMA_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    atomic_folder,
    load_train_state,
    load_weights,
    prune_checkpoints,
    remove_stale_temp,
    resolve_resume,
    save_checkpoint,
    write_weights,
)
from soraflow.training.components import Batch, Components
from soraflow.training.config import TrainConfig
from soraflow.training.data import BatchStream
from soraflow.training.distributed import (
    DistContext,
    all_gather_object,
    all_reduce_min,
    average_tensors,
    barrier,
    broadcast_object,
    cleanup_distributed,
    full_tensor,
    grad_sync,
    init_distributed,
    optimizer_state_tensors,
    unwrap,
    wrap_model,
)
from soraflow.training.ema import EMA
from soraflow.training.metrics import StepMetrics
from soraflow.training.rng import capture_rng, rank_seed, restore_rng, seed_everything
from soraflow.training.state import load_model_state, load_optimizer_state, model_state, optimizer_state

log = logging.getLogger(__name__)

MetricsCallback = Callable[[int, dict[str, float]], None]
FINAL_DIR = "final"
CHECKPOINT_FORMAT = 1


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN/inf; the weights were not updated."""


@dataclass
class TrainResult:
    step: int
    final_dir: Path
    last_checkpoint: Path | None
    last_metrics: dict[str, float]


def warmup_lambda(
    warmup_steps: int,
    schedule: str = "constant",
    total_steps: int = 0,
    min_lr_ratio: float = 0.0,
    decay_fraction: float = 0.1,
) -> Callable[[int], float]:
    """LR factor: linear from 1/warmup to 1 over ``warmup_steps``, then constant, or (``cosine``)
    a half cosine from 1 down to ``min_lr_ratio`` at ``total_steps``, or (``wsd``,
    warmup-stable-decay) constant until the last ``decay_fraction`` of the steps after the warmup,
    then linear down to ``min_lr_ratio`` at ``total_steps``: a run's weights at the stable rate are
    the constant schedule's, bit for bit, so a decay can start from a constant run's checkpoint."""
    span = total_steps - warmup_steps
    decay_steps = max(1, round(decay_fraction * span))  # wsd only; unused when span <= 0
    decay_start = total_steps - decay_steps

    def factor(step: int) -> float:
        warm = 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)
        if schedule not in ("cosine", "wsd") or step < warmup_steps or span <= 0:
            return warm
        if schedule == "cosine":
            progress = min(1.0, (step + 1 - warmup_steps) / span)  # 1 at the last step
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if step + 1 <= decay_start:
            return 1.0  # wsd's stable phase: exactly the constant schedule's factor
        progress = min(1.0, (step + 1 - decay_start) / decay_steps)  # 1 at the last step
        return 1.0 - (1.0 - min_lr_ratio) * progress

    return factor


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The LR factor of ``cfg`` (warmup, then its ``lr_schedule``) for a run of ``total_steps``."""
    return warmup_lambda(cfg.warmup_steps, cfg.lr_schedule, total_steps, cfg.min_lr_ratio, cfg.decay_fraction)


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast for this run (``auto``: on CUDA and on CPUs with native bf16 units)."""
    return use_bf16_autocast(cfg.mixed_precision, device)


def set_determinism(enabled: bool) -> None:
    """Process-wide switch for bitwise-reproducible kernels (the training process owns it)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def compile_model(
    model: nn.Module, mode: str | None = None, device: torch.device | None = None, dynamic: bool | None = None
) -> bool:
    """``torch.compile`` in place, keeping parameter names (checkpoints and the EMA are unchanged):
    block by block when the model offers ``compile_blocks`` (STDiT2), else the whole module.

    On a CPU, inductor writes C++ kernels: without a working C++ compiler the model stays eager
    (a warning says so) instead of failing at the first step. Returns whether it compiled."""
    if device is None or device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except Exception as exc:  # noqa: BLE001 - InvalidCxxCompiler and whatever a broken toolchain raises
            log.warning("train.compile: no working C++ compiler for torch.compile (%s); training eager", exc)
            return False
    kwargs: dict[str, Any] = {"mode": mode} if mode else {}
    if dynamic is not None:
        kwargs["dynamic"] = dynamic
    if callable(getattr(model, "compile_blocks", None)):
        model.compile_blocks(**kwargs)
    else:
        model.compile(**kwargs)
    log.info("model compiled with torch.compile%s", f" (mode {mode})" if mode else "")
    return True


def eager_stance(compiled: bool) -> contextlib.AbstractContextManager[Any]:
    """Run a compiled model eagerly inside the block: the prompt checks sample without gradients
    at other batch sizes, which would otherwise compile a second set of graphs for a few calls."""
    return torch.compiler.set_stance("force_eager") if compiled else contextlib.nullcontext()


def enable_grad_checkpointing(model: nn.Module) -> bool:
    for name in ("set_grad_checkpointing", "gradient_checkpointing_enable"):
        fn = getattr(model, name, None)
        if callable(fn):
            fn(True) if name == "set_grad_checkpointing" else fn()
            return True
    if hasattr(model, "grad_checkpointing"):
        model.grad_checkpointing = True
        return True
    log.warning("train.grad_checkpointing is on but %s has no way to enable it", type(model).__name__)
    return False


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_size(batch: Batch) -> int:
    x = batch.get("x")
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return v.shape[0]
    raise ValueError("cannot tell the batch size: the batch holds no tensor")


def _plain(obj: Any, where: str = "sampler state") -> Any:
    """Numbers, strings, tensors, lists and dicts only (what ``weights_only`` loads)."""
    if obj is None or isinstance(obj, bool | int | float | str | torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {str(k): _plain(v, where) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v, where) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"{where}: {type(obj).__name__} cannot go into a weights_only checkpoint")


def _finite(x: float) -> bool:
    return math.isfinite(x)


class _Run:
    """State of one training run; methods are the steps of :func:`train`."""

    def __init__(self, cfg: TrainConfig, comp: Components, ctx: DistContext, on_metrics: MetricsCallback | None):
        self.cfg, self.comp, self.ctx, self.on_metrics = cfg, comp, ctx, on_metrics
        self.output = Path(cfg.output)
        model = comp.model.to(ctx.device)
        if cfg.grad_checkpointing:
            enable_grad_checkpointing(model)
        model.train()
        self.compiled = cfg.compile and compile_model(model, cfg.compile_mode, ctx.device, cfg.compile_dynamic)
        self.local_sgd = cfg.average_every > 1 and ctx.distributed
        self.model = wrap_model(
            model, cfg.strategy, ctx, broadcast_buffers=cfg.broadcast_buffers, local_sgd=self.local_sgd
        )
        self.inner = unwrap(self.model)
        self.sharded = cfg.strategy == "fsdp2"
        self.ema = EMA(self.inner, cfg.ema_decay)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.params = params
        # The fused kernel (one pass over all parameters) saves ~8% of a small model's CPU step;
        # FSDP2's sharded DTensor parameters keep the default implementation.
        fused = True if not self.sharded and all(p.device.type in ("cpu", "cuda") for p in params) else None
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused
        )
        seed_everything(rank_seed(cfg.seed, ctx.rank, ctx.world_size))
        self.dropout_gen = torch.Generator().manual_seed(rank_seed(cfg.seed + 1, ctx.rank, ctx.world_size))
        self.generators = {"caption_dropout": self.dropout_gen, **comp.generators}
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.stream = BatchStream(
            comp,
            seed=cfg.seed,
            rank=ctx.rank,
            num_workers=cfg.num_workers,
            pin_memory=ctx.device.type == "cuda",
        )
        self.total = self.total_steps()  # before any resume moves the sampler
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.total))

    # ---- start: resume or initialise ---------------------------------------------------

    def start(self) -> None:
        path = None
        if self.ctx.is_main:
            remove_stale_temp(self.output)
            path = resolve_resume(self.cfg.resume, self.output)
        path = broadcast_object(str(path) if path else None, self.ctx)
        if path:
            self.restore(Path(path))
        elif self.cfg.init_from:
            self.init_from(Path(self.cfg.init_from))

    def _load_weights_main(self, path: Path, name: str) -> dict[str, torch.Tensor]:
        return load_weights(path, name) if self.ctx.is_main else {}

    def _load_model_and_ema(self, path: Path) -> None:
        """Weights from ``path`` (read on rank 0); the EMA from its file, else a copy of them."""
        ctx = self.ctx
        load_model_state(self.model, self._load_weights_main(path, MODEL_FILE), ctx)
        has_ema = broadcast_object((path / EMA_FILE).is_file() if ctx.is_main else None, ctx)
        if has_ema:
            self.ema.load_full_state_dict(self._load_weights_main(path, EMA_FILE), ctx)
        else:
            self.ema.copy_from(self.inner)

    def restore(self, path: Path) -> None:
        """Exact resume from a checkpoint folder of this run."""
        ctx = self.ctx
        self._load_model_and_ema(path)
        state = load_train_state(path) if ctx.is_main else None
        optim = state.pop("optimizer") if state is not None else {}
        load_optimizer_state(self.model, self.optimizer, optim, ctx)
        state = broadcast_object(state, ctx)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.last_checkpoint = path
        ranks = state["ranks"]
        same_world = int(state["world_size"]) == ctx.world_size
        if same_world:
            restore_rng(ranks[ctx.rank]["rng"], self.generators)
            data_exact = self.stream.restore(ranks[ctx.rank], same_world=True)
            exact = "exact" if data_exact else "data order NOT exact"
        else:
            # Another world size: the noise cannot be replayed (fresh per-rank seeds derived
            # from the step); a sampler that resumes itself continues its global data order,
            # any other starts the next epoch.
            data_exact = self.stream.restore(ranks[0], same_world=False)
            seed_everything(rank_seed(self.cfg.seed + self.step, ctx.rank, ctx.world_size))
            exact = (
                f"NOT exact: saved with {state['world_size']} ranks, now {ctx.world_size}; data order "
                + ("continues" if data_exact else "restarts at the next epoch")
            )
        log.info("resumed from %s at step %d (%s)", path, self.step, exact)

    def init_from(self, path: Path) -> None:
        """Start a new stage from a previous stage's weights (and optionally its optimizer)."""
        ctx, cfg = self.ctx, self.cfg
        if ctx.is_main and not (path / MODEL_FILE).is_file():
            raise CheckpointError(f"train.init_from: {path / MODEL_FILE} not found")
        self._load_model_and_ema(path)
        if cfg.init_optimizer:
            if ctx.is_main and not (path / STATE_FILE).is_file():
                raise CheckpointError(f"train.init_optimizer: {path} has no {STATE_FILE} (a final folder has none)")
            optim = load_train_state(path)["optimizer"] if ctx.is_main else {}
            load_optimizer_state(self.model, self.optimizer, optim, ctx)
            factor = lr_lambda(cfg, self.total)(0)
            for group in self.optimizer.param_groups:  # this stage's hyper-parameters win
                group["initial_lr"] = cfg.lr
                group["lr"] = cfg.lr * factor
                group["weight_decay"] = cfg.weight_decay
                group["betas"] = cfg.betas
            self.scheduler.base_lrs = [cfg.lr for _ in self.optimizer.param_groups]
            self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        log.info("initialised from %s (optimizer state: %s)", path, cfg.init_optimizer)

    # ---- saving -----------------------------------------------------------------------

    def save(self) -> Path:
        ctx = self.ctx
        model_sd = model_state(self.model, ctx)
        ema_sd = self.ema.full_state_dict(self.inner, ctx)
        optim = optimizer_state(self.model, self.optimizer, ctx)
        stream = self.stream.state()
        local = {
            "rng": capture_rng(self.generators, python_numpy=False),
            "epoch": stream["epoch"],
            "position": stream["position"],
            "sampler": _plain(stream["sampler"]),
        }
        ranks = all_gather_object(local, ctx)
        path = None
        if ctx.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "step": self.step,
                "world_size": ctx.world_size,
                "optimizer": optim,
                "scheduler": _plain(self.scheduler.state_dict(), "scheduler state"),
                "ranks": ranks,
                "train_config": self.cfg.model_dump(mode="json"),
            }
            config = {"train": self.cfg.model_dump(mode="json"), "model": self._model_config(), "step": self.step}
            path = save_checkpoint(self.output, self.step, model_sd, ema_sd, state, config)
            for old in prune_checkpoints(self.output, self.cfg.keep_last_k):
                log.debug("pruned %s", old)
            log.info("checkpoint %s", path)
        barrier(ctx)
        self.last_checkpoint = Path(broadcast_object(str(path) if path else None, ctx))
        return self.last_checkpoint

    def _model_config(self) -> dict[str, Any]:
        if self.comp.model_config is not None:
            return self.comp.model_config
        cfg = getattr(self.inner, "config", None)
        if isinstance(cfg, dict):
            return cfg
        if hasattr(cfg, "model_dump"):
            return cfg.model_dump(mode="json")
        return {"class": type(self.inner).__name__}

    def save_final(self) -> Path:
        """``output/final``: config JSON + ``model.safetensors`` (raw weights) + EMA weights."""
        ctx = self.ctx
        model_sd = model_state(self.model, ctx)
        ema_sd = self.ema.full_state_dict(self.inner, ctx)
        dest = self.output / FINAL_DIR
        if ctx.is_main:
            with atomic_folder(dest, {"step": self.step}) as tmp:
                if self.comp.save_model is not None and not self.sharded:
                    self.comp.save_model(self.inner, tmp)
                else:
                    (tmp / CONFIG_FILE).write_text(json.dumps(self._model_config(), indent=2, default=str))
                    write_weights(tmp / MODEL_FILE, model_sd, {"step": str(self.step)})
                write_weights(tmp / EMA_FILE, ema_sd, {"step": str(self.step), "ema_decay": str(self.cfg.ema_decay)})
                (tmp / "train.json").write_text(
                    json.dumps({"step": self.step, "train": self.cfg.model_dump(mode="json")}, indent=2)
                )
            log.info("final model %s (step %d)", dest, self.step)
        barrier(ctx)
        return dest

    # ---- the loop ---------------------------------------------------------------------

    def total_steps(self) -> int:
        """``steps``, or fewer when ``epochs`` (times the first epoch's length) ends sooner."""
        cfg = self.cfg
        if cfg.epochs is None:
            return cfg.steps
        n = all_reduce_min(len(self.comp.sampler), self.ctx)  # type: ignore[arg-type]
        by_epochs = cfg.epochs * n // cfg.grad_accum_steps
        if by_epochs < 1:
            raise ValueError(f"train.epochs={cfg.epochs} gives no full step ({n} batches per epoch per rank)")
        return min(cfg.steps, by_epochs)

    def micro_batch(self, micro: int, metrics: StepMetrics, autocast: Any) -> None:
        import time

        cfg, comp, ctx = self.cfg, self.comp, self.ctx
        t0 = time.perf_counter()
        batch = next(self.stream)
        metrics.add_data_wait(time.perf_counter() - t0)
        batch = to_device(batch, ctx.device)
        if comp.on_batch is not None:
            comp.on_batch(self.step + 1, micro, batch)
        if comp.caption_dropout is not None and cfg.caption_dropout > 0:
            drop = torch.rand(batch_size(batch), generator=self.dropout_gen) < cfg.caption_dropout
            batch = comp.caption_dropout(self.inner, batch, drop)
        tokens = comp.count_tokens(batch) if comp.count_tokens is not None else None
        with grad_sync(self.model, micro == cfg.grad_accum_steps - 1):
            with autocast():
                out = comp.loss_fn(self.model, batch)
            (out["loss"].float().mean() / cfg.grad_accum_steps).backward()
        metrics.add_micro_batch(out, batch, tokens)

    def evaluation_due(self) -> bool:
        """Whether this step runs the components' ``evaluate`` (the same answer on every rank,
        since the metric window it joins is a collective)."""
        every = self.comp.evaluate_every
        return every > 0 and (self.step % every == 0 or self.step == self.total)

    def run(self) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        total = self.total
        metrics = StepMetrics(ctx, self.comp.num_timesteps, sum_every_step=not self.local_sgd)
        bf16 = use_bf16(cfg, ctx.device)

        def autocast() -> Any:
            if bf16:
                return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16)
            return contextlib.nullcontext()

        n_params = sum(p.numel() for p in self.inner.parameters())
        log.info(
            "training %s (%.2fM params) on %d rank(s), %s, %s, bf16=%s, steps %d -> %d",
            type(self.inner).__name__, n_params / 1e6, ctx.world_size, ctx.device,
            f"local SGD (weights averaged every {cfg.average_every} steps)" if self.local_sgd else cfg.strategy,
            bf16, self.step, total,
        )
        interactive = sys.stderr.isatty()
        bar = tqdm(
            total=total, initial=self.step, desc="train", disable=not ctx.is_main, dynamic_ncols=True,
            mininterval=0.5 if interactive else 10.0, file=sys.stderr,
        )
        last: dict[str, float] = {}
        try:
            while self.step < total:
                self.optimizer.zero_grad(set_to_none=True)
                for micro in range(cfg.grad_accum_steps):
                    self.micro_batch(micro, metrics, autocast)
                max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                grad_norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(self.params, max_norm)))
                loss = metrics.end_step()
                if not (_finite(loss) and _finite(grad_norm)):
                    what = f"loss {loss}" if not _finite(loss) else f"gradient norm {grad_norm} (loss {loss:.4g})"
                    where = self.last_checkpoint or "none (no checkpoint was written yet)"
                    raise NonFiniteLossError(
                        f"non-finite {what} at step {self.step + 1}: training stopped before the optimizer "
                        f"step, no checkpoint was written with these values; last good checkpoint: {where}"
                    )
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                eval_due = self.evaluation_due()
                ckpt_due = self.step % cfg.ckpt_every == 0 or self.step == total
                if self.local_sgd and (self.step % cfg.average_every == 0 or eval_due or ckpt_due):
                    average_tensors(self.params, ctx)
                if self.local_sgd and ckpt_due:  # every rank then holds the state the checkpoint saves
                    average_tensors(optimizer_state_tensors(self.optimizer), ctx)
                self.ema.update(self.inner)
                if self.comp.on_step_end is not None:
                    self.comp.on_step_end(self.step, self.model)
                if eval_due or self.step % cfg.log_every == 0 or self.step == total:
                    last = metrics.window_metrics(lr=lr, grad_norm=grad_norm, epoch=self.stream.epoch)
                    if eval_due and self.comp.evaluate is not None and (ctx.is_main or self.comp.evaluate_on_all_ranks):
                        t_eval = time.perf_counter()
                        with eager_stance(self.compiled):
                            measured = self.comp.evaluate(self.step, self.inner)
                        metrics.exclude_time(time.perf_counter() - t_eval)  # keeps samples/s a training figure
                        if ctx.is_main:
                            last.update(measured)
                    if ctx.is_main:
                        if self.on_metrics is not None:
                            self.on_metrics(self.step, last)
                        bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                if ckpt_due:
                    self.save()
                bar.update(1)
        finally:
            bar.close()
        final = self.save_final()
        return TrainResult(self.step, final, self.last_checkpoint, last)


def train(
    cfg: TrainConfig,
    components: Components,
    *,
    ctx: DistContext | None = None,
    on_metrics: MetricsCallback | None = None,
) -> TrainResult:
    """Train ``components`` as ``cfg`` says; resume or initialise first; write ``output/final``.

    ``ctx`` defaults to :func:`init_distributed` (torchrun environment or a single process);
    a process group created here is destroyed at the end. ``on_metrics(step, metrics)`` runs
    on rank 0 every ``log_every`` steps. Raises :class:`NonFiniteLossError` when the loss or
    the gradient norm is NaN/inf, before any weight changes.
    """
    own = ctx is None
    if ctx is None:
        ctx = init_distributed(cfg.backend, force_group=cfg.strategy == "fsdp2")
    try:
        set_determinism(cfg.deterministic)
        run = _Run(cfg, components, ctx, on_metrics)
        run.start()
        return run.run()
    finally:
        if own:
            cleanup_distributed(ctx)
