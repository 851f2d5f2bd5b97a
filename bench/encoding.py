"""Which input encoding makes a fixed caviar network best: categoricals one-hot up to which
level count, and numeric columns standardized, robust-scaled with smooth clipping, or
quantile-transformed to a normal.

For each table and seed: the rows are split 60/20/20 (``split_frame``, as ``tune`` does), a
``TablePreprocessor`` of each variant is fitted on the training rows, and the same network is
trained on each: ``NETWORK`` below, ``--members`` initializations at once (one caviar
population), each kept at its best validation epoch (early stopping's restore-best), scored on
the test rows and averaged. Variants that give a table the same columns and transform are
trained once. Reference: ``HistGradientBoosting`` defaults on today's encoding (``le10``,
standard), fitted on the training rows.

Variants are the product of ``--onehot`` and ``--numeric`` (or the ``--variants`` listed):

- ``le10``: one-hot up to 10 levels, target encoding beyond (the rule before this study);
  ``rowsK``: one-hot while levels have K training rows each on average
  (``max(10, train rows // K)`` levels); ``all``: one-hot whatever the level count;
  ``default``: ``TablePreprocessor``'s own rule (``max_onehot=None``); ``embedding``: the
  same rule, but the network embeds every categorical of more than two levels
  (``encoding="embedding"``: a learned table per column, k = min(16, round(1.6·levels^0.56)));
- ``standard`` | ``robust`` | ``quantile``: ``TablePreprocessor(numeric=...)``; ``both``: every
  numeric column robust-scaled and quantile-transformed, the network reading both.

``--numeric-embedding none plr`` trains each variant also with periodic embeddings of the
numeric columns (``numeric_embedding="plr"``, one variant ``ONEHOT/NUMERIC+plrσ`` per
``--plr-sigma`` value, k = ``--plr-frequencies``, m = ``--plr-dim``); ``--max-rows N`` keeps
a random N rows of a larger table (seeded by the seed) before splitting.

Scores: RMSE in the target's units (regression) or log-loss (classification), plus accuracy;
the summary gives each variant's mean over seeds, and its ratio to ``le10/standard`` (the old
default; ``--baseline`` names another), with the geometric mean of the ratios over the tables.

Run:  PYTHONPATH=src .venv/bin/python bench/encoding.py --tables wage txhousing --seeds 0 1
      [--onehot le10 rows5 all] [--numeric standard robust quantile] [--members 3]
      [--numeric-embedding none plr] [--plr-sigma 0.1 1] [--max-rows 12000]
      --merge A.json B.json   (one report of runs split over processes: their tables joined)
Prints one JSON object to stdout and a table to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from tables import ANY_TABLE, load_table

from caviar.data import TablePreprocessor, as_tensors, split_frame
from caviar.engine import Population
from caviar.engine.network import inputs_from
from caviar.metrics import validation_metric

# A reasonable network for any table, the same for every variant: two ReLU layers of 256 with
# batch norm and some dropout, AdamW, cosine decay; early stopping keeps the best epoch.
NETWORK = {"hidden_layer_sizes": (256, 256), "activation": "relu", "batch_norm": True,
           "dropout": 0.15, "optimizer": "adamw", "learning_rate": 1e-3,
           "weight_decay": 1e-2, "lr_decay": "cosine", "batch_size": 256, "epochs": 60}
BASELINE = "le10/standard"
# numeric variant "both": every numeric column twice, robust-scaled and quantile-transformed
# (the preprocessor's alternative block), the network reading both
BOTH = "both"


def onehot_limit(rule: str, n_train: int) -> int | None:
    if rule in ("default", "embedding"):  # the library's rule (max_onehot=None)
        return None
    if rule == "all":
        return 10**9
    if rule.startswith("le"):
        return int(rule[2:])
    if rule.startswith("rows"):
        return max(10, n_train // int(rule[4:]))
    raise ValueError(f"unknown one-hot rule {rule!r}")


def scores(task: str, pre: TablePreprocessor, y: np.ndarray, out: np.ndarray) -> dict:
    """``y``: encoded test targets; ``out``: class probabilities or standardized values."""
    if task == "regression":
        truth, pred = pre.decode_target(y), pre.predicted_values(out)
        return {"rmse": float(np.sqrt(metrics.mean_squared_error(truth, pred)))}
    out = np.clip(out, 1e-15, 1)
    out = out / out.sum(axis=1, keepdims=True)
    return {"log_loss": float(metrics.log_loss(y, out, labels=list(range(out.shape[1])))),
            "accuracy": float((out.argmax(axis=1) == y).mean())}


def train_and_score(task: str, pre: TablePreprocessor, X: dict, y: dict, members: int,
                    seed: int, embed: bool = False, extra: dict | None = None,
                    every_column: bool = False) -> dict:
    """``members`` networks of ``NETWORK`` (different initializations), each at its best
    validation epoch; their test scores averaged. ``embed``: the network embeds the
    categoricals that have codes (``pre`` made them); ``extra``: more hyperparameters (the
    numeric embedding); ``every_column``: the network reads every column of X as it is (the
    numeric columns scaled both ways, ``BOTH``)."""
    n_classes = len(pre.classes_) if task != "regression" else None
    Xt, yt = as_tensors(X["train"], y["train"], task)
    Xv, yv = as_tensors(X["val"], y["val"], task)
    Xs, _ = as_tensors(X["test"], None, task)
    network = {**NETWORK, "encoding": "embedding"} if embed else dict(NETWORK)
    network.update(extra or {})
    inputs = X["train"].shape[1] if every_column else inputs_from(pre)
    pop = Population(task, inputs, [network] * members, n_classes=n_classes,
                     seed=seed)
    key = validation_metric(task)
    while bool(pop.trainable.any()):
        records = pop.fit_epoch(Xt, yt, Xv, yv)
        pop.remember_best(torch.tensor([r[key] if r else math.inf for r in records]))
    each = []
    with torch.no_grad():
        for i in range(members):
            out = pop.export_member(i, at_best=True).predict(Xs)[0].numpy().astype(np.float64)
            each.append(scores(task, pre, y["test"], out))
    result = {k: float(np.mean([s[k] for s in each])) for k in each[0]}
    result["best_epochs"] = [int(e) for e in pop.best_epoch.tolist()]
    return result


def hgb(task: str, pre: TablePreprocessor, X: dict, y: dict) -> dict:
    if task == "regression":
        model = HistGradientBoostingRegressor(random_state=0).fit(X["train"], y["train"])
        return scores(task, pre, y["test"], model.predict(X["test"]))
    model = HistGradientBoostingClassifier(random_state=0).fit(X["train"], y["train"])
    return scores(task, pre, y["test"], model.predict_proba(X["test"]))


def plr_variants(modes: list[str], sigmas: list[float], k: int, m: int) -> dict[str, dict]:
    """Variant suffix -> the numeric embedding's hyperparameters ("" for none)."""
    out: dict[str, dict] = {"": {}} if "none" in modes else {}
    if "plr" in modes:
        for sigma in sigmas:
            out[f"+plr{sigma:g}"] = {"numeric_embedding": "plr", "plr_sigma": sigma,
                                     "plr_frequencies": k, "plr_dim": m}
    return out


