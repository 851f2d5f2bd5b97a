"""(A probe) softmax regression on caviar's own inputs, against an earlier sweep's tune.

The lecture notes' softmax regression (no hidden layer, cross-entropy, an L2 penalty) for the
classification targets of an `any_tables.py` sweep (the same draws and splits: pass its
--seed and --count): the training rows go through caviar's `TablePreprocessor` (robust
scaling), scikit-learn's `LogisticRegressionCV` (C from 1e-4 to 1e4, 5-fold log-loss) fits
them, and its test log-loss (on the test rows of classes seen in training, as the sweep's
peers are scored) is printed beside the sweep's caviar model's and HistGradientBoosting's.
For regression targets, the warm start already holds the seeds' linear regression, solved;
a classifier's search has no linear model in it. This shows how often one would have won.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/logistic_probe.py \
        --sweep bench/results-any-tables-seed399.jsonl --seed 399 --count 40
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegressionCV

sys.path.insert(0, str(Path(__file__).parent))
from ridge_probe import sweep_arguments, sweep_targets  # noqa: E402
from tables import test_score  # noqa: E402

from caviar.data.preprocess import TablePreprocessor  # noqa: E402

C_GRID = np.logspace(-4, 4, 17)


def logistic_log_loss(train, test, target: str) -> float:
    """LogisticRegressionCV on caviar's robust-scaled inputs of ``train``; its log-loss on
    the rows of ``test`` whose class the training rows hold."""
    y_train, y_test = train[target].astype(str), test[target].astype(str)
    seen = y_test.isin(set(y_train)).to_numpy()
    pre = TablePreprocessor(target=target, numeric="robust")
    X_train = pre.fit_transform(train.assign(**{target: y_train}))
    X_test = pre.transform(test.assign(**{target: y_test}))
    folds = int(min(5, y_train.value_counts().min())) if y_train.value_counts().min() >= 2 else 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs's convergence warnings at the weakest C
        model = LogisticRegressionCV(Cs=C_GRID, cv=folds, scoring="neg_log_loss",
                                     max_iter=2000).fit(X_train, y_train)
    return test_score(model, X_test[seen], y_test[seen], "multiclass")


def main() -> None:
    args = sweep_arguments(__doc__, 40).parse_args()
    for name, target, train, test, run, _ in sweep_targets(args.sweep, args.seed, args.count,
                                                            "log_loss"):
        if run.get("caviar") is None:
            continue
        result = {"table": name, "target": target, "rows": run["rows"], "caviar": run["caviar"],
                  "hgb": run.get("hgb")}
        try:
            result["logistic"] = logistic_log_loss(train, test, target)
        except ValueError as error:  # recorded, not fatal
            result["error"] = str(error)[:200]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
