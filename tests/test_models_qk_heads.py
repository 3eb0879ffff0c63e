"""The fused q/k head split, RMSNorm and RoPE (soraflow.models.qk_heads) against the composed layers."""

from __future__ import annotations

import pytest
import torch

from soraflow.models.layers import Attention, RMSNorm, RotaryEmbedding
from soraflow.models.qk_heads import qkv_heads, rotate_pairs


def _composed(qkv, heads, norm_q, norm_k, rope):
    b, n, c3 = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, c3 // 3 // heads).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = norm_q(q), norm_k(k)
    if rope is not None:
        q, k = RotaryEmbedding.rotate(q, *rope), RotaryEmbedding.rotate(k, *rope)
    return q, k, v


def _norms(d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    norms = [RMSNorm(d).to(dtype), RMSNorm(d).to(dtype)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(d, generator=g, dtype=dtype) + 0.5)
    return norms


@pytest.mark.parametrize("with_rope", [False, True])
def test_values_and_gradients_match_the_composed_layers(with_rope):
    heads, d, n = 3, 8, 5
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, n, 3 * heads * d, generator=g, dtype=torch.float64, requires_grad=True)
    rope = tuple(t.double() for t in RotaryEmbedding(d).cos_sin(n)) if with_rope else None
    upstream = [torch.randn(2, heads, n, d, generator=g, dtype=torch.float64) for _ in range(3)]
    results = []
    for fused in (True, False):
        nq, nk = _norms(d, torch.float64)
        qkv.grad = None
        if fused:
            outs = qkv_heads(qkv, heads, nq.weight, nk.weight, nq.eps, rope)
        else:
            outs = _composed(qkv, heads, nq, nk, rope)
        sum((o * u).sum() for o, u in zip(outs, upstream)).backward()
        results.append([*(o.detach() for o in outs), qkv.grad.clone(), nq.weight.grad, nk.weight.grad])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_gradcheck_with_unused_v():
    heads, d, n = 2, 4, 3
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(1, n, 3 * heads * d, generator=g, dtype=torch.float64, requires_grad=True)
    wq = (torch.rand(d, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    wk = (torch.rand(d, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    rope = tuple(t.double() for t in RotaryEmbedding(d).cos_sin(n))
    # v does not reach the output: its gradient is None in the backward and must come back zero
    fn = lambda x, a, b: sum(o.square().sum() for o in qkv_heads(x, heads, a, b, 1e-6, rope)[:2])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (qkv, wq, wk))
    fn(qkv, wq, wk).backward()
    v_grad = qkv.grad.view(1, n, 3, heads, d)[:, :, 2]
    assert torch.count_nonzero(v_grad) == 0


def test_bf16_outputs_are_contiguous_heads_near_the_fp64_result():
    heads, d, n = 6, 24, 8
    g = torch.Generator().manual_seed(3)
    qkv64 = torch.randn(4, n, 3 * heads * d, generator=g, dtype=torch.float64)
    nq, nk = _norms(d, torch.float64)
    rope = RotaryEmbedding(d).cos_sin(n)
    want = _composed(qkv64, heads, nq, nk, tuple(t.double() for t in rope))
    got = qkv_heads(qkv64.bfloat16(), heads, nq.weight.float(), nk.weight.float(), nq.eps, rope)
    for o, w in zip(got, want):
        assert o.dtype == torch.bfloat16 and o.is_contiguous() and o.shape == (4, heads, n, d)
        # one bf16 rounding of the input and one of the output: within 2^-7 relative
        torch.testing.assert_close(o.double(), w, rtol=2**-7, atol=2**-6)


def test_rotate_pairs_is_a_quarter_turn_per_pair():
    x = torch.arange(1.0, 7.0)
    assert rotate_pairs(x).tolist() == [-2.0, 1.0, -4.0, 3.0, -6.0, 5.0]
    assert torch.equal(rotate_pairs(rotate_pairs(x)), -x)


def test_attention_uses_the_fused_path_in_eager_and_agrees_with_the_composed_one(monkeypatch):
    torch.manual_seed(0)
    attn = Attention(48, 4).double()
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)
        attn.k_norm.weight.uniform_(0.5, 1.5)
    qkv = torch.randn(3, 7, 144, dtype=torch.float64, requires_grad=True)
    rope = tuple(t.double() for t in RotaryEmbedding(12).cos_sin(7))
    calls = []
    import soraflow.models.layers as layers

    real = layers.qkv_heads
    monkeypatch.setattr(layers, "qkv_heads", lambda *a, **k: calls.append(1) or real(*a, **k))
    fused = attn.attend(qkv, rope)
    assert calls == [1]
    (g_fused,) = torch.autograd.grad(fused.sum(), qkv)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # what compiled blocks run
    composed = attn.attend(qkv, rope)
    assert calls == [1]
    (g_composed,) = torch.autograd.grad(composed.sum(), qkv)
    torch.testing.assert_close(fused, composed, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_fused, g_composed, rtol=1e-10, atol=1e-10)
