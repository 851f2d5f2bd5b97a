"""The encoding rules: which categoricals are one-hot encoded (``max_onehot``), and how numeric
columns are scaled (``numeric``), saved and loaded."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.preprocessing import QuantileTransformer

from caviar.data import DataError, TablePreprocessor, infer_roles
from caviar.data.roles import MAX_ONEHOT_LEVELS, MIN_ROWS_PER_LEVEL, onehot_limit
from caviar.data.scalers import (
    NUMERIC,
    AsinhScaler,
    QuantileNormalScaler,
    RobustOrQuantileScaler,
    SmoothClipScaler,
)
from caviar.datasets import load_dataset


def roundtrip(pre: TablePreprocessor, edit=None) -> TablePreprocessor:
    """Save to JSON text and an .npz file in memory (``edit`` may change the JSON), load back."""
    meta, arrays = pre.to_state()
    meta = json.loads(json.dumps(meta))
    if edit is not None:
        edit(meta)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer) as saved:
        loaded = {name: saved[name] for name in saved.files}
    return TablePreprocessor.from_state(meta, loaded)


def hours(n_days: int = 30, seed: int = 0) -> pd.DataFrame:
    """Hourly demand: hour of day as a 24-level category, demand peaking at 8 and 17."""
    rng = np.random.default_rng(seed)
    hour = np.tile(np.arange(24), n_days)
    demand = 50 + 40 * np.exp(-(hour - 8) ** 2 / 2) + 60 * np.exp(-(hour - 17) ** 2 / 3)
    return pd.DataFrame({"hour": [f"h{h:02d}" for h in hour],
                         "temp": rng.normal(15, 5, len(hour)),
                         "demand": demand + rng.normal(0, 5, len(hour))})


def ids(n_levels: int, rows_per_level: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_levels * rows_per_level
    return pd.DataFrame({"who": [f"p{i}" for i in np.repeat(np.arange(n_levels),
                                                              rows_per_level)],
                         "x": rng.normal(size=n), "y": rng.normal(size=n)})


def heavy(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Money-like: log-normal with a long right tail, some missing; counts mostly zero."""
    rng = np.random.default_rng(seed)
    income = np.exp(rng.normal(11, 2.0, n))
    income[::50] = np.nan
    counts = rng.poisson(0.3, n) * rng.integers(1, 500, n)
    return pd.DataFrame({"income": income, "count": counts.astype(float),
                         "y": rng.normal(size=n)})


# ------------------------------------------------------------------------- one-hot rule


def test_onehot_limit():
    assert onehot_limit(0) == onehot_limit(10) == MAX_ONEHOT_LEVELS  # small tables: as before
    assert onehot_limit(1000) == 1000 // MIN_ROWS_PER_LEVEL
    assert onehot_limit(1000, max_onehot=3) == 3


def test_a_24_level_column_with_enough_rows_is_one_hot():
    pre = TablePreprocessor("demand").fit(hours())
    assert pre.roles_.onehot == ["hour"] and pre.roles_.target_encoded == []
    assert sum(n.startswith("onehot__hour_") for n in pre.feature_names_out_) == 24
    assert "24 levels (<=" in pre.roles_.reasons["hour"]
    # each hour keeps its own input: the morning and the evening peak are different columns
    X = pre.transform(pd.DataFrame({"hour": ["h08", "h17"], "temp": [15.0, 15.0]}))
    assert not np.array_equal(X[0], X[1])


def test_an_id_column_with_few_rows_per_level_is_target_encoded():
    df = ids(n_levels=2000, rows_per_level=2)
    roles = infer_roles(df, "y")
    assert roles.target_encoded == ["who"] and roles.onehot == []
    assert "2000 levels (> 1000)" in roles.reasons["who"]
    pre = TablePreprocessor("y").fit(df)
    assert pre.feature_names_out_[-1] == "te__who" and pre.n_features_out_ == 2
    # enough rows per level: the same number of levels is one-hot
    assert infer_roles(ids(n_levels=200, rows_per_level=MIN_ROWS_PER_LEVEL), "y").onehot == [
        "who"]


