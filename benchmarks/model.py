"""STDiT2 forward+backward speed, memory and MFU.

MFU = FLOPs of one forward+backward step, counted by ``torch.utils.flop_counter.FlopCounterMode``
(on the meta device, where attention's matmuls are visible to the counter), divided by the
best wall-clock step time (of ``--steps`` after ``--warmup``), divided by this machine's matmul
peak for the same dtype, measured in the same process: square matmuls of several sizes and
all four operand layouts, re-measured before and after every step; the maximum is the peak.
The machine is shared: ``load_average`` and per-step CPU times are printed alongside.

``--matmul-ceiling`` also records every matrix multiply of one step (``mm``, ``addmm``, ``bmm``,
``baddbmm`` as dispatched, after autocast: their shapes, strides and dtypes) and times each
distinct one on its own, best of 5: ``matmul_seconds`` is what the step's matmuls cost at
their own shapes, ``matmul_efficiency`` their FLOP/s over the peak, and ``mfu_ceiling`` the
MFU the step would reach if everything else (norms, elementwise passes, copies, fused
attention kernels) took no time. It separates "the BLAS is slow at these shapes" from "the
code around the matmuls is slow".

Examples::

    python benchmarks/model.py --hidden-size 768 --depth 12 --heads 12 --latent 8 16 16 --batch 2 \
        --caption-channels 384 --caption-len 32 --dtype fp32 --json
    python benchmarks/model.py --preset STDiT2-S/2 --latent 1 32 32 --dtype bf16
    python benchmarks/model.py --sweep        # presets x latent sizes x dtypes, a table
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from soraflow.allocator import keep_freed_memory  # noqa: E402
from soraflow.models.config import STDiT2Config, preset_config  # noqa: E402
from soraflow.models.flops import count_flops, dummy_inputs  # noqa: E402
from soraflow.models.stdit2 import STDiT2  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 3) -> tuple[float, float]:
    """This machine's best square-matmul FLOP/s in ``dtype``: the maximum over sizes 512, 1024,
    2048 (CPU; 4096-16384 on GPU) and over the four operand layouts (each operand stored
    row-major or transposed), best of ``repeats`` each. Taking the maximum makes the MFU
    denominator as large as the hardware shows it can be. Returns ``(FLOP/s of wall time,
    FLOP per CPU-second of this process)``."""
    sizes = (4096, 8192, 16384) if device.type == "cuda" else (512, 1024, 2048)
    best_rate = best_cpu_rate = 0.0
    slow: set[str] = set()
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        operands = {
            "NN": (a, b),
            "NT": (a, b.t().contiguous().t()),
            "TN": (a.t().contiguous().t(), b),
            "TT": (a.t().contiguous().t(), b.t().contiguous().t()),
        }
        rates: dict[str, float] = {}
        for layout, (x, y) in operands.items():
            if layout in slow:
                continue
            torch.mm(x, y)
            best = best_cpu = float("inf")
            for _ in range(repeats):
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                torch.mm(x, y)
                _sync(device)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            rates[layout] = 2.0 * n**3 / best
            best_cpu_rate = max(best_cpu_rate, 2.0 * n**3 / max(best_cpu, 1e-9))
        best_rate = max([best_rate, *rates.values()])
        # a layout the kernels do badly (bf16 without native support): not worth timing larger
        fastest = max(rates.values())
        slow.update(k for k, r in rates.items() if r < 0.5 * fastest)
    return best_rate, best_cpu_rate


_MATMULS = ("mm", "addmm", "bmm", "baddbmm")


def _matmul_flops(name: str, shapes: list[tuple[int, ...]]) -> float:
    a, b = (shapes[1], shapes[2]) if name in ("addmm", "baddbmm") else (shapes[0], shapes[1])
    batch = a[0] if len(a) == 3 else 1
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def matmul_ceiling(step, device: torch.device, repeats: int = 5) -> dict[str, float]:
    """Record the matmuls of one ``step()`` and time each distinct one alone (see the module
    docstring). Returns ``matmul_seconds``, ``matmul_flops``, ``matmul_calls`` and
    ``matmul_kinds`` (distinct shape/stride/dtype combinations)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    calls: Counter = Counter()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in _MATMULS:
                sig = tuple(
                    (tuple(a.shape), tuple(a.stride()), a.dtype) if isinstance(a, torch.Tensor) else a for a in args
                )
                calls[(name, sig, tuple(sorted((kwargs or {}).items())))] += 1
            return func(*args, **(kwargs or {}))

    with Recorder():
        step()
    total_s = total_flops = 0.0
    for (name, sig, kw), count in calls.items():
        args = [_strided(a, device) if _is_spec(a) else a for a in sig]
        kwargs = dict(kw)
        op = getattr(torch.ops.aten, name)
        op(*args, **kwargs)
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            op(*args, **kwargs)
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        total_s += count * best
        total_flops += count * _matmul_flops(name, [a[0] for a in sig if _is_spec(a)])
    return {"matmul_seconds": total_s, "matmul_flops": total_flops,
            "matmul_calls": float(sum(calls.values())), "matmul_kinds": float(len(calls))}


