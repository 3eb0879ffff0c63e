"""RoPE's pair swap inside a compiled attention block on CPU: the library's formulation against
the alternatives tried, forward+backward, with a bit-for-bit check of outputs and gradients.

    python benchmarks/rope_compiled.py                       # the demo's temporal attention
    python benchmarks/rope_compiled.py --sequences 2048 --frames 16 --json

Each variant runs the temporal attention of a block as the compiled blocks do (fused ``qkv`` split
into heads, per-head q/k RMSNorm, rotation, attention) under ``torch.compile`` and bf16 autocast:

- ``library``: :meth:`soraflow.models.layers.RotaryEmbedding.rotate` (the swap as a ``stack`` of
  the pairs' halves; inductor indexes it by ``channel // 2`` and its C++ tiling heuristic keeps that
  loop scalar);
- ``shifted``: the swap as two shifted reads of the channels (``F.pad``) times sines pre-signed
  per parity, every load contiguous (bit-identical to ``library`` with fp32 input only: in bf16 the
  intermediate sum is rounded);
- ``no_swap``: ``x * cos + x * sin``, wrong maths with the same operations, as a reference.

Stop 49 (AMD EPYC, 1 thread, the defaults: 1024 sequences of 8 frames, 6 heads of 24), best of 20,
three runs: bf16 input (the blocks' case) library 25.2 ms, shifted 58.7-59.3 ms, no_swap 36.1-36.8 ms;
fp32 input library 29.1-30.0 ms, shifted 35.0-36.0 ms, no_swap 29.8-32.0 ms. The library's
formulation stays: inductor inlines the normalisation into each shifted read.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from soraflow.models.layers import RotaryEmbedding, attention


def library(x, cos, sin, sin_even, sin_odd):
    return RotaryEmbedding.rotate(x, cos, sin)


def shifted(x, cos, sin, sin_even, sin_odd):
    nxt = F.pad(x[..., 1:], (0, 1))  # nxt[j] = x[j + 1]
    prv = F.pad(x[..., :-1], (1, 0))  # prv[j] = x[j - 1]
    return torch.addcmul(torch.addcmul(x * cos, nxt, sin_even), prv, sin_odd)


def no_swap(x, cos, sin, sin_even, sin_odd):
    return torch.addcmul(x * cos, x, sin)


VARIANTS = {"library": library, "shifted": shifted, "no_swap": no_swap}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def block(rotate, heads: int, head_dim: int):
    def run(qkv, weight, cos, sin, sin_even, sin_odd):
        b, n, _ = qkv.shape
        q, k, v = qkv.view(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q = F.rms_norm(q, (head_dim,), weight.to(q.dtype), 1e-6)
        k = F.rms_norm(k, (head_dim,), weight.to(k.dtype), 1e-6)
        rope = [t.to(q.dtype) for t in (cos, sin, sin_even, sin_odd)]
        q, k = rotate(q, *rope), rotate(k, *rope)
        return attention(q, k, v).transpose(1, 2).reshape(b, n, heads * head_dim)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=1024, help="temporal sequences (batch x tokens per frame)")
    p.add_argument("--frames", type=int, default=8, help="sequence length")
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=24)
    p.add_argument("--repeats", type=int, default=20, help="timed forward+backward passes (after 5 untimed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--input-dtype", choices=sorted(DTYPES), default="bf16",
                   help="dtype of the fused projection (bf16: a linear's output under autocast, as in the compiled blocks)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--json", action="store_true", help="one JSON line per variant")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, c = args.head_dim, args.heads * args.head_dim
    qkv0 = torch.randn(args.sequences, args.frames, 3 * c).to(DTYPES[args.input_dtype])
    weight = torch.rand(d) + 0.5
    cos, sin = RotaryEmbedding(d).cos_sin(args.frames)
    even = torch.arange(d) % 2 == 0
    zero = torch.zeros_like(sin)
    sin_even, sin_odd = torch.where(even, -sin, zero), torch.where(even, zero, sin)

    results = {}
    for name in args.variants:
        fn = torch.compile(block(VARIANTS[name], args.heads, d))
        times = []
        for i in range(5 + args.repeats):
            qkv = qkv0.clone().requires_grad_(True)
            w = weight.clone().requires_grad_(True)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fn(qkv, w, cos, sin, sin_even, sin_odd)
            out.float().square().sum().backward()
            if i >= 5:
                times.append(time.perf_counter() - t0)
        times.sort()
        results[name] = (out.detach(), qkv.grad, w.grad)
        ref = results.get("library")
        same = None if ref is None or name == "library" else all(torch.equal(a, b) for a, b in zip(ref, results[name]))
        row = {"variant": name, "best_ms": times[0] * 1e3, "median_ms": times[len(times) // 2] * 1e3, "bitwise_equal_to_library": same}
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{name:8s} best {row['best_ms']:7.2f} ms  median {row['median_ms']:7.2f} ms  "
                  f"bit-identical to library: {'-' if same is None else same}")


if __name__ == "__main__":
    main()