def test_max_onehot_overrides_the_rule():
    assert TablePreprocessor("demand", max_onehot=10).fit(hours()).roles_.target_encoded == [
        "hour"]
    df = ids(n_levels=300, rows_per_level=2)
    assert TablePreprocessor("y").fit(df).roles_.target_encoded == ["who"]
    pre = TablePreprocessor("y", max_onehot=300).fit(df)
    assert pre.roles_.onehot == ["who"] and pre.n_features_out_ == 1 + 300
    assert infer_roles(df, "y", max_onehot=0).target_encoded == ["who"]


def test_rule_counts_training_rows_only():
    # 60 levels of 6 rows: one-hot on all 360 rows (limit 90), not on 200 of them (limit 50)
    df = ids(n_levels=60, rows_per_level=6)
    assert TablePreprocessor("y").fit(df).roles_.onehot == ["who"]
    assert TablePreprocessor("y").fit(df.sample(200, random_state=0)).roles_.target_encoded == [
        "who"]


# ------------------------------------------------------------------------ numeric transform


@pytest.mark.parametrize("numeric, bound", [("robust", 3.0), ("quantile", 5.2)])
def test_heavy_tails_are_bounded_and_order_is_kept(numeric, bound):
    df = heavy()
    pre = TablePreprocessor("y", numeric=numeric).fit(df)
    assert pre.feature_names_out_ == ["num__income", "num__count",
                                      "num__missingindicator_income"]
    X = pre.transform(df)
    assert np.isfinite(X).all() and np.abs(X).max() <= bound
    # far beyond anything seen at training: still bounded
    extreme = pd.DataFrame({"income": [1e12, -1e12], "count": [1e9, -1e9]})
    assert np.abs(pre.transform(extreme)).max() <= bound
    # monotone: a larger value never maps lower
    grid = pd.DataFrame({"income": np.geomspace(1, 1e9, 500), "count": np.linspace(0, 1e4, 500)})
    out = pre.transform(grid)
    assert (np.diff(out[:, 0]) >= 0).all() and (np.diff(out[:, 1]) >= 0).all()
    assert out[-1, 0] > out[0, 0] and out[-1, 1] > out[0, 1]
    # standardizing lets the tail dominate: the largest income is many deviations out
    standard = TablePreprocessor("y", numeric="standard").fit_transform(df)
    assert np.abs(standard[:, 0]).max() > 3 * bound


def test_smooth_clip_scaler_is_realmlp_robust_scaling():
    rng = np.random.default_rng(1)
    v = rng.standard_t(2, size=(1000, 1)) * 7 + 3
    x = (v - np.median(v)) / (np.quantile(v, 0.75) - np.quantile(v, 0.25))
    np.testing.assert_allclose(SmoothClipScaler().fit_transform(v),
                               x / np.sqrt(1 + (x / 3) ** 2))
    # quartiles that meet (mostly zeros) use half the range; a constant column becomes 0
    mostly_zero = np.c_[np.r_[np.zeros(90), np.arange(1, 11.0)], np.full(100, 4.0)]
    scaler = SmoothClipScaler().fit(mostly_zero)
    np.testing.assert_allclose(scaler.factor_, [1 / 5, 0])
    assert (scaler.transform(mostly_zero)[:, 1] == 0).all()


