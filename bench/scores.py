"""Held-out test scores of caviar's estimators, at their default settings, against
scikit-learn baselines on bundled real data.

Every model sees the same split of each table: ``train_test_split(test_size=0.2,
random_state=0)``, stratified for classification. The caviar estimators get the raw training
table (string categories and all); the baselines get it through their usual preprocessing:

- ``hist_gradient_boosting``: ``HistGradientBoostingClassifier/Regressor()`` with
  ``categorical_features="from_dtype"``, the string columns as pandas categories (levels from
  the training rows);
- ``linear``: ``LogisticRegression(max_iter=1000)`` / ``Ridge()`` after median imputation and
  scaling of numeric columns, and most-frequent imputation and one-hot encoding of strings.

Tables: ``default`` (binary ``default``, 3% positives: accuracy, log-loss, ROC AUC), ``wage``
(regression on ``wage``, ``logwage`` dropped as a target leak: RMSE, R²), ``diamonds``
(regression on ``price``, the R row-index column dropped, subsampled to ``--diamonds-rows``
rows, 15,000 by default, 0 for all 53,940: RMSE, R²) and scikit-learn's ``load_digits``
(10 classes: accuracy, log-loss). ``fit_seconds`` is the wall-clock time of one ``fit``.

Run (one thread each for torch and OpenMP keeps timings comparable on a shared machine):
    OMP_NUM_THREADS=1 .venv/bin/python bench/scores.py
It prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import pandas as pd
import sklearn
import torch
from sklearn import metrics
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import caviar
from caviar import CaviarClassifier, CaviarRegressor
from caviar.datasets import load_dataset

SEED = 0


def tables(diamonds_rows: int) -> dict[str, tuple[pd.DataFrame, pd.Series, str]]:
    """name -> (features, target, task)."""
    default = load_dataset("default")
    wage = load_dataset("wage")
    diamonds = load_dataset("diamonds").drop(columns=["Unnamed: 0"])
    if diamonds_rows:
        diamonds = diamonds.sample(n=diamonds_rows, random_state=SEED)
    digits = load_digits(as_frame=True)
    return {
        "default": (default.drop(columns=["default"]), default["default"], "binary"),
        "wage": (wage.drop(columns=["wage", "logwage"]), wage["wage"], "regression"),
        "diamonds": (diamonds.drop(columns=["price"]), diamonds["price"], "regression"),
        "digits": (digits.data, digits.target, "multiclass"),
    }


def string_columns(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]


def as_categories(X: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """String columns as pandas categories with the training rows' levels."""
    X = X.copy()
    for col in string_columns(train):
        levels = sorted(train[col].dropna().unique())
        X[col] = X[col].astype(pd.CategoricalDtype(levels))
    return X


def linear_pipeline(X: pd.DataFrame, model):
    strings = string_columns(X)
    numeric = [c for c in X.columns if c not in strings]
    parts = [("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)]
    if strings:
        parts.append(("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                           OneHotEncoder(handle_unknown="ignore")), strings))
    return make_pipeline(ColumnTransformer(parts), model)


def models(X: pd.DataFrame, task: str) -> dict:
    """name -> (estimator, whether it wants string columns as pandas categories)."""
    if task == "regression":
        return {"caviar": (CaviarRegressor(random_state=SEED), False),
                "hist_gradient_boosting": (HistGradientBoostingRegressor(
                    categorical_features="from_dtype", random_state=SEED), True),
                "linear": (linear_pipeline(X, Ridge()), False)}
    return {"caviar": (CaviarClassifier(random_state=SEED), False),
            "hist_gradient_boosting": (HistGradientBoostingClassifier(
                categorical_features="from_dtype", random_state=SEED), True),
            "linear": (linear_pipeline(X, LogisticRegression(max_iter=1000)), False)}


def scores(model, X_test: pd.DataFrame, y_test: pd.Series, task: str) -> dict[str, float]:
    if task == "regression":
        pred = model.predict(X_test)
        return {"rmse": float(np.sqrt(metrics.mean_squared_error(y_test, pred))),
                "r2": float(metrics.r2_score(y_test, pred))}
    proba = model.predict_proba(X_test)
    pred = model.classes_[proba.argmax(axis=1)]
    out = {"accuracy": float(metrics.accuracy_score(y_test, pred)),
           "log_loss": float(metrics.log_loss(y_test, proba, labels=model.classes_))}
    if task == "binary":
        out["roc_auc"] = float(metrics.roc_auc_score(y_test == model.classes_[1], proba[:, 1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diamonds-rows", type=int, default=15_000,
                        help="subsample diamonds to this many rows (0: all 53,940)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # e.g. caviar's ignored columns
    results: dict = {}
    for name, (X, y, task) in tables(args.diamonds_rows).items():
        stratify = y if task != "regression" else None
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.2, random_state=SEED, stratify=stratify)
        results[name] = {"task": task, "train_rows": len(X_train), "test_rows": len(X_test)}
        for model_name, (model, categories) in models(X_train, task).items():
            Xtr, Xte = ((as_categories(X_train, X_train), as_categories(X_test, X_train))
                        if categories else (X_train, X_test))
            start = time.perf_counter()
            model.fit(Xtr, y_train)
            seconds = time.perf_counter() - start
            row = scores(model, Xte, y_test, task)
            row["fit_seconds"] = round(seconds, 2)
            if model_name == "caviar":
                row["epochs_run"] = int(model.n_iter_)
            results[name][model_name] = row
    setup = {"split": "train_test_split(test_size=0.2, random_state=0), stratified if classes",
             "diamonds_rows": args.diamonds_rows or "all", "caviar": caviar.__version__,
             "scikit_learn": sklearn.__version__, "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    print(json.dumps({"setup": setup, "results": results}, indent=1))


if __name__ == "__main__":
    main()
