"""A tiny stand-in for STDiT2 + bucketed latents + diffusion loss, to test the engine alone.

``ToyVideoModel`` has STDiT2's call signature (``model(x, timestep, y, mask, x_mask, *,
height, width, ...)``, ``null_caption``, blocks in an ``nn.ModuleList``, gradient
checkpointing); ``ToyLatents`` are deterministic latents in two bucket shapes with caption
embeddings; ``ToyBucketSampler`` yields homogeneous, rank-sharded batches; ``toy_noise_loss``
is epsilon-prediction MSE on a linear-beta schedule. Selected by the worker's ``--builder toy``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from soraflow.training.components import Batch, Components, drop_captions
from soraflow.training.distributed import DistContext, all_gather_object, full_tensor

#: Bucket name -> latent shape (T, H, W).
TOY_BUCKETS: dict[str, tuple[int, int, int]] = {"2x4x4": (2, 4, 4), "1x4x8": (1, 4, 8)}
NUM_TIMESTEPS = 1000


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ToyBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.mod = nn.Linear(hidden, 2 * hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mod(F.silu(c)).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class ToyVideoModel(nn.Module):
    """Per-voxel MLP conditioned on timestep (per frame) and pooled caption."""

    def __init__(self, in_channels: int = 4, caption_channels: int = 8, hidden: int = 32, depth: int = 2, token_num: int = 4):
        super().__init__()
        self.config = {
            "class": "ToyVideoModel",
            "in_channels": in_channels,
            "caption_channels": caption_channels,
            "hidden": hidden,
            "depth": depth,
            "token_num": token_num,
        }
        self.hidden = hidden
        self.x_proj = nn.Linear(in_channels, hidden)
        self.t_proj = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.y_proj = nn.Linear(caption_channels, hidden)
        self.blocks = nn.ModuleList([ToyBlock(hidden) for _ in range(depth)])
        self.out = nn.Linear(hidden, in_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("y_embedding", torch.randn(token_num, caption_channels) / caption_channels**0.5)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    def null_caption(self, batch: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_null [B, L, C], mask [B, L])`` like STDiT2's (``length`` must be ``token_num``)."""
        if length is not None and length != self.y_embedding.shape[0]:
            raise ValueError(f"toy null caption has {self.y_embedding.shape[0]} tokens, asked {length}")
        y = self.y_embedding[None].expand(batch, -1, -1)
        return y, torch.ones(y.shape[:2], dtype=torch.bool, device=y.device)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        *,
        height: Any = None,
        width: Any = None,
        num_frames: Any = None,
        fps: Any = None,
        ar: Any = None,
    ) -> torch.Tensor:
        b, _, t, _, _ = x.shape
        h = self.x_proj(x.permute(0, 2, 3, 4, 1))  # B T H W D
        y = y.reshape(b, -1, y.shape[-1])
        if mask is not None:
            w = mask.to(y.dtype).reshape(b, -1, 1)
            pooled = (y * w).sum(1) / w.sum(1).clamp_min(1.0)
        else:
            pooled = y.mean(1)
        t_frames = timestep.reshape(b, 1).expand(b, t)
        if x_mask is not None:  # conditioning frames see t = 0, as in Open-Sora
            t_frames = torch.where(x_mask.bool(), t_frames, torch.zeros_like(t_frames))
        c = self.t_proj(timestep_embedding(t_frames, self.hidden)) + self.y_proj(pooled)[:, None]
        c = c[:, :, None, None, :]  # B T 1 1 D
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                h = checkpoint(block, h, c, use_reentrant=False)
            else:
                h = block(h, c)
        return self.out(h).permute(0, 4, 1, 2, 3).contiguous()


def _linear_alphas_cumprod(n: int = NUM_TIMESTEPS) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, n, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


