"""Check the model and diffusion on an accelerator against the CPU: one command, PASS/FAIL lines.

The test suite runs on the CPU (CI has no GPU). This script runs the same library code on
``--device`` (default: cuda if present) and checks what only that device can get wrong:

* a tiny STDiT2's fp32 output equals the CPU's (TF32 off), and bf16 autocast stays close to it;
* caption padding does not change the output under bf16 autocast (the attention mask reaches
  the fused kernels);
* the compiled blocks (``compile_blocks``) give the eager output;
* IDDPM and rectified-flow training under bf16 autocast overfit one batch (loss / 10);
* IDDPM (respaced), DPM-Solver++ and rectified-flow sampling with guidance are finite,
  reproducible under a seed, and keep an image-to-video conditioning frame exactly;
* which attention kernels ran (profiler kernel names: flash / memory-efficient / cuDNN / math).

Exit status 1 if any check fails. Example: ``python benchmarks/cuda_check.py --device cuda``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from soraflow.diffusion import DiffusionConfig, build_diffusion  # noqa: E402
from soraflow.models import STDiT2Config, build_model  # noqa: E402
from soraflow.models.flops import dummy_inputs  # noqa: E402

CAPTION_CHANNELS, CAPTION_LEN = 16, 6


def tiny_config(**overrides: object) -> STDiT2Config:
    """A 2-block STDiT2 small enough for seconds of CPU time."""
    return STDiT2Config(hidden_size=96, depth=2, num_heads=4, caption_channels=CAPTION_CHANNELS,
                        caption_max_length=CAPTION_LEN, **overrides)


def tiny_model(device: torch.device, seed: int = 0) -> torch.nn.Module:
    """:func:`tiny_config`'s model with its zero-initialised outputs given values (else outputs are 0)."""
    model = build_model(tiny_config(), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in [model.final_layer.linear, *(b.cross_attn.proj for b in model.blocks),
                      *(b.attn_temp.proj for b in model.blocks)]:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.2)
    return model.to(device)


