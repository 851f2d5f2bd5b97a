"""The torch.optim optimizer that does what a caviar member's optimizer does, for the oracle
tests that train a plain torch.nn reference beside the engine."""

import torch


def torch_optimizer(h: dict, n_train: int, weights: list, others: list) -> torch.optim.Optimizer:
    """``h``: the member's resolved hyperparameters; L2 (as weight decay of l2 / n_train) and
    AdamW's decoupled decay act on ``weights``, not on ``others`` (biases and the like)."""
    lr, l2 = h["learning_rate"], h["l2"] / n_train
    if h["optimizer"] == "adamw":
        return torch.optim.AdamW([{"params": weights}, {"params": others, "weight_decay": 0.0}],
                                 lr=lr, betas=(h["beta1"], h["beta2"]), eps=h["epsilon"],
                                 weight_decay=h["weight_decay"])
    groups = [{"params": weights, "weight_decay": l2}, {"params": others}]
    if h["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if h["optimizer"] == "momentum":  # caviar's v has the factor (1 − β): lr = α(1 − β)
        return torch.optim.SGD(groups, lr=lr * (1 - h["momentum"]), momentum=h["momentum"])
    if h["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=h["beta2"], eps=h["epsilon"])
    return torch.optim.Adam(groups, lr=lr, betas=(h["beta1"], h["beta2"]), eps=h["epsilon"])
