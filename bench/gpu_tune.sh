#!/usr/bin/env bash
# When a tune pays on a GPU: `caviar tune --time-budget 30` of a 54k-row table (diamonds) and a
# 300k-row synthetic one, on the GPU and on the same machine's CPUs, each with its own
# timeout; trials, epochs and the test score of each go to $OUT/gpu_tune.txt. Run like
# gpu_check.sh (which says how): OUT=/tmp/out bash bench/gpu_tune.sh
set -u
OUT=${OUT:?set OUT to a folder for the results}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-30}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_common.sh"
$PYTHON - <<'PY'
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
n = 300_000
X = rng.normal(size=(n, 24))
df = pd.DataFrame(X, columns=[f"x{i}" for i in range(24)])
df["y"] = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + np.abs(X[:, 3]) + rng.normal(scale=0.3, size=n)
df.to_csv("/tmp/synthetic_300k.csv", index=False)
PY
for device in "$DEVICE" cpu; do
    tune_on diamonds "$device" "$BUDGET" "$OUT/gpu_tune.txt" \
        src/caviar/datasets/diamonds.csv.gz --target price --drop "Unnamed: 0"
    tune_on synthetic "$device" "$BUDGET" "$OUT/gpu_tune.txt" /tmp/synthetic_300k.csv --target y
done
