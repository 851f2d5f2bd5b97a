"""The estimators' early stopping on a large table: validated on 10% of their rows
(``validation_fraction=0.1``, "old") against their default since 2026-12-05 ("new",
``validation_fraction=None``: AutoGluon's holdout without tuning, 10% up to 25,000 rows,
then 2,500 rows, never under 1%), same split and ``random_state``.

Every table whose 80% training part has over 27,500 rows (the change moves 250 rows or more
into training). Prints one JSON line per table and seed: test score (RMSE or log-loss),
seconds and epochs of each arm.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/estimator_validation.py --seeds 164
"""

from __future__ import annotations

import time

from sklearn.model_selection import train_test_split
from tables import ANY_TABLE, load_table, run_each_table, test_score

from caviar import CaviarClassifier, CaviarRegressor

LARGE = ["diamonds", "CPSSW8", "seattlepets", "gss_wages", "movielens", "Fertility"]


def run(name: str, seed: int, budget: float) -> dict:
    spec = ANY_TABLE[name]
    df = load_table(name).drop(columns=list(spec.drop))
    y = df.pop(spec.target)
    regression = spec.task == "regression"
    X_train, X_test, y_train, y_test = train_test_split(
        df, y, test_size=0.2, random_state=seed, stratify=None if regression else y)
    out = {"table": name, "seed": seed, "rows": len(X_train)}
    for arm, share in (("old", 0.1), ("new", None)):
        Estimator = CaviarRegressor if regression else CaviarClassifier
        start = time.perf_counter()
        model = Estimator(random_state=seed, validation_fraction=share,
                          categorical=list(spec.categorical)).fit(X_train, y_train)
        seconds = time.perf_counter() - start
        out[arm] = {"share": model.validation_fraction_,
                    "score": test_score(model, X_test, y_test, spec.task),
                    "seconds": round(seconds, 1), "epochs": model.n_iter_}
    out["ratio"] = out["new"]["score"] / out["old"]["score"]
    return out


if __name__ == "__main__":
    run_each_table(__doc__, run, budget=0.0, seeds=[164], tables=LARGE)
