"""Split fused ``qkv`` projections into heads, RMS-normalise q and k, rotate them by RoPE:
one autograd function with a hand-written backward.

Why by hand: composed from PyTorch ops, the per-head q/k RMSNorm and the rotation were the
largest cost outside the matmuls of an STDiT2 step on CPU (``benchmarks/model.py``; the
README has the figures). Autograd runs the norm's backward as a dozen elementwise passes,
each of q and k is normalised and rotated separately on strided views of the projection,
and the attention matmuls then copy the strided q, k and v into contiguous tensors. Here q
and k are handled as one ``[2, B, H, N, D]`` tensor in fp32 (what the norm computes in
anyway), the backward is the closed form

    x_hat = x * r,  r = 1 / sqrt(mean(x^2) + eps),  y = x_hat * w,  out = y cos + rot(y) sin
    dy = dout cos - rot(dout) sin               (rot^T = -rot; each angle shared by its pair)
    dw = sum(dy * x_hat),  dx = r * (dy w - x_hat * mean(dy w * x_hat))

and q, k and v come out contiguous in ``[B, H, N, D]``, the layout the matmuls read.
The maths is that of :class:`~soraflow.models.layers.RMSNorm` followed by
:meth:`~soraflow.models.layers.RotaryEmbedding.rotate` (tests compare values and gradients).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["qkv_heads", "rotate_pairs"]


def rotate_pairs(x: Tensor) -> Tensor:
    """``rot(x)``: each channel pair ``(a, b)`` -> ``(-b, a)`` (RoPE's rotate-half, interleaved)."""
    x2 = x.unflatten(-1, (-1, 2))
    return torch.stack((-x2[..., 1], x2[..., 0]), dim=-1).flatten(-2)


class _QkvHeads(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, qkv: Tensor, num_heads: int, weight: Tensor, eps: float, cos: Tensor | None, sin: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        b, n, c3 = qkv.shape
        d = c3 // 3 // num_heads
        heads = qkv.view(b, n, 3, num_heads, d).permute(2, 0, 3, 1, 4)  # [3, B, H, N, D] view
        compute = torch.promote_types(qkv.dtype, torch.float32)  # fp32, or fp64 (tests)
        x = torch.empty((2, b, num_heads, n, d), dtype=compute, device=qkv.device)
        x.copy_(heads[:2])  # q and k, one fp32 copy in the layout the matmuls read
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(d).add_(eps).rsqrt_()
        x_hat = x.mul_(r)
        w = weight.to(compute).view(2, 1, 1, 1, d)
        y = x_hat * w
        if cos is not None:
            y = torch.addcmul(y * cos, rotate_pairs(y), sin)
        out = y.to(qkv.dtype)
        v = heads[2].contiguous()
        ctx.save_for_backward(x_hat, r, w, cos, sin)
        ctx.dtypes = (qkv.dtype, weight.dtype)
        q, k = out.unbind(0)
        return q, k, v

    @staticmethod
    def backward(ctx, grad_q: Tensor, grad_k: Tensor, grad_v: Tensor):  # type: ignore[override]
        x_hat, r, w, cos, sin = ctx.saved_tensors
        _, b, h, n, d = x_hat.shape
        qkv_dtype, weight_dtype = ctx.dtypes
        g = torch.empty_like(x_hat)  # [2, B, H, N, D] fp32
        for i, grad in enumerate((grad_q, grad_k)):
            if grad is None:
                g[i].zero_()
            else:
                g[i].copy_(grad)
        if cos is not None:
            g = torch.addcmul(g * cos, rotate_pairs(g), sin, value=-1.0)
        grad_w = (g * x_hat).sum(dim=(1, 2, 3)).reshape(2 * d).to(weight_dtype)
        g.mul_(w)
        dot = torch.linalg.vecdot(g, x_hat, dim=-1).unsqueeze_(-1).div_(-d)
        dx = torch.addcmul(g, x_hat, dot).mul_(r)
        grad_qkv = torch.empty(b, n, 3, h, d, dtype=qkv_dtype, device=x_hat.device)
        grad_heads = grad_qkv.permute(2, 0, 3, 1, 4)
        grad_heads[:2].copy_(dx)
        if grad_v is None:
            grad_heads[2].zero_()
        else:
            grad_heads[2].copy_(grad_v)
        return grad_qkv.view(b, n, 3 * h * d), None, grad_w, None, None, None


def qkv_heads(
    qkv: Tensor,
    num_heads: int,
    q_weight: Tensor,
    k_weight: Tensor,
    eps: float,
    rope: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``qkv [B, N, 3C]`` -> ``q, k, v [B, heads, N, C / heads]`` (contiguous, ``qkv``'s dtype):
    q and k RMS-normalised per head (gains ``q_weight``, ``k_weight``), then rotated by
    ``rope = (cos, sin)`` of shape ``[N, head_dim]`` when given. Norm and rotation in fp32
    (fp64 for fp64 input)."""
    weight = torch.cat((q_weight, k_weight))
    compute = torch.promote_types(qkv.dtype, torch.float32)
    cos, sin = (None, None) if rope is None else (rope[0].to(compute), rope[1].to(compute))
    return _QkvHeads.apply(qkv, num_heads, weight, eps, cos, sin)