class ToyNoiseLoss:
    """Epsilon-prediction MSE per sample; noise and t from the global torch RNG."""

    def __init__(self, num_timesteps: int = NUM_TIMESTEPS):
        self.num_timesteps = num_timesteps
        self.alphas_cumprod = _linear_alphas_cumprod(num_timesteps)

    def __call__(self, model: nn.Module, batch: Batch) -> dict[str, Any]:
        x = batch["x"]
        b = x.shape[0]
        t = torch.randint(0, self.num_timesteps, (b,)).to(x.device)
        noise = torch.randn(x.shape).to(x.device)
        a = self.alphas_cumprod.to(x.device)[t].view(b, 1, 1, 1, 1)
        x_t = a.sqrt() * x + (1 - a).sqrt() * noise
        x_mask = batch.get("x_mask")
        if x_mask is not None:
            x_t = torch.where(x_mask[:, None, :, None, None], x_t, x)
        pred = model(
            x_t, t, batch["y"], batch.get("mask"), x_mask,
            height=batch.get("height"), width=batch.get("width"), num_frames=batch.get("num_frames"),
        )
        se = (pred.float() - noise).pow(2).mean(dim=(1, 3, 4))  # B T
        if x_mask is not None:
            m = x_mask.float()
            loss = (se * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:
            loss = se.mean(1)
        return {"loss": loss, "t": t}


class ToyLatents(torch.utils.data.Dataset):
    """``num_samples`` latents; sample i is in bucket ``i % 2`` and class ``i % 4``.

    Content and caption embedding depend only on the class (plus a little per-sample noise), so
    the model can learn them and the loss falls within a few dozen steps.
    """

    def __init__(self, num_samples: int = 64, channels: int = 4, caption_channels: int = 8, token_num: int = 4, seed: int = 0):
        self.num_samples = num_samples
        self.channels = channels
        g = torch.Generator().manual_seed(seed)
        self.class_means = torch.randn(4, channels, generator=g)
        self.class_captions = torch.randn(4, token_num, caption_channels, generator=g)
        self.token_num = token_num
        self.seed = seed
        names = list(TOY_BUCKETS)
        self.bucket_of = [names[i % len(names)] for i in range(num_samples)]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict[str, Any]:
        bucket = self.bucket_of[i]
        t, h, w = TOY_BUCKETS[bucket]
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        cls = i % 4
        x = self.class_means[cls].view(-1, 1, 1, 1) + 0.1 * torch.randn(self.channels, t, h, w, generator=g)
        mask = torch.ones(self.token_num, dtype=torch.long)
        mask[self.token_num - 1 - (i % 2) :] = 0  # some padded tokens
        return {
            "x": x,
            "y": self.class_captions[cls][None].clone(),
            "mask": mask,
            "index": i,
            "bucket": bucket,
            "height": h,
            "width": w,
            "num_frames": t,
        }


class ToyBucketSampler:
    """Homogeneous batches per bucket, shuffled per ``(seed, epoch)``, sharded over ranks.

    Every rank gets the same number of batches (extra ones are dropped), as DDP requires.
    """

    def __init__(self, bucket_of: list[str], batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        self.bucket_of = bucket_of
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        batches: list[list[int]] = []
        for name in sorted(set(self.bucket_of)):
            idx = torch.tensor([i for i, b in enumerate(self.bucket_of) if b == name])
            idx = idx[torch.randperm(len(idx), generator=g)].tolist()
            batches += [idx[k : k + self.batch_size] for k in range(0, len(idx) - self.batch_size + 1, self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[k] for k in order]

    def __iter__(self):
        batches = self._all_batches()
        per_rank = len(batches) // self.num_replicas
        return iter(batches[self.rank : per_rank * self.num_replicas : self.num_replicas])

    def __len__(self) -> int:
        return len(self._all_batches()) // self.num_replicas

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])


class ToyResumableSampler(ToyBucketSampler):
    """The same batches, but the sampler resumes itself (as ``soraflow.buckets.BucketSampler``
    does): ``state_dict(steps)`` / ``load_state_dict`` with a global position."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._start = 0
        self._iter_start = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._start = epoch, 0

    def __iter__(self):
        batches = self._all_batches()
        per_rank = len(batches) // self.num_replicas
        start, self._iter_start = self._start, self._start
        self._start = 0
        for g in range(start + self.rank, per_rank * self.num_replicas, self.num_replicas):
            yield batches[g]

    def state_dict(self, steps: int = 0) -> dict[str, int]:  # type: ignore[override]
        return {"seed": self.seed, "epoch": self.epoch, "position": self._iter_start + steps * self.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self._start = self._iter_start = int(state["position"])


def toy_collate(samples: list[dict[str, Any]]) -> Batch:
    out: Batch = {k: torch.stack([s[k] for s in samples]) for k in ("x", "y", "mask")}
    out["index"] = torch.tensor([s["index"] for s in samples])
    out["bucket"] = samples[0]["bucket"]
    for k in ("height", "width", "num_frames"):
        out[k] = samples[0][k]
    return out


def param_digest(model: nn.Module) -> str:
    """SHA-256 of all parameters' bytes (full tensors; a collective under FSDP2)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = full_tensor(p.detach()).float().cpu().contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def build_toy_components(
    params: Any,
    ctx: DistContext,
    *,
    num_samples: int = 64,
    batch_size: int = 4,
    hidden: int = 32,
    depth: int = 2,
    record: bool = True,
    step_delay: float = 0.0,
    resumable_sampler: bool = False,
    nan_at_step: int = 0,
    nan_rank: int = -1,
    gather_eval_every: int = 0,
) -> Components:
    """Toy model + data + loss. With ``record``, every rank appends to ``output``:
    ``batches-rank{r}.jsonl`` (step, micro, sample indices) and ``digests-rank{r}.jsonl``
    (step, parameter digest after the step), to check batch order and replica equality.
    ``resumable_sampler`` uses a sampler that resumes itself instead of the engine's skip.
    ``nan_at_step`` > 0 poisons the loss of that step on rank ``nan_rank`` (-1: every rank).
    ``gather_eval_every`` > 0 adds an evaluation on every rank that all-gathers the ranks' ids
    (``probe/ranks_gathered``, ``probe/rank_sum``): a collective the loop must call everywhere."""
    output = Path(params.train.output)
    dataset = ToyLatents(num_samples=num_samples, seed=0)
    sampler_cls = ToyResumableSampler if resumable_sampler else ToyBucketSampler
    sampler = sampler_cls(dataset.bucket_of, batch_size, ctx.world_size, ctx.rank, seed=params.train.seed)
    model = ToyVideoModel(hidden=hidden, depth=depth)
    comp = Components(
        model=model,
        dataset=dataset,
        sampler=sampler,
        loss_fn=ToyNoiseLoss(),
        collate_fn=toy_collate,
        caption_dropout=drop_captions,
        count_tokens=lambda b: int(b["x"].shape[0] * b["x"].shape[2] * b["x"].shape[3] * b["x"].shape[4]),
        num_timesteps=NUM_TIMESTEPS,
        model_config=model.config,
        info={"buckets": TOY_BUCKETS, "num_samples": num_samples, "batch_size": batch_size},
    )
    if nan_at_step > 0 and nan_rank in (-1, ctx.rank):
        clean_loss, calls = comp.loss_fn, [0]

        def poisoned_loss(model: nn.Module, batch: Batch) -> dict[str, Any]:
            out = clean_loss(model, batch)
            calls[0] += 1
            if calls[0] == nan_at_step:  # one call per step without grad accumulation
                out["loss"] = out["loss"] * float("nan")
            return out

        comp.loss_fn = poisoned_loss
    if gather_eval_every > 0:

        def gather_ranks(step: int, model: nn.Module) -> dict[str, float]:
            ranks = all_gather_object(ctx.rank, ctx)
            return {"probe/ranks_gathered": float(len(ranks)), "probe/rank_sum": float(sum(ranks))}

        comp.evaluate, comp.evaluate_every, comp.evaluate_on_all_ranks = gather_ranks, gather_eval_every, True
    if record or step_delay > 0:
        output.mkdir(parents=True, exist_ok=True)
        batches_log = output / f"batches-rank{ctx.rank}.jsonl"
        digests_log = output / f"digests-rank{ctx.rank}.jsonl"

        def on_batch(step: int, micro: int, batch: Batch) -> None:
            if record:
                with batches_log.open("a") as f:
                    f.write(json.dumps({"step": step, "micro": micro, "index": batch["index"].tolist()}) + "\n")

        def on_step_end(step: int, model: nn.Module) -> None:
            if record:
                digest = param_digest(model)
                with digests_log.open("a") as f:
                    f.write(json.dumps({"step": step, "digest": digest}) + "\n")
            if step_delay > 0:
                time.sleep(step_delay)

        comp.on_batch = on_batch
        comp.on_step_end = on_step_end
    return comp
