"""libx264 options under which the bitstream is a function of the frames alone.

x264 picks its assembly at run time from the CPU it finds. On an AMD EPYC with AVX-512, its
AVX-512 paths gave different bytes for the same frames from one encode to the next (demo
videos at ``veryfast``, one thread: 10-12 of 40 came out in 2-5 versions over 2-8 encodes, in one
process and across processes), so the demo corpus, and the held-out split that hashes its files,
changed between fresh clones. Different asm levels also write different (equally valid) streams.
Capping x264 to the x86-64 baseline (MMX2, SSE, SSE2: every x86-64 CPU has them, so every such
machine takes the same code path) gave one version per video in every trial, for about the same
encoding CPU (ultrafast: within noise; veryfast: +8-10%). Other architectures keep x264's own
choice.
"""

from __future__ import annotations

import platform

__all__ = ["X86_64_BASELINE_ASM", "libx264_options"]

#: x264 CPU flag names for the code paths every x86-64 CPU runs.
X86_64_BASELINE_ASM = "MMX2,SSE,SSE2"


def _is_x86_64(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in {"x86_64", "amd64"}


def libx264_options(crf: int, preset: str, threads: int, *, machine: str | None = None) -> dict[str, str]:
    """PyAV stream options for a reproducible libx264 encode (``machine``: for tests)."""
    options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
    if _is_x86_64(machine):
        options["x264-params"] = f"asm={X86_64_BASELINE_ASM}"
    return options