def bench_table(name: str, seed: int, variants: list[tuple[str, str]], members: int,
                baseline: str = BASELINE, embeddings: dict[str, dict] | None = None,
                max_rows: int | None = None) -> dict:
    spec = ANY_TABLE[name]
    df = load_table(name)
    if max_rows is not None and len(df) > max_rows:
        df = df.sample(max_rows, random_state=seed).reset_index(drop=True)
    parts = dict(zip(("train", "val", "test"),
                     split_frame(df, spec.target, spec.task, 0.2, 0.2, seed=seed), strict=True))
    result: dict = {"task": spec.task, "rows": {k: len(v) for k, v in parts.items()}}
    done: dict = {}  # (roles, numeric) -> the variant already trained with them
    embeddings = embeddings or {"": {}}
    base_pair, _, base_suffix = baseline.partition("+")
    base_suffix = f"+{base_suffix}" if base_suffix else ""
    runs = [(*base_pair.split("/"), base_suffix),
            *((o, n, suffix) for o, n in variants for suffix in embeddings)]
    for onehot, numeric, suffix in runs:
        variant = f"{onehot}/{numeric}{suffix}"
        if variant in result:
            continue
        pre = TablePreprocessor(spec.target, task=spec.task, categorical=spec.categorical,
                                drop=spec.drop, random_state=seed,
                                numeric="robust" if numeric == BOTH else numeric,
                                numeric_alternatives=("quantile",) if numeric == BOTH else (),
                                max_onehot=onehot_limit(onehot, len(parts["train"])),
                                codes=onehot == "embedding")
        X = {"train": pre.fit_transform(parts["train"])}
        X.update({k: pre.transform(parts[k]) for k in ("val", "test")})
        y = {k: pre.encode_target(v[spec.target]) for k, v in parts.items()}
        same = (tuple(pre.roles_.onehot), tuple(pre.roles_.target_encoded), numeric,
                onehot == "embedding" and bool(pre.input_layout()), suffix)
        if variant == baseline:
            start = time.perf_counter()
            result["hgb"] = {**hgb(spec.task, pre, X, y),
                             "seconds": round(time.perf_counter() - start, 1)}
        if same in done:
            result[variant] = {**result[done[same]], "same_as": done[same]}
        else:
            start = time.perf_counter()
            result[variant] = {**train_and_score(spec.task, pre, X, y, members, seed,
                                                 embed=same[-2],
                                                 extra=embeddings.get(suffix, {}),
                                                 every_column=numeric == BOTH),
                               "features": X["train"].shape[1],
                               "onehot": pre.roles_.onehot,
                               "target_encoded": pre.roles_.target_encoded,
                               "embedded": [c["name"] for c in pre.input_layout()],
                               "plr_columns": ([pre.feature_names_out_[j]
                                                for j in pre.numeric_columns()]
                                               if suffix else []),
                               "seconds": round(time.perf_counter() - start, 1)}
            done[same] = variant
        r = result[variant]
        print(f"  [{name} seed {seed}] {variant:16} {main_key(spec.task)} "
              f"{r[main_key(spec.task)]:.5g} ({r.get('features')} features, "
              f"{r.get('seconds')} s{', = ' + r['same_as'] if 'same_as' in r else ''})",
              file=sys.stderr, flush=True)
    return result