def inputs(device: torch.device, batch: int = 2, frames: int = 4, height: int = 6, width: int = 10):
    """The same random inputs on every device (drawn on the CPU under a fixed seed), with the
    first sample's caption half padding."""
    torch.manual_seed(0)
    (x, t, y), kw = dummy_inputs(tiny_config(), frames, height, width, batch)
    mask = torch.ones(batch, CAPTION_LEN, dtype=torch.bool)
    mask[0, CAPTION_LEN // 2:] = False
    x, t, y, mask = (v.to(device) for v in (x, t, y, mask))
    return x, t, y, mask, {k: v.to(device) for k, v in kw.items()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_forward(device: torch.device) -> list[tuple[str, bool, str]]:
    results = []
    cpu = torch.device("cpu")
    ref_model = tiny_model(cpu).eval()
    x, t, y, mask, kw = inputs(cpu)
    with torch.no_grad():
        ref = ref_model(x, t, y, mask, **kw)
    model = tiny_model(device).eval()
    xd, td, yd, maskd, kwd = inputs(device)
    with torch.no_grad():
        out = model(xd, td, yd, maskd, **kwd)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out_bf16 = model(xd, td, yd, maskd, **kwd)
    e32, e16 = rel_err(out, ref), rel_err(out_bf16.float(), ref)
    results.append(("fp32 output equals the CPU's", e32 < 1e-4, f"rel err {e32:.2e} (< 1e-4)"))
    results.append(("bf16 autocast output close to fp32", e16 < 3e-2, f"rel err {e16:.2e} (< 3e-2)"))

    # caption padding: sample 0 with its 3 valid tokens alone vs padded with garbage tokens
    y_pad = yd.clone()
    y_pad[0, CAPTION_LEN // 2:] = 100.0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        a = model(xd, td, yd, maskd, **kwd)
        b = model(xd, td, y_pad, maskd, **kwd)
    e = rel_err(b[0].float(), a[0].float())
    results.append(("caption padding ignored (bf16 autocast)", e == 0.0, f"rel err {e:.2e} (== 0)"))

    compiled = tiny_model(device).eval()
    compiled.compile_blocks()
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        c = compiled(xd, td, yd, maskd, **kwd)
    ec = rel_err(c.float(), out_bf16.float())
    results.append(("compiled blocks match eager (bf16)", ec < 3e-2,
                    f"rel err {ec:.2e} (< 3e-2), first call {time.perf_counter() - t0:.1f} s"))
    return results


def attention_kernels(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a on cpu"
    from torch.profiler import ProfilerActivity, profile

    model = tiny_model(device).train()
    x, t, y, mask, kw = inputs(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x, t, y, mask, **kw).float().square().mean().backward()
        torch.cuda.synchronize()
    names = [e.key for e in prof.key_averages()]
    kinds = {k: sum(1 for n in names if k in n.lower()) for k in ("flash", "fmha", "efficient", "cudnn", "softmax")}
    return ", ".join(f"{k}: {v} kernels" for k, v in kinds.items())


def check_overfit(device: torch.device, kind: str, steps: int = 150) -> tuple[str, bool, str]:
    torch.manual_seed(0)
    d = build_diffusion(DiffusionConfig(type=kind))
    model = build_model(tiny_config(learn_sigma=kind == "iddpm"), seed=0)
    model = model.to(device).train()
    x, _, y, mask, kw = inputs(device)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g).to(device)
    t = (torch.tensor([300, 700]) if kind == "iddpm" else torch.tensor([300.0, 700.0])).to(device)
    x_mask = torch.tensor([[False, True, True, True], [True] * 4], device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = d.training_losses(model, x, {"y": y, "mask": mask, **kw}, x_mask=x_mask, noise=noise, t=t)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ok = all(v == v for v in losses) and min(losses[-10:]) < losses[0] / 10
    return (f"{kind} training (bf16 autocast) overfits one batch", ok,
            f"loss {losses[0]:.3f} -> {min(losses[-10:]):.4f} in {steps} steps (needs / 10)")


def check_sampling(device: torch.device, kind: str, sampler: str, steps: int) -> tuple[str, bool, str]:
    d = build_diffusion(DiffusionConfig(type=kind))
    model = tiny_model(device).eval()
    _, _, y, mask, kw = inputs(device)
    shape = (2, 4, 4, 6, 10)
    x_cond = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(device)
    x_mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]] * 2, device=device)

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            return d.sample(model, shape, {"y": y, "mask": mask, **kw}, sampler=sampler, steps=steps,
                            guidance_scale=4.0, generator=gen, x_cond=x_cond, x_mask=x_mask)

    a, b, c = run(0), run(0), run(1)
    finite = bool(torch.isfinite(a).all())
    same = torch.equal(a, b)
    differ = not torch.allclose(a, c)
    kept = torch.equal(a[:, :, 0], x_cond[:, :, 0])
    ok = finite and same and differ and kept
    return (f"{kind}/{sampler} sampling ({steps} steps, CFG 4)", ok,
            f"finite {finite}, seeded repeat equal {same}, other seed differs {differ}, i2v frame kept {kept}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    args = p.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {device} ({name})", flush=True)
    checks: list[tuple[str, Callable[[], list[tuple[str, bool, str]] | tuple[str, bool, str]]]] = [
        ("forward", lambda: check_forward(device)),
        ("iddpm training", lambda: check_overfit(device, "iddpm")),
        ("rflow training", lambda: check_overfit(device, "rflow")),
        ("iddpm sampling", lambda: check_sampling(device, "iddpm", "iddpm", 20)),
        ("dpm-solver sampling", lambda: check_sampling(device, "iddpm", "dpm-solver", 10)),
        ("euler sampling", lambda: check_sampling(device, "rflow", "euler", 10)),
    ]
    failed = 0
    for name, check in checks:
        t0 = time.perf_counter()
        try:
            out = check()
        except Exception as exc:  # report and go on: one broken path should not hide the others
            out = [(name, False, f"{type(exc).__name__}: {exc}")]
        for label, ok, detail in out if isinstance(out, list) else [out]:
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'}  {label}: {detail} [{time.perf_counter() - t0:.1f} s]", flush=True)
    print(f"attention kernels in one bf16 training step: {attention_kernels(device)}", flush=True)
    print(f"{failed} check(s) failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
