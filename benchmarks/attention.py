"""Attention forward+backward on CPU: PyTorch's fused SDPA kernel vs the unfused path.

    python benchmarks/attention.py                 # bf16 and fp32, head widths 24 and 64
    python benchmarks/attention.py --dtype bf16 --head-dim 64 --json

Shapes are STDiT2's: spatial attention (frames x tokens per frame), temporal attention (tokens
x frames), cross attention (video tokens x caption tokens) at small latents, and longer
sequences where the fused kernel should win. Each row times the best of ``--repeats``
forward+backward passes of

- ``fused``: ``F.scaled_dot_product_attention`` on the inputs as they are;
- ``unfused``: :func:`soraflow.models.layers.unfused_attention` (two batched matmuls in the
  inputs' dtype, softmax in fp32);

and prints their ratio. :func:`soraflow.models.layers.attention` takes the unfused path on CPU
in bf16 up to ``UNFUSED_MAX_KEYS`` keys; this script is where that threshold comes from.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from soraflow.models.layers import UNFUSED_MAX_KEYS, unfused_attention

#: (name, batch x groups, query tokens, key tokens)
SHAPES = (
    ("spatial 4x4", 32, 16, 16),
    ("spatial 8x8", 16, 64, 64),
    ("temporal 8", 128, 8, 8),
    ("cross 512x32", 2, 512, 32),
    ("spatial 15x20", 4, 300, 300),
    ("clip 8x64", 2, 512, 512),
    ("clip 16x64", 2, 1024, 1024),
)


def fwd_bwd_ms(fn, qkv: list[torch.Tensor], repeats: int) -> float:
    def once() -> None:
        leaves = [t.detach().requires_grad_() for t in qkv]
        fn(*leaves).float().sum().backward()

    once()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], action="append", help="repeatable (default: both)")
    ap.add_argument("--head-dim", type=int, action="append", help="repeatable (default: 24 and 64)")
    ap.add_argument("--heads", type=int, default=0, help="heads (default: 6 for width 24, else 12)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="one JSON line per row")
    args = ap.parse_args()
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    torch.manual_seed(0)
    if not args.json:
        print(f"threads {torch.get_num_threads()}; attention() goes unfused in bf16 up to {UNFUSED_MAX_KEYS} keys")
        print(f"{'dtype':5} {'d':>3} {'shape':14} {'B':>4} {'Nq':>5} {'Nk':>5} {'fused_ms':>9} {'unfused_ms':>10} {'fused/unfused':>13}")
    for name in args.dtype or ["bf16", "fp32"]:
        for d in args.head_dim or [24, 64]:
            heads = args.heads or (6 if d == 24 else 12)
            for label, b, nq, nk in SHAPES:
                qkv = [torch.randn(b, heads, n, d).to(dtypes[name]) for n in (nq, nk, nk)]
                fused = fwd_bwd_ms(F.scaled_dot_product_attention, qkv, args.repeats)
                unfused = fwd_bwd_ms(unfused_attention, qkv, args.repeats)
                row = {"dtype": name, "head_dim": d, "heads": heads, "shape": label, "batch": b, "queries": nq,
                       "keys": nk, "fused_ms": round(fused, 3), "unfused_ms": round(unfused, 3),
                       "ratio": round(fused / unfused, 3)}
                if args.json:
                    print(json.dumps(row))
                else:
                    print(f"{name:5} {d:3d} {label:14} {b:4d} {nq:5d} {nk:5d} {fused:9.2f} {unfused:10.2f} {fused / unfused:13.2f}")


if __name__ == "__main__":
    main()
