"""STDiT2 behaviour: zero-init identity, caption masking, per-frame timesteps, RoPE order,
position embedding, micro-conditioning, the fast paths against the plain ones, bf16."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models_helpers import inputs, tiny_config, tiny_model
from soraflow.models import build_model, ops
from soraflow.models.layers import Attention, RotaryEmbedding, sincos_2d_position

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_fresh_temporal_branch_is_the_identity():
    model = tiny_model(temporal=False)  # temporal out-projection left at its zero init
    x, t, y, kw = inputs(frames=4)
    kw["num_frames"] = torch.tensor([4, 4])
    x_mask = torch.tensor([[True, False, True, True], [False, True, True, True]])
    for xm in (None, x_mask):  # per-sample (folded) path and per-frame path
        video = model(x, t, y, None, xm, **kw)
        assert video.abs().mean() > 0.1
        # temporal attention is the only place frames meet: with it at zero, every frame is
        # processed exactly as if it were alone
        for f in range(4):
            frame_mask = None if xm is None else xm[:, f : f + 1]
            alone = model(x[:, :, f : f + 1], t, y, None, frame_mask, **kw)
            torch.testing.assert_close(video[:, :, f : f + 1], alone, rtol=1e-5, atol=1e-5)
    before = model(x, t, y, **kw)
    # the test can fail: a trained (non-zero) temporal projection couples the frames
    with torch.no_grad():
        model.blocks[0].attn_temp.proj.weight.normal_(std=0.1)
    after = model(x, t, y, **kw)
    assert (after - before).abs().max() > 1e-3
    alone = model(x[:, :, :1], t, y, **kw)
    assert (after[:, :, :1] - alone).abs().max() > 1e-3


def test_clip_spatial_attention_couples_frames_without_the_temporal_branch():
    """spatial_attention="clip" is full 3-D attention: with the temporal branch still the identity,
    frames meet in the spatial attention, which also knows their order (RoPE over frames);
    the per-frame path (conditioning frames) computes the same as the folded one."""
    model = tiny_model(temporal=False, spatial_attention="clip")
    frame_model = tiny_model(temporal=False)
    frame_model.load_state_dict(model.state_dict())  # same parameters in either mode
    x, t, y, kw = inputs(frames=4)
    video = model(x, t, y, **kw)
    alone = model(x[:, :, :1], t, y, **kw)
    assert (video[:, :, :1] - alone).abs().max() > 1e-3  # frame 0 reads the other frames
    torch.testing.assert_close(frame_model(x[:, :, :1], t, y, **kw), alone, rtol=1e-5, atol=1e-5)
    assert (frame_model(x, t, y, **kw) - video).abs().max() > 1e-3
    # order matters: reversing the frames does not just reverse the output
    reversed_out = model(x.flip(2), t, y, **kw).flip(2)
    assert (reversed_out - video).abs().max() > 1e-3
    all_cond = model(x, t, y, None, torch.zeros(2, 4, dtype=torch.bool), **kw)  # per-frame path
    torch.testing.assert_close(all_cond, model(x, torch.zeros_like(t), y, **kw), rtol=1e-5, atol=1e-5)


def test_fresh_temporal_branch_ignores_temporal_attention_weights():
    model = tiny_model(temporal=False)
    x, t, y, kw = inputs(frames=4)
    before = model(x, t, y, **kw)
    with torch.no_grad():
        for b in model.blocks:
            b.attn_temp.qkv.weight.normal_(std=1.0)
            b.attn_temp.qkv.bias.normal_(std=1.0)
    torch.testing.assert_close(model(x, t, y, **kw), before, rtol=0, atol=0)


def test_fresh_model_outputs_zero_and_has_the_zero_inits():
    model = build_model(tiny_config(), seed=0)
    x, t, y, kw = inputs()
    assert model(x, t, y, **kw).abs().max() == 0  # final linear is zero
    for b in model.blocks:
        assert b.cross_attn.proj.weight.abs().max() == 0 and b.attn_temp.proj.weight.abs().max() == 0
        assert b.attn.proj.weight.abs().max() > 0
    assert model.t_block.weight.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("pooled", [False, True])
def test_caption_padding_does_not_change_the_output(pooled):
    model = tiny_model(pooled_caption=pooled)
    x, t, y, kw = inputs(caption_len=4)
    plain = model(x, t, y, **kw)  # 4 real tokens, no mask
    junk = torch.randn(2, 5, y.shape[-1]) * 10
    padded = torch.cat([y, junk], dim=1)  # padded to 9 tokens with garbage
    mask = torch.tensor([[1] * 4 + [0] * 5] * 2)
    torch.testing.assert_close(model(x, t, padded, mask, **kw), plain, rtol=1e-5, atol=1e-5)
    # different lengths per sample: sample 0 keeps 2 tokens
    mask2 = torch.tensor([[1, 1] + [0] * 7, [1] * 4 + [0] * 5])
    out = model(x, t, padded, mask2, **kw)
    torch.testing.assert_close(out[1], plain[1], rtol=1e-5, atol=1e-5)
    short = model(x[:1], t[:1], y[:1, :2], height=kw["height"][:1], width=kw["width"][:1])
    torch.testing.assert_close(out[:1], short, rtol=1e-5, atol=1e-5)
    # and the mask matters: unmasked garbage changes the output
    assert (model(x, t, padded, **kw) - plain).abs().max() > 1e-3


def test_pooled_caption_modulates_every_block():
    """pooled_caption=True: the caption reaches the adaLN modulation (its masked mean through an
    MLP joins the timestep embedding), so it changes each block's shift/scale/gate; without it
    the caption only reaches the tokens through cross-attention."""
    x, t, y, kw = inputs(frames=2)
    other = torch.randn_like(y)
    for pooled in (False, True):
        model = tiny_model(pooled_caption=pooled)
        assert (model.y_pool_embedder is not None) is pooled
        _, mod_a = _block_inputs(model, x, t, y, **kw)
        _, mod_b = _block_inputs(model, x, t, other, **kw)
        changed = (mod_a["t_spatial"] - mod_b["t_spatial"]).abs().max() > 1e-4
        assert bool(changed) is pooled
        changed_t = (mod_a["t_temporal"] - mod_b["t_temporal"]).abs().max() > 1e-4
        assert bool(changed_t) is pooled
    # the pooled state is a masked mean: a row with no real token pools to zero, finite output
    mask = torch.tensor([[0] * y.shape[1], [1] * y.shape[1]])
    out = model(x, t, y, mask, **kw)
    assert torch.isfinite(out).all()
    empty = model.y_pool_embedder(y, mask)[0]
    torch.testing.assert_close(empty, model.y_pool_embedder.mlp(torch.zeros(1, y.shape[-1]))[0])


@pytest.mark.parametrize("temporal", [False, True])
def test_temporal_position_tells_frames_apart(temporal):
    """A clip of identical frames: with only RoPE over frames (the original) every frame's output
    is the same, since attention sees frame offsets, not indices; with ``temporal_position`` the
    frame index is in every token and the outputs differ from frame to frame. No parameters."""
    base = tiny_model()
    model = tiny_model(temporal_position=temporal)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in base.parameters())
    x, t, y, kw = inputs(frames=4)
    x = x[:, :, :1].expand(-1, -1, 4, -1, -1).contiguous()
    out = model(x, t, y, **kw)
    spread = (out - out[:, :, :1]).abs().max()
    if temporal:
        assert spread > 1e-3
    else:
        assert spread < 1e-4
    # state dicts load across the switch
    model.load_state_dict(base.state_dict())


def test_fully_padded_caption_row_is_finite_and_attends_to_nothing():
    model = tiny_model()
    x, t, y, kw = inputs()
    mask = torch.tensor([[1] * 6, [0] * 6])
    out = model(x, t, y, mask, **kw)
    assert torch.isfinite(out).all()
    # row 1 equals a run where cross-attention contributes only its output bias (zero context)
    hooks = [
        b.cross_attn.register_forward_hook(lambda m, a, o: m.proj.bias.expand_as(o).clone()) for b in model.blocks
    ]
    ref = model(x, t, y, **kw)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-5)
    # gradients stay finite too
    model.train()
    model(x, t, y, mask, **kw).square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _block_inputs(model, *args, **kwargs):
    seen = {}

    def grab(module, args_, kwargs_):
        seen["t_spatial"], seen["t_temporal"] = args_[2].clone(), args_[3].clone()

    h = model.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    out = model(*args, **kwargs)
    h.remove()
    return out, seen


def test_per_frame_timesteps_use_t0_modulation_on_conditioning_frames():
    model = tiny_model()
    x, t, y, kw = inputs(frames=4)
    t = torch.tensor([700, 300])
    x_mask = torch.tensor([[False, True, True, False], [True, True, False, True]])
    _, mixed = _block_inputs(model, x, t, y, None, x_mask, **kw)
    _, with_t = _block_inputs(model, x, t, y, **kw)
    _, with_0 = _block_inputs(model, x, torch.zeros_like(t), y, **kw)
    for key in ("t_spatial", "t_temporal"):
        assert mixed[key].shape[1] == 4  # one modulation per frame
        for b in range(2):
            for f in range(4):
                ref = with_t if x_mask[b, f] else with_0
                torch.testing.assert_close(mixed[key][b, f], ref[key][b, 0])
    # all frames conditioning == timestep 0 everywhere (final layer included)
    all_cond = model(x, t, y, None, torch.zeros(2, 4, dtype=torch.bool), **kw)
    torch.testing.assert_close(all_cond, model(x, torch.zeros_like(t), y, **kw), rtol=1e-5, atol=1e-5)
    # all frames generated == no mask (per-frame path == folded per-sample path)
    all_gen = model(x, t, y, None, torch.ones(2, 4, dtype=torch.bool), **kw)
    torch.testing.assert_close(all_gen, model(x, t, y, **kw), rtol=1e-5, atol=1e-5)


def test_folded_modulation_equals_elementwise(monkeypatch):
    model = tiny_model().double()
    x, t, y, kw = inputs(frames=4, height=8, width=8)
    x = x.double()
    y = y.double()
    monkeypatch.setattr(ops, "FOLD_RATIO", 0)  # fold every layer
    model.train()
    folded = model(x, t, y, **kw)
    folded.square().mean().backward()
    g_folded = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_fold_modulation(False)
    plain = model(x, t, y, **kw)
    plain.square().mean().backward()
    torch.testing.assert_close(folded, plain, rtol=1e-6, atol=1e-6)
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(g_folded[n], p.grad, rtol=1e-6, atol=1e-8, msg=n)
    # the per-frame path with the same modulation on every frame == the per-sample paths
    block = model.blocks[0]
    g = torch.Generator().manual_seed(3)
    xb = torch.randn(2, 4, 16, 48, generator=g, dtype=torch.float64)
    yb = torch.randn(2, 6, 48, generator=g, dtype=torch.float64)
    ts = torch.randn(2, 1, 6 * 48, generator=g, dtype=torch.float64)
    tt = torch.randn(2, 1, 3 * 48, generator=g, dtype=torch.float64)
    rope = tuple(r.double() for r in model.rope.cos_sin(4))
    per_frame = block(xb, yb, ts.expand(2, 4, -1), tt.expand(2, 4, -1), rope)
    for fold in (True, False):
        block.fold_modulation = fold
        torch.testing.assert_close(block(xb, yb, ts, tt, rope), per_frame, rtol=1e-9, atol=1e-9)


def test_rope_norm_then_rotate_gives_relative_positions():
    torch.manual_seed(0)
    attn = Attention(32, 2, qk_norm=True)
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)
        attn.k_norm.weight.uniform_(0.5, 1.5)
    rope = RotaryEmbedding(16)
    # the same token at every position: with norm-then-rotate, scores depend on offsets only
    qkv = attn.qkv(torch.randn(1, 1, 32)).expand(1, 6, 96)
    scores = {}
    for legacy in (False, True):
        attn.legacy_rope_before_norm = legacy
        captured = {}

        def sdpa(q, k, v, **_):
            captured["s"] = q @ k.transpose(-1, -2)
            return v

        orig = torch.nn.functional.scaled_dot_product_attention
        torch.nn.functional.scaled_dot_product_attention = sdpa
        try:
            attn.attend(qkv, rope.cos_sin(6))
        finally:
            torch.nn.functional.scaled_dot_product_attention = orig
        scores[legacy] = captured["s"][0, 0]
    s = scores[False]
    for off in range(1, 5):
        diag = torch.diagonal(s, offset=off)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=1e-5, atol=1e-5)
    # the legacy order (rotate, then normalise with a non-uniform gain) breaks it
    diag = torch.diagonal(scores[True], offset=1)
    assert (diag - diag[0]).abs().max() > 1e-3


def test_rope_matches_the_interleaved_pair_rotation():
    rope = RotaryEmbedding(8)
    x = torch.randn(3, 8)
    cos, sin = rope.cos_sin(3)
    out = RotaryEmbedding.rotate(x, cos, sin)
    for pos in range(3):
        for i in range(4):
            theta = pos * 10000 ** (-2 * i / 8)
            a, b = x[pos, 2 * i], x[pos, 2 * i + 1]
            assert out[pos, 2 * i].item() == pytest.approx((a * math.cos(theta) - b * math.sin(theta)).item(), abs=1e-5)
            assert out[pos, 2 * i + 1].item() == pytest.approx((b * math.cos(theta) + a * math.sin(theta)).item(), abs=1e-5)


def _original_pos_embed(dim, h, w, scale, base_size):
    """Open-Sora's get_2d_sincos_pos_embed (MAE's numpy code with scale and base_size)."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(h, dtype=np.float32) / scale * (base_size / h)
    grid_w = np.arange(w, dtype=np.float32) / scale * (base_size / w)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, h, w)
    return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)


