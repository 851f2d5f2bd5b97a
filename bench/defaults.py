"""Which network ``CaviarClassifier``/``CaviarRegressor`` should fit by default: the
vocabulary's old defaults (two layers of 64, batch norm, Adam 1e-3), the same as TabM-mini with
k sub-networks (``defaults_tabm4``, ``defaults_tabm8``) or the RealMLP-like one
(``caviar.hyperparams.REALMLP_LIKE``), each with the estimators' early stopping.

Every table of bench/tables.py (subsampled to ``--rows`` rows, to keep this short on a
shared CPU), an 80/20 split per seed; held-out RMSE (regression) or log-loss (classifiers),
and HistGradientBoosting's as a reference.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/defaults.py --seeds 0 1
It prints one JSON line per table and seed (``--out FILE`` appends them there too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split

from caviar import CaviarClassifier, CaviarRegressor
from caviar.hyperparams import REALMLP_LIKE

OLD_DEFAULTS = {"hidden_layer_sizes": (64, 64), "activation": "relu", "batch_norm": True,
                "batch_size": 128, "dropout": 0.0, "optimizer": "adam",
                "learning_rate": 1e-3, "weight_decay": 0.0, "lr_decay": "none", "epochs": 50}
# TabM-mini of the old network, its epochs by optimizer steps (epochs=None), the estimators'
# patience; and the same with PLR: what CaviarClassifier()/CaviarRegressor() fit since 2026-12-05
TABM4_STEPS = {**OLD_DEFAULTS, "tabm_k": 4, "epochs": None, "n_iter_no_change": 10}
TABM4_STEPS_PLR = {**TABM4_STEPS, "numeric_embedding": "plr"}
# realmlp_full: its whole cosine schedule, the best epoch kept (early stopping's patience as
# long as the schedule: stopping at a plateau cuts the decay while the rate is still high)
CONFIGS = {"old_defaults": OLD_DEFAULTS, "realmlp_like": dict(REALMLP_LIKE),
           "realmlp_full": {**REALMLP_LIKE, "n_iter_no_change": REALMLP_LIKE["epochs"]},
           "old_full": {**OLD_DEFAULTS, "n_iter_no_change": OLD_DEFAULTS["epochs"]},
           # RealMLP's width with batch norm and a gentler rate; the old network with
           # RealMLP's optimizer, schedule and dropout
           "realmlp_bn": {**REALMLP_LIKE, "batch_norm": True, "learning_rate": 1e-3},
           "old_cosine": {**OLD_DEFAULTS, "optimizer": "adamw", "weight_decay": 1e-2,
                          "lr_decay": "cosine", "dropout": 0.1},
           # TabM-mini (Gorishniy et al. 2024) of the old network: k sub-networks sharing its
           # hidden layers, each its own input scaling and output layer
           "defaults_tabm4": {**OLD_DEFAULTS, "tabm_k": 4},
           "defaults_tabm8": {**OLD_DEFAULTS, "tabm_k": 8},
           # whether TabM-mini's gain is only more steps: up to 200 epochs, early stopping
           "old_epochs200": {**OLD_DEFAULTS, "epochs": 200},
           "tabm4_epochs200": {**OLD_DEFAULTS, "tabm_k": 4, "epochs": 200},
           # epochs=None: 50, or on a small table as many as 1,000 optimizer steps take
           "tabm4_steps": TABM4_STEPS,
           # the same with periodic numeric embeddings (RealMLP-TD's sigma 0.1)
           "tabm4_steps_plr": TABM4_STEPS_PLR,
           # the estimators as they fit now with one change each: no batch norm (TabM's and
           # RealMLP's networks have none), dropout 0.1, AdamW with decoupled weight decay
           "plr_nobn": {**TABM4_STEPS_PLR, "batch_norm": False},
           "plr_dropout": {**TABM4_STEPS_PLR, "dropout": 0.1},
           "plr_adamw": {**TABM4_STEPS_PLR, "optimizer": "adamw", "weight_decay": 1e-2},
           # the estimators as they fit now with RealMLP's front scale (a learned factor per
           # input of the first layer)
           "plr_front_scale": {**TABM4_STEPS_PLR, "front_scale": True},
           # (a probe) a cosine decay of the rate to 0, as RealMLP's schedule, alone and with
           # the front scale, whose steps a constant rate never shrinks
           "plr_cosine": {**TABM4_STEPS_PLR, "lr_decay": "cosine"},
           "plr_cosine_front_scale": {**TABM4_STEPS_PLR, "lr_decay": "cosine",
                                      "front_scale": True},
           # the categoricals past the one-hot limit target-encoded, or embedded ("mixed")
           "plr_onehot": {**TABM4_STEPS_PLR, "encoding": "onehot"},
           "plr_mixed": {**TABM4_STEPS_PLR, "encoding": "mixed"},
           # RealMLP's schedule: the rate's cosine decay to 0 over all the epochs, the best
           # epoch kept (patience as long as any schedule), a peak rate of 3e-3
           "plr_cosine_full": {**TABM4_STEPS_PLR, "lr_decay": "cosine",
                               "n_iter_no_change": 1000, "learning_rate": 3e-3},
           # (a probe) the same schedule stretched over 200 epochs: the fine fit longer
           "plr_cosine_full_200": {**TABM4_STEPS_PLR, "lr_decay": "cosine", "epochs": 200,
                                   "n_iter_no_change": 1000, "learning_rate": 3e-3},
           # and early stopping's patience a fifth of those epochs (n_iter_no_change=None)
           "tabm4_steps_patience": {**TABM4_STEPS, "n_iter_no_change": None}}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from tables import ANY_TABLE, TABLES, load_table, test_score

    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(ANY_TABLE))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--no-hgb", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in args.tables:
        table = ANY_TABLE[name]
        frame = load_table(name).drop(columns=list(table.drop))
        for seed in args.seeds:
            sample = frame.sample(min(args.rows, len(frame)), random_state=seed)
            X, y = sample.drop(columns=[table.target]), sample[table.target]
            for col in table.categorical:
                X[col] = X[col].astype(str)
            regression = table.task == "regression"
            X_train, X_test, y_train, y_test = train_test_split(
                X, y, test_size=0.2, random_state=seed, stratify=None if regression else y)
            row = {"table": name, "seed": seed, "rows": len(sample),
                   "metric": "rmse" if regression else "log_loss"}
            for key in args.configs:
                config = CONFIGS[key]
                cls = CaviarRegressor if regression else CaviarClassifier
                model = cls(**config, random_state=seed)
                started = time.perf_counter()
                model.fit(X_train, y_train)
                row[key] = round(test_score(model, X_test, y_test, table.task), 5)
                row[key + "_s"] = round(time.perf_counter() - started, 1)
                row[key + "_epochs"] = model.n_iter_
            if args.no_hgb:
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
                continue
            hgb = (HistGradientBoostingRegressor if regression
                   else HistGradientBoostingClassifier)(random_state=seed)
            strings = [c for c in X_train.columns
                       if not pd.api.types.is_numeric_dtype(X_train[c])]
            Xh_train, Xh_test = X_train.copy(), X_test.copy()
            for c in strings:
                levels = sorted(X_train[c].dropna().unique())
                Xh_train[c] = X_train[c].astype("category").cat.set_categories(levels)
                Xh_test[c] = X_test[c].astype("category").cat.set_categories(levels)
                if len(levels) > 255:  # past HGB's categorical limit: ordinal codes
                    Xh_train[c] = Xh_train[c].cat.codes.replace(-1, np.nan)
                    Xh_test[c] = Xh_test[c].cat.codes.replace(-1, np.nan)
            hgb.set_params(categorical_features="from_dtype")
            hgb.fit(Xh_train, y_train)
            row["hgb"] = round(test_score(hgb, Xh_test, y_test, table.task), 5)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
