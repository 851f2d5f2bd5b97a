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
source "$(dirname "$0")/gpu_env.sh"
$PYTHON - <<'PY'
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
n = 300_000
X = rng.normal(size=(n, 24))
df = pd.DataFrame(X, columns=[f"x{i}" for i in range(24)])
df["y"] = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + np.abs(X[:, 3]) + rng.normal(scale=0.3, size=n)
df.to_csv("/tmp/synthetic_300k.csv", index=False)
PY
run() {  # name, device, args...
    local name=$1 device=$2; shift 2
    local start=$SECONDS
    rm -rf "/tmp/gpu_tune_${name}_$device"  # a fresh study, not a resumed one
    timeout $((BUDGET * 3)) $PYTHON -c "from caviar.cli import app; app()" tune "$@" \
        --time-budget "$BUDGET" --device "$device" --seed 0 --out "/tmp/gpu_tune_${name}_$device" \
        > "/tmp/gpu_tune_${name}_$device.log" 2>&1
    echo "$name --device $device: exit $?, wall $((SECONDS - start)) s" >> "$OUT/gpu_tune.txt"
    grep -E "^leaderboard \(top|^test scores" "/tmp/gpu_tune_${name}_$device.log" \
        >> "$OUT/gpu_tune.txt"
    $PYTHON -c "import pandas as pd; t = pd.read_csv('/tmp/gpu_tune_${name}_$device/leaderboard.csv'); print('  member-epochs', int(t['epochs_run'].sum()))" \
        >> "$OUT/gpu_tune.txt" 2>&1
}
for device in "$DEVICE" cpu; do
    run diamonds "$device" src/caviar/datasets/diamonds.csv.gz --target price --drop "Unnamed: 0"
    run synthetic "$device" /tmp/synthetic_300k.csv --target y
done