@pytest.mark.parametrize(("h", "w", "pixels"), [(4, 4, (32, 32)), (3, 5, (240, 424)), (6, 2, (512, 160))])
def test_position_embedding_matches_the_original_formula(h, w, pixels):
    scale = math.sqrt(pixels[0] * pixels[1]) / 512
    base = round((h * w) ** 0.5)
    ours = sincos_2d_position(h, w, 48, torch.tensor([scale, 2 * scale]), base_size=base)
    np.testing.assert_allclose(ours[0].numpy(), _original_pos_embed(48, h, w, scale, base), atol=1e-5)
    np.testing.assert_allclose(ours[1].numpy(), _original_pos_embed(48, h, w, 2 * scale, base), atol=1e-5)


def test_micro_conditioning_is_wired():
    model = tiny_model()
    x, t, y, kw = inputs()
    base = model(x, t, y, **kw)
    # default aspect ratio is H/W (one definition everywhere)
    torch.testing.assert_close(base, model(x, t, y, ar=kw["height"] / kw["width"], **kw))
    assert (base - model(x, t, y, ar=kw["width"] / kw["height"], **kw)).abs().max() > 1e-4
    # default frames = T, default fps = config.default_fps
    torch.testing.assert_close(base, model(x, t, y, num_frames=torch.tensor([3, 3]), fps=24, **kw))
    for extra in ({"fps": 8}, {"num_frames": 12}):
        assert (base - model(x, t, y, **kw, **extra)).abs().max() > 1e-4
    other_size = {"height": kw["height"] * 2, "width": kw["width"]}
    assert (base - model(x, t, y, **other_size)).abs().max() > 1e-4
    # per-sample values: sample 1 alone gives the same result as in the batch
    alone = model(x[1:], t[1:], y[1:], height=kw["height"][1:], width=kw["width"][1:])
    torch.testing.assert_close(alone, base[1:], rtol=1e-5, atol=1e-5)


