#!/usr/bin/env bash
# Accelerator throughput: the reference's FPS = batch x devices / iteration time, at batch 4,
# 64x80x80 (Z, Y, X; our --size is X Y Z = 80 80 64), AMP, for our V-Net and MONAI's, side by side in one run
# (benchmarks/network.py: same weights, steps of the two models alternated, medians). One device, so FPS is the
# training step's samples/s. The reference's 1-NPU figures: 17.93 FPS (PyTorch 1.5), 38.79 FPS (PyTorch 1.8); the
# goal on one H100 is >= 10x the first, 179.3 FPS.
#
#   bash benchmarks/gpu.sh                         # cuda (or npu, or cpu), fp16 + bf16 AMP and fp32, 20 steps
#   DEVICE=npu bash benchmarks/gpu.sh              # Ascend (torch_npu installed)
#   STEPS=1 WARMUP=1 SIZE="32 32 32" DTYPES="bf16 fp32" DEVICE=cpu bash benchmarks/gpu.sh   # smoke run, no accelerator
#   (fp16 matmuls are emulated on a CPU: minutes even at that size)
#
# Prints network.py's table, then one line per model and precision: FPS and FPS / 17.93.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEVICE=${DEVICE:-auto}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
SIZE=${SIZE:-80 80 64}
DTYPES=${DTYPES:-fp16 bf16 fp32}
OUT=${OUT:-$(mktemp -d)}
REFERENCE_FPS=17.93
if [ "$DEVICE" = auto ] && [ "$(python -c 'from pipeline.device import setup_device; print(setup_device("auto").type)')" = cpu ]; then
    echo "error: no CUDA or NPU device found (DEVICE=auto); for a CPU smoke run set DEVICE=cpu DTYPES=\"bf16 fp32\"" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# shellcheck disable=SC2086  # SIZE and DTYPES are lists
python benchmarks/network.py --device "$DEVICE" --batch 4 --size $SIZE --modes train --dtypes $DTYPES \
    --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/gpu.json" --reference-fps "$REFERENCE_FPS"
