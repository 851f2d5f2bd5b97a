"""Central finite differences of a population's cost, to check its hand-written gradients, and
the small mixed table (numeric, binary, categorical one-hot and codes) those checks run on."""

import torch
from torch import nn

from caviar.engine import Population
from caviar.engine.network import Categorical, InputLayout

# X of make_data: three numeric columns (0-2: embeddable), a binary one (3), a 4-level
# categorical one-hot (4-7), its codes (8)
LAYOUT = InputLayout(9, (Categorical("c", 8, 4, (4, 5, 6, 7)),), numeric=(0, 1, 2))


def assert_gradients_match_finite_differences(pop: Population, X: torch.Tensor,
                                              y: torch.Tensor, n_train: int,
                                              label: str = "") -> None:
    """``pop.gradients`` equals the central difference of ``pop.cost`` for every parameter
    entry (float64; the same dropout masks for every evaluation)."""
    rng_state = pop.generator.get_state()

    def cost() -> float:
        pop.generator.set_state(rng_state)
        return float(pop.cost(X, y, n_train).sum())

    pop.generator.set_state(rng_state)
    analytic = pop.gradients(X, y, n_train)
    eps = 1e-6
    for name, p in pop.params.items():
        numeric = torch.zeros_like(p)
        flat, flat_numeric = p.view(-1), numeric.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            up = cost()
            flat[i] = old - eps
            down = cost()
            flat[i] = old
            flat_numeric[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(analytic[name], numeric, rtol=1e-5, atol=1e-7,
                                   msg=f"gradient of {name} ({label})")


def random_targets(task: str, n: int, generator: torch.Generator,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` targets of ``task`` drawn from ``generator``: 3 class indices, 0/1 labels, or
    standard normal values."""
    if task == "multiclass":
        return torch.randint(0, 3, (n,), generator=generator)
    if task == "binary":
        return torch.randint(0, 2, (n,), generator=generator).to(dtype)
    return torch.randn(n, generator=generator, dtype=dtype)


def assert_members_apart(layout, member: dict, neighbour: dict, X: torch.Tensor,
                         y: torch.Tensor, names: tuple[str, ...]) -> None:
    """Members of a regression population are independent in ``names`` (parameters): moving
    member 1's parameters changes no other member's gradient, and ``member`` trains (two
    epochs, float64) to the same parameters, first layer included, alone or beside
    ``neighbour``."""
    assert_gradients_apart(Population("regression", layout, [member] * 3, seed=2,
                                      dtype=torch.float64), X, y, names)
    alone = Population("regression", layout, [member], seed=2, dtype=torch.float64)
    crowd = Population("regression", layout, [member, neighbour], seed=2, dtype=torch.float64)
    for p in (alone, crowd):
        for _ in range(2):
            p.train_epoch(X, y)
    for name in (*names, "W0"):
        torch.testing.assert_close(crowd.params[name][0], alone.params[name][0],
                                   rtol=1e-12, atol=1e-12)


def assert_gradients_apart(pop: Population, X: torch.Tensor, y: torch.Tensor,
                           names: tuple[str, ...] | None = None) -> None:
    """Moving member 1's parameters (of a population of 3) changes its gradients in
    ``names`` (None: all) and leaves members 0 and 2's bitwise as they were."""
    before = pop.gradients(X, y)
    with torch.no_grad():
        for p in pop.params.values():
            p[1] = p[1] * 3.0 + 1.0
    after = pop.gradients(X, y)
    for name in names or tuple(before):
        assert torch.equal(before[name][0], after[name][0])
        assert torch.equal(before[name][2], after[name][2])
        assert not torch.equal(before[name][1], after[name][1])


def make_data(task: str, n: int = 12, seed: int = 0, dtype=torch.float64):
    """``n`` rows laid out as ``LAYOUT`` says, and targets of ``task``."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, 5, (n,), generator=g)  # 0: a level unseen in training
    X = torch.cat([torch.randn(n, 3, generator=g, dtype=dtype),
                   torch.randint(0, 2, (n, 1), generator=g).to(dtype),
                   nn.functional.one_hot(c, 5)[:, 1:].to(dtype), c[:, None].to(dtype)], dim=1)
    return X, random_targets(task, n, g, dtype)