def test_timestep_accepts_long_and_float():
    model = tiny_model()
    x, t, y, kw = inputs()
    torch.testing.assert_close(model(x, t, y, **kw), model(x, t.float(), y, **kw))
    assert (model(x, t.float() + 0.5, y, **kw) - model(x, t, y, **kw)).abs().max() > 0


def test_caption_as_b1lc_and_null_caption():
    model = tiny_model()
    x, t, y, kw = inputs()
    torch.testing.assert_close(model(x, t, y[:, None], **kw), model(x, t, y, **kw))
    y_null, mask = model.null_caption(2)
    assert y_null.shape == (2, 6, 16) and mask.shape == (2, 6) and mask.all()
    torch.testing.assert_close(y_null[0], model.y_embedder.null_embedding)
    assert torch.isfinite(model(x, t, y_null, mask, **kw)).all()
    short, short_mask = model.null_caption(3, length=4)
    assert short.shape == (3, 4, 16) and short_mask.all()
    long, long_mask = model.null_caption(1, length=9)
    assert long.shape == (1, 9, 16) and long_mask[0].tolist() == [True] * 6 + [False] * 3
    # the null embedding is a buffer: saved, not trained
    assert "y_embedder.null_embedding" in model.state_dict()
    assert all("null_embedding" not in n for n, _ in model.named_parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model().train()
    x, t, y, kw = inputs()
    x_mask = torch.tensor([[True, False, True], [True, True, True]])
    grads = []
    for ckpt in (False, True):
        model.set_grad_checkpointing(ckpt)
        model.zero_grad()
        model(x, t, y, None, x_mask, **kw).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], msg=n)


