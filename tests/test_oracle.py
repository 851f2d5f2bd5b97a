"""A population of P members trains exactly like P separate torch.nn models driven by
torch.optim with the same hyperparameters, initial weights and minibatch order.

Conventions that differ, converted explicitly here:
- momentum: caviar v ← βv + (1 − β)dW, W ← W − αv; torch SGD v ← βv + dW, W ← W − lr·v.
  The velocities differ by the factor (1 − β), so lr = α(1 − β).
- L2: caviar J += (λ/2m)‖W‖² on dense weights, so dW += (λ/m)W: torch weight_decay = λ/m on
  the weights' parameter group only.
- L1: caviar J += (λ/2m)Σ|w| on dense weights; torch has no such option, so the reference adds
  that term to its loss and lets autograd differentiate it.
- batch-norm averaging: caviar μ_run ← m·μ_run + (1 − m)·μ; torch momentum = 1 − m. torch
  averages the unbiased batch variance, caviar the seed's biased one (1/B), converted below.
- squared error: caviar's loss is ½(ŷ − y)² (so dz = ŷ − y); torch's MSELoss is (ŷ − y)².
"""

import pytest
import torch
from torch import nn

from caviar.engine import Population

N, D, BATCH, EPOCHS = 96, 6, 32, 3  # N divisible by BATCH: every batch has B rows


def torch_model(pop: Population, member: int) -> nn.Sequential:
    s = pop.structure
    activation = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
    modules: list[nn.Module] = []
    sizes = s.layer_sizes
    with torch.no_grad():
        for layer in range(s.n_layers):
            is_output = layer == s.n_layers - 1
            has_bias = is_output or not s.batch_norm
            linear = nn.Linear(sizes[layer], sizes[layer + 1], bias=has_bias)
            linear.weight.copy_(pop.params[f"W{layer}"][member].T)
            if has_bias:
                linear.bias.copy_(pop.params[f"b{layer}"][member, 0])
            modules.append(linear)
            if is_output:
                break
            if s.batch_norm:
                m = pop.hyperparameters[member]["bn_momentum"]
                bn = nn.BatchNorm1d(sizes[layer + 1], momentum=1 - m, eps=1e-5)
                bn.weight.copy_(pop.params[f"gamma{layer}"][member, 0])
                bn.bias.copy_(pop.params[f"beta{layer}"][member, 0])
                modules.append(bn)
            modules.append(activation[s.activation]())
    return nn.Sequential(*modules)