def test_quantile_scaler_maps_a_shared_value_to_its_middle_rank_not_the_bound():
    """hpc_data's counts: num_pending is 0, its least value, in 81% of these rows (iterations
    10, its least, in 7%). scikit-learn's plain transform sends every row at the least value
    to the normal's bound (−5.2); the benchmarks' transform (fitted on jittered values) sends
    a spike to its middle rank."""
    df = load_dataset("hpc_data").iloc[:3000]
    columns = ["compounds", "input_fields", "iterations", "num_pending", "hour"]
    v = df[columns].to_numpy(dtype=float)
    scaler = QuantileNormalScaler(n_quantiles=QuantileNormalScaler.quantile_count(len(v)),
                                  random_state=0).fit(v)
    assert scaler.n_quantiles_ == 100  # about 30 rows a quantile
    out = scaler.transform(v)
    plain = QuantileTransformer(output_distribution="normal", n_quantiles=100,
                                subsample=None).fit(v).transform(v)
    for j, column in enumerate(columns):
        values = v[:, j]
        order = np.argsort(values, kind="stable")
        assert (np.diff(out[order, j]) >= -1e-9).all(), column  # order kept
        share = (values == values.min()).mean()
        if share > 0.5:  # the spike: its middle rank, where plain gives −5.2
            np.testing.assert_allclose(out[values == values.min(), j],
                                       norm.ppf(share / 2), atol=0.03)
            assert plain[values == values.min(), j].max() < -5
    # near normal: no column is dominated by a few far values (plain's spikes give σ 1.6-2.6)
    assert out.std(axis=0).max() < 1.1 and plain.std(axis=0).max() > 1.5
    # a column without a large spike is the plain transform, but for its extreme rows
    hour = columns.index("hour")
    assert np.median(np.abs(out[:, hour] - plain[:, hour])) < 0.01


def test_asinh_scaler_keeps_the_tails_apart_where_clipping_merges_them():
    rng = np.random.default_rng(2)
    v = rng.lognormal(5, 1.5, size=(2000, 1))  # a skewed count: compounds, money
    robust = SmoothClipScaler().fit(v)
    x = (v - np.median(v)) * robust.factor_
    np.testing.assert_allclose(AsinhScaler().fit_transform(v), np.arcsinh(x))
    np.testing.assert_allclose(AsinhScaler().fit(v).factor_, robust.factor_)
    # near the median both are about x: the bulk of the column is scaled alike
    near = np.quantile(v, [0.4, 0.6]).reshape(-1, 1)
    np.testing.assert_allclose(AsinhScaler().fit(v).transform(near), robust.transform(near),
                               atol=0.02)
    # 100 and 10,000 IQRs out: clipping maps both within 0.002 of 3, asinh a log(100) apart
    far = np.median(v) + np.array([[100.0], [10_000.0]]) / robust.factor_
    assert np.ptp(robust.transform(far)) < 2e-3
    np.testing.assert_allclose(np.ptp(AsinhScaler().fit(v).transform(far)), np.log(100),
                               rtol=1e-3)


def test_robust_or_quantile_gives_a_heavy_tailed_column_its_quantiles():
    """hpc_data's counts: a column with over 5% of its rows beyond 3 IQRs (which the clip
    maps to about ±3) is the quantile transform's, every other column the clip's, both
    exactly as the scalers alone make them."""
    df = load_dataset("hpc_data").iloc[:3000]
    columns = ["compounds", "input_fields", "iterations", "num_pending", "hour"]
    v = df[columns].to_numpy(dtype=float)
    n_quantiles = QuantileNormalScaler.quantile_count(len(v))
    out = RobustOrQuantileScaler(n_quantiles=n_quantiles, random_state=0).fit(v)
    robust = SmoothClipScaler().fit(v)
    beyond = (np.abs((v - robust.median_) * robust.factor_) > 3).mean(axis=0)
    assert out.tails_.tolist() == (beyond > 0.05).tolist()
    assert out.tails_.any() and not out.tails_.all()
    quantile = QuantileNormalScaler(n_quantiles=n_quantiles, random_state=0).fit(v)
    np.testing.assert_allclose(out.transform(v)[:, out.tails_],
                               quantile.transform(v)[:, out.tails_])
    np.testing.assert_allclose(out.transform(v)[:, ~out.tails_],
                               robust.transform(v)[:, ~out.tails_])


@pytest.mark.parametrize("numeric", NUMERIC)
def test_numeric_transform_is_fitted_on_training_rows_only(numeric):
    df = heavy()
    train, other = df.iloc[:1500], df.iloc[1500:].copy()
    meta, arrays = TablePreprocessor("y", numeric=numeric).fit(train).to_state()
    other["income"] *= 1000  # whatever other rows hold, the state learned from train is fixed
    pre = TablePreprocessor("y", numeric=numeric).fit(train)
    pre.transform(other)
    meta2, arrays2 = pre.to_state()
    assert meta2 == meta and arrays.keys() == arrays2.keys()
    assert all(np.array_equal(arrays[k], arrays2[k]) for k in arrays)
    mixed = TablePreprocessor("y", numeric=numeric).fit(pd.concat([train, other])).to_state()[1]
    assert any(not np.array_equal(arrays[k], mixed[k]) for k in arrays if k.startswith("num."))
    if numeric == "robust":  # the training rows' median maps to 0
        assert arrays["num.robust.median"][0] == np.nanmedian(train["income"])


