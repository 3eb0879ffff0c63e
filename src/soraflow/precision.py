"""Which precision a device computes fastest in: the ``auto`` of ``train.mixed_precision``.

bf16 autocast pays off where the hardware multiplies bf16 natively: CUDA GPUs, and x86 CPUs
with AVX512-BF16 or AMX (measured on a 2-core AVX512-BF16 machine: bf16 matmuls 3x the fp32
rate, a 192-wide STDiT2 training step 1.3x faster). Without those units bf16 is emulated and
several times *slower* than fp32 (measured 3-7x on a CPU without them), so ``auto`` stays fp32.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

#: /proc/cpuinfo flags of native bf16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises a bf16 dot-product unit (Linux; False where unknown)."""
    try:
        text = Path(cpuinfo).read_text(errors="ignore")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(f in flags for f in BF16_CPU_FLAGS)
    return False


def use_bf16_autocast(mode: str, device: torch.device) -> bool:
    """``mode`` ``bf16`` / ``fp32`` as given; ``auto``: bf16 on CUDA and on CPUs with native bf16."""
    if mode == "bf16":
        return True
    if mode != "auto":
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()