def test_bf16_autocast_forward_and_backward_are_finite_and_close():
    model = tiny_model().train()
    x, t, y, kw = inputs()
    ref = model(x, t, y, **kw)
    ref.square().mean().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y, **kw)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).norm() / ref.norm() < 0.05
    out.square().mean().backward()
    for n, p in model.named_parameters():
        if n in ref_grads and ref_grads[n].norm() > 1e-6:
            assert torch.isfinite(p.grad).all(), n
            assert (p.grad - ref_grads[n]).norm() / ref_grads[n].norm() < 0.15, n


@pytest.mark.parametrize("layout", ["TN", "NT"])
def test_lowp_cpu_linear_matches_autograd(layout):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 24, generator=g).bfloat16().requires_grad_()
    w = torch.randn(36, 24, generator=g).bfloat16().requires_grad_()
    b = torch.randn(36, generator=g).bfloat16().requires_grad_()
    out = ops._CpuLowpLinear.apply(x, w, b, layout)
    grad = torch.randn(10, 36, generator=g).bfloat16()
    out.backward(grad)
    x64, w64, b64 = (v.detach().double().requires_grad_() for v in (x, w, b))
    ref = torch.nn.functional.linear(x64, w64, b64)
    ref.backward(grad.double())
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=5e-2)
    for ours, theirs in ((x.grad, x64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(ours.double(), theirs, rtol=2e-2, atol=1e-1)
    assert ops.lowp_layout(torch.bfloat16) in ("NN", "TN", "NT")


def test_zero_init_temporal_switch():
    """Default: a fresh model's temporal output projection is zero (the branch is the identity);
    zero_init_temporal=False starts it like the spatial one, for training from scratch."""
    from soraflow.models import build_model, preset_config

    for flag in (True, False):
        cfg = preset_config("STDiT2-T/2", hidden_size=48, depth=2, num_heads=2, caption_channels=16,
                            caption_max_length=4, zero_init_temporal=flag)
        model = build_model(cfg, seed=0)
        norms = [float(b.attn_temp.proj.weight.norm()) for b in model.blocks]
        assert all((n == 0.0) is flag for n in norms), norms
        assert all(float(b.cross_attn.proj.weight.norm()) == 0.0 for b in model.blocks)


@pytest.mark.slow  # compiling takes about a minute on a small CPU
def test_compiled_blocks_match_eager_under_bf16_autocast():
    """`compile_blocks` (used by benchmarks/model.py --compile) computes what the eager model
    computes, in fp32 and under CPU bf16 autocast, where the compiled graph takes plain
    F.linear (inductor fuses the casts) instead of the eager custom low-precision matmul."""
    import torch._dynamo

    eager = tiny_model().train()
    compiled = tiny_model().train()
    compiled.compile_blocks(dynamic=False)
    x, t, y, kw = inputs(frames=4, height=8, width=8)
    torch._dynamo.reset()
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        outs, grads = [], []
        for model in (eager, compiled):
            model.zero_grad()
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                out = model(x, t, y, **kw)
            out.float().square().mean().backward()
            outs.append(out.float())
            grads.append(model.blocks[0].mlp.fc1.weight.grad.clone())
        assert outs[0].dtype == torch.float32
        scale = outs[0].abs().max()
        assert (outs[0] - outs[1]).abs().max() <= tol * scale, dtype
        assert (grads[0] - grads[1]).abs().max() <= 5 * tol * grads[0].abs().max(), dtype
    torch._dynamo.reset()


def test_compiled_blocks_all_take_fp32_tokens_under_bf16_autocast():
    """Eager, block 0 takes the embedding's bf16 tokens and the others the fp32 residual stream;
    after `compile_blocks` every block takes fp32, so each latent shape compiles one graph, not
    two (the blocks run eagerly here, under the force_eager stance: no compiling in this test)."""
    model = tiny_model().train()
    seen: list[torch.dtype] = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    x, t, y, kw = inputs(frames=4, height=8, width=8)

    def block_dtypes() -> list[torch.dtype]:
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, y, **kw)
        assert out.dtype == torch.float32
        return list(seen)

    assert block_dtypes() == [torch.bfloat16] + [torch.float32] * (len(model.blocks) - 1)
    model.compile_blocks()
    with torch.compiler.set_stance("force_eager"):
        assert block_dtypes() == [torch.float32] * len(model.blocks)
        seen.clear()
        model(x, t, y, **kw)  # fp32 without autocast, as before
        assert seen == [torch.float32] * len(model.blocks)


@pytest.mark.parametrize("hint", [True, False])
def test_compiled_blocks_take_a_new_token_count_without_recompiling(hint):
    """Under PyTorch's automatic dynamic shapes a new spatial token count (another bucket's
    aspect ratio) recompiled every block; `compile_blocks` now marks that dim dynamic on the
    first call, so one graph serves both sizes (dynamo's CompileCounter backend: tracing only,
    no inductor) and gives what the eager model gives."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    eager = tiny_model().train()
    compiled = tiny_model().train()
    compiled.compile_blocks(backend=counter)
    assert compiled.dynamic_token_count
    compiled.dynamic_token_count = hint
    for height, width in ((6, 8), (8, 8), (8, 10)):  # 12, 16, 20 tokens: one side of the fold threshold
        x, t, y, kw = inputs(frames=4, height=height, width=width)
        out = compiled(x, t, y, **kw)
        out.square().mean().backward()
        torch.testing.assert_close(out, eager(x, t, y, **kw), rtol=1e-5, atol=1e-5)
    # hinted: one graph for the three token counts; PyTorch's default: a static graph
    # for the first size, then a recompile with the token count dynamic
    assert counter.frame_count == (1 if hint else 2)
    other = tiny_model()
    other.compile_blocks(backend=counter, dynamic=False)
    assert not other.dynamic_token_count
    torch._dynamo.reset()


def test_pick_layout_keeps_plain_matmuls_unless_a_transposed_one_is_much_faster():
    assert ops.pick_layout(1.0, 0.95, 0.9) == "NN"  # AVX512-BF16: every layout about as fast
    assert ops.pick_layout(10.0, 1.0, 2.0) == "TN"  # AVX2: plain bf16 matmuls ~10x slower
    assert ops.pick_layout(10.0, 2.0, 1.0) == "NT"


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_unfused_attention_matches_sdpa(mask_kind):
    from soraflow.models.layers import unfused_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, 8, generator=g, dtype=torch.float64) for n in (5, 7, 7))
    mask = None
    if mask_kind == "bool":
        mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
        mask[0, ..., 4:] = False
    elif mask_kind == "float":
        mask = torch.randn(3, 1, 5, 7, generator=g, dtype=torch.float64)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(unfused_attention(q, k, v, mask), ref)


@pytest.mark.parametrize("keys", [1, 5, 8, 9, 16])
def test_short_row_softmax_matches_softmax_values_and_gradients(keys, monkeypatch):
    """Rows of <= SHORT_ROW_MAX keys (the temporal attention over 8 frames) take the hand-written
    softmax; every length gives softmax's values and gradients through unfused attention."""
    from soraflow.models import layers

    g = torch.Generator().manual_seed(keys)
    x = torch.randn(4, 3, 6, keys, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layers.ShortRowSoftmax.apply, (x,))
    torch.testing.assert_close(layers.ShortRowSoftmax.apply(x), x.softmax(-1), rtol=0, atol=1e-15)
    masked = x.detach().clone()
    masked[..., 0, 1:] = float("-inf")  # one key left in a row: all weight on it
    assert torch.equal(layers.ShortRowSoftmax.apply(masked)[..., 0, :], masked.softmax(-1)[..., 0, :])

    calls = []
    real = layers.ShortRowSoftmax.apply
    monkeypatch.setattr(layers.ShortRowSoftmax, "apply", lambda t: calls.append(t.shape[-1]) or real(t))
    q, k, v = (torch.randn(3, 2, n, 8, generator=g, dtype=torch.float64, requires_grad=True) for n in (6, keys, keys))
    mask = torch.ones(3, 1, 1, keys, dtype=torch.bool)
    mask[0, ..., keys // 2 + 1 :] = False
    ours = layers.unfused_attention(q, k, v, mask)
    assert calls == ([keys] if keys <= layers.SHORT_ROW_MAX else [])
    grads = torch.autograd.grad(ours.sum(), (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads, torch.autograd.grad(ref.sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # unfused attention's softmax runs in fp32


@pytest.mark.parametrize("keys", [16, 600])
def test_cpu_bf16_attention_path_by_length(keys, monkeypatch):
    """Under CPU bf16 autocast, short sequences take the unfused path and long ones the fused
    kernel; both stay close to fp32 attention, forward and backward."""
    from soraflow.models import layers

    calls = []
    real = layers.unfused_attention
    monkeypatch.setattr(layers, "unfused_attention", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, 32, generator=g) for n in (keys, keys, keys))
    mask = torch.ones(2, 1, 1, keys, dtype=torch.bool)
    mask[1, ..., keys // 2 :] = False
    qkv = [t.clone().requires_grad_() for t in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layers.attention(*(t.bfloat16() for t in qkv), attn_mask=mask)
    assert out.dtype == torch.bfloat16
    assert len(calls) == (1 if keys <= layers.UNFUSED_MAX_KEYS else 0)
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_in, attn_mask=mask)
    assert (out.float() - ref).abs().max() < 0.05
    grad = torch.randn(ref.shape, generator=g)
    out.float().backward(grad)
    ref.backward(grad)
    for ours, theirs in zip(qkv, ref_in, strict=True):
        assert (ours.grad - theirs.grad).norm() / theirs.grad.norm() < 0.05


def test_compiled_gelu_tanh_is_the_tanh_gelu_without_tanh():
    """`ops.gelu_tanh` equals aten's tanh GELU in value and gradient, eager and compiled, and
    the compiled CPU kernel calls no tanh (its sigmoid form: Sleef's tanhf was 8% of a compiled
    demo step)."""
    from torch._inductor.utils import run_and_get_code

    x = (torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 4).requires_grad_()
    ref = torch.nn.functional.gelu(x, approximate="tanh")
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    assert torch.equal(ops.gelu_tanh(x), ref)  # eager: aten's kernel itself

    torch._dynamo.reset()
    compiled = torch.compile(ops.gelu_tanh)
    (out,), codes = run_and_get_code(lambda: (compiled(x),))
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch._dynamo.reset()
    assert (out - ref).abs().max() <= 2e-6
    assert (grad - ref_grad).abs().max() <= 1e-5
    assert codes and not any("tanh" in code for code in codes), "the compiled kernel still calls tanh"
