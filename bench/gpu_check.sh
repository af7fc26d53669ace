#!/usr/bin/env bash
# The check to run on the first GPU machine (< 10 minutes): install raycad with the pinned `cuda` extra, then
# bench/gpu_check.py --write: golden outputs on CUDA through the fused kernels (float32), bf16 forward/backward,
# fused vs chunked throughput, a 1-epoch `raycad finetune --gpu`; results into BENCHMARKS.md (## GPU check).
#
#   bash bench/gpu_check.sh            # from anywhere; uses the repository this script lives in
#
# A machine without network keeps what is installed: if the kernels are missing and cannot be installed, the
# checks still run (on the chunked scan) and the section says so.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || { echo "no GPU"; exit 2; }
python -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" || exit 2

if python -c "import raycad, mamba_ssm, causal_conv1d" 2>/dev/null; then
  echo "[gpu_check] raycad and the kernels are installed"
else
  # --no-build-isolation: mamba-ssm / causal-conv1d build (or pick a prebuilt wheel) against the installed torch
  timeout 360 pip install -q --no-build-isolation -c constraints.txt -e ".[cuda]" \
    || echo "[gpu_check] could not install raycad[cuda]; continuing with what is installed"
  python -c "import raycad" || timeout 120 pip install -q --no-deps -e . || exit 2
fi

budget=$(( 570 - ($(date +%s) - start) ))   # leave the whole run under 10 minutes
finetune_timeout=$(( budget > 420 ? 240 : budget / 2 ))
timeout "$budget" python bench/gpu_check.py --write --finetune-timeout "$finetune_timeout"
status=$?
echo "[gpu_check] done in $(( $(date +%s) - start )) s (exit $status); see the '## GPU check' section of BENCHMARKS.md"
exit $status
