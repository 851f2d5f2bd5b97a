"""Population behaviour: isolation of diverging members, adding/removing/copying members,
exporting one member, saving state, dropout and learning-rate schedules."""

import math
import time

import pytest
import torch

from caviar.engine import Population
from caviar.engine.layers import dropout_mask
from caviar.engine.schedules import DECAY_CODES, learning_rate_at


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 7, generator=g)
    y = (X[:, 0] + X[:, 1] ** 2 > 1).long() + (X[:, 2] > 0.5).long()
    return X[:150], y[:150], X[150:], y[150:]


def members(**overrides):
    base = [{"learning_rate": 1e-2, "dropout": 0.2},
            {"learning_rate": 3e-3, "optimizer": "momentum", "l2": 1.0},
            {"learning_rate": 1e-3, "optimizer": "rmsprop", "dropout": 0.1},
            {"learning_rate": 2e-2, "optimizer": "sgd"}]
    return [{"hidden_layer_sizes": (16, 8), "batch_size": 32, "epochs": 4, **m, **overrides}
            for m in base]


def test_training_improves_validation_accuracy():
    from sklearn.datasets import load_wine

    wine = load_wine()
    X = torch.tensor(wine.data, dtype=torch.float32)
    y = torch.tensor(wine.target)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    X, y = X[order], y[order]
    X = (X - X[:120].mean(0)) / X[:120].std(0)  # statistics of the training rows only
    pop = Population("multiclass", 13, members(epochs=30), n_classes=3, seed=0)
    pop.fit(X[:120], y[:120], X[120:], y[120:])
    first = [h[0]["val_accuracy"] for h in pop.history]
    last = [h[-1]["val_accuracy"] for h in pop.history]
    assert max(last) > 0.9
    assert sum(last) > sum(first)
    assert all(len(h) == 30 for h in pop.history)


def test_diverging_member_is_frozen_and_others_are_untouched(data):
    X, y, Xv, yv = data
    normal = members(epochs=3)
    exploding = [dict(m) for m in normal]
    exploding[1].update(learning_rate=1e12, optimizer="sgd")
    a = Population("multiclass", 7, normal, n_classes=3, seed=5).fit(X, y, Xv, yv)
    b = Population("multiclass", 7, exploding, n_classes=3, seed=5).fit(X, y, Xv, yv)
    assert b.diverged.tolist() == [False, True, False, False]
    assert "diverged at epoch" in b.failure[1]
    for name in a.params:
        for i in (0, 2, 3):
            assert torch.equal(a.params[name][i], b.params[name][i]), name
    for i in (0, 2, 3):
        assert a.history[i] == b.history[i]
    assert torch.isfinite(b.predict(Xv)).all()  # the frozen member is reset, not NaN


def test_copy_member_copies_the_whole_state(data):
    X, y, Xv, yv = data
    hp = members(dropout=0.0)
    pop = Population("multiclass", 7, hp, n_classes=3, seed=1)
    pop.fit_epoch(X, y)
    pop.fit_epoch(X, y)
    pop.copy_member(0, 3)
    assert pop.hyperparameters[3] == pop.hyperparameters[0]
    pop.fit_epoch(X, y)  # same minibatches, same state: the two stay identical
    for name, p in pop.params.items():
        assert torch.equal(p[0], p[3]), name
    assert torch.equal(pop.predict(Xv)[0], pop.predict(Xv)[3])


def test_an_epoch_ends_part_way_at_its_deadline(data):
    """``until``: no minibatch starts after it (a time budget ends a large table's epoch part
    way); the epoch still counts. Without a deadline passed, every minibatch runs."""
    X, y, _, _ = data
    whole = Population("multiclass", 7, members(), n_classes=3, seed=1)
    whole.train_epoch(X, y, until=time.monotonic() + 3600.0)
    cut = Population("multiclass", 7, members(), n_classes=3, seed=1)
    cut.train_epoch(X, y, until=time.monotonic())  # already passed: its first minibatch
    assert whole.optimizer.t.tolist() == [5.0] * 4  # 150 rows in minibatches of 32
    assert cut.optimizer.t.tolist() == [1.0] * 4
    assert cut.epoch.tolist() == whole.epoch.tolist() == [1] * 4


