# Sourced by gpu_check.sh and gpu_tune.sh: the Python packages the GPU machine's image lacks
# (Optuna, Plotly: wheels carried in $WHEELS, default .whl) installed to /tmp/site, and caviar
# from src/ on PYTHONPATH. WHEELS=none (or a folder without wheels) installs nothing.
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