def main_key(task: str) -> str:
    return "rmse" if task == "regression" else "log_loss"


def summarize(runs: dict, variants: list[str], baseline: str = BASELINE) -> dict:
    """Per table: each variant's mean score over seeds, and its ratio to the old default."""
    summary: dict = {}
    tables = next(iter(runs.values()))
    for name in tables:
        per_seed = [runs[seed][name] for seed in runs]
        key = main_key(per_seed[0]["task"])
        entry: dict = {"metric": key}
        for v in ["hgb", *variants]:
            values = [r[v][key] for r in per_seed]
            entry[v] = {"mean": float(np.mean(values)), "per_seed": values}
        base = entry[baseline]["mean"]
        for v in ["hgb", *variants]:
            entry[v]["ratio"] = entry[v]["mean"] / base
        summary[name] = entry
    summary["geometric_mean_ratio"] = {
        v: float(np.exp(np.mean([np.log(summary[t][v]["ratio"]) for t in tables])))
        for v in ["hgb", *variants]}
    return summary


def table(summary: dict, variants: list[str]) -> str:
    names = [t for t in summary if t != "geometric_mean_ratio"]
    columns = ["hgb", *variants]
    width = max(12, *(len(v) for v in columns))
    lines = [f"{'table':18} {'metric':8} " + " ".join(f"{v:>{width}}" for v in columns)]
    for name in names:
        e = summary[name]
        lines.append(f"{name:18} {e['metric']:8} "
                     + " ".join(f"{e[v]['mean']:>{width}.5g}" for v in columns))
        lines.append(f"{'':18} {'ratio':8} "
                     + " ".join(f"{e[v]['ratio']:>{width}.3f}" for v in columns))
    g = summary["geometric_mean_ratio"]
    lines.append(f"{'geometric mean':18} {'ratio':8} "
                 + " ".join(f"{g[v]:>{width}.3f}" for v in columns))
    return "\n".join(lines)


