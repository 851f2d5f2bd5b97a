# Sourced by gpu_check.sh and gpu_tune.sh: the Python packages the GPU machine's image lacks
# (Optuna, Plotly: wheels carried in $WHEELS, default .whl) installed to /tmp/site, caviar
# from src/ on PYTHONPATH, and `tune_on`, one fresh `caviar tune` summarized. WHEELS=none (or
# a folder without wheels) installs nothing.
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

# tune_on NAME DEVICE BUDGET FILE TUNE-ARGS...: a new study (not a resumed one) of NAME on
# DEVICE for BUDGET seconds, under a timeout of three budgets; appends to FILE its exit code
# and wall time, its trials and test scores, and the epochs all its members trained
tune_on() {
    local name=$1 device=$2 budget=$3 file=$4; shift 4
    local out="/tmp/gpu_tune_${name}_$device" start=$SECONDS
    rm -rf "$out"
    timeout $((budget * 3)) $PYTHON -c "from caviar.cli import app; app()" tune "$@" \
        --time-budget "$budget" --device "$device" --seed 0 --out "$out" > "$out.log" 2>&1
    echo "$name --device $device: exit $?, wall $((SECONDS - start)) s" >> "$file"
    grep -E "^leaderboard \(top|^test scores" "$out.log" >> "$file"
    $PYTHON -c "import pandas as pd; t = pd.read_csv('$out/leaderboard.csv'); print('  member-epochs', int(t['epochs_run'].sum()))" \
        >> "$file" 2>&1
}
