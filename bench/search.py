"""Search quality at equal wall-clock time: caviar against the hyperparameter searches a user
writes by hand, on real tables.

Datasets (``--datasets``, all by default): the nine tables bundled with caviar and
scikit-learn's digits, each with its target, dropped columns (leaks, R row indices) and
categorical integer columns as declared in ``tables.py``. Every method sees the same 60/20/20
split, ``split_frame(df, target, task, 0.2, 0.2, seed)`` (the one ``tune`` makes); the
optuna_torch, sklearn_mlp and HistGradientBoosting peers the same features: a
``TablePreprocessor`` (caviar's default encoding) fitted on the training rows, regression
targets standardized by it. Each budgeted method gets ``--budget`` seconds per dataset:

- caviar: ``tune(df, target, time_budget=B, population=32, sampler="coarse-to-fine",
  pruner="asha")``; its model (up to 5 of the best networks averaged, ``ensemble=5``) is
  scored on the test rows, and so is its best network alone (``test_best_network``, the
  "(caviar best network)" line), for a like-with-like look at the single-network peers.
- caviar_pbt: the same ``tune`` with ``scheduler="pbt"`` (population-based training: the
  default tuner's coarse search for half the budget, then 2 populations of 16 per round from
  its best structures and networks, exploit/explore every 4 epochs).
- optuna_torch: an Optuna TPE study with ``MedianPruner``, one ``torch.nn.Sequential`` per trial
  (Linear -> BatchNorm1d -> ReLU -> Dropout blocks, AdamW, shuffled minibatches, validation
  loss reported every epoch) over lr, weight_decay, dropout, depth 1-3, width {32..256}, batch
  size {64, 128, 256}, epochs 10-60; ``study.optimize(timeout=B)``. Like caviar, a trial still
  running at the deadline is stopped and counted as pruned (``trials_stopped_at_budget``). The
  best trial's network (state_dict kept in memory) is scored, not refit.
- sklearn_mlp: ``ParameterSampler`` configurations of ``MLPClassifier``/``MLPRegressor``
  (``early_stopping=True``, ``max_iter=60``) fitted on the training rows and chosen on the
  validation rows until the budget is spent; a config is not started after the deadline.
- hist_gradient_boosting: one default fit on the training rows (reference; no budget).
- realmlp_td, tabm_d: ``pytabkit``'s ``RealMLP_TD_Classifier/Regressor`` and
  ``TabM_D_Classifier/Regressor`` (Holzmüller et al. 2024; Gorishniy et al. 2025) at their
  untuned defaults (no budget; ``random_state=0``), on seed 0 only (every seed's split with
  ``--peers-every-seed``): they get the raw columns
  and do their own scaling and categorical encoding, with the training medians filled in for
  missing numbers (which they refuse) plus caviar's 0/1 missing indicators, and the validation
  rows for their early stopping. Each fit runs in a child process stopped after
  ``--peer-timeout`` seconds (600 by default: TabM-D, an ensemble of 32 MLPs, can run much
  longer on CPU on the larger tables); a stopped fit is recorded as skipped. Install:
  ``pip install torch==2.13.0`` first, then ``pip install -e '.[bench]'``; without pytabkit
  they are recorded as skipped.

The selection score is caviar's: validation log-loss (classification) or RMSE in the target's
units (regression), at a trial's last epoch. Test scores: accuracy, log-loss (and ROC AUC for
binary); RMSE, MAE and R^2 in the target's units. ``trials`` counts every finished trial
(complete + pruned, including those stopped at the deadline), ``trials_complete`` the completed
ones; ``seconds`` is the wall time of the whole method (caviar's includes its own preprocessing,
SQLite study, saving the best model and scoring). Prints one JSON object to stdout and a table
to stderr.

With ``--seeds 0 1 2`` every dataset is split, searched and scored once per seed and the
summary averages the test scores (single runs differ by more than the methods do).

Run:  .venv/bin/python bench/search.py [--budget 60] [--seeds 0 1 2] [--quick]
      [--datasets default wage] [--methods caviar realmlp_td ...] [--peer-timeout 600]
      [--numeric robust|asinh|quantile|standard|robust+quantile|auto|search]  (the scaling)
      [--refit none|train+valid|bag]  (caviar's refit of the kept networks)
(all ten tables at 60 s take about two hours a seed.)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import optuna
import pandas as pd
import torch
from scipy.stats import loguniform
from sklearn import metrics
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.model_selection import ParameterSampler
from sklearn.neural_network import MLPClassifier, MLPRegressor
from tables import ANY_TABLE, TABLES, load_table
from threadpoolctl import threadpool_limits

from caviar import tune
from caviar.data import TablePreprocessor, split_frame
from caviar.data.roles import category_strings
from caviar.hyperparams import NUMERIC_READS
from caviar.search.study import keys
from caviar.search.tune import NoTrialCompleted

METHODS = ("caviar", "caviar_pbt", "optuna_torch", "sklearn_mlp", "hist_gradient_boosting",
           "realmlp_td", "tabm_d")
NETWORKS = ("optuna_torch", "sklearn_mlp")  # the budgeted single-network peers
PEERS = {"realmlp_td": "RealMLP_TD", "tabm_d": "TabM_D"}  # pytabkit's untuned defaults


def test_scores(task: str, y: np.ndarray, out: np.ndarray, pre: TablePreprocessor) -> dict:
    """``y``: encoded test targets; ``out``: class probabilities or standardized predictions."""
    if task == "regression":
        truth, pred = pre.decode_target(y), pre.predicted_values(out)
        return {"rmse": float(np.sqrt(metrics.mean_squared_error(truth, pred))),
                "mae": float(metrics.mean_absolute_error(truth, pred)),
                "r2": float(metrics.r2_score(truth, pred))}
    out = np.clip(out, 1e-15, 1)
    out = out / out.sum(axis=1, keepdims=True)
    s = {"accuracy": float((out.argmax(axis=1) == y).mean()),
         "log_loss": float(metrics.log_loss(y, out, labels=list(range(out.shape[1]))))}
    if task == "binary":
        s["roc_auc"] = float(metrics.roc_auc_score(y, out[:, 1]))
    return s


def val_score(task: str, y: np.ndarray, out: np.ndarray, target_std: float) -> float:
    """Caviar's selection score: log-loss, or RMSE in the target's units."""
    if task == "regression":
        return float(np.sqrt(np.mean((out - y) ** 2))) * target_std
    return float(metrics.log_loss(y, np.clip(out, 1e-15, 1), labels=list(range(out.shape[1]))))


def counts(trials: list) -> dict:
    """Finished trials (complete + pruned), completed ones, those the deadline stopped, failed;
    ``epochs``: epochs trained over all trials (the work done, whatever the pruner kept)."""
    state = [t.state.name for t in trials]
    return {"trials": state.count("COMPLETE") + state.count("PRUNED"),
            "trials_complete": state.count("COMPLETE"),
            "trials_stopped_at_budget": sum("stopped" in t.user_attrs for t in trials),
            "trials_failed": state.count("FAIL"),
            "epochs": sum(len(t.intermediate_values) for t in trials)}


def _space(path: str | None) -> str | dict | None:
    """``--space``: a TOML file as tune reads it, or a JSON file of ``Space.to_dict()``."""
    if path is None or not path.endswith(".json"):
        return path
    with open(path) as f:
        return json.load(f)


def run_caviar(df, spec, test, enc, budget, seed, scheduler: str = "asha",
               numeric: str | None = None, refit: str = "none",
               seed_ensemble: int = 0, space: str | None = None) -> dict:
    target, task = spec.target, spec.task
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        try:
            result = tune(df, target, time_budget=budget, population=32, pruner="asha",
                          sampler="coarse-to-fine", out=out, seed=seed, drop=spec.drop,
                          categorical=spec.categorical, task=task, scheduler=scheduler,
                          numeric=numeric, refit=refit, seed_ensemble=seed_ensemble,
                          space=_space(space))
        except NoTrialCompleted as e:
            study = optuna.load_study(study_name=f"data-{target}",
                                      storage=f"sqlite:///{out}/study.db")
            return {"error": str(e), **counts(study.get_trials(deepcopy=False)),
                    "seconds": round(time.perf_counter() - start, 2)}
        model = result.model
        X_test = torch.from_numpy(model.preprocessor.transform(test))
        with torch.no_grad():  # the model averages its networks; the best one alone too
            outputs = torch.stack([n.predict(X_test)[0] for n in model.networks])
        seconds = time.perf_counter() - start
    board = result.leaderboard
    pre = model.preprocessor
    return {"test": test_scores(task, enc(test), outputs.mean(0).numpy(), pre),
            "test_best_network": test_scores(task, enc(test), outputs[0].numpy(), pre),
            "networks": len(model.networks),
            "trained_on": model.info.get("trained_on", "train"),  # "bag" when bagged
            # a bag's verdict (why declined), what it trained and what it chose
            **{k: model.info[k] for k in ("bag", "bag_candidates", "bag_members",
                                          "bag_epochs", "bag_value", "bag_seconds")
               if k in model.info},
            **counts(result.study.get_trials(deepcopy=False)),
            # numeric="auto": the scaling chosen, from which trial, the warm start's scores
            **({"numeric_scaling": result.study.user_attrs[keys.SCALING]}
               if keys.SCALING in result.study.user_attrs else {}),
            "seconds": round(seconds, 2), "best_val": model.info["value"],
            "ensemble_val": model.info.get("ensemble_value"),
            "best": {k: v for k, v in board.iloc[0].items() if not pd.isna(v)}
            | {"caviar_test_scores": result.test_scores}}


def run_optuna_torch(data, task, n_out, target_std, budget, seed) -> dict:
    Xt, yt, Xv, yv, Xs = (torch.from_numpy(data[k]) for k in ("Xt", "yt", "Xv", "yv", "Xs"))
    loss_fn = torch.nn.MSELoss() if task == "regression" else torch.nn.CrossEntropyLoss()
    best = {"value": math.inf, "state": None, "net": None}
    deadline = time.perf_counter() + budget

    def build(depth: int, width: int, dropout: float) -> torch.nn.Sequential:
        layers, n_in = [], Xt.shape[1]
        for _ in range(depth):
            layers += [torch.nn.Linear(n_in, width), torch.nn.BatchNorm1d(width),
                       torch.nn.ReLU(), torch.nn.Dropout(dropout)]
            n_in = width
        return torch.nn.Sequential(*layers, torch.nn.Linear(n_in, n_out))

    def predict(net: torch.nn.Module, X: torch.Tensor) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            z = net(X)
        return (z.squeeze(1) if task == "regression" else torch.softmax(z, 1)).numpy()

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
        wd = trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        depth = trial.suggest_int("depth", 1, 3)
        width = trial.suggest_categorical("width", [32, 64, 128, 256])
        batch = trial.suggest_categorical("batch_size", [64, 128, 256])
        epochs = trial.suggest_int("epochs", 10, 60)
        torch.manual_seed(seed * 100_003 + trial.number)
        net = build(depth, width, dropout)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
        for epoch in range(1, epochs + 1):
            net.train()
            for idx in torch.randperm(len(Xt)).split(batch):
                if len(idx) < 2:  # BatchNorm1d needs two rows in training mode
                    continue
                opt.zero_grad()
                loss_fn(net(Xt[idx]).squeeze(-1) if task == "regression" else net(Xt[idx]),
                        yt[idx]).backward()
                opt.step()
            value = val_score(task, data["yv"], predict(net, Xv), target_std)
            if not math.isfinite(value):
                raise optuna.TrialPruned("diverged")
            trial.report(value, epoch)
            if time.perf_counter() > deadline:
                trial.set_user_attr("stopped", "time budget")
                raise optuna.TrialPruned("time budget")
            if trial.should_prune():
                raise optuna.TrialPruned()
        if value < best["value"]:
            best.update(value=value, state=copy.deepcopy(net.state_dict()),
                        net=(depth, width, dropout), params=dict(trial.params))
        return value

    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                   n_warmup_steps=3))
    start = time.perf_counter()
    study.optimize(objective, timeout=budget)
    seconds = time.perf_counter() - start
    entry = {**counts(study.get_trials(deepcopy=False)), "seconds": round(seconds, 2),
             "best_val": best["value"]}
    if best["net"] is not None:
        net = build(*best["net"])
        net.load_state_dict(best["state"])
        entry["test"] = test_scores(task, data["ys"], predict(net, Xs), data["pre"])
        entry["best"] = best["params"]
    return entry


def run_sklearn_mlp(data, task, target_std, budget, seed) -> dict:
    sizes = [(w,) * d for d in (1, 2, 3) for w in (32, 64, 128, 256)]
    space = {"hidden_layer_sizes": sizes, "alpha": loguniform(1e-5, 1e-1),
             "learning_rate_init": loguniform(1e-4, 3e-2), "batch_size": [64, 128, 256]}
    Model = MLPRegressor if task == "regression" else MLPClassifier
    best, best_value, n = None, math.inf, 0
    start = time.perf_counter()
    for params in ParameterSampler(space, n_iter=100_000, random_state=seed):
        if time.perf_counter() - start >= budget:
            break
        model = Model(**params, early_stopping=True, max_iter=60, random_state=seed + n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(data["Xt"], data["yt"])
        n += 1
        out = model.predict(data["Xv"]) if task == "regression" else model.predict_proba(
            data["Xv"])
        value = val_score(task, data["yv"], out, target_std)
        if value < best_value:
            best, best_value = (model, params), value
    seconds = time.perf_counter() - start
    model, params = best
    out = model.predict(data["Xs"]) if task == "regression" else model.predict_proba(data["Xs"])
    return {"test": test_scores(task, data["ys"], out, data["pre"]), "trials": n,
            "trials_complete": n, "seconds": round(seconds, 2), "best_val": best_value,
            "best": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}}


def run_hgb(data, task) -> dict:
    start = time.perf_counter()
    if task == "regression":
        model = HistGradientBoostingRegressor(random_state=0).fit(data["Xt"], data["yt"])
        out = model.predict(data["Xs"])
    else:
        model = HistGradientBoostingClassifier(random_state=0).fit(data["Xt"], data["yt"])
        out = model.predict_proba(data["Xs"])
    return {"test": test_scores(task, data["ys"], out, data["pre"]), "trials": 1,
            "trials_complete": 1, "seconds": round(time.perf_counter() - start, 2)}


def peer_frames(pre: TablePreprocessor, parts: dict) -> tuple[dict, list[str]]:
    """The feature columns for the pytabkit peers, which scale and encode on their own but
    refuse missing numbers: numeric columns, and the numbers a date column expands into (as
    caviar and HGB get them), with the training medians filled in and a 0/1 column where
    training had missing values (as caviar's), categoricals as strings (missing a level of
    its own, as in caviar). Returns the frames and the categorical column names."""
    roles = pre.roles_
    numeric = [*roles.numeric, *pre._date_columns()]

    def numbers(df: pd.DataFrame) -> pd.DataFrame:
        return pre._inputs(df)[numeric].astype(float)  # the preprocessor's cleaned columns

    frames = {k: pd.DataFrame(index=v.index) for k, v in parts.items()}
    if numeric:
        imputer = SimpleImputer(strategy="median", add_indicator=True).set_output(
            transform="pandas").fit(numbers(parts["train"]))
        frames = {k: imputer.transform(numbers(v)) for k, v in parts.items()}
    for k, df in parts.items():
        for c in roles.categorical:
            frames[k][c] = category_strings(df[c]).to_numpy()
    return frames, list(roles.categorical)


def _fit_peer(method: str, task: str, frames: dict, categorical: list[str], y: dict,
              threads: int) -> dict:
    """Fit one pytabkit model in this (child) process; its test outputs and fit seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorch_lightning's deprecation notes on import
        import pytabkit

    torch.set_num_threads(threads)
    name = PEERS[method] + ("_Regressor" if task == "regression" else "_Classifier")
    model = getattr(pytabkit, name)(device="cpu", random_state=0, n_threads=threads,
                                    verbosity=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(frames["train"], y["train"], X_val=frames["val"], y_val=y["val"],
                  cat_col_names=categorical or None)
    seconds = time.perf_counter() - start
    out = (model.predict(frames["test"]) if task == "regression"
           else model.predict_proba(frames["test"]))
    return {"out": np.asarray(out, dtype=np.float64), "seconds": seconds}


def run_peer(method: str, task: str, pre: TablePreprocessor, frames: dict,
             categorical: list[str], y_units: dict, y_test: np.ndarray, threads: int,
             timeout: float) -> dict:
    """A pytabkit peer's test scores and seconds, or why it was skipped."""
    try:
        import pytabkit  # noqa: F401
    except ImportError:
        return {"skipped": "pytabkit is not installed (pip install -e '.[bench]')",
                "trials": 0, "trials_complete": 0, "seconds": math.nan}
    # A child process, so that a fit past the timeout can be stopped; spawn, not fork, since
    # this process already runs torch and OpenMP threads.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        job = pool.apply_async(_fit_peer, (method, task, frames, categorical, y_units,
                                           threads))
        try:
            fitted = job.get(timeout=timeout)
        except multiprocessing.TimeoutError:
            pool.terminate()
            return {"skipped": f"fit passed {timeout:.0f} s; stopped", "trials": 0,
                    "trials_complete": 0, "seconds": math.nan}
    out = fitted["out"]
    if task == "regression":  # to the standardized units test_scores decodes
        out = (out.reshape(-1) - pre.target_mean_) / pre.target_std_
    return {"test": test_scores(task, y_test, out, pre), "trials": 1, "trials_complete": 1,
            "seconds": round(fitted["seconds"], 2)}


