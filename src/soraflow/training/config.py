"""``train`` section of params.yaml: optimiser, precision, checkpoints, launch topology.

Defaults follow Open-Sora 1.1 (AdamW, lr 2e-5 constant, no weight decay, clip 1.0, EMA 0.9999
in fp32, caption dropout 0.1, a checkpoint every 500 steps); the demo values live in
``params.yaml``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from soraflow.config_base import Precision, StrictModel

_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
_Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class TrainConfig(StrictModel):
    """How to train: one optimizer step = ``grad_accum_steps`` micro-batches on every rank."""

    #: Number of optimizer steps of this run (the stage's total, counted from its step 0).
    steps: int = Field(1000, ge=1)
    #: Optional cap in epochs (passes over the bucket sampler); the run stops at whichever of
    #: ``steps`` and ``epochs`` comes first. Needs a sampler with ``len()``.
    epochs: int | None = Field(None, ge=1)
    lr: float = Field(2e-5, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    #: AdamW's (beta1, beta2): decay rates of the gradient's running mean and of its running
    #: square (PyTorch's and the original's default 0.9, 0.999). A lower beta2 (0.99, 0.95)
    #: adapts the step size faster, a common choice for transformers trained at a high lr.
    betas: tuple[_Beta, _Beta] = (0.9, 0.999)
    #: Linear warmup from 0 to ``lr`` over this many steps (0: constant lr, the original).
    warmup_steps: int = Field(0, ge=0)
    #: After the warmup: ``constant`` (the original), ``cosine`` (a half cosine down to
    #: ``min_lr_ratio * lr`` at the last step) or ``wsd`` (warmup-stable-decay: constant, then
    #: linear down to ``min_lr_ratio * lr`` over the last ``decay_fraction`` of the steps).
    lr_schedule: Literal["constant", "cosine", "wsd"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    #: ``wsd`` only: the share of the post-warmup steps that decay.
    decay_fraction: float = Field(0.1, gt=0.0, le=1.0)
    #: Max global grad norm; 0 disables clipping (the norm is still computed and reported).
    grad_clip: float = Field(1.0, ge=0.0)
    grad_accum_steps: int = Field(1, ge=1, le=4096)
    #: EMA decay per optimizer step; the EMA copy is kept in fp32.
    ema_decay: float = Field(0.9999, ge=0.0, le=1.0)
    #: ``auto``: bf16 autocast on CUDA and on CPUs with native bf16 units (AVX512-BF16, AMX), else
    #: fp32 (:mod:`soraflow.precision`). ``bf16``: autocast everywhere. ``fp32``: none.
    mixed_precision: Precision = "auto"
    grad_checkpointing: bool = False
    #: ``torch.compile`` the model's blocks before wrapping (``compile_blocks`` when the model has
    #: it, else the whole module): fuses the elementwise work around the matmuls, which is most
    #: of a small model's step on a CPU. Compiling costs time at the start and again for each new
    #: latent shape (until PyTorch marks the shape dynamic).
    compile: bool = False
    #: ``torch.compile`` mode with ``compile`` (null: PyTorch's default).
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = None
    #: ``torch.compile``'s ``dynamic`` with ``compile``: null (PyTorch's default) compiles the first
    #: latent shape static and recompiles with the changed dims dynamic; true compiles shape-generic
    #: graphs from the start; false one static graph per shape.
    compile_dynamic: bool | None = None
    seed: int = Field(42, ge=0, le=2**31 - 1)
    ckpt_every: int = Field(500, ge=1)
    #: Complete checkpoints kept on disk (older ones are deleted); 0 keeps all.
    keep_last_k: int = Field(3, ge=0)
    #: The train flow uploads the newest checkpoint to MLflow when it is at most this many MB
    #: (all kept checkpoints are listed by path in ``checkpoints.json`` either way).
    checkpoint_artifact_max_mb: float = Field(200.0, ge=0.0)
    #: ``auto``: newest complete checkpoint under ``output`` if any; ``none``: start fresh;
    #: or the path of one checkpoint folder.
    resume: str = "auto"
    output: str = "models/train"
    nproc_per_node: int = Field(1, ge=1, le=1024)
    nnodes: int = Field(1, ge=1, le=4096)
    node_rank: int = Field(0, ge=0)
    #: ``host:port`` of the c10d rendezvous (multi-node); ignored on one node.
    rdzv_endpoint: str = "localhost:29500"
    #: Rendezvous id shared by all nodes of one job.
    rdzv_id: str = Field("soraflow-train", min_length=1)
    #: ``auto``: nccl on GPU, gloo on CPU.
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    #: DDP only. 1: the gradients are all-reduced at every step (DDP, the original). K > 1:
    #: local SGD: every rank steps on its own gradients and the ranks average their weights
    #: every K steps (and before every checkpoint and prompt check), so a rank waits for the
    #: others once per K steps instead of at every step; the loss statistics are summed over
    #: the ranks at log steps only.
    average_every: int = Field(1, ge=1, le=10_000)
    #: DDP's ``broadcast_buffers``: rank 0's buffers are sent to every rank before each
    #: forward (a collective per step). soraflow's models' buffers never change after
    #: construction, where false is safe; keep true for models with running statistics.
    broadcast_buffers: bool = True
    #: Probability of replacing a caption by the null caption (classifier-free guidance).
    caption_dropout: float = Field(0.1, ge=0.0, le=1.0)
    use_feature_cache: bool = True
    #: DataLoader worker processes (0: load in the training process).
    num_workers: int = Field(0, ge=0, le=64)
    log_every: int = Field(1, ge=1)
    #: Intra-op CPU threads per worker process (``torch.set_num_threads``); null = torch's
    #: default. On a small shared CPU one thread per process is the fast choice: OpenMP
    #: threads that wait on a busy core stall every op of a small model.
    threads: int | None = Field(None, ge=1, le=1024)
    #: ``torch.use_deterministic_algorithms(True)``: bitwise-reproducible runs on CPU.
    deterministic: bool = False
    #: Multi-stage training: a previous stage's checkpoint folder or final model folder whose
    #: weights (and EMA) start this stage. Ignored when this stage resumes its own checkpoint.
    init_from: str | None = None
    #: Also load the optimizer state from ``init_from`` (a checkpoint folder); lr and weight
    #: decay still come from this config.
    init_optimizer: bool = False
    #: Prompt following during training (``soraflow.training.prompt_eval``): every N steps
    #: (and at the end) rank 0 samples the held-out prompts and logs ``prompt/*_accuracy``;
    #: 0 = off. Needs the ``eval_classifier`` stage's classifier.
    prompt_eval_every: int = Field(0, ge=0)
    prompt_eval_prompts: int = Field(16, ge=1, le=1024)
    prompt_eval_samples: int = Field(1, ge=1, le=64)
    #: Sampler steps for these checks; null = the diffusion config's.
    prompt_eval_sampling_steps: int | None = Field(None, ge=1)

    @field_validator("resume")
    @classmethod
    def _resume_ok(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("empty; use auto, none or the path of a checkpoint folder")
        return v

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint_ok(cls, v: str) -> str:
        if not _ENDPOINT_RE.match(v):
            raise ValueError(f"expected host:port, got {v!r}")
        port = int(v.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} outside 1..65535")
        return v

    @field_validator("init_from")
    @classmethod
    def _init_from_ok(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be < nnodes {self.nnodes}")
        if self.average_every > 1 and self.strategy != "ddp":
            raise ValueError(f"average_every={self.average_every} (local SGD) needs strategy ddp, not {self.strategy}")
        if self.init_optimizer and not self.init_from:
            raise ValueError("init_optimizer is true but init_from is not set")
        return self
