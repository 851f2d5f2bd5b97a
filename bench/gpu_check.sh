#!/usr/bin/env bash
# The GPU checks of issue 15, as one short script for a lent GPU machine (its time is scarce):
#   1. the tests' CUDA parametrizations (the device code paths, models saved on one device and
#      loaded on the other, tune/PBT/workers on the GPU);
#   2. bench/throughput.py on the GPU against one-at-a-time torch and torch.func.vmap, at
#      P = 64, 1,024 and 4,096 networks of widths 256 and 1,024 (3 epochs of digits), the
#      target row (P = 1,024, H = 256) first, then the same row with compiled kernels;
#   3. a 20 s `caviar tune` of the bundled wage table on the GPU and on the same machine's CPUs.
# Each step has its own timeout and appends to its own file under $OUT, so what finished comes
# back even if a later step runs out of time.
#
# Run from the repository root on the GPU machine (its python3 holds torch; caviar comes from
# src/, Optuna and Plotly from wheels carried in .whl when the image lacks them):
#   OUT=/tmp/out bash bench/gpu_check.sh
# On a machine without CUDA, DEVICE=cpu SIZES="16:32" PYTHON=.venv/bin/python WHEELS=none run
# the same steps small (a dry run of the script itself).
set -u
OUT=${OUT:?set OUT to a folder for the results}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-"1024:256 64:256 4096:256 1024:1024 64:1024 4096:1024"}  # P:H
mkdir -p "$OUT"

source "$(dirname "$0")/gpu_common.sh"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    $PYTHON -c "import torch, optuna; print('torch', torch.__version__, 'optuna',
optuna.__version__, 'cuda', torch.cuda.is_available(), 'cpus', __import__('os').cpu_count())"
} > "$OUT/machine.txt" 2>&1

# 1. tests on the GPU: every test parametrized over devices, cuda and auto rows only
timeout 150 $PYTHON -m pytest -q -p no:cacheprovider \
    tests/test_device.py tests/test_device_tune.py tests/test_plr.py -k "cuda or auto" \
    > "$OUT/pytest.txt" 2>&1
echo "pytest exit $?" >> "$OUT/pytest.txt"

# 2. throughput, one JSON object per size
for size in $SIZES; do
    timeout 120 $PYTHON bench/throughput.py --device "$DEVICE" --population "${size%%:*}" \
        --hidden "${size##*:}" --epochs 3 >> "$OUT/throughput.json" 2>> "$OUT/throughput.err"
done
first=${SIZES%% *}
timeout 150 $PYTHON bench/throughput.py --device "$DEVICE" --population "${first%%:*}" \
    --hidden "${first##*:}" --epochs 3 --compile --peers \
    >> "$OUT/throughput.json" 2>> "$OUT/throughput.err"

# 3. the CLI on the GPU and on this machine's CPUs, 20 s each
for device in "$DEVICE" cpu; do
    tune_on wage "$device" 20 "$OUT/tune.txt" src/caviar/datasets/wage.csv.gz --target wage \
        --drop logwage
done
