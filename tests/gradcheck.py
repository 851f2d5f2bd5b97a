"""Central finite differences of a population's cost, to check its hand-written gradients."""

import torch

from caviar.engine import Population


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
