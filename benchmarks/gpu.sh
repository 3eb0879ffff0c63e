#!/usr/bin/env bash
# The GPU checks of one lease, in priority order, each under its own time limit (README, "GPU"):
# XL/2 at 240p x 16 frames (latent 16x30x53, 6480 tokens/sample), bf16 autocast: compiled blocks
# (profiled), then compiled with the textbook modulation (--no-fold), with inductor's coordinate-
# descent tuning, with the parameters in bf16; benchmarks/cuda_check.py (CUDA vs CPU); the three
# attentions under each SDPA backend (benchmarks/attention_backends.py); eager with the matmul
# ceiling (profiled); the original's 240p/16-frame bucket batch (17) with gradient checkpointing.
# About 8 minutes on an H200, the machine's start not counted; the profiles land in $OUT.
# Run from the repository root on a machine whose python3 has torch with CUDA; Python packages the
# image lacks travel as wheels in .whl/ (pydantic, diffusers) and go to /tmp/site. Make them where
# pip reaches PyPI, at the versions of the project's own venv, for the device's Python (3.12 there):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     pydantic==X pydantic-core==X annotated-types==X typing-inspection==X typing_extensions==X \
#     diffusers==X importlib_metadata==X
# `bash benchmarks/gpu.sh profiles` runs the two profiles alone (about 4 minutes).
set -u
MODE=${1:-all}
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv
python3 -c "import torch, pydantic, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'pydantic', pydantic.VERSION, 'diffusers', diffusers.__version__)" || exit 1
XL="--preset STDiT2-XL/2 --caption-channels 4096 --caption-len 200 --latent 16 30 53 --dtype bf16 --json"
# stop 38 on an H200: eager batch 8 does not fit in 139 GiB; compiled batch 8 takes 113 GiB, 0.66 s/step
echo "== XL/2 240p 16f batch 8, compiled blocks, profiled"
timeout 200 python3 benchmarks/model.py $XL --batch 8 --compile --profile 60 --profile-trace "$OUT/trace_compiled_b8.json.gz" \
  2>"$OUT/profile_compiled_b8.txt" | tee -a "$OUT/model.jsonl"
if [ "$MODE" != profiles ]; then  # `profiles`: the two profiled runs alone
  echo "== XL/2 240p 16f batch 8, compiled blocks, textbook modulation (not measured with the composed q/k ops yet)"
  timeout 100 python3 benchmarks/model.py $XL --batch 8 --compile --no-fold | tee -a "$OUT/model.jsonl"
  echo "== XL/2 240p 16f batch 8, compiled blocks, inductor's coordinate-descent tuning of its Triton kernels"
  TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 timeout 200 python3 benchmarks/model.py $XL --batch 8 --compile | tee -a "$OUT/model.jsonl"
  echo "== XL/2 240p 16f batch 8, compiled blocks, parameters in bf16"
  timeout 100 python3 benchmarks/model.py $XL --batch 8 --compile --param-dtype bf16 | tee -a "$OUT/model.jsonl"
  echo "== cuda_check"
  timeout 120 python3 benchmarks/cuda_check.py 2>&1 | tee "$OUT/cuda_check.txt"
  echo "== attention backends, batch 8"
  timeout 100 python3 benchmarks/attention_backends.py 2>&1 | grep -v Warning | tee "$OUT/attention_backends.txt"
fi
echo "== XL/2 240p 16f batch 4, eager, matmul ceiling, profiled"
timeout 150 python3 benchmarks/model.py $XL --batch 4 --matmul-ceiling --profile 60 --profile-trace "$OUT/trace_eager_b4.json.gz" \
  2>"$OUT/profile_eager_b4.txt" | tee -a "$OUT/model.jsonl"
if [ "$MODE" != profiles ]; then  # `profiles`: the two profiled runs alone
  echo "== XL/2 240p 16f batch 17, gradient checkpointing, eager"
  timeout 90 python3 benchmarks/model.py $XL --batch 17 --grad-checkpointing | tee -a "$OUT/model.jsonl"
fi
python3 - "$OUT/model.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        print(f"B={r['batch']:>2} compiled={r['compiled']} ckpt={r['grad_checkpointing']} params={r['param_dtype']} "
              f"fold={r.get('fold_modulation', True)} pack={r.get('temporal_attention_pack', 0)} {r.get('inductor_env', {})} "
              f"step {r['step_seconds']:.3f} s  {r['tokens_per_second']:.0f} tok/s  {r['achieved_flops']/1e12:.0f} TFLOP/s "
              f"peak {r['peak_flops']/1e12:.0f}  MFU {r['mfu']:.3f}  mem {r.get('peak_memory_mb', 0)/1024:.1f} GiB "
              f"ceiling {r.get('mfu_ceiling', float('nan')):.3f}")
PY
