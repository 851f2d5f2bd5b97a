"""(No timing) Two arms of an ``any_tables.py`` A/B, target by target: the geometric mean of
new / old test score, the median ratio, the targets better and worse by over 5%, those
identical, and the standard error of the geometric mean, over all targets both arms scored
and by metric (log-losses under 0.01 in either arm left out, as every rule has).

Read a rule's figures against the noise its change can have (bench/README.md, "The same code
twice on random draws, and along another path"): about 0.009 for the clock alone at 15 s, and
0.03 with a 5-8× target or two besides for a search sent down another path.

    .venv/bin/python bench/ab_compare.py OLD.jsonl NEW.jsonl [OLD2.jsonl NEW2.jsonl ...]

With ``--old-key realmlp`` the OLD files are ``any_tables.py --realmlp`` outputs of the NEW
sweeps, and the ratios are caviar's scores over RealMLP-TD's on the same splits:

    .venv/bin/python bench/ab_compare.py --old-key realmlp PEER.jsonl SWEEP.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def scores(path: str, key: str = "caviar") -> dict[tuple[str, str], tuple[str, float]]:
    """(table, target) → (metric, test score under ``key``: caviar's, or a peer's) of one
    arm's JSON lines."""
    out = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if r.get(key) is not None and r[key] > 0:
            out[(r["table"], r["target"])] = (r["metric"], r[key])
    return out


def ratios(old: str, new: str, old_key: str = "caviar"
           ) -> list[tuple[float, str, tuple[str, str]]]:
    """new / old of every target both arms scored, with its metric (the old arm's scores
    under ``old_key``)."""
    a, b = scores(old, old_key), scores(new)
    out = []
    for key in a.keys() & b.keys():
        (metric, x), (_, y) = a[key], b[key]
        if metric == "log_loss" and min(x, y) < 0.01:
            continue  # a near-perfect log-loss: its ratio is noise
        out.append((y / x, metric, key))
    return out


def summary(values: list[float]) -> dict:
    logs = [math.log(v) for v in values]
    sd = statistics.pstdev(logs) if len(logs) > 1 else 0.0
    return {"targets": len(values), "geometric_mean": round(math.exp(statistics.fmean(logs)), 4),
            "median": round(statistics.median(values), 4),
            "better_5pct": sum(v < 0.95 for v in values),
            "worse_5pct": sum(v > 1.05 for v in values),
            "identical": sum(v == 1.0 for v in values),
            "standard_error": round(sd / math.sqrt(len(logs)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arms", nargs="+", help="OLD NEW pairs of any_tables.py outputs")
    parser.add_argument("--old-key", default="caviar",
                        help="the OLD files' score: caviar, or realmlp for --realmlp outputs")
    args = parser.parse_args()
    if len(args.arms) % 2:
        parser.error("give the arms in pairs: OLD NEW [OLD NEW ...]")
    pairs = list(zip(args.arms[::2], args.arms[1::2]))
    found = sorted(r for old, new in pairs for r in ratios(old, new, args.old_key))
    if not found:
        parser.error("no target scored in both arms")
    out = {"all": summary([r for r, _, _ in found])}
    for metric in sorted({m for _, m, _ in found}):
        out[metric] = summary([r for r, m, _ in found if m == metric])
    out["extremes"] = [[round(r, 3), *key] for r, _, key in found[:3] + found[-3:]]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