def _is_spec(arg: object) -> bool:
    return isinstance(arg, tuple) and len(arg) == 3 and isinstance(arg[2], torch.dtype)


def _strided(spec: tuple, device: torch.device) -> torch.Tensor:
    """A tensor with exactly ``spec``'s shape and strides (transposed, broadcast or padded views)."""
    shape, stride, dtype = spec
    extent = 1 + sum((n - 1) * st for n, st in zip(shape, stride) if n > 0)
    return torch.randn(max(extent, 1), device=device).to(dtype).as_strided(shape, stride)


def print_profile(step, device: torch.device, rows: int, trace: str | None = None) -> None:
    """One more step under ``torch.profiler``: the ``rows`` ops/kernels with the most self time
    on the device (CUDA) or the CPU, printed to stderr (stdout stays one JSON line per run);
    with ``trace``, the step's Chrome trace is written there too (gzipped if it ends in .gz)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60), file=sys.stderr)
    if trace:
        prof.export_chrome_trace(trace)


def run(
    config: STDiT2Config,
    latent: tuple[int, int, int],
    batch: int,
    caption_len: int,
    dtype_name: str,
    device: torch.device,
    steps: int = 3,
    warmup: int = 1,
    compile_blocks: bool = False,
    compile_mode: str | None = None,
    bf16_params: bool = False,
    ceiling: bool = False,
    profile_rows: int = 0,
    profile_trace: str | None = None,
    fold: bool = True,
) -> dict:
    dtype = DTYPES[dtype_name]
    if bf16_params and dtype != torch.bfloat16:
        raise ValueError("--param-dtype bf16 needs --dtype bf16")
    if ceiling and compile_blocks:
        raise ValueError("--matmul-ceiling records the eager step's matmuls: leave out --compile")
    t_frames, h, w = latent
    flops = count_flops(config, t_frames, h, w, batch=batch, caption_len=caption_len, backward=True)["total"]
    peaks_measured = [matmul_peak(dtype, device)]

    torch.manual_seed(0)
    model = STDiT2(config).to(device).train()
    if compile_blocks:
        model.compile_blocks(**({"mode": compile_mode} if compile_mode else {}))
    # the zero-initialised outputs would make some gradients trivially zero: give them values
    for blk in model.blocks:
        torch.nn.init.normal_(blk.cross_attn.proj.weight, std=0.02)
        torch.nn.init.normal_(blk.attn_temp.proj.weight, std=0.02)
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.02)
    model.set_fold_modulation(fold)
    if bf16_params:  # the parameters themselves in bf16: no autocast, no per-step weight casts
        model = model.to(torch.bfloat16)
    (x, t, y), kwargs = dummy_inputs(config, t_frames, h, w, batch, caption_len, device=device)
    mask = torch.ones(batch, caption_len, dtype=torch.bool, device=device)
    mask[0, caption_len // 2 :] = False  # realistic: padded captions
    target = torch.randn(batch, config.out_channels, t_frames, h, w, device=device)

    saved_bytes = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved_bytes
        saved_bytes += tensor.numel() * tensor.element_size()
        return tensor

    def step(measure_saved: bool = False) -> float:
        model.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32 and not bf16_params):
            if measure_saved:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda z: z):
                    out = model(x, t, y, mask, **kwargs)
            else:
                out = model(x, t, y, mask, **kwargs)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        _sync(device)
        return time.perf_counter() - t0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    times, cpu_times = [], []
    for _ in range(steps):
        c0 = time.process_time()
        times.append(step())
        cpu_times.append(time.process_time() - c0)
        peaks_measured.append(matmul_peak(dtype, device))  # the peak is re-measured around every step
    step_seconds = min(times)
    step(measure_saved=True)
    peaks = [p[0] for p in peaks_measured]
    peak = max(peaks)
    peak_cpu = max(p[1] for p in peaks_measured)
    tokens = batch * (t_frames // config.patch_size[0]) * (-(-h // config.patch_size[1])) * (-(-w // config.patch_size[2]))
    result = {
        "hidden_size": config.hidden_size,
        "depth": config.depth,
        "heads": config.num_heads,
        "latent": list(latent),
        "batch": batch,
        "caption_channels": config.caption_channels,
        "caption_len": caption_len,
        "dtype": dtype_name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_seconds": step_seconds,
        "step_seconds_all": times,
        "tokens_per_second": tokens / step_seconds,
        "flops_per_step": flops,
        "flops_counted_on": "meta (FlopCounterMode, forward+backward)",
        "achieved_flops": flops / step_seconds,
        "peak_flops": peak,
        "peak_flops_all": peaks,
        "step_cpu_seconds_all": cpu_times,
        "load_average": list(os.getloadavg()),
        "mfu": flops / step_seconds / peak,
        # load-insensitive companion (not the MFU definition), single-thread runs only: FLOPs
        # per CPU-second of the best step over the best matmul FLOPs per CPU-second; equals
        # mfu when the process has its core to itself.
        "peak_flops_per_cpu_second": peak_cpu if torch.get_num_threads() == 1 else None,
        "mfu_cpu_time": flops / min(cpu_times) / peak_cpu if torch.get_num_threads() == 1 else None,
        "activation_mb": saved_bytes / 2**20,
        "compiled": compile_blocks,
        "grad_checkpointing": config.grad_checkpointing,
        "temporal_attention_pack": config.temporal_attention_pack,
        "compile_mode": compile_mode if compile_blocks else None,
        "param_dtype": "bf16" if bf16_params else "fp32",
        "fold_modulation": fold,
        "inductor_env": {k: v for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR_")},
    }
    if profile_rows:
        print_profile(step, device, profile_rows, profile_trace)
    if ceiling:
        mm = matmul_ceiling(step, device)
        result.update(mm)
        result["matmul_efficiency"] = mm["matmul_flops"] / mm["matmul_seconds"] / peak
        result["mfu_ceiling"] = flops / mm["matmul_seconds"] / peak
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _config(args: argparse.Namespace, preset: str | None) -> STDiT2Config:
    overrides = {
        "caption_channels": args.caption_channels,
        "caption_max_length": args.caption_len,
        "grad_checkpointing": args.grad_checkpointing,
    }
    if args.temporal_pack is not None:
        overrides["temporal_attention_pack"] = args.temporal_pack
    if preset:
        return preset_config(preset, **overrides)
    if not (args.hidden_size and args.depth and args.heads):
        raise SystemExit("give --preset, or all of --hidden-size --depth --heads")
    return STDiT2Config(hidden_size=args.hidden_size, depth=args.depth, num_heads=args.heads, **overrides)


def _row(r: dict) -> str:
    mem = r.get("peak_memory_mb", r.get("peak_rss_mb", 0.0))
    return (
        f"{r['hidden_size']:>5} {r['depth']:>3} {'x'.join(map(str, r['latent'])):>9} {r['batch']:>3} {r['dtype']:>5} "
        f"{r['step_seconds']:>9.3f} {r['tokens_per_second']:>10.1f} {r['achieved_flops'] / 1e9:>9.1f} "
        f"{r['peak_flops'] / 1e9:>9.1f} {r['mfu']:>6.3f} {r['activation_mb']:>8.1f} {mem:>8.0f}"
    )


HEADER = (
    "width dep    latent   B dtype    step_s   tokens/s  GFLOP/s  peakGF/s    MFU   act_MB   mem_MB"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="a preset name, e.g. STDiT2-B/2 (else --hidden-size/--depth/--heads)")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--latent", type=int, nargs=3, default=[8, 16, 16], metavar=("T", "H", "W"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--caption-channels", type=int, default=384)
    p.add_argument("--caption-len", type=int, default=32)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="fp32, or bf16 autocast")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (best is reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--no-fold", action="store_true",
                   help="textbook modulation (elementwise, then the linear) instead of per-sample folded weights")
    p.add_argument("--temporal-pack", type=int, default=None, metavar="TOKENS",
                   help="STDiT2Config.temporal_attention_pack (CUDA: temporal sequences packed into "
                        "attention calls of up to TOKENS tokens; 0 = off; default: the config's)")
    p.add_argument("--compile", action="store_true", help="torch.compile each block (compile time not in the step time)")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode with --compile, e.g. max-autotune-no-cudagraphs (inductor also "
                        "benchmarks its own GEMM kernels against the library's; compiling takes minutes)")
    p.add_argument("--param-dtype", choices=("fp32", "bf16"), default="fp32",
                   help="with --dtype bf16: fp32 parameters under autocast (default), or the parameters "
                        "themselves in bf16 (the original's ColossalAI bf16 keeps fp32 master copies in the "
                        "optimizer, outside this forward+backward step; soraflow's trainer uses autocast)")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="also profile one step (torch.profiler) and print its ROWS costliest ops/kernels to stderr")
    p.add_argument("--profile-trace", default=None, metavar="PATH",
                   help="with --profile: also write the profiled step's Chrome trace (.json or .json.gz)")
    p.add_argument("--matmul-ceiling", action="store_true",
                   help="also time the step's matmuls alone at their own shapes: matmul_efficiency and "
                        "mfu_ceiling (the MFU if nothing but the matmuls took time)")
    p.add_argument("--sweep", action="store_true", help="presets x latent sizes x dtypes, printed as a table")
    p.add_argument("--json", action="store_true", help="print one JSON line per run")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc malloc at its defaults (the trainer and the CLI keep freed memory in the "
                        "process: soraflow.allocator)")
    args = p.parse_args()
    malloc_tuned = False if args.default_malloc else keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    if args.sweep:
        runs = [
            (preset, latent, dt)
            for preset in ("STDiT2-T/2", "STDiT2-S/2")
            for latent in ((1, 32, 32), (8, 16, 16), (16, 16, 16))
            for dt in ("fp32", "bf16")
        ]
    else:
        runs = [(args.preset, tuple(args.latent), args.dtype)]
    if not args.json:
        print(HEADER)
    for preset, latent, dt in runs:
        r = run(_config(args, preset), latent, args.batch, args.caption_len, dt, device, args.steps, args.warmup,
                args.compile, args.compile_mode, args.param_dtype == "bf16", args.matmul_ceiling,
                args.profile, args.profile_trace, fold=not args.no_fold)
        if preset:
            r["preset"] = preset
        r["malloc_tuned"] = malloc_tuned
        print(json.dumps(r) if args.json else _row(r), flush=True)
        if args.matmul_ceiling and not args.json:
            print(f"  matmuls alone: {r['matmul_seconds']:.3f} s ({int(r['matmul_calls'])} calls, "
                  f"{int(r['matmul_kinds'])} shapes) at {r['matmul_efficiency']:.3f} of the peak; "
                  f"MFU ceiling {r['mfu_ceiling']:.3f}", flush=True)


if __name__ == "__main__":
    main()
