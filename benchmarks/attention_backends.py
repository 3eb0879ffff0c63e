"""STDiT2's three attentions, forward+backward, under each SDPA backend (CUDA; CPU runs too).

    python benchmarks/attention_backends.py                      # XL/2, 240p x 16 frames, batch 8
    python benchmarks/attention_backends.py --batch 4 --json

Shapes are those of one STDiT2 block (latent T x H x W, patch 1x2x2, ``--heads`` heads of
``--head-dim`` channels), with q, k and v as the strided views of one fused projection that
the compiled model hands to ``scaled_dot_product_attention``:

- ``spatial``: each frame's tokens attend to each other (B*T sequences of H/2*W/2 tokens);
- ``temporal``: each spatial position's frames (B*S sequences of T tokens), also *packed*:
  ``g`` consecutive sequences as one sequence of g*T tokens with a block-diagonal mask
  (:func:`soraflow.models.layers.block_diagonal_mask`), which is what the model does on CUDA
  (``STDiT2Config.temporal_attention_pack``): the same result from fewer, fuller kernel tiles;
- ``cross``: every video token of a sample to its caption's tokens, padding masked out.

Each row times ``--repeats`` forward+backward passes with CUDA events (wall clock on CPU) and
prints the median; ``unfused`` is :func:`soraflow.models.layers.unfused_attention` (two batched
matmuls around a softmax). A backend that cannot take a shape prints its error instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a GPU machine without the package

from soraflow.models.layers import block_diagonal_mask, pack_factor, unfused_attention  # noqa: E402

BACKENDS = {
    "default": None,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def views(groups: int, tokens: int, heads: int, head_dim: int, n_kv: int | None, dtype, device):
    """q, k, v ``[groups, heads, tokens, head_dim]`` as strided views of one projection
    (``n_kv``: separate key/value tokens, as in cross-attention)."""
    if n_kv is None:
        qkv = torch.randn(groups, tokens, 3, heads, head_dim, dtype=dtype, device=device)
        return list(qkv.permute(2, 0, 3, 1, 4).unbind(0))
    q = torch.randn(groups, tokens, heads, head_dim, dtype=dtype, device=device).transpose(1, 2)
    kv = torch.randn(groups, n_kv, 2, heads, head_dim, dtype=dtype, device=device).permute(2, 0, 3, 1, 4)
    return [q, *kv.unbind(0)]


def time_ms(fn, qkv: list[torch.Tensor], repeats: int, device: torch.device) -> float:
    leaves = [t.detach().requires_grad_() for t in qkv]
    grad = None

    def once() -> None:
        nonlocal grad
        out = fn(*leaves)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)

    once()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            once()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            once()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cases(args: argparse.Namespace):
    """(name, groups, query tokens, key tokens or None for self-attention, mask factory)."""
    t, h, w = args.latent
    s = ((h + 1) // 2) * ((w + 1) // 2)  # PatchEmbed pads odd sizes
    b = args.batch
    yield ("spatial", b * t, s, None, None)
    yield ("temporal", b * s, t, None, None)
    for g in sorted({pack_factor(b * s, t, pack) for pack in args.pack} - {1}):
        yield (f"temporal packed x{g}", b * s // g, g * t, None, lambda dev, g=g: block_diagonal_mask(g, t, dev))
    keep = torch.arange(args.caption_len) < args.caption_valid
    yield ("cross", b, t * s, args.caption_len,
           lambda dev: keep.to(dev).view(1, 1, 1, -1).expand(b, 1, 1, -1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", type=int, nargs=3, default=(16, 30, 53), metavar=("T", "H", "W"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=72)
    ap.add_argument("--caption-len", type=int, default=200)
    ap.add_argument("--caption-valid", type=int, default=120, help="caption tokens not masked out")
    ap.add_argument("--pack", type=int, action="append", help="packed temporal lengths to try (default 64, 128, 256)")
    ap.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    ap.add_argument("--backend", action="append", choices=[*BACKENDS, "unfused"],
                    help="repeatable (default: all)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", action="store_true", help="one JSON line per row")
    args = ap.parse_args()
    args.pack = args.pack or [64, 128, 256]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    backends = args.backend or [*BACKENDS, "unfused"]
    torch.manual_seed(0)
    for name, groups, n, n_kv, mask_of in cases(args):
        qkv = views(groups, n, args.heads, args.head_dim, n_kv, dtype, device)
        mask = mask_of(device) if mask_of else None
        for backend in backends:
            if backend == "unfused":
                fn = lambda q, k, v: unfused_attention(q, k, v, mask)  # noqa: E731
            else:
                def fn(q, k, v, kind=BACKENDS[backend]):
                    if kind is None:
                        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                    with sdpa_kernel(kind):
                        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            row = {"case": name, "groups": groups, "tokens": n, "keys": n_kv or n, "backend": backend}
            try:
                row["ms"] = time_ms(fn, qkv, args.repeats, device)
            except RuntimeError as e:
                row["error"] = str(e).splitlines()[0][:100]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                result = f"{row['ms']:9.3f} ms" if "ms" in row else row["error"]
                print(f"{name:22s} {groups:6d} x {n:5d} -> {n_kv or n:5d}  {backend:9s} {result}", flush=True)


if __name__ == "__main__":
    main()