def merge(files: list[str], baseline: str = BASELINE) -> dict:
    """One report from reports of the same variants on other tables (or seeds)."""
    reports = [json.loads(Path(f).read_text()) for f in files]
    merged = {k: v for k, v in reports[0].items() if k not in ("runs", "summary")}
    merged["runs"] = {}
    for report in reports:
        for seed, tables in report["runs"].items():
            merged["runs"].setdefault(seed, {}).update(tables)
    variants = list(reports[0]["summary"]["geometric_mean_ratio"])[1:]  # less "hgb"
    merged["summary"] = summarize(merged["runs"], variants, baseline)
    print(table(merged["summary"], variants), file=sys.stderr)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", choices=list(ANY_TABLE),
                        default=["wage", "txhousing", "hpc_data", "snmesp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--onehot", nargs="+", default=["le10", "rows20", "rows5", "all"])
    parser.add_argument("--numeric", nargs="+", default=["standard", "robust", "quantile"],
                        choices=["standard", "robust", "quantile"])
    parser.add_argument("--variants", nargs="+", metavar="ONEHOT/NUMERIC",
                        help="these variants instead of the product of --onehot and --numeric, "
                             "e.g. le10/standard default/robust")
    parser.add_argument("--members", type=int, default=3,
                        help="networks (initializations) per variant, averaged")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", default=BASELINE, metavar="ONEHOT/NUMERIC",
                        help="the variant the ratios divide by (and HGB's encoding)")
    parser.add_argument("--numeric-embedding", nargs="+", default=["none"],
                        choices=["none", "plr"], help="train each variant with these")
    parser.add_argument("--plr-sigma", type=float, nargs="+", default=[0.1],
                        help="σ of PLR's initial frequencies: one variant per value")
    parser.add_argument("--plr-frequencies", type=int, default=16, help="k of PLR")
    parser.add_argument("--plr-dim", type=int, default=16, help="m of PLR")
    parser.add_argument("--max-rows", type=int, help="keep this many rows of larger tables")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="join these reports' runs (same variants, other tables) into one")
    args = parser.parse_args()
    if args.merge:
        print(json.dumps(merge(args.merge, args.baseline), indent=1, default=str))
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # dropped rows, ignored columns
    pairs = ([tuple(v.split("/")) for v in args.variants] if args.variants
             else [(o, n) for o in args.onehot for n in args.numeric])
    embeddings = plr_variants(args.numeric_embedding, args.plr_sigma, args.plr_frequencies,
                              args.plr_dim)
    variants = [args.baseline] + [f"{o}/{n}{suffix}" for o, n in pairs for suffix in embeddings
                                  if f"{o}/{n}{suffix}" != args.baseline]
    report: dict = {"network": NETWORK, "members": args.members, "max_rows": args.max_rows,
                    "numeric_embeddings": embeddings, "runs": {}}
    for seed in args.seeds:
        report["runs"][seed] = {name: bench_table(name, seed, pairs, args.members,
                                                  args.baseline, embeddings, args.max_rows)
                                for name in args.tables}
    report["summary"] = summarize(report["runs"], variants, args.baseline)
    print(table(report["summary"], variants), file=sys.stderr)
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
