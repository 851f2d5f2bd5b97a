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


def train_beside(pop, models: list, optimizers: list, X: torch.Tensor, y: torch.Tensor,
                 loss, epochs: int, seed: int, before_step=None) -> None:
    """``epochs`` epochs of the population and, beside it, of each plain torch ``models[i]``
    with ``optimizers[i]`` on the same minibatches: the population's shuffle replayed from
    its ``seed`` (one order of the rows an epoch), ``pop.structure.batch_size`` rows at a
    time. ``loss(model, X, y)``: a model's loss on a minibatch; ``before_step(i, model)``:
    what member i adds to its gradients by hand before the step (an L1 term)."""
    n, batch = len(X), pop.structure.batch_size
    order_generator = torch.Generator().manual_seed(seed)  # the population's minibatch order
    for _ in range(epochs):
        pop.train_epoch(X, y)
        order = torch.randperm(n, generator=order_generator)
        for i, (model, opt) in enumerate(zip(models, optimizers)):
            for start in range(0, n, batch):
                rows = order[start:start + batch]
                opt.zero_grad()
                loss(model, X[rows], y[rows]).backward()
                if before_step is not None:
                    before_step(i, model)
                opt.step()
