"""The hand-written backward passes against central finite differences, in float64, and the
proof that training steps with exactly those gradients (so the check covers the code that
trains, penalties included)."""

import pytest
import torch
from gradcheck import (
    assert_gradients_apart,
    assert_gradients_match_finite_differences,
    random_targets,
)

from caviar.engine import Population

CONFIGS = [
    ("multiclass", {"activation": "relu", "batch_norm": True, "dropout": 0.3}),
    ("multiclass", {"activation": "gelu", "batch_norm": False, "l1": 0.5, "l2": 2.0}),
    ("binary", {"activation": "tanh", "batch_norm": True, "l2": 1.0}),
    ("binary", {"activation": "sigmoid", "batch_norm": False, "dropout": 0.5}),
    ("regression", {"activation": "leaky_relu", "batch_norm": True, "l1": 1.0}),
]


def make_data(task: str, n: int = 9, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, random_targets(task, n, g)


@pytest.mark.parametrize("task,config", CONFIGS)
def test_gradients_match_finite_differences(task, config):
    X, y = make_data(task)
    members = [{**config, "hidden_layer_sizes": (4, 3), "dropout": config.get("dropout", 0.0)
                * (i + 1) / 2} for i in range(2)]
    pop = Population(task, n_inputs=5, members=members, n_classes=3, seed=1,
                     dtype=torch.float64)
    with torch.no_grad():  # move γ, β and biases off their initial values
        for name, p in pop.params.items():
            if not name.startswith("W"):
                p.add_(0.1 * torch.randn(p.shape, dtype=p.dtype))
    n_train = 40  # the penalty's m differs from the batch size, as in training
    assert_gradients_match_finite_differences(pop, X, y, n_train, f"{task}, {config}")


def test_gradient_of_each_member_is_its_own():
    """A member's gradient does not change when another member's weights change."""
    X, y = make_data("multiclass")
    pop = Population("multiclass", 5, [{"hidden_layer_sizes": (4,)}] * 3, n_classes=3,
                     dtype=torch.float64)
    assert_gradients_apart(pop, X, y)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_a_training_step_uses_the_checked_gradients(batch_norm):
    """One SGD step of ``train_epoch`` over one full minibatch is W ← W − α·dW with dW what
    ``gradients`` returns for the same rows, dropout masks and m: the gradients the finite
    differences check are the ones training uses, L2 and L1 terms included."""
    X, y = make_data("multiclass")
    n, alpha = len(X), 0.1
    penalties = [{"l2": 2.0}, {"l1": 0.5, "dropout": 0.3}, {"l1": 1.0, "l2": 1.0, "dropout": 0.5}]
    members = [{"optimizer": "sgd", "learning_rate": alpha, "hidden_layer_sizes": (4, 3),
                "batch_norm": batch_norm, "batch_size": n, "epochs": 1, **p} for p in penalties]
    pop = Population("multiclass", 5, members, n_classes=3, seed=2, dtype=torch.float64)
    start = {k: t.clone() for k, t in {**pop.params, **pop.buffers}.items()}
    rng_state = pop.generator.get_state()
    pop.train_epoch(X, y)
    trained = {k: p.clone() for k, p in pop.params.items()}

    with torch.no_grad():  # back to the start, then the same minibatch by hand
        for k, t in {**pop.params, **pop.buffers}.items():
            t.copy_(start[k])
    pop.generator.set_state(rng_state)
    order = torch.randperm(n, generator=pop.generator)  # train_epoch's shuffle
    grads = pop.gradients(X[order], y[order], n_train=n)
    for name, p in pop.params.items():
        torch.testing.assert_close(trained[name], p - alpha * grads[name], rtol=1e-10,
                                   atol=1e-12, msg=name)