@pytest.mark.parametrize("numeric", NUMERIC)
def test_numeric_transform_round_trips_exactly(numeric):
    df = heavy().assign(kind=list("abcdefghij") * 200)
    pre = TablePreprocessor("y", numeric=numeric).fit(df.iloc[:1500])
    loaded = roundtrip(pre)
    assert loaded.get_params() == pre.get_params() and loaded.numeric == numeric
    assert loaded.roles_ == pre.roles_ and loaded.feature_names_out_ == pre.feature_names_out_
    rest = df.iloc[1500:].copy()
    rest.loc[rest.index[:5], "income"] = [np.nan, 0.0, 1e15, -3.0, 7.5]
    rest.loc[rest.index[5], "kind"] = "unseen"
    np.testing.assert_array_equal(loaded.transform(rest), pre.transform(rest))
    np.testing.assert_array_equal(loaded.transform(df), pre.transform(df))


def test_state_saved_before_the_new_parameters_loads_as_before():
    df = hours()
    pre = TablePreprocessor("demand", numeric="standard", max_onehot=10).fit(df)
    assert pre.roles_.target_encoded == ["hour"]

    def as_version_1(meta):  # what caviar wrote before ``numeric`` existed
        meta["version"] = 1
        del meta["params"]["numeric"]

    old = roundtrip(pre, as_version_1)
    assert old.numeric == "standard" and old.max_onehot == 10
    assert old.roles_.target_encoded == ["hour"]
    np.testing.assert_array_equal(old.transform(df), pre.transform(df))


def test_bad_numeric_and_newer_state_are_one_line_errors():
    with pytest.raises(DataError,
                       match=r"numeric must be one of robust, asinh, quantile, standard"):
        TablePreprocessor("y", numeric="log").fit(heavy())

    def from_the_future(meta):
        meta["version"] = 99

    with pytest.raises(DataError, match=r"saved by a newer caviar \(state version 99\)"):
        roundtrip(TablePreprocessor("y").fit(heavy()), from_the_future)


def test_max_onehot_on_the_command_line_reaches_the_saved_models(tmp_path):
    """`--max-onehot` sets the limit for tune and train; the models they save encode the
    24-level hour column as the user asked, and a resumed run keeps it."""
    from typer.testing import CliRunner

    from caviar.cli import app
    from caviar.model import load_model

    data = tmp_path / "hours.csv"
    hours(n_days=20).to_csv(data, index=False)

    def roles(model_dir):
        pre = load_model(model_dir).preprocessor
        return pre.roles_.onehot, pre.roles_.target_encoded

    run = CliRunner().invoke(app, ["train", str(data), "--target", "demand", "--max-onehot", "5",
                                   "--epochs", "2", "--out", str(tmp_path / "panda")])
    assert run.exit_code == 0, run.output
    assert roles(tmp_path / "panda" / "model") == ([], ["hour"])
    run = CliRunner().invoke(app, ["resume", str(tmp_path / "panda"), "--epochs", "1"])
    assert run.exit_code == 0, run.output
    assert roles(tmp_path / "panda" / "model") == ([], ["hour"])

    space = tmp_path / "space.toml"
    space.write_text('[width]\nvalue = 8\n[depth]\nvalue = 1\n[epochs]\nvalue = 2\n')
    for limit, expected in (("5", ([], ["hour"])), ("24", (["hour"], []))):
        out = tmp_path / f"tune-{limit}"
        run = CliRunner().invoke(app, ["tune", str(data), "--target", "demand", "--trials", "2",
                                       "--population", "2", "--space", str(space),
                                       "--max-onehot", limit, "--out", str(out)])
        assert run.exit_code == 0, run.output
        assert roles(out / "model") == expected
