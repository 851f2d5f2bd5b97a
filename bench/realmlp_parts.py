"""Which of RealMLP-TD's own parts carry it on a table: pytabkit's RealMLP-TD at its defaults,
then with one part off (its front scaling layer, its numeric embeddings, or its NTK
parametrization and rate, replaced by the standard one at 2e-3), each fitted as
``search.py`` fits it (the same split, features and validation rows), one thread.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/realmlp_parts.py TABLES SEEDS VARIANTS
     e.g. Credit,Boston 0,1 defaults,no_front_scale
It prints one JSON line per table, seed and variant (test RMSE or log-loss, seconds).
"""
import json
import sys
import time
import warnings

import numpy as np
import pytabkit
import torch
from search import ANY_TABLE, TablePreprocessor, load_table, peer_frames, split_frame, test_scores

warnings.simplefilter("ignore")
torch.set_num_threads(1)
VARIANTS = {"defaults": {}, "no_front_scale": {"add_front_scale": False},
            "no_embedding": {"num_emb_type": "ignore"},
            "std_lr": {"weight_param": "standard", "lr": 2e-3}}


def fit(name: str, seed: int, variant: str) -> dict:
    """RealMLP-TD with ``VARIANTS[variant]`` on ``search.py``'s split ``seed`` of ``name``."""
    spec = ANY_TABLE[name]
    target, task = spec.target, spec.task
    train, val, test = split_frame(load_table(name), target, task, test_size=0.2,
                                   val_size=0.2, seed=seed)
    pre = TablePreprocessor(target=target, task=task, drop=spec.drop,
                            categorical=spec.categorical, random_state=seed)
    pre.fit_transform(train)
    parts = {"train": train, "val": val, "test": test}
    frames, categorical = peer_frames(pre, parts)
    y = {k: (v[target].to_numpy(dtype=np.float64) if task == "regression"
             else pre.encode_target(v[target])) for k, v in parts.items()}
    kind = "Regressor" if task == "regression" else "Classifier"
    model = getattr(pytabkit, f"RealMLP_TD_{kind}")(device="cpu", random_state=0, n_threads=1,
                                                    verbosity=0, **VARIANTS[variant])
    start = time.perf_counter()
    model.fit(frames["train"], y["train"], X_val=frames["val"], y_val=y["val"],
              cat_col_names=categorical or None)
    if task == "regression":  # to the standardized units test_scores decodes
        out = np.asarray(model.predict(frames["test"]), dtype=np.float64).reshape(-1)
        out = (out - pre.target_mean_) / pre.target_std_
    else:
        out = np.asarray(model.predict_proba(frames["test"]), dtype=np.float64)
    key = "rmse" if task == "regression" else "log_loss"
    return {"table": name, "seed": seed, "variant": variant,
            key: test_scores(task, pre.encode_target(test[target]), out, pre)[key],
            "s": round(time.perf_counter() - start, 1)}


if __name__ == "__main__":
    tables, seeds, variants = (a.split(",") for a in sys.argv[1:4])
    for name in tables:
        for seed in seeds:
            for variant in variants:
                print(json.dumps(fit(name, int(seed), variant)), flush=True)