def torch_optimizer(model: nn.Sequential, h: dict, n_train: int) -> torch.optim.Optimizer:
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    others = [p for p in model.parameters() if all(p is not w for w in weights)]
    lr, l2 = h["learning_rate"], h["l2"] / n_train
    if h["optimizer"] == "sgd":
        groups = [{"params": weights, "weight_decay": l2}, {"params": others}]
        return torch.optim.SGD(groups, lr=lr)
    if h["optimizer"] == "momentum":
        groups = [{"params": weights, "weight_decay": l2}, {"params": others}]
        return torch.optim.SGD(groups, lr=lr * (1 - h["momentum"]), momentum=h["momentum"])
    if h["optimizer"] == "rmsprop":
        groups = [{"params": weights, "weight_decay": l2}, {"params": others}]
        return torch.optim.RMSprop(groups, lr=lr, alpha=h["beta2"], eps=h["epsilon"])
    betas = (h["beta1"], h["beta2"])
    if h["optimizer"] == "adam":
        groups = [{"params": weights, "weight_decay": l2}, {"params": others}]
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=h["epsilon"])
    groups = [{"params": weights, "weight_decay": h["weight_decay"]},
              {"params": others, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=h["epsilon"])


MEMBERS = [
    {"optimizer": "sgd", "learning_rate": 0.1, "l2": 3.0},
    {"optimizer": "momentum", "learning_rate": 0.2, "momentum": 0.8},
    {"optimizer": "rmsprop", "learning_rate": 3e-3, "beta2": 0.95},
    {"optimizer": "adam", "learning_rate": 1e-2, "l2": 1.0, "bn_momentum": 0.8},
    {"optimizer": "adamw", "learning_rate": 1e-2, "weight_decay": 0.1, "beta1": 0.85},
    {"optimizer": "sgd", "learning_rate": 0.1, "l1": 5.0},
]


def l1_penalty(model: nn.Sequential, h: dict, n_train: int) -> torch.Tensor:
    """(λ/2m)·Σ|w| over the dense weights (not biases, γ, β), m the number of training rows."""
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    return h["l1"] / (2 * n_train) * sum(w.abs().sum() for w in weights)


@pytest.mark.parametrize("task,activation,batch_norm", [
    ("multiclass", "relu", True),
    ("binary", "tanh", False),
    ("regression", "gelu", True),
])
def test_population_trains_like_separate_torch_models(task, activation, batch_norm):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(N, D, generator=g)
    y = {"multiclass": torch.randint(0, 4, (N,), generator=g),
         "binary": torch.randint(0, 2, (N,), generator=g).float(),
         "regression": torch.randn(N, generator=g)}[task]
    members = [{**m, "hidden_layer_sizes": (8, 5), "activation": activation,
                "batch_norm": batch_norm, "batch_size": BATCH, "epochs": EPOCHS}
               for m in MEMBERS]
    pop = Population(task, D, members, n_classes=4, seed=11)
    models = [torch_model(pop, i) for i in range(pop.size)]
    optimizers = [torch_optimizer(m, pop.hyperparameters[i], N) for i, m in enumerate(models)]
    loss_fn = {"multiclass": nn.CrossEntropyLoss(),
               "binary": lambda z, t: nn.functional.binary_cross_entropy_with_logits(
                   z.squeeze(1), t),
               "regression": lambda z, t: 0.5 * nn.functional.mse_loss(z.squeeze(1), t)}[task]

    order_generator = torch.Generator().manual_seed(11)  # the population's minibatch order
    for _ in range(EPOCHS):
        metrics = pop.train_epoch(X, y)
        order = torch.randperm(N, generator=order_generator)
        torch_losses = torch.zeros(pop.size)
        for i, (model, opt) in enumerate(zip(models, optimizers)):
            model.train()
            for start in range(0, N, BATCH):
                index = order[start:start + BATCH]
                loss = loss_fn(model(X[index]), y[index])
                opt.zero_grad()
                (loss + l1_penalty(model, pop.hyperparameters[i], N)).backward()
                opt.step()
                torch_losses[i] += loss.item() * len(index) / N
        torch.testing.assert_close(metrics["loss"], torch_losses, rtol=2e-4, atol=1e-5)

    for i, model in enumerate(models):
        linears = [m for m in model if isinstance(m, nn.Linear)]
        for layer, linear in enumerate(linears):
            torch.testing.assert_close(pop.params[f"W{layer}"][i], linear.weight.detach().T,
                                       rtol=1e-3, atol=1e-5)
        if not batch_norm:
            continue
        m = pop.hyperparameters[i]["bn_momentum"]
        updates = EPOCHS * N // BATCH
        for layer, bn in enumerate(m_ for m_ in model if isinstance(m_, nn.BatchNorm1d)):
            torch.testing.assert_close(pop.buffers[f"running_mean{layer}"][i, 0],
                                       bn.running_mean, rtol=1e-4, atol=1e-5)
            # unbiased (torch) → biased (seed) running variance; both start at 1
            start = m ** updates
            expected = (bn.running_var - start) * (BATCH - 1) / BATCH + start
            torch.testing.assert_close(pop.buffers[f"running_var{layer}"][i, 0], expected,
                                       rtol=1e-4, atol=1e-5)
            bn.running_var.copy_(pop.buffers[f"running_var{layer}"][i, 0])
        # evaluation mode uses the running statistics, in both
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(pop.decision_function(X)[i], model(X), rtol=1e-3,
                                       atol=1e-4)