def bench_dataset(name: str, budget: float, seed: int, methods=METHODS, threads: int = 1,
                  peer_timeout: float = 600.0, numeric: str | None = None,
                  refit: str = "none", seed_ensemble: int = 0,
                  peers_every_seed: bool = False, space: str | None = None) -> dict:
    spec = ANY_TABLE[name]
    target, task = spec.target, spec.task
    df = load_table(name)
    train, val, test = split_frame(df, target, task, test_size=0.2, val_size=0.2, seed=seed)
    pre = TablePreprocessor(target=target, task=task, drop=spec.drop,
                            categorical=spec.categorical, random_state=seed)
    data = {"Xt": pre.fit_transform(train), "Xv": pre.transform(val), "Xs": pre.transform(test),
            "pre": pre}
    for key, part in (("yt", train), ("yv", val), ("ys", test)):
        data[key] = pre.encode_target(part[target])
    target_std = float(pre.target_std_) if task == "regression" else 1.0
    n_out = 1 if task == "regression" else len(pre.classes_)
    print(f"[{name} seed {seed}] {task}: {len(train)}/{len(val)}/{len(test)} rows, "
          f"{data['Xt'].shape[1]} features", file=sys.stderr, flush=True)
    result = {"task": task, "rows": {"train": len(train), "val": len(val), "test": len(test)}}
    parts = {"train": train, "val": val, "test": test}

    def peer(method: str) -> dict:
        frames, categorical = peer_frames(pre, parts)
        y_units = {k: (v[target].to_numpy(dtype=np.float64) if task == "regression"
                       else pre.encode_target(v[target])) for k, v in parts.items()}
        return run_peer(method, task, pre, frames, categorical, y_units, data["ys"], threads,
                        peer_timeout)

    runs = {"caviar": lambda: run_caviar(df, spec, test,
                                         lambda part: pre.encode_target(part[target]),
                                         budget, seed, numeric=numeric, refit=refit,
                                         seed_ensemble=seed_ensemble, space=space),
            "caviar_pbt": lambda: run_caviar(df, spec, test,
                                             lambda part: pre.encode_target(part[target]),
                                             budget, seed, scheduler="pbt", numeric=numeric),
            "optuna_torch": lambda: run_optuna_torch(data, task, n_out, target_std, budget,
                                                     seed),
            "sklearn_mlp": lambda: run_sklearn_mlp(data, task, target_std, budget, seed),
            "hist_gradient_boosting": lambda: run_hgb(data, task),
            **{m: (lambda m=m: peer(m)) for m in PEERS}}
    for method, run in runs.items():
        if method not in methods or (method in PEERS and seed != 0 and not peers_every_seed):
            continue
        result[method] = run()
        r = result[method]
        print(f"  {method}: {r['trials']} trials ({r['trials_complete']} complete) in "
              f"{r['seconds']} s; test {r.get('test', r.get('error', r.get('skipped')))}",
              file=sys.stderr, flush=True)
    return result


