"""Fast paths for the transformer's linear layers and adaLN modulation.

Two measured facts drive this module (see ``benchmarks/model.py`` and the README):

1. **Folding the modulation into the weights** (``W * (1 + scale)``, ``b + W @ shift``; the gate
   likewise) turns "elementwise pass over every token, then matmul" into one batched matmul.
   Its backward works on per-sample weight-sized tensors ``[B, C_out, C_in]``, so it pays
   only when a sample has many more tokens than the layer has outputs (fold when
   ``tokens >= 2 * C_out``); for short sequences the elementwise form is faster.
2. **bf16 matmuls on CPUs without native bf16** (AVX2 only; with AVX512-BF16 every layout is
   fast and :func:`lowp_layout` says ``"NN"``: plain ``F.linear``): the kernels are fast only when
   exactly one operand is transposed in memory (measured on this machine, 1 thread:
   ``A^T B`` ~15-22 GFLOP/s, ``A B^T`` ~10, ``A B`` ~1). ``F.linear``'s autograd backward
   computes ``grad @ W`` with both operands row-major, ~10x slower than its forward. On CPU
   in low precision, :func:`linear` is an autograd function that gives every one of its
   three matmuls the fastest layout, chosen once per process by timing both candidates
   (:func:`lowp_layout`); the transposing copies are cheap next to a bf16 matmul.

The maths is unchanged in every path; tests compare the paths with each other.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GELUTanh", "Linear", "gated_residual", "gelu_tanh", "linear", "lowp_cpu_dtype", "modulate", "modulated_linear",
]

_LOWP = (torch.bfloat16, torch.float16)

#: Fold a modulated linear when ``tokens per sample >= FOLD_RATIO * C_out`` (gated: ``* C_in``).
FOLD_RATIO = 2


def lowp_cpu_dtype(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The low-precision dtype a CPU matmul on ``x`` will run in (autocast or bf16/fp16
    weights), or None for fp32 / non-CPU."""
    if x.device.type != "cpu":
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        return dtype if dtype in _LOWP else None
    return weight.dtype if weight.dtype in _LOWP else None


#: The plain layout (autograd's own ``F.linear``, no transposing copies) is kept when its matmul
#: is at least this fraction as fast as the best transposed one.
PLAIN_LAYOUT_MIN_SPEED = 0.85


@functools.lru_cache(maxsize=4)
def lowp_layout(dtype: torch.dtype) -> str:
    """How CPU matmuls in ``dtype`` should hold their operands, timed once per process:

    - ``"NN"``: both operands row-major (what ``F.linear``'s autograd does) is within
      :data:`PLAIN_LAYOUT_MIN_SPEED` of the best layout: no copies needed (CPUs with native bf16,
      e.g. AVX512-BF16, where the four layouts ran within 8% of each other);
    - ``"TN"``: ``A^T B`` (first operand stored transposed) is the fastest, else
    - ``"NT"``: ``A B^T`` (second operand stored transposed).
    """

    def best(fn: Callable[[], Tensor]) -> float:
        fn()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    n = 384
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    a_t, b_t = a.t().contiguous().t(), b.t().contiguous().t()
    return pick_layout(
        best(lambda: torch.mm(a, b)), best(lambda: torch.mm(a_t, b)), best(lambda: torch.mm(a, b_t))
    )


def pick_layout(nn_seconds: float, tn_seconds: float, nt_seconds: float) -> str:
    """The layout :func:`lowp_layout` returns for these matmul times (see there)."""
    if nn_seconds * PLAIN_LAYOUT_MIN_SPEED <= min(tn_seconds, nt_seconds):
        return "NN"
    return "TN" if tn_seconds < nt_seconds else "NT"


def _col_major(t: Tensor) -> Tensor:
    """Same values, stored transposed (``t.t()`` contiguous): the "T" operand of a matmul."""
    return t.t().contiguous().t()


