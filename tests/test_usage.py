"""What tabular users expect: a chosen metric, given and structured splits, row and class
weights, date features, progress from Python. Real tables, small budgets."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from commandline import assert_one_error_line, invoke
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import recall_score, roc_auc_score

from caviar import CaviarClassifier, CaviarModel, CaviarRegressor, load_model
from caviar.data import DataError, prepare
from caviar.datasets import load_dataset
from caviar.engine import Population, losses
from caviar.metrics import ValidationScorer, get_metric, metric_names
from caviar.search import default_space
from caviar.search.ensemble import KeptNetwork, select_ensemble
from caviar.search.tune import tune
from caviar.training import train_network

SPACE = {
    "learning_rate": {"kind": "log_uniform", "low": 3e-3, "high": 3e-2},
    "optimizer": {"value": "adam"},
    "width": {"kind": "choice", "values": [8, 16]},
    "depth": {"value": 1},
    "batch_size": {"value": 64},
    "epochs": {"kind": "int", "low": 2, "high": 4},
}
SMALL = dict(trials=6, population=3, sampler="random", space=SPACE, seed=0)


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.iloc[:, [0, 1, 2, 3, 20, 21, 22, 23, 30]].copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    return frame


# ------------------------------------------------------------------------------ metric


def test_metric_names_resolve_to_one_metric_with_a_direction():
    assert get_metric("roc_auc", "binary") is get_metric("auc", "binary")
    assert get_metric("neg_log_loss", "multiclass").name == "log_loss"
    assert get_metric("neg_root_mean_squared_error", "regression").name == "rmse"
    assert get_metric("neg_mean_absolute_error", "regression").direction == "minimize"
    assert get_metric("r2", "regression").direction == "maximize"
    assert get_metric(None, "binary").name == "log_loss"
    assert get_metric(None, "regression").name == "rmse"
    assert "auc" in metric_names("binary") and "auc" not in metric_names("regression")


@pytest.mark.parametrize("name, task, words", [
    ("roc_auc", "regression", "does not fit a regression target"),
    ("f1", "multiclass", "does not fit a multiclass target"),
    ("gini", "binary", "unknown metric 'gini'"),
])
def test_a_metric_that_does_not_fit_is_one_line_listing_the_valid_ones(name, task, words):
    with pytest.raises(ValueError, match=words) as info:
        get_metric(name, task)
    message = str(info.value)
    assert "\n" not in message
    assert all(n in message for n in metric_names(task))


def test_scorer_matches_sklearn_in_the_targets_units():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    proba = torch.tensor(np.stack([1 - p1, p1], axis=1))
    w = rng.uniform(0.5, 2, 200)
    auc = ValidationScorer(get_metric("auc", "binary"), y, "binary", weight=w)
    assert auc(proba) == pytest.approx(roc_auc_score(y, p1, sample_weight=w))
    # regression: standardized outputs in, the target's units out
    values = rng.normal(size=100)
    mae = ValidationScorer(get_metric("mae", "regression"), values, "regression",
                           target_std=10.0, target_mean=5.0)
    assert mae(torch.tensor(values + 0.5)) == pytest.approx(5.0)


def test_tune_with_roc_auc_maximizes_and_ranks_by_auc(cancer, tmp_path):
    result = tune(cancer, "target", metric="roc_auc", out=tmp_path / "run", **SMALL)
    assert result.study.direction == optuna.study.StudyDirection.MAXIMIZE
    board = result.leaderboard
    done = board[board["state"] == "complete"]["value"].tolist()
    assert done == sorted(done, reverse=True) and all(0.5 < v <= 1 for v in done)
    assert board.attrs["metric"] == "val_auc" and board.attrs["direction"] == "maximize"
    assert result.study.user_attrs["metric"] == "val_auc"
    # the kept model's best network is the best trial by AUC, its value an AUC
    assert result.model.info["value"] == pytest.approx(max(done))
    assert 0.5 < result.model.info["ensemble_value"] <= 1
    assert "auc" in result.test_scores
    # the curves hold the AUC of every epoch (the report plots it)
    curve = result.study.trials[0].user_attrs["curve"]
    assert all("val_auc" in r for r in curve)
    # continuing the study with another metric is refused
    with pytest.raises(ValueError, match="was tuned for val_auc"):
        tune(cancer, "target", out=tmp_path / "run", **SMALL)


def test_the_test_scores_of_a_chosen_metric_are_scikit_learns_on_the_kept_model(cancer,
                                                                                  tmp_path):
    train, held_out = cancer.iloc[:450], cancer.iloc[450:]
    result = tune(train, "target", metric="roc_auc", test=held_out, out=tmp_path / "run",
                  **SMALL)
    proba = result.model.predict_proba(held_out)
    positive = result.model.classes.index("benign")
    truth = (held_out["target"] == "benign").to_numpy()
    assert result.test_scores["auc"] == pytest.approx(roc_auc_score(truth, proba[:, positive]))
    assert result.test_scores == pytest.approx(result.model.scores(held_out) |
                                               {"auc": result.test_scores["auc"]})


def test_a_non_decomposable_metric_chooses_the_ensemble_by_the_metric_of_the_average():
    y = np.array([0, 1] * 50)
    scorer = ValidationScorer(get_metric("auc", "binary"), y, "binary")
    good = torch.tensor(np.stack([1 - (0.2 + 0.6 * y), 0.2 + 0.6 * y], 1))
    noise = torch.tensor(np.random.default_rng(0).uniform(0, 1, 100))
    bad = torch.stack([1 - noise, noise], 1)
    kept = [KeptNetwork(scorer(o), i, None, o) for i, o in enumerate([good, bad])]
    chosen, value = select_ensemble(kept, torch.tensor(y), "binary", 5, scorer)
    assert [k.trial for k in chosen] == [0] and value == 1.0


# ------------------------------------------------------------------------------ splits


def test_valid_file_uses_exactly_that_files_rows(cancer, tmp_path):
    valid = cancer.iloc[:100]
    path = tmp_path / "valid.csv"
    valid.to_csv(path, index=False)
    result = tune(cancer.iloc[100:], "target", validation=path, out=tmp_path / "run", **SMALL)
    data = result.study.user_attrs["data"]["split"]
    assert data["val_rows"] == 100
    prepared = prepare(cancer.iloc[100:], "target", validation=pd.read_csv(path))
    assert len(prepared.validation) == 100 and len(prepared.X_val) == 100
    assert prepared.validation["mean_radius"].tolist() == valid["mean_radius"].tolist()


def test_a_time_split_never_validates_on_the_past():
    df = load_dataset("txhousing").dropna(subset=["sales"])
    prepared = prepare(df, "sales", drop=["volume"], split="time:date")
    last_train = prepared.train["date"].max()
    assert prepared.validation["date"].min() >= last_train
    assert prepared.test["date"].min() >= prepared.validation["date"].max()
    assert prepared.split["how"] == "time:date"


def test_a_group_split_shares_no_group_between_parts():
    df = load_dataset("snmesp")
    prepared = prepare(df, "y", group="firm", seed=3)
    firms = [set(part["firm"]) for part in (prepared.train, prepared.validation, prepared.test)]
    assert all(firms) and not (firms[0] & firms[1] or firms[0] & firms[2] or firms[1] & firms[2])
    assert "firm" not in prepared.preprocessor.roles_.features
    assert prepared.preprocessor.roles_.ignored["firm"].startswith("the group column")


def test_bad_split_options_are_one_line_errors(cancer):
    with pytest.raises(DataError, match="unknown split 'weekly'"):
        prepare(cancer, "target", split="weekly")
    with pytest.raises(DataError, match="unknown column 'when'"):
        prepare(cancer, "target", split="time:when")
    with pytest.raises(DataError, match="not both"):
        prepare(cancer, "target", split="time:mean_radius", group="mean_texture")


# ------------------------------------------------------------------------------ weights


def _task_rows(task: str, rows: int, columns: int, g: torch.Generator):
    """Random float64 inputs and targets of ``task`` (3 classes for multiclass)."""
    X = torch.randn(rows, columns, generator=g, dtype=torch.float64)
    y = (torch.randint(0, 3, (rows,), generator=g) if task == "multiclass"
         else torch.randint(0, 2, (rows,), generator=g).double() if task == "binary"
         else torch.randn(rows, generator=g, dtype=torch.float64))
    return X, y


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_the_weighted_loss_gradient_matches_autograd_and_finite_differences(task):
    g = torch.Generator().manual_seed(0)
    X, y = _task_rows(task, 12, 4, g)
    w = torch.rand(12, generator=g, dtype=torch.float64) * 3
    w[2] = 0.0  # a row of weight 0 counts for nothing
    pop = Population(task, n_inputs=4, members=[{"hidden_layer_sizes": (5,), "l2": 0.5}] * 2,
                     n_classes=3, seed=1, dtype=torch.float64)
    analytic = pop.gradients(X, y, 30, weight=w)
    # dz against autograd of the weighted cost (1/B)·Σ wᵢLᵢ (torch's own losses)
    z = torch.randn(2, 12, 3 if task == "multiclass" else 1, generator=g, dtype=torch.float64,
                    requires_grad=True)
    if task == "multiclass":
        per_row = torch.nn.functional.cross_entropy(z.transpose(1, 2), y.expand(2, 12),
                                                    reduction="none")
    elif task == "binary":
        per_row = torch.nn.functional.binary_cross_entropy_with_logits(
            z.squeeze(2), y.expand(2, 12), reduction="none")
    else:
        per_row = 0.5 * (z.squeeze(2) - y) ** 2
    (per_row * w).mean(dim=1).sum().backward()
    torch.testing.assert_close(losses.loss_and_gradient(z.detach(), y, task, w)[1], z.grad)
    # central finite differences on one weight of the output layer
    name = f"W{pop.structure.n_layers - 1}"
    flat = pop.params[name].view(-1)
    old, eps = float(flat[0]), 1e-6
    flat[0] = old + eps
    up = float(pop.cost(X, y, 30, weight=w).sum())
    flat[0] = old - eps
    down = float(pop.cost(X, y, 30, weight=w).sum())
    flat[0] = old
    assert analytic[name].view(-1)[0].item() == pytest.approx((up - down) / (2 * eps),
                                                              rel=1e-5)
    # all weights 1 is the unweighted gradient
    ones = pop.gradients(X, y, 30, weight=torch.ones(12, dtype=torch.float64))
    plain = pop.gradients(X, y, 30)
    for k in plain:
        torch.testing.assert_close(ones[k], plain[k])


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_each_member_may_weight_the_rows_its_own_way(task):
    # a bag's folds: member k leaves its own rows out (weight 0); its gradient is the one
    # it gets from its row weights alone, and the other member's weights do not touch it
    X, y = _task_rows(task, 10, 3, torch.Generator().manual_seed(1))
    pop = Population(task, n_inputs=3, members=[{"hidden_layer_sizes": (4,)}] * 2,
                     n_classes=3, seed=2, dtype=torch.float64)
    per_member = torch.ones(2, 10, dtype=torch.float64)
    per_member[0, :5] = 0.0
    per_member[1, 5:] = 2.0
    both = pop.gradients(X, y, 10, weight=per_member)
    for k in range(2):
        alone = pop.gradients(X, y, 10, weight=per_member[k])
        for name in both:
            torch.testing.assert_close(both[name][k], alone[name][k])
    assert float(pop.cost(X, y, weight=per_member)[0]) != float(pop.cost(X, y)[0])


def test_balanced_class_weight_raises_the_recall_of_the_rare_class(tmp_path):
    df = load_dataset("default")  # 3% of the rows default
    hp = {"hidden_layer_sizes": [8], "epochs": 4, "batch_size": 128, "learning_rate": 0.01}
    recalls = []
    for class_weight in (None, "balanced"):
        prepared = prepare(df, "default", seed=0, class_weight=class_weight)
        if class_weight:  # n / (k · n_class), normalized to mean 1: the rare class weighs more
            y = prepared.y_train.long()
            assert float(prepared.w_train.mean()) == pytest.approx(1.0)
            ratio = float(prepared.w_train[y == 1][0] / prepared.w_train[y == 0][0])
            assert ratio == pytest.approx(float((y == 0).sum() / (y == 1).sum()), rel=1e-4)
        from caviar.training import train_network

        net = train_network(prepared.X_train, prepared.y_train, "binary", hp, seed=0,
                            weight=prepared.w_train)
        X_test = torch.from_numpy(prepared.preprocessor.transform(prepared.test))
        y_test = prepared.preprocessor.encode_target(prepared.test["default"])
        predicted = net.predict(X_test)[0].argmax(1).numpy()
        recalls.append(recall_score(y_test, predicted))
    assert recalls[1] > recalls[0] + 0.3


def test_the_weight_column_is_not_a_feature_and_weights_the_validation_metric(tmp_path):
    df = load_dataset("default")
    df["w"] = np.where(df["default"] == "Yes", 5.0, 1.0)
    result = tune(df, "default", weight="w", out=tmp_path / "run", **SMALL)
    roles = result.study.user_attrs["data"]["roles"]
    assert roles["w"]["role"] == "ignored" and "weight column" in roles["w"]["reason"]
    assert result.study.user_attrs["metric"] == "val_weighted_log_loss"
    curve = result.study.trials[0].user_attrs["curve"]
    assert all(r["val_weighted_log_loss"] != r["val_log_loss"] for r in curve)
    # every row's bad values are counted (not only the training rows'), shown as written
    with pytest.raises(DataError, match=f"must hold numbers >= 0, but has {len(df)} other "
                                        r"value\(s\), such as -1.0; fix"):
        prepare(df.assign(w=-1.0), "default", weight="w")


def test_under_weight_the_test_scores_are_weighted_as_the_validation_score(tmp_path):
    from sklearn.metrics import log_loss

    df = load_dataset("default")
    df["w"] = np.where(df["default"] == "Yes", 5.0, 1.0)
    result = tune(df, "default", weight="w", metric="auc", out=tmp_path / "run", **SMALL)
    test = prepare(df, "default", weight="w", seed=0).test  # the tune's own test rows
    truth = (test["default"] == "Yes").to_numpy()
    proba = result.model.predict_proba(test)[:, 1]
    w = test["w"].to_numpy()
    scores = result.test_scores
    assert scores["auc"] == pytest.approx(roc_auc_score(truth, proba, sample_weight=w))
    assert scores["log_loss"] == pytest.approx(log_loss(truth, proba, sample_weight=w))
    assert scores["log_loss"] != pytest.approx(log_loss(truth, proba))  # not the plain mean
    best = result.study.user_attrs["best"]
    assert best["test_weight"] == "w"
    if len(result.model.networks) > 1:  # the best network alone is scored the same way
        alone = CaviarModel(result.model.preprocessor, result.model.network).predict_proba(test)
        assert best["best_network_test_scores"]["log_loss"] == pytest.approx(
            log_loss(truth, alone[:, 1], sample_weight=w))
    # a saved model scores a table the same way, naming the weight column
    assert result.model.scores(test, weight="w")["log_loss"] == pytest.approx(scores["log_loss"])
    with pytest.raises(DataError, match="weight column 'v' is missing"):
        result.model.scores(test, weight="v")
    # beside them, a constant prediction's: the training rows' weighted class shares, as
    # scikit-learn's prior-predicting dummy fitted with the weights gives them
    from sklearn.dummy import DummyClassifier

    train = prepare(df, "default", weight="w", seed=0).train
    dummy = DummyClassifier(strategy="prior").fit(train[["w"]], train["default"] == "Yes",
                                                  sample_weight=train["w"])
    constant = best["constant_test_scores"]
    assert constant["log_loss"] == pytest.approx(
        log_loss(truth, dummy.predict_proba(test[["w"]])[:, 1], sample_weight=w))
    assert constant["auc"] == pytest.approx(0.5) and scores["auc"] > 0.8
    # a test file must hold the weights that score it: refused before anything trains
    with pytest.raises(DataError, match="weight column 'w' is missing from a table"):
        prepare(df, "default", weight="w", test=test.drop(columns="w"))


def test_a_tune_scores_a_constant_prediction_beside_its_model(cancer, tmp_path):
    """The test rows scored by the training rows' mean target, as scikit-learn's mean-
    predicting dummy scores them: what the columns add is the gap to the model."""
    from sklearn.dummy import DummyRegressor
    from sklearn.metrics import mean_squared_error

    table = cancer.drop(columns="target")
    result = _tiny_tune(table.rename(columns={"mean_radius": "target"}), tmp_path / "t",
                        "robust")
    prepared = prepare(table.rename(columns={"mean_radius": "target"}), "target", seed=0)
    dummy = DummyRegressor().fit(prepared.train[["mean_texture"]], prepared.train["target"])
    truth = prepared.test["target"]
    rmse = mean_squared_error(truth, dummy.predict(prepared.test[["mean_texture"]])) ** 0.5
    constant = result.study.user_attrs["best"]["constant_test_scores"]
    assert constant["rmse"] == pytest.approx(rmse, rel=1e-5)
    assert constant["r2"] == pytest.approx(0.0, abs=0.05)  # the training mean, not the test's
    assert result.test_scores["rmse"] < constant["rmse"]


def test_estimators_take_sample_weight_and_verbose(capsys):
    df = load_dataset("default")
    X, y = df[["balance", "income", "student"]], df["default"]
    weights = np.where(y == "Yes", 30.0, 1.0)
    common = dict(hidden_layer_sizes=[8], epochs=4, batch_size=128, random_state=0)
    plain = CaviarClassifier(**common).fit(X, y)
    weighted = CaviarClassifier(**common, verbose=True).fit(X, y, sample_weight=weights)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == weighted.n_iter_ and lines[0].startswith("epoch 1/4")
    assert "val_weighted_log_loss" in lines[0]
    yes = (y == "Yes").to_numpy()
    assert (weighted.predict(X)[yes] == "Yes").mean() > (plain.predict(X)[yes] == "Yes").mean()
    reg = CaviarRegressor(hidden_layer_sizes=[4], epochs=2, random_state=0)
    reg.fit(X[["balance", "income"]], df["balance"] * 2, sample_weight=np.ones(len(df)))
    with pytest.raises(ValueError, match="sample_weight has 3 values"):
        reg.fit(X[["balance", "income"]], df["balance"], sample_weight=[1, 2, 3])


# ------------------------------------------------------------------------------ dates


def test_a_date_column_becomes_calendar_and_time_features(tmp_path):
    from caviar.data import TablePreprocessor
    from caviar.model import fit_model, load_model

    df = load_dataset("txhousing").dropna(subset=["sales"]).iloc[:600]
    df["when"] = pd.to_datetime({"year": df["year"], "month": df["month"], "day": 1}
                                ).dt.strftime("%Y-%m-%d")
    df = df.drop(columns=["year", "month", "date", "rownames"])
    pre = TablePreprocessor("sales").fit(df)
    assert pre.roles_.datetime == ["when"] and pre.roles_.role("when") == "datetime"
    names = pre.feature_names_out_
    for part in ("year", "month", "dayofweek", "days"):
        assert f"num__when.{part}" in names
    assert "num__when.hour" not in names  # plain dates: every time is midnight
    X = pre.transform(df)
    year = X[:, names.index("num__when.year")]
    assert np.corrcoef(year, pd.to_datetime(df["when"]).dt.year)[0, 1] > 0.999
    # saved and loaded, the model expands the dates the same way
    model = fit_model(df, "sales", {"epochs": 1, "hidden_layer_sizes": [4]})
    model.save(tmp_path / "model")
    again = load_model(tmp_path / "model")
    assert np.allclose(again.predict(df.head(20)), model.predict(df.head(20)))
    # a datetime column with times gets the hour too; times are days since the first
    stamps = pd.DataFrame({"t": pd.to_datetime(["2024-01-01 06:00", "2024-01-03 18:00"] * 5),
                           "x": range(10), "y": [0.0, 1.0] * 5})
    pre = TablePreprocessor("y").fit(stamps)
    assert "num__t.hour" in pre.feature_names_out_
    days = pre._inputs(stamps)["t.days"].tolist()
    assert days[:2] == [0.0, 2.5]


def test_dates_as_spreadsheets_write_them_are_dates_read_the_way_training_read_them(tmp_path):
    """03/31/2021 (month first: a second number above 12), 31.03.2021 (dots: day first):
    dates, not a category per day, through a CSV file, the saved model, predictions on rows
    whose days are all 12 or less (read as training read them, not guessed again) and a time
    split."""
    from caviar.data import TablePreprocessor, read_table
    from caviar.data.splits import time_split
    from caviar.model import fit_model, load_model

    rng = np.random.default_rng(0)
    n = 120
    when = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.permutation(n) * 3, unit="D")
    df = pd.DataFrame({"us": when.strftime("%m/%d/%Y"), "eu": when.strftime("%d.%m.%Y"),
                       "y": when.month + rng.normal(size=n) / 10})
    df.to_csv(tmp_path / "t.csv", index=False)
    df = read_table(tmp_path / "t.csv")
    pre = TablePreprocessor("y").fit(df)
    assert pre.roles_.datetime == ["us", "eu"]
    assert pre.roles_.reasons["us"].endswith("(read as month/day/year)")
    assert pre.roles_.reasons["eu"].endswith("(read as day/month/year)")
    inputs = pre._inputs(df)
    for col in ("us", "eu"):
        np.testing.assert_array_equal(inputs[f"{col}.month"], when.month)
        np.testing.assert_array_equal(inputs[f"{col}.days"], (when - when.min()).days)
    model = fit_model(df, "y", {"epochs": 1, "hidden_layer_sizes": [4]})
    model.save(tmp_path / "model")
    early = df[pd.to_datetime(df["us"], format="%m/%d/%Y").dt.day <= 12].head(10)
    again = load_model(tmp_path / "model")
    np.testing.assert_array_equal(again.preprocessor._inputs(early)["us.month"],
                                  pd.to_datetime(early["us"], format="%m/%d/%Y").dt.month)
    np.testing.assert_allclose(again.predict(early), model.predict(early))
    train, validation, test = time_split(df, "us", 0.2, 0.2)
    last = pd.to_datetime(train["us"], format="%m/%d/%Y").max()
    assert last < pd.to_datetime(validation["us"], format="%m/%d/%Y").min()


def test_clock_times_and_durations_written_as_text_are_seconds(tmp_path):
    """A time of day (11:38:36) and a race time (2:31:38) in a CSV file are numbers, in
    seconds, as a feature and as a regression target, not a category per minute."""
    from caviar.data import TablePreprocessor, read_table

    rng = np.random.default_rng(0)
    n = 60
    start = rng.integers(6 * 3600, 12 * 3600, n)
    race = 2 * 3600 + start // 10 + rng.integers(0, 600, n)

    def clock(seconds: np.ndarray) -> list[str]:
        return [f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" for t in seconds]

    pd.DataFrame({"start": clock(start), "finish": clock(race)}).to_csv(tmp_path / "t.csv",
                                                                         index=False)
    df = read_table(tmp_path / "t.csv")
    pre = TablePreprocessor("finish").fit(df)
    assert pre.task_ == "regression" and pre.roles_.numeric == ["start"]
    np.testing.assert_array_equal(pre._inputs(df)["start"], start)
    np.testing.assert_array_equal(pre.target_values(df["finish"]), race)


def test_a_parquet_files_dates_and_durations_are_read_as_time(tmp_path):
    """Parquet's ``date32`` reads as Python dates and its ``duration`` as timedeltas: the
    first are dates (calendar and days, not a category of each day), the second numbers
    (seconds), through the file reader, the saved model and its predictions."""
    import datetime

    from caviar.data import TablePreprocessor, read_table
    from caviar.model import fit_model, load_model

    rng = np.random.default_rng(0)
    n = 200
    day = [datetime.date(2024, 1, 1) + datetime.timedelta(days=int(d))
           for d in rng.integers(0, 400, n)]
    hours = rng.integers(0, 48, n)
    pd.DataFrame({"day": day, "wait": pd.to_timedelta(hours, unit="h"),
                  "y": hours + rng.normal(size=n)}).to_parquet(tmp_path / "t.parquet")
    df = read_table(tmp_path / "t.parquet")
    assert isinstance(df["day"].iloc[0], datetime.date)  # what a date32 column reads as
    assert pd.api.types.is_timedelta64_dtype(df["wait"])
    pre = TablePreprocessor("y").fit(df)
    assert pre.roles_.datetime == ["day"] and pre.roles_.numeric == ["wait"]
    assert pre.roles_.reasons["wait"] == "durations, in seconds"
    inputs = pre._inputs(df)
    np.testing.assert_array_equal(inputs["wait"], hours * 3600.0)
    assert inputs["day.days"].min() == 0 and inputs["day.year"].max() == 2025
    model = fit_model(df, "y", {"epochs": 1, "hidden_layer_sizes": [4]})
    model.save(tmp_path / "model")
    np.testing.assert_allclose(load_model(tmp_path / "model").predict(df.head(20)),
                               model.predict(df.head(20)))


def test_estimators_take_durations_as_seconds_and_refuse_complex_numbers_in_one_line():
    rng = np.random.default_rng(0)
    hours = rng.integers(0, 48, 120)
    seconds = pd.DataFrame({"wait": hours * 3600.0, "x": rng.normal(size=120)})
    durations = seconds.assign(wait=pd.to_timedelta(hours, unit="h"))
    y = hours + rng.normal(size=120)
    common = dict(hidden_layer_sizes=[4], epochs=2, random_state=0)
    np.testing.assert_allclose(CaviarRegressor(**common).fit(durations, y).predict(durations),
                               CaviarRegressor(**common).fit(seconds, y).predict(seconds))
    complex_numbers = r"^Complex data not supported: X holds complex numbers; pass real"
    with pytest.raises(ValueError, match=complex_numbers) as err:
        CaviarRegressor(**common).fit(seconds.assign(x=seconds["x"] + 1j), y)
    assert "\n" not in str(err.value)


def test_models_saved_before_dates_still_load(tmp_path):
    from caviar.data import TablePreprocessor

    df = load_dataset("default")
    meta, arrays = TablePreprocessor("default").fit(df).to_state()
    meta["roles"].pop("datetime", None)
    meta.pop("dates", None)
    assert TablePreprocessor.from_state(meta, arrays).transform(df.head()).shape == (5, 4)


# ------------------------------------------------------------------------------ progress


def test_tune_verbose_prints_progress(cancer, tmp_path, capsys):
    tune(cancer, "target", verbose=True, out=tmp_path / "run", **SMALL)
    out = capsys.readouterr().out
    assert "trials" in out and "best val_log_loss" in out
    tune(cancer, "target", out=tmp_path / "quiet", **SMALL)
    assert capsys.readouterr().out == ""


def test_cli_tune_with_metric_class_weight_and_a_time_split(tmp_path):
    import json

    from typer.testing import CliRunner

    from caviar.cli import app

    df = load_dataset("default").reset_index(names="day")
    path = tmp_path / "default.csv"
    df.to_csv(path, index=False)
    space = tmp_path / "space.toml"
    space.write_text('learning_rate = { kind = "log_uniform", low = 0.003, high = 0.03 }\n'
                     'width = { value = 8 }\ndepth = { value = 1 }\n'
                     'batch_size = { value = 256 }\nepochs = { value = 2 }\n')
    result = CliRunner().invoke(app, [
        "tune", str(path), "--target", "default", "--metric", "roc_auc", "--trials", "4",
        "--population", "2", "--space", str(space), "--class-weight", "balanced",
        "--split", "time:day", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "value = auc, higher is better" in " ".join(result.output.split())
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["metric"] == "auc" and run["split"] == "time:day"
    bad = CliRunner().invoke(app, ["tune", str(path), "--target", "default", "--metric",
                                   "r2", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "does not fit a binary target" in bad.output


# ------------------------------------------------------------------------ numeric scaling


def test_the_numeric_scaling_a_user_asks_for_is_what_every_model_applies(cancer, tmp_path):
    path = tmp_path / "cancer.csv"
    cancer.to_csv(path, index=False)
    space = tmp_path / "space.toml"
    space.write_text('width = { value = 8 }\ndepth = { value = 1 }\n'
                     'batch_size = { value = 64 }\nepochs = { value = 2 }\n')
    tuned = invoke("tune", path, "--target", "target", "--trials", 2, "--population", 2,
                   "--space", space, "--numeric", "quantile", "--out", tmp_path / "tune")
    assert tuned.exit_code == 0, tuned.output
    model = load_model(tmp_path / "tune" / "model")
    assert model.preprocessor.numeric == "quantile"
    assert json.loads((tmp_path / "tune" / "run.json").read_text())["numeric"] == ["quantile"]
    assert {n.hyperparameters[0]["numeric"] for n in model.networks} == {"quantile"}
    # the model's inputs are the quantile transform's: a column's training values map to a
    # normal's quantiles, so the right-skewed area becomes symmetric about 0, its smallest
    # value below the robust scaling's bound of -3
    X = model.preprocessor.transform(cancer)
    area = model.preprocessor.feature_names_out_.index("num__mean_area")
    assert X[:, area].min() < -3 and abs(np.median(X[:, area])) < 0.2
    assert abs(X[:, area].mean()) < 0.1

    trained = invoke("train", path, "--target", "target", "--epochs", 2, "--numeric",
                     "standard", "--out", tmp_path / "panda")
    assert trained.exit_code == 0, trained.output
    resumed = invoke("resume", tmp_path / "panda", "--epochs", 3)
    assert resumed.exit_code == 0, resumed.output  # the same features: the same scaling
    assert load_model(tmp_path / "panda" / "model").preprocessor.numeric == "standard"

    bad = invoke("tune", path, "--target", "target", "--numeric", "log")
    assert bad.exit_code == 2 and "robust" in bad.output and "quantile" in bad.output


def test_a_tune_searches_the_scaling_and_each_network_reads_its_own(cancer, tmp_path):
    space = default_space().replace({"width": 8, "depth": 1, "batch_size": 64, "epochs": 2,
                                     "numeric_embedding": "none", "batch_norm": False})
    result = tune(cancer, "target", trials=12, population=4, space=space, seed=0,
                  out=tmp_path / "tune", numeric="search")
    board = result.leaderboard
    assert set(board["numeric"]) == {"robust", "quantile"}
    run = json.loads((tmp_path / "tune" / "run.json").read_text())
    assert run["numeric"] == ["robust", "quantile"]
    pre = load_model(tmp_path / "tune" / "model").preprocessor
    assert (pre.numeric, tuple(pre.numeric_alternatives)) == ("robust", ("quantile",))
    # the saved model predicts what the tuned one did, whichever scaling its networks read
    loaded = load_model(tmp_path / "tune" / "model")
    np.testing.assert_allclose(loaded.predict_proba(cancer), result.model.predict_proba(cancer),
                               rtol=1e-6)


def test_a_network_of_robust_quantile_reads_both_blocks_as_plain_columns(cancer):
    """The oracle: a robust+quantile network on the table prepared both ways trains as a
    network that reads every column of the same matrix as it is (a plain width, no layout),
    from the same seed; a robust network on it reads half the columns, and is another."""
    both = prepare(cancer, "target", numeric="robust+quantile", seed=0)
    alone = prepare(cancer, "target", numeric="robust", seed=0)
    assert both.X_train.shape[1] == 2 * alone.X_train.shape[1]  # 30 numbers, no categorical
    config = {"hidden_layer_sizes": (8,), "epochs": 3, "numeric": "robust+quantile"}
    read = train_network(both.X_train, both.y_train, both.task, config,
                         n_classes=both.n_classes, seed=0, inputs=both.inputs)
    plain = train_network(both.X_train, both.y_train, both.task, {**config, "numeric": None},
                          n_classes=both.n_classes, seed=0)
    robust = train_network(both.X_train, both.y_train, both.task, {**config, "numeric": "robust"},
                           n_classes=both.n_classes, seed=0, inputs=both.inputs)
    with torch.no_grad():
        out = read.predict(both.X_val)[0]
        torch.testing.assert_close(out, plain.predict(both.X_val)[0], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(robust.predict(both.X_val)[0], out)
    with pytest.raises(ValueError, match=r"numeric=robust\+quantile is not a scaling these "
                                         r"inputs hold \(robust\)"):
        train_network(alone.X_train, alone.y_train, alone.task, config,
                      n_classes=alone.n_classes, inputs=alone.inputs)


def _tiny_tune(table: pd.DataFrame, out, numeric: str):
    """Four two-epoch trials of a width-8 network, every one scaling the numbers ``numeric``."""
    space = default_space().replace({"width": 8, "depth": 1, "batch_size": 64, "epochs": 2,
                                     "numeric_embedding": "none", "batch_norm": False})
    return tune(table, "target", trials=4, population=2, space=space, seed=0, out=out,
                numeric=numeric)


def _trained_by_the_command_line(table: pd.DataFrame, tmp_path, numeric: str):
    """``caviar train`` of ``table`` for one epoch with ``--numeric numeric``: the model."""
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    trained = invoke("train", path, "--target", "target", "--epochs", 1, "--numeric", numeric,
                     "--out", tmp_path / "panda")
    assert trained.exit_code == 0, trained.output
    return load_model(tmp_path / "panda" / "model")


def test_tune_train_and_the_estimators_take_robust_quantile(cancer, tmp_path):
    result = _tiny_tune(cancer, tmp_path / "tune", "robust+quantile")
    assert set(result.leaderboard["numeric"]) == {"robust+quantile"}
    loaded = load_model(tmp_path / "tune" / "model")
    pre = loaded.preprocessor
    assert (pre.numeric, tuple(pre.numeric_alternatives)) == ("robust", ("quantile",))
    for network in loaded.networks:  # every column of both blocks is read
        assert network.structure.dense_columns is None
    np.testing.assert_allclose(loaded.predict_proba(cancer), result.model.predict_proba(cancer),
                               rtol=1e-6)
    # the exported graph reads the preprocessed rows, both blocks, as the model does
    import onnxruntime as ort

    from caviar.export import export_onnx
    session = ort.InferenceSession(str(export_onnx(loaded, tmp_path / "m.onnx")),
                                   providers=["CPUExecutionProvider"])
    proba, _ = session.run(None, {"features": pre.transform(cancer)})
    np.testing.assert_allclose(proba, loaded.predict_proba(cancer), atol=1e-5)
    model = _trained_by_the_command_line(cancer, tmp_path, "robust+quantile")
    assert model.hyperparameters["numeric"] == "robust+quantile"
    assert model.preprocessor.numeric_alternatives == ("quantile",)
    X = cancer.drop(columns="target")
    fitted = CaviarClassifier(numeric="robust+quantile", epochs=2, random_state=0).fit(
        X, cancer["target"])
    assert fitted.model_.network.structure.n_inputs == 2 * X.shape[1]
    assert fitted.score(X, cancer["target"]) > 0.8


def test_tune_train_and_the_estimators_take_robust_or_quantile(cancer, tmp_path):
    """A column per scaling: a log-normal column (about 11% of its rows beyond 3 IQRs) gets
    its quantiles, the table's others the clip; tuned, trained and fitted models save and
    load as such."""
    cancer = cancer.assign(dose=np.random.default_rng(0).lognormal(0, 2, len(cancer)))
    result = _tiny_tune(cancer, tmp_path / "tune", "robust-or-quantile")
    assert set(result.leaderboard["numeric"]) == {"robust-or-quantile"}
    loaded = load_model(tmp_path / "tune" / "model")
    scaler = loaded.preprocessor.column_transformer_.named_transformers_["num"].named_steps["scale"]
    assert scaler.tails_.tolist() == [False] * 8 + [True]  # the columns, dose last
    np.testing.assert_allclose(loaded.predict_proba(cancer), result.model.predict_proba(cancer),
                               rtol=1e-6)
    trained = _trained_by_the_command_line(cancer, tmp_path, "robust-or-quantile")
    assert trained.preprocessor.numeric == "robust-or-quantile"
    X = cancer.drop(columns="target")
    fitted = CaviarClassifier(numeric="robust-or-quantile", epochs=2, random_state=0).fit(
        X, cancer["target"])
    assert fitted.score(X, cancer["target"]) > 0.8


@pytest.mark.parametrize("embedding", ["none", "plr"])
def test_a_network_of_a_scaling_trains_as_on_a_table_scaled_only_that_way(cancer, embedding):
    """The oracle: on a table that holds both scalings, a network asking for quantile reads
    exactly the columns a table scaled only by quantiles gives it (cancer: 30 numeric columns,
    in the same order in both), so the same seed trains the same network."""
    both = prepare(cancer, "target", numeric=["robust", "quantile"], seed=0)
    alone = prepare(cancer, "target", numeric="quantile", seed=0)
    assert both.X_train.shape[1] == 2 * alone.X_train.shape[1]
    config = {"hidden_layer_sizes": (8,), "epochs": 3, "numeric": "quantile",
              "numeric_embedding": embedding, "dropout": 0.1}
    nets = [train_network(p.X_train, p.y_train, p.task, config, n_classes=p.n_classes,
                          seed=0, inputs=p.inputs) for p in (both, alone)]
    with torch.no_grad():
        out = [n.predict(p.X_val)[0] for n, p in zip(nets, (both, alone))]
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)
    robust = train_network(both.X_train, both.y_train, both.task, {**config, "numeric": "robust"},
                           n_classes=both.n_classes, seed=0, inputs=both.inputs)
    with torch.no_grad():  # reading the other block is another network
        assert not torch.allclose(robust.predict(both.X_val)[0], out[0])
    with pytest.raises(ValueError, match="numeric=standard is not a scaling these inputs hold "
                                         r"\(robust, quantile\)"):
        train_network(both.X_train, both.y_train, both.task, {**config, "numeric": "standard"},
                      n_classes=both.n_classes, inputs=both.inputs)


def test_train_takes_the_scaling_from_the_configuration(cancer, tmp_path):
    path = tmp_path / "cancer.csv"
    cancer.to_csv(path, index=False)
    trained = invoke("train", path, "--target", "target", "--epochs", 1, "--set",
                     "numeric=quantile", "--out", tmp_path / "q")
    assert trained.exit_code == 0, trained.output
    assert load_model(tmp_path / "q" / "model").preprocessor.numeric == "quantile"
    clash = invoke("train", path, "--target", "target", "--epochs", 1, "--set",
                   "numeric=quantile", "--numeric", "robust", "--out", tmp_path / "clash")
    assert clash.exit_code == 1
    assert "numeric=robust and the hyperparameter numeric=quantile disagree" in clash.output
    searched = invoke("train", path, "--target", "target", "--numeric", "search", "--out",
                      tmp_path / "search")
    assert searched.exit_code == 1 and "numeric=search is tune's" in searched.output
    chosen = invoke("train", path, "--target", "target", "--numeric", "auto", "--out",
                    tmp_path / "auto")
    assert_one_error_line(chosen, "numeric=auto is tune's", "train one network with robust")


@pytest.mark.parametrize("cls", [CaviarClassifier, CaviarRegressor])
def test_estimators_take_the_numeric_scaling(cancer, cls):
    X = cancer.drop(columns="target")
    y = (cancer["target"] if cls is CaviarClassifier else cancer["mean_radius"] * 2)
    if cls is CaviarRegressor:
        X = X.drop(columns="mean_radius")
    model = cls(numeric="quantile", epochs=2, random_state=0).fit(X, y)
    assert model.model_.preprocessor.numeric == "quantile"
    assert clone(model).get_params()["numeric"] == "quantile"
    with pytest.raises(ValueError, match="numeric must be one of robust, asinh, quantile, "
                                         r"standard, robust-or-quantile, robust\+quantile, "
                                         "got 'log'"):
        cls(numeric="log", epochs=2).fit(X, y)
