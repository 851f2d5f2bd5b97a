"""The ten-table comparison across several ``search.py`` outputs: the runs of each file (one
seed, or some methods of it) merged by seed and table, each method's test score averaged over
the seeds it ran, and each score's ratio to the best in its row.

What it prints (to stdout, Markdown): per table the mean test score of each method (in
brackets its ratio to the row's best and how many seeds it ran); then per method the mean
ratio over the tables it ran, on how many tables it is within 3% of the row's best, and for
caviar on how many tables it has the best score of the neural methods.

A later file's score replaces an earlier one's for the same table, method and seed, so the
newest caviar runs go last. ``standing.txt`` lists, in that order, the files behind the
standing table (the issue's benchmark: every method's runs, the peers' on every seed where
they were run); add a new run there when it replaces the standing one.

Run (from bench/):  python summary.py @standing.txt
       or name the files:  python summary.py results-search-10tables-seed0.json ...
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

from search import METHODS, main_key

NEURAL = ("caviar", "caviar_pbt", "optuna_torch", "sklearn_mlp", "realmlp_td", "tabm_d")
LABELS = {"caviar": "caviar", "caviar_pbt": "caviar PBT", "optuna_torch": "Optuna TPE + torch",
          "sklearn_mlp": "sklearn MLP random", "hist_gradient_boosting": "HGB defaults",
          "realmlp_td": "RealMLP-TD defaults", "tabm_d": "TabM-D defaults"}
WITHIN = 1.03  # "within 3% of the best in the row"


def merge(files: list[str]) -> dict[str, dict[str, list[float]]]:
    """table -> method -> test scores (one per seed it ran), from every file's runs."""
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for file in files:
        with open(file) as f:
            report = json.load(f)
        for seed, tables in report["runs"].items():
            for table, entry in tables.items():
                key = main_key(entry["task"])
                for method in METHODS:
                    value = entry.get(method, {}).get("test", {}).get(key)
                    if value is not None and math.isfinite(value):
                        scores.setdefault(table, {"metric": key}).setdefault(method, {})[
                            str(seed)] = value
    return {table: {m: (list(by_seed.values()) if m != "metric" else by_seed)
                    for m, by_seed in methods.items()} for table, methods in scores.items()}


def summarize(scores: dict) -> tuple[list[str], dict[str, list[float]], dict[str, int]]:
    """The Markdown rows, each method's ratios per table, and caviar's neural wins."""
    methods = [m for m in METHODS if any(m in by for by in scores.values())]
    lines = ["| table | metric | " + " | ".join(LABELS[m] for m in methods) + " |",
             "| --- | --- |" + " --- |" * len(methods)]
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    wins = {"caviar": 0, "tables": 0}
    for table, by_method in scores.items():
        higher_is_better = by_method["metric"] in ("accuracy", "roc_auc", "r2")
        means = {m: statistics.fmean(v) for m, v in by_method.items() if m != "metric"}
        best = (max if higher_is_better else min)(means.values())
        cells = []
        for m in methods:
            if m not in means:
                cells.append("")
                continue
            ratio = best / means[m] if higher_is_better else means[m] / best
            ratios[m].append(ratio)
            seeds = len(by_method[m])
            cells.append(f"{means[m]:.4g} ({ratio:.3f}; {seeds} seed{'s' * (seeds > 1)})")
        lines.append(f"| {table} | {by_method['metric']} | " + " | ".join(cells) + " |")
        neural = {m: v for m, v in means.items() if m in NEURAL}
        if "caviar" in neural:
            wins["tables"] += 1
            top = (max if higher_is_better else min)(neural.values())
            wins["caviar"] += neural["caviar"] == top
    return lines, ratios, wins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     fromfile_prefix_chars="@")
    parser.add_argument("files", nargs="+",
                        help="search.py JSON outputs, or @FILE: their names, one per line")
    args = parser.parse_args()
    lines, ratios, wins = summarize(merge(args.files))
    print("\n".join(lines) + "\n")
    for m, values in ratios.items():
        if values:
            close = sum(r <= WITHIN for r in values)
            print(f"- {LABELS[m]}: mean score / best {statistics.fmean(values):.3f} over "
                  f"{len(values)} tables; within 3% of the best on {close}")
    print(f"- caviar has the best score of the neural methods on {wins['caviar']} of "
          f"{wins['tables']} tables")


if __name__ == "__main__":
    main()