class _CpuLowpLinear(torch.autograd.Function):
    """``x @ W^T + b`` for 2-D low-precision CPU tensors, each matmul in a fast layout."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layout: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.layout = layout
        with torch.autocast("cpu", enabled=False):
            if layout == "TN":  # out = x @ W^T with x stored transposed, W^T stored row-major
                w_t = weight.t().contiguous()
                return torch.addmm(bias, _col_major(x), w_t) if bias is not None else torch.mm(_col_major(x), w_t)
            return F.linear(x, weight, bias)  # W^T is W read transposed: the "NT" layout

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # grad @ W
            if ctx.layout == "TN":
                grad_x = torch.mm(_col_major(grad), weight)
            else:
                grad_x = torch.mm(grad, _col_major(weight))
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(grad.t(), x)  # grad^T is already a transposed view: fast in both
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0, dtype=torch.float32).to(grad.dtype)
        return grad_x, grad_w, grad_b, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``, with the layout-aware backward for low-precision matmuls on CPU."""
    dtype = lowp_cpu_dtype(x, weight)
    if dtype is None or torch.compiler.is_compiling() or lowp_layout(dtype) == "NN":
        return F.linear(x, weight, bias)  # compiled blocks: inductor plans the layouts and fuses the casts
    shape = x.shape
    out = _CpuLowpLinear.apply(
        x.reshape(-1, shape[-1]).to(dtype),
        weight.to(dtype),
        None if bias is None else bias.to(dtype),
        lowp_layout(dtype),
    )
    return out.view(*shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) routed through :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


#: 0.5 * (1 + tanh(u)) = sigmoid(2u), with u = sqrt(2 / pi) * (x + 0.044715 x^3)
_GELU_SIGMOID_SCALE = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation (DiT's and Open-Sora's MLP activation).

    Eager: aten's fused kernel. Compiled: the same function written as ``x * sigmoid(2u)``,
    since ``0.5 (1 + tanh u) = sigmoid(2u)``: inductor's CPU kernels then call ``exp`` instead of
    Sleef's ``tanhf``, which took 8% of a compiled demo step (py-spy); a compiled 144 -> 576 -> 144
    MLP's bf16 forward+backward on 1024 tokens, 1 thread: 3.5 ms against 4.7-4.9 ms (eager, where
    the extra passes cost more than tanh: 7.1 against 4.6 ms, keeps aten's kernel). Equal to fp32
    rounding (values within 5e-7, gradients within 3e-6, for 10^5 draws of 4 N(0, 1))."""
    if torch.compiler.is_compiling():
        return x * torch.sigmoid(_GELU_SIGMOID_SCALE * (x + 0.044715 * x * x * x))
    return F.gelu(x, approximate="tanh")


class GELUTanh(nn.Module):
    """``nn.GELU(approximate="tanh")`` through :func:`gelu_tanh` (no parameters: same state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        return gelu_tanh(x)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` in one fused pass."""
    return torch.addcmul(shift, x, 1 + scale)


def modulated_linear(h: Tensor, layer: nn.Linear, shift: Tensor, scale: Tensor, fold: bool = True) -> Tensor:
    """``layer(h * (1 + scale) + shift)`` for ``h [B, N, C_in]``, ``shift``/``scale [B, C_in]``.

    Folded form (fp32 or GPU, long sequences): per-sample weights ``W * (1 + scale)`` and
    bias ``b + W @ shift``, one batched matmul, no elementwise pass over the tokens.
    """
    b, n, _ = h.shape
    w = layer.weight
    if fold and n >= FOLD_RATIO * w.shape[0] and lowp_cpu_dtype(h, w) is None:
        w_b = w * (1 + scale)[:, None, :].to(w.dtype)  # [B, C_out, C_in]
        b_b = torch.addmm(layer.bias, shift.to(w.dtype), w.t())  # [B, C_out]
        return torch.baddbmm(b_b[:, None, :], h, w_b.transpose(1, 2))
    return linear(modulate(h, shift[:, None], scale[:, None]), w, layer.bias)


def gated_residual(
    x: Tensor,
    h: Tensor,
    layer: nn.Linear,
    gate: Tensor,
    to_x: Callable[[Tensor], Tensor],
    fold: bool = True,
) -> Tensor:
    """``x + gate * to_x(layer(h))`` for ``h [B, N, C_in]``, ``gate [B, C_out]``.

    ``to_x`` maps the ``[B, N, C_out]`` product onto ``x``'s layout (a view). Folded form
    (fp32 or GPU, long sequences): the gate scales the rows of per-sample weights.
    """
    b, n, _ = h.shape
    w = layer.weight
    if fold and n >= FOLD_RATIO * w.shape[1] and lowp_cpu_dtype(h, w) is None:
        g = gate.to(w.dtype)
        w_b = w * g[:, :, None]  # [B, C_out, C_in]
        return x + to_x(torch.baddbmm((layer.bias * g)[:, None, :], h, w_b.transpose(1, 2)))
    gate_x = gate.view(b, *([1] * (x.dim() - 2)), gate.shape[-1])
    return torch.addcmul(x, gate_x, to_x(linear(h, w, layer.bias)))
