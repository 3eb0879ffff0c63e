"""Curation speed: clips per second, and full curation time / decode-only time of the same files.

    python benchmarks/curate.py                       # the demo corpus (generated in a temp dir if absent)
    python benchmarks/curate.py --input DIR --limit 20

Both measurements run in this process, one file after the other, on the same machine:

- decode-only: PyAV decodes every frame of every file to RGB numpy arrays at its own size
  with ``frame.to_ndarray(format="rgb24")`` (the usual idiom: what reading a video into numpy
  costs); also reported, with their own ratios: the same RGB arrays through a reused
  one-thread converter (PyAV >= 17 starts a swscale thread pool per frame in the idiom, which
  costs it more wall time than the decoding), and decoding without any RGB conversion;
- curation: probe, the decode pass with scene detection, captions, scores, filters and H.264
  encoding of kept clips (``curate_source``, fresh work folder, no Prefect), then the table
  assembly. Loading the scoring models happens once before the timing and is reported apart.

Target (issue 3): curation <= 3x decode-only on CPU. Both wall time and this process's CPU
time (all threads) are reported: on a shared machine the CPU-time ratio is the steadier one.
The "of which" split is wall time per stage, summed over files.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from soraflow.curation.config import CurateConfig
from soraflow.curation.decode import decode_only
from soraflow.curation.inputs import dedupe_sources, discover_inputs
from soraflow.curation.pipeline import curate_source, get_scorers
from soraflow.curation.probe import ProbeError, probe_media
from soraflow.curation.tables import assemble_tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default="data/demo/raw", help="folder or manifest (default: data/demo/raw)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N files (0: all)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat decode-only N times, keep the fastest")
    ap.add_argument("--params", default=None,
                    help="take the curate section from this params.yaml (default: the built-in defaults)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(args.input)
        if not src.exists():
            from soraflow.demo.config import DemoConfig
            from soraflow.demo.generator import generate_corpus

            print(f"{src} not found: generating the demo corpus in {tmp}/demo")
            generate_corpus(DemoConfig(), Path(tmp) / "demo", progress=False)
            src = Path(tmp) / "demo" / "raw"
        base = CurateConfig()
        if args.params:
            from soraflow.config import load_params

            base = load_params(args.params).curate
        cfg = base.model_copy(update={"input": str(src), "output": str(Path(tmp) / "out")})
        items = discover_inputs(cfg.input)
        if args.limit:
            items = items[: args.limit]
        sources, problems = dedupe_sources(items)

        decodable = []
        for item, _ in sources:
            try:
                probe_media(item.path)
                decodable.append(item.path)
            except ProbeError:
                pass
        def timed(rgb: bool, reuse: bool = False) -> tuple[float, float, int]:
            best, best_cpu, n = float("inf"), float("inf"), 0
            for _ in range(max(1, args.repeat)):
                t0, c0 = time.perf_counter(), time.process_time()
                n = sum(decode_only(p, rgb=rgb, reuse_converter=reuse) for p in decodable)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            return best, best_cpu, n

        t_decode, c_decode, frames = timed(rgb=True)
        t_decode_raw, c_decode_raw, _ = timed(rgb=False)
        t_decode_fast, c_decode_fast, _ = timed(rgb=True, reuse=True)

        t0 = time.perf_counter()
        get_scorers(cfg)
        t_load = time.perf_counter() - t0

        t0, c0 = time.perf_counter(), time.process_time()
        outcomes = [curate_source(item, sha, cfg, Path(cfg.output) / ".work") for item, sha in sources]
        tables = assemble_tables(outcomes, problems, cfg.output, cfg.heldout_fraction)
        t_curate, c_curate = time.perf_counter() - t0, time.process_time() - c0

    clips_seen = len(tables.clips) + int(tables.rejected["id"].notna().sum())
    parts: dict[str, float] = {}
    for s in tables.sources:
        for k, v in (s.get("timings") or {}).items():
            parts[k] = parts.get(k, 0.0) + v
    print(f"files: {len(sources)} ({len(decodable)} decodable), frames: {frames}")
    print(f"decode-only:     {t_decode:8.2f} s, CPU {c_decode:6.2f} s  ({frames / t_decode:.0f} frames/s, frames converted to RGB arrays)")
    print(f"decode, fast RGB:{t_decode_fast:8.2f} s, CPU {c_decode_fast:6.2f} s  ({frames / t_decode_fast:.0f} frames/s, same RGB arrays, reused one-thread converter)")
    print(f"decode, no RGB:  {t_decode_raw:8.2f} s, CPU {c_decode_raw:6.2f} s  ({frames / t_decode_raw:.0f} frames/s, decoder output only)")
    print(f"curation:        {t_curate:8.2f} s, CPU {c_curate:6.2f} s  ({len(tables.clips)} clips kept of {clips_seen} scenes)")
    print("  of which: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
    print(f"scorer loading:  {t_load:8.2f} s  (once per worker process, not in the ratio)")
    print(f"clips/s:         {clips_seen / t_curate:8.2f}  (scenes processed per second; kept: {len(tables.clips) / t_curate:.2f})")
    print(f"curation / decode-only: {t_curate / t_decode:.2f}x wall, {c_curate / c_decode:.2f}x CPU time "
          f"(target <= 3x); vs decode with the fast RGB converter: {t_curate / t_decode_fast:.2f}x wall, "
          f"{c_curate / c_decode_fast:.2f}x CPU; vs decode without RGB: {t_curate / t_decode_raw:.2f}x wall, "
          f"{c_curate / c_decode_raw:.2f}x CPU")


if __name__ == "__main__":
    main()