def test_load_member_puts_a_kept_network_in_a_slot_with_fresh_optimizer_state(data):
    """What PBT after a coarse search does: a network exported at its best epoch goes into
    one slot (weights, batch-norm statistics, epoch, history to it) and predicts there as
    it did alone; the slot keeps its hyperparameters; the other slots are untouched."""
    X, y, Xv, yv = data
    hp = members(batch_norm=True)
    trained = Population("multiclass", 7, hp, n_classes=3, seed=3)
    for _ in range(3):
        trained.fit_epoch(X, y, Xv, yv)
        trained.remember_best(trained.evaluate(Xv, yv)["loss"])
    kept = trained.export_member(1, at_best=True)
    pop = Population("multiclass", 7, hp, n_classes=3, seed=4)
    pop.fit_epoch(X, y)
    before = {k: t.clone() for k, t in {**pop.params, **pop.buffers}.items()}
    pop.load_member(2, kept)
    torch.testing.assert_close(pop.predict(Xv)[2], kept.predict(Xv)[0], rtol=0, atol=0)
    for name, t in {**pop.params, **pop.buffers}.items():
        for i in (0, 1, 3):
            assert torch.equal(t[i], before[name][i]), name
    epoch = int(kept.epoch[0])
    assert int(pop.epoch[2]) == epoch and [r["epoch"] for r in pop.history[2]] == list(
        range(1, epoch + 1))
    assert pop.hyperparameters[2]["learning_rate"] == 1e-3  # its own, not the network's 3e-3
    assert all(float(v[2].abs().sum()) == 0 for v in pop.optimizer.v.values())
    assert float(pop.optimizer.t[2]) == 0
    with pytest.raises(ValueError, match="must share"):
        pop.load_member(0, Population("multiclass", 7, members(hidden_layer_sizes=(4,)),
                                      n_classes=3))


def test_remove_and_add_members_leave_the_others_unchanged(data):
    X, y, _, _ = data
    hp = members(dropout=0.0)
    a = Population("multiclass", 7, hp, n_classes=3, seed=2)
    b = Population("multiclass", 7, hp, n_classes=3, seed=2)
    a.fit_epoch(X, y)
    b.fit_epoch(X, y)
    b.remove_members([1])
    new = b.add_members([{"hidden_layer_sizes": (16, 8), "batch_size": 32, "epochs": 4}])
    assert new == [3] and b.size == 4 and b.member_ids == [0, 2, 3, 4]
    assert int(b.epoch[3]) == 0
    a.fit_epoch(X, y)
    b.fit_epoch(X, y)
    for name in a.params:
        torch.testing.assert_close(a.params[name][[0, 2, 3]], b.params[name][:3],
                                   rtol=1e-6, atol=1e-7)


def test_replace_members_refills_a_slot_in_place(data):
    X, y, Xv, yv = data
    hp = members()  # with dropout: the masks' random stream does not depend on the slot
    a = Population("multiclass", 7, hp, n_classes=3, seed=2)
    b = Population("multiclass", 7, hp, n_classes=3, seed=2)
    a.fit_epoch(X, y, Xv, yv)
    b.fit_epoch(X, y, Xv, yv)
    newcomer = {"hidden_layer_sizes": (16, 8), "batch_size": 32, "epochs": 4,
                "learning_rate": 5e-3, "optimizer": "adam"}
    b.replace_members([1], [newcomer])
    assert b.member_ids == [0, 4, 2, 3] and b.history[1] == [] and int(b.epoch[1]) == 0
    assert b.hyperparameters[1]["learning_rate"] == 5e-3
    assert all(float(t[1].abs().sum()) == 0 for t in (*b.optimizer.v.values(),
                                                       *b.optimizer.s.values()))
    fresh = Population("multiclass", 7, hp, n_classes=3, seed=2)
    fresh.add_members([newcomer])  # member id 4 starts from the same weights
    for name in b.params:
        assert torch.equal(b.params[name][1], fresh.params[name][4]), name
    a.fit_epoch(X, y, Xv, yv)
    b.fit_epoch(X, y, Xv, yv)
    for name in a.params:  # the other members go on exactly as before
        assert torch.equal(a.params[name][[0, 2, 3]], b.params[name][[0, 2, 3]]), name
    assert len(b.history[1]) == 1 and len(b.history[0]) == 2
    with pytest.raises(ValueError, match="separate populations"):
        b.replace_members([0], [{"hidden_layer_sizes": (4,)}])
    with pytest.raises(ValueError, match="distinct indices"):
        b.replace_members([9], [newcomer])