def main_key(task: str) -> str:
    return "rmse" if task == "regression" else "log_loss"


def over_seeds(scores: list[float]) -> dict:
    """Per-seed test scores and their mean."""
    return {"scores": [round(x, 5) for x in scores], "mean": round(float(np.mean(scores)), 5)}


def summarize(runs: dict, methods=METHODS) -> dict:
    """Per dataset and method: the main test score and trial counts, averaged over the seeds
    the method ran on (the pytabkit peers: seed 0)."""
    summary = {}
    for name in next(iter(runs.values())):
        per_seed = [runs[seed][name] for seed in runs]
        key = main_key(per_seed[0]["task"])
        entry = {"metric": key}
        for method in methods:
            ran = [r[method] for r in per_seed if method in r]
            if not ran:
                continue
            scores = [r.get("test", {}).get(key, math.nan) for r in ran]
            entry[method] = {
                **over_seeds(scores),
                "trials": float(np.mean([r["trials"] for r in ran])),
                "trials_complete": float(np.mean([r["trials_complete"] for r in ran])),
                "epochs": float(np.mean([r.get("epochs", math.nan) for r in ran])),
                "seconds": float(np.mean([r["seconds"] for r in ran]))}
            if "skipped" in ran[0]:
                entry[method]["skipped"] = ran[0]["skipped"]
        if "caviar" in entry:
            alone = [r["caviar"].get("test_best_network", {}).get(key, math.nan)
                     for r in per_seed]
            entry["caviar_best_network_alone"] = over_seeds(alone)
        if "caviar" in entry and "optuna_torch" in entry:
            entry["trial_ratio_caviar_vs_optuna_torch"] = round(
                entry["caviar"]["trials"] / max(entry["optuna_torch"]["trials"], 1), 2)
        if "caviar" in entry and all(m in entry for m in NETWORKS):
            entry["caviar_best_of_the_networks"] = bool(entry["caviar"]["mean"] <= min(
                entry[m]["mean"] for m in NETWORKS))
        summary[name] = entry
    return summary


