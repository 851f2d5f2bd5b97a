"""(A probe) which periodic features and λ a solved ridge should take, on a sweep's targets.

For the regression targets of `any_tables.py` sweeps (the same draws and splits: --seed, and
--count 40), the training rows go through caviar's `TablePreprocessor` (robust scaling),
and scikit-learn's `RidgeCV` (λ by leave-one-out) fits them with, beside each numeric column,
periodic features of it in several variants: random cos(2π·c·x + b) as `ridge_probe.py`
draws them, or sin and cos of 2π·c·x at the k quantiles (i + ½)/k of |N(0, 1)| (what
`layers.frequency_grid` gives), at a cap on the features in all, under several λ grids.
Prints each target's test RMSE per variant beside the sweep's caviar model's.

    PYTHONPATH=src .venv/bin/python bench/periodic_variants.py \\
        --sweep bench/results-any-tables-seed377.jsonl --seed 377
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm
from sklearn.linear_model import RidgeCV

sys.path.insert(0, str(Path(__file__).parent))
from ridge_probe import ALPHAS, sweep_arguments, sweep_targets  # noqa: E402
from tables import test_score  # noqa: E402

from caviar.data.preprocess import TablePreprocessor  # noqa: E402

# name: (kind, features at most, frequencies per column, λ grid)
VARIANTS = {
    "A_rand32_2000": ("random", 2000, 32, ALPHAS),
    "B_q16_512": ("quantile", 512, 16, ALPHAS),
    "C_q16_2000": ("quantile", 2000, 16, ALPHAS),
    "D_q16_512_3a": ("quantile", 512, 16, [1e-2, 1, 1e2]),
    "E_q32_1024": ("quantile", 1024, 32, ALPHAS),
    "F_q32_512": ("quantile", 512, 32, ALPHAS),
    "G_q32_1024_3a": ("quantile", 1024, 32, [1e-4, 1e-2, 1]),
    "H_q32_1024_5a": ("quantile", 1024, 32, [1e-4, 1e-3, 1e-2, 1e-1, 1]),
    "I_q16_512_3a": ("quantile", 512, 16, [1e-4, 1e-2, 1]),
    "J_q32_512_3a": ("quantile", 512, 32, [1e-4, 1e-2, 1]),
    "K_q32_1024_4a": ("quantile", 1024, 32, [1e-4, 1e-2, 1, 1e2]),
}


def with_features(X: np.ndarray, columns: list[int], kind: str, cap: int, k: int
                  ) -> np.ndarray:
    """X and beside it the periodic features of its ``columns``."""
    n = max(1, len(columns))
    if kind == "random":  # one cos per frequency, a random phase
        k = max(1, min(k, cap // n))
        rng = np.random.default_rng(0)
        c, b = rng.normal(size=(len(columns), k)), rng.uniform(0, 2 * np.pi, (len(columns), k))
        theta = 2 * np.pi * X[:, columns, None] * c + b
        return np.hstack([X, np.cos(theta).reshape(len(X), -1)])
    k = max(1, min(k, cap // (2 * n)))
    c = norm.ppf(0.5 + 0.5 * (np.arange(k) + 0.5) / k)
    theta = 2 * np.pi * X[:, columns, None] * c
    return np.hstack([X, np.sin(theta).reshape(len(X), -1),
                      np.cos(theta).reshape(len(X), -1)])


def main() -> None:
    args = sweep_arguments(__doc__, 40).parse_args()
    for name, target, train, test, run, _ in sweep_targets(args.sweep, args.seed, args.count):
        result = {"seed": args.seed, "table": name, "target": target, "caviar": run["caviar"]}
        try:
            pre = TablePreprocessor(target=target, task="regression", numeric="robust")
            X_train, X_test = pre.fit_transform(train), pre.transform(test)
            columns = list(pre.numeric_columns())
            for variant, (kind, cap, k, alphas) in VARIANTS.items():
                model = RidgeCV(alphas=alphas).fit(
                    with_features(X_train, columns, kind, cap, k), train[target].astype(float))
                result[variant] = test_score(model, with_features(X_test, columns, kind, cap, k),
                                             test[target].astype(float), "regression")
        except ValueError as error:  # recorded, not fatal
            result["error"] = str(error)[:200]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
