"""RoPE's pair swap inside a compiled attention block on CPU: the library's formulation against
the alternatives tried, forward+backward, with a bit-for-bit check of outputs and gradients.

    python benchmarks/rope_compiled.py                       # the demo's temporal attention
    python benchmarks/rope_compiled.py --sequences 2048 --frames 16 --json

Each variant runs :meth:`soraflow.models.layers.Attention.attend` (fused ``qkv`` split into heads,
per-head q/k RMSNorm, rotation, attention: the compiled blocks' path) under ``torch.compile`` and
bf16 autocast, with ``RotaryEmbedding.rotate`` replaced for the run:

- ``library``: :meth:`soraflow.models.layers.RotaryEmbedding.rotate` (the swap as a ``stack`` of
  the pairs' halves; inductor indexes it by ``channel // 2`` and its C++ tiling heuristic keeps that
  loop scalar);
- ``shifted``: the swap as two shifted reads of the channels (``F.pad``) times sines pre-signed
  per parity, every load contiguous (bit-identical to ``library`` with fp32 input only: in bf16 the
  intermediate sum is rounded);
- ``no_swap``: ``x * cos + x * sin``, wrong maths with the same operations, as a reference.

Stop 49 (AMD EPYC, 1 thread, the defaults: 1024 sequences of 8 frames, 6 heads of 24), best of 20,
two runs: bf16 input (the blocks' case) library 25.5-27.0 ms, shifted 52.5-53.4 ms, no_swap
36.3-36.5 ms; fp32 input library 33.3-34.2 ms, shifted 35.7 ms, no_swap 32.9-34.8 ms. The library's
formulation stays: inductor inlines the normalisation into each shifted read.
"""

from __future__ import annotations

import argparse
import json
import time
from unittest import mock

import torch
import torch.nn.functional as F

from soraflow.models.layers import Attention, RotaryEmbedding

library = RotaryEmbedding.rotate


def shifted_rotation(sin: torch.Tensor):
    """``rotate`` with the swap as two shifted reads; ``sin [N, D]`` (fp32) is the one it will be
    called with, pre-signed per parity here (outside the graph, so the graph only loads it)."""
    even = torch.arange(sin.shape[-1]) % 2 == 0
    zero = torch.zeros_like(sin)
    sin_even, sin_odd = torch.where(even, -sin, zero), torch.where(even, zero, sin)

    def rotate(x, cos, _sin):
        nxt = F.pad(x[..., 1:], (0, 1))  # nxt[j] = x[j + 1]
        prv = F.pad(x[..., :-1], (1, 0))  # prv[j] = x[j - 1]
        return torch.addcmul(torch.addcmul(x * cos.to(x.dtype), nxt, sin_even.to(x.dtype)), prv, sin_odd.to(x.dtype))

    return rotate


def no_swap(x, cos, sin):
    return torch.addcmul(x * cos.to(x.dtype), x, sin.to(x.dtype))


VARIANTS = ("library", "shifted", "no_swap")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


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
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--json", action="store_true", help="one JSON line per variant")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = args.heads * args.head_dim
    attn = Attention(c, args.heads)  # the library's attention; only ``attend`` (after the projection) runs
    with torch.no_grad():
        for norm in (attn.q_norm, attn.k_norm):
            norm.weight.copy_(torch.rand(args.head_dim) + 0.5)
    qkv0 = torch.randn(args.sequences, args.frames, 3 * c).to(DTYPES[args.input_dtype])
    rope = RotaryEmbedding(args.head_dim).cos_sin(args.frames)
    rotations = {"library": library, "shifted": shifted_rotation(rope[1]), "no_swap": no_swap}

    results = {}
    for name in args.variants:
        torch._dynamo.reset()
        fn = torch.compile(attn.attend)
        times = []
        with mock.patch.object(RotaryEmbedding, "rotate", staticmethod(rotations[name])):
            for i in range(5 + args.repeats):
                attn.zero_grad(set_to_none=True)
                qkv = qkv0.clone().requires_grad_(True)
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = fn(qkv, rope)
                out.float().square().sum().backward()
                if i >= 5:
                    times.append(time.perf_counter() - t0)
        times.sort()
        results[name] = (out.detach(), qkv.grad, attn.q_norm.weight.grad, attn.k_norm.weight.grad)
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