def table(summary: dict) -> str:
    lines = [f"{'dataset':17} {'method':23} {'metric':8} {'mean':>9}  {'per seed':30} "
             f"{'trials':>7} {'epochs':>7} {'sec':>6}"]
    for name, entry in summary.items():
        for method in METHODS:
            if method not in entry:
                continue
            r = entry[method]
            if "skipped" in r:
                lines.append(f"{name:17} {method:23} skipped: {r['skipped']}")
                continue
            seeds = " ".join(f"{x:.4g}" for x in r["scores"])
            lines.append(f"{name:17} {method:23} {entry['metric']:8} {r['mean']:9.4f}  "
                         f"{seeds:30} {r['trials']:7.0f} {r['epochs']:7.0f} "
                         f"{r['seconds']:6.1f}")
        if "caviar_best_network_alone" in entry:
            alone = entry["caviar_best_network_alone"]
            seeds = " ".join(f"{x:.4g}" for x in alone["scores"])
            lines.append(f"{name:17} {'(caviar best network)':23} {entry['metric']:8} "
                         f"{alone['mean']:9.4f}  {seeds:30}")
        if "caviar_best_of_the_networks" in entry:
            ratio = entry["trial_ratio_caviar_vs_optuna_torch"]
            lines.append(f"{'':17} caviar/optuna trials = {ratio:.1f}x (>= 5: {ratio >= 5}); "
                         f"caviar best of the networks: "
                         f"{entry['caviar_best_of_the_networks']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds per method per dataset (default 60: about 13 min a seed)")
    parser.add_argument("--quick", action="store_true", help="a ~2 min smoke run (10 s budget)")
    parser.add_argument("--datasets", nargs="+", choices=list(ANY_TABLE), default=list(TABLES),
                        help="default: the ten benchmark tables; tables.CHECK_TABLES (ISLP's) "
                             "check choices made on them")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the split, the samplers and the networks; with several, "
                             "the summary averages the test scores over them")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="run only these")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch, BLAS and OpenMP threads for every method (default: all "
                             "cores, the machine each method would have to itself)")
    parser.add_argument("--peer-timeout", type=float, default=600.0,
                        help="stop a pytabkit fit after this many seconds (recorded as skipped)")
    parser.add_argument("--numeric", choices=(*NUMERIC_READS, "auto", "search"), default=None,
                        help="caviar's numeric scaling (tune's numeric=; default: the "
                             "default space's)")
    parser.add_argument("--refit", choices=("none", "train+valid", "bag"), default="none",
                        help="caviar's refit of the kept networks (tune's refit=)")
    parser.add_argument("--seed-ensemble", type=int, default=0, metavar="N",
                        help="caviar's new seeds of its best network (tune's seed_ensemble=)")
    parser.add_argument("--space", metavar="FILE",
                        help="caviar's search space: a TOML file as tune --space takes it, "
                             "or a JSON file of Space.to_dict()")
    parser.add_argument("--peers-every-seed", action="store_true",
                        help="run RealMLP-TD and TabM-D on every seed's split, not seed 0 only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    budget = 10.0 if args.quick else args.budget
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report = {"budget_s": budget, "seeds": args.seeds, "runs": {}}
    for seed in args.seeds:
        report["runs"][seed] = {name: bench_dataset(name, budget, seed, args.methods,
                                                    args.threads, args.peer_timeout,
                                                    args.numeric, args.refit,
                                                    args.seed_ensemble,
                                                    args.peers_every_seed, args.space)
                                for name in args.datasets}
    report["summary"] = summarize(report["runs"], args.methods)
    print(table(report["summary"]), file=sys.stderr)
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