def test_remember_best_exports_the_network_of_the_best_epoch(data):
    X, y, Xv, yv = data
    hp = members(epochs=6)
    hp[0].update(learning_rate=0.3, optimizer="sgd")  # noisy: its best epoch is not the last
    hp = [dict(h, batch_norm=True) for h in hp]  # running statistics are part of the network
    pop = Population("multiclass", 7, hp, n_classes=3, seed=4)
    predictions = []
    while bool(pop.trainable.any()):
        records = pop.fit_epoch(X, y, Xv, yv)
        pop.remember_best(torch.tensor([r["val_loss"] for r in records]))
        predictions.append(pop.predict(Xv).clone())
    for i in range(pop.size):
        curve = [r["val_loss"] for r in pop.history[i]]
        best_epoch = min(range(len(curve)), key=curve.__getitem__) + 1
        assert int(pop.best_epoch[i]) == best_epoch
        assert float(pop.best_score[i]) == pytest.approx(curve[best_epoch - 1])
        kept = pop.export_member(i, at_best=True)
        assert int(kept.epoch[0]) == best_epoch and len(kept.history[0]) == len(curve)
        torch.testing.assert_close(kept.predict(Xv)[0], predictions[best_epoch - 1][i])
        assert kept.evaluate(Xv, yv)["loss"][0] == pytest.approx(curve[best_epoch - 1],
                                                                rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        pop.remember_best(torch.zeros(2))


def test_members_with_a_different_structure_are_refused():
    pop = Population("binary", 3, [{"hidden_layer_sizes": (4,)}])
    with pytest.raises(ValueError, match="separate populations"):
        pop.add_members([{"hidden_layer_sizes": (8,)}])
    with pytest.raises(ValueError, match="cannot change inside a population"):
        pop.set_hyperparameters(0, batch_size=7)


def test_set_hyperparameters_changes_one_member(data):
    X, y, _, _ = data
    pop = Population("multiclass", 7, members(), n_classes=3)
    pop.set_hyperparameters(2, learning_rate=0.5, dropout=0.4)
    assert pop.learning_rates()[2] == pytest.approx(0.5)
    assert pop.hyperparameters[2]["dropout"] == 0.4
    with pytest.raises(ValueError, match="learning_rate"):
        pop.set_hyperparameters(0, learning_rate=-1)


def test_changing_lr_decay_brings_the_new_schedules_default_rate():
    pop = Population("multiclass", 7, members(), n_classes=3)
    pop.epoch[:] = 2
    pop.set_hyperparameters(0, lr_decay="inverse_time")  # α₀/(1 + 1·epoch)
    assert pop.learning_rates()[0] == pytest.approx(1e-2 / 3)
    pop.set_hyperparameters(0, lr_decay="exponential")  # α₀·0.95^epoch, not rate 1.0 kept
    assert pop.learning_rates()[0] == pytest.approx(1e-2 * 0.95**2)
    pop.set_hyperparameters(0, decay_rate=0.5)
    assert pop.learning_rates()[0] == pytest.approx(1e-2 * 0.25)


def test_export_member_and_state_round_trip(data):
    X, y, Xv, yv = data
    pop = Population("multiclass", 7, members(), n_classes=3, seed=3)
    pop.fit_epoch(X, y, Xv, yv)
    single = pop.export_member(2)
    assert single.size == 1
    torch.testing.assert_close(single.predict(Xv)[0], pop.predict(Xv)[2])
    restored = Population.from_state(pop.state_meta(), pop.state_tensors())
    pop.fit_epoch(X, y, Xv, yv)
    restored.fit_epoch(X, y, Xv, yv)  # continues exactly: weights, moments, RNG, epochs
    for name in pop.params:
        assert torch.equal(pop.params[name], restored.params[name])
    assert pop.history == restored.history


def test_evaluation_is_deterministic_and_dropout_preserves_expectation():
    pop = Population("regression", 4, [{"dropout": 0.5, "hidden_layer_sizes": (8,)}])
    X = torch.randn(20, 4)
    assert torch.equal(pop.predict(X), pop.predict(X))  # no dropout at test time
    keep = torch.tensor([1.0, 0.8, 0.5, 0.3])
    mask = dropout_mask((4, 400, 100), keep, torch.Generator().manual_seed(0), torch.float32)
    kept = (mask > 0).float().mean(dim=(1, 2))
    rounded = (keep * 256).round() / 256  # one random byte per unit: multiples of 1/256
    torch.testing.assert_close(kept, rounded, atol=0.01, rtol=0)
    # a kept unit is scaled by 1/keep_prob of the rounded keep_prob, so the mean stays 1
    scales = torch.stack([m[m > 0].unique() for m in mask]).squeeze(1)
    torch.testing.assert_close(scales, 1 / rounded, atol=0, rtol=1e-6)
    torch.testing.assert_close(mask.mean(dim=(1, 2)), torch.ones(4), atol=0.02, rtol=0)
    assert torch.equal(mask[0], torch.ones(400, 100))


def test_learning_rate_schedules_match_torch_schedulers():
    lr0, epochs = 0.1, 12
    kinds = ["none", "inverse_time", "exponential", "step", "cosine"]
    rates = [0.0, 0.5, 0.9, 0.5, 0.0]
    references = {
        "none": lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0),
        "inverse_time": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + 0.5 * e)),
        "exponential": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
        "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5),
        "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs),
    }
    for kind, rate in zip(kinds, rates):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr0)
        scheduler = references[kind](opt)
        for epoch in range(epochs):
            ours = learning_rate_at(
                torch.tensor([epoch]), torch.tensor([lr0], dtype=torch.float64),
                torch.tensor([DECAY_CODES[kind]]), torch.tensor([rate], dtype=torch.float64),
                torch.tensor([4.0], dtype=torch.float64),
                torch.tensor([float(epochs)], dtype=torch.float64))
            assert float(ours[0]) == pytest.approx(scheduler.get_last_lr()[0], rel=1e-9), (
                kind, epoch)
            opt.step()
            scheduler.step()


def test_softmax_regression_without_hidden_layers(data):
    X, y, Xv, yv = data
    pop = Population("multiclass", 7, [{"hidden_layer_sizes": (), "epochs": 20,
                                         "learning_rate": 0.05}], n_classes=3).fit(X, y, Xv, yv)
    assert pop.history[0][-1]["train_loss"] < pop.history[0][0]["train_loss"]
    assert math.isfinite(pop.history[0][-1]["val_loss"])
