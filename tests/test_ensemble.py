"""The kept model: which networks the model averages (caviar.search.ensemble), and the
per-row losses it compares them by (caviar.engine.losses)."""

import pytest
import torch

from caviar.engine import Population
from caviar.engine.losses import member_losses, prediction_losses, predictions
from caviar.search.ensemble import KeptNetwork, averaged_score, select_ensemble


def _kept(trial: int, p_true: torch.Tensor, y: torch.Tensor) -> KeptNetwork:
    """A kept network that gives each row's true class the probability ``p_true`` (the rest
    shared by the two other classes)."""
    outputs = ((1 - p_true) / 2).unsqueeze(1).repeat(1, 3)
    outputs[torch.arange(len(y)), y] = p_true
    network = Population("multiclass", 2, [{"hidden_layer_sizes": [2]}], n_classes=3)
    return KeptNetwork(averaged_score(outputs, y, "multiclass"), trial, network, outputs)


def test_a_network_joins_unless_it_makes_the_average_clearly_worse():
    rows = 400
    y = torch.arange(rows) % 3
    noise = torch.Generator().manual_seed(0)
    best = _kept(1, torch.full((rows,), 0.9), y)
    # as good on average, its mistakes elsewhere: the average beats both
    helps = _kept(2, (0.9 + 0.08 * torch.randn(rows, generator=noise)).clamp(0.5, 0.99), y)
    # better than the best on most rows, confidently wrong on 8: averaged in, it raises the
    # validation loss a little, less than the noise of 400 rows, and joins (a lucky best
    # must not keep out networks as good on new rows)
    within_noise = _kept(3, torch.full((rows,), 0.92).index_fill(0, torch.arange(8), 0.01), y)
    # worse on every row: dilutes the others and stays out
    hurts = _kept(4, torch.full((rows,), 0.4), y)
    assert best.value < helps.value < within_noise.value < hurts.value
    kept = [hurts, within_noise, helps, best]
    chosen, score = select_ensemble(kept, y, "multiclass", size=5)
    assert [k.trial for k in chosen] == [1, 2, 3]
    mean = (best.val_outputs + helps.val_outputs + within_noise.val_outputs) / 3
    assert score == pytest.approx(-float(mean[torch.arange(rows), y].log().mean()))
    two = (best.val_outputs + helps.val_outputs) / 2
    assert score > averaged_score(two, y, "multiclass")  # within_noise raised it, and joined
    assert [k.trial for k in select_ensemble(kept, y, "multiclass", size=2)[0]] == [1, 2]
    assert [k.trial for k in select_ensemble(kept, y, "multiclass", size=1)[0]] == [1]


@pytest.mark.parametrize("task, n_classes", [("multiclass", 3), ("binary", 2),
                                             ("regression", 1)])
def test_the_loss_of_predictions_is_the_training_loss(task, n_classes):
    # what the ensemble compares (losses of predictions ŷ) is what the networks minimize
    # (losses of their outputs z): one definition, in engine/losses.py
    gen = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(1, 50, 1 if task != "multiclass" else n_classes, generator=gen)
    y = (torch.randint(0, n_classes, (50,), generator=gen) if task != "regression"
         else torch.randn(50, generator=gen))
    y_hat = predictions(z, task)[0]
    assert torch.allclose(prediction_losses(y_hat, y, task), member_losses(z, y, task)[0],
                          atol=1e-5)


def test_averaged_score_is_log_loss_or_rmse():
    y = torch.tensor([0, 1, 1])
    probabilities = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    expected = -(torch.tensor([0.8, 0.6, 0.9]).log().mean())
    assert averaged_score(probabilities, y, "binary") == pytest.approx(float(expected))
    values, targets = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 1.0, 1.0])
    assert averaged_score(values, targets, "regression") == pytest.approx((10 / 3) ** 0.5)
