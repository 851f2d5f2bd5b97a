"""The small table and search space most tuner tests share: scikit-learn's wine (178 rows,
13 numbers, 3 cultivars) and networks that train in a fraction of a second."""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_wine

from caviar.search import default_space
from caviar.search.samplers import warm_start

WINE_SPACE = {
    "learning_rate": {"kind": "log_uniform", "low": 1e-3, "high": 3e-2},
    "optimizer": {"kind": "choice", "values": ["adam", "momentum"]},
    "momentum": {"kind": "ema_beta", "low": 0.8, "high": 0.99, "when": {"optimizer": ["momentum"]}},
    "dropout": {"kind": "uniform", "low": 0.0, "high": 0.3},
    "width": {"kind": "choice", "values": [8, 16]},
    "depth": {"value": 1},
    "batch_size": {"value": 32},
    "epochs": {"kind": "int", "low": 3, "high": 6},
}

# the default space's warm-start trials for wine, a classification (no solved linear ones)
WINE_WARM = len(warm_start(default_space(), task="multiclass"))


def wine_frame() -> pd.DataFrame:
    """wine with its target as a ``cultivar`` column of names."""
    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    return frame
