"""TablePreprocessor: imputation, scaling, one-hot and target encoding, targets, saving."""

import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score
from sklearn.tree import DecisionTreeRegressor
from sklearn.utils.validation import check_is_fitted

from caviar.data import DataError, TablePreprocessor, make_target_encoder, split_frame
from caviar.data.scalers import QuantileNormalScaler
from caviar.datasets import load_dataset

# The lecture's worked example (seeds/003): cars, whether each sold, and its price. The notes'
# "DITW" row is a handwriting slip for a second BMW.
CARS = ["Maruti", "Maruti", "Maruti", "BMW", "BMW", "RR", "RR"]
SOLD = [1, 1, 0, 0, 1, 1, 1]
PRICE = [1.2, 3.4, 5.2, 40.0, 60.0, 800.0, 260.0]
SOLD_MEANS = {"BMW": 1 / 2, "Maruti": 2 / 3, "RR": 1.0}
PRICE_MEANS = {"BMW": 50.0, "Maruti": 3.2667, "RR": 530.0}


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def encoder_of(pre: TablePreprocessor):
    return pre.column_transformer_.named_transformers_["te"].named_steps["encode"]


def scaler_of(pre: TablePreprocessor, part: str):
    return pre.column_transformer_.named_transformers_[part].named_steps["scale"]


def roundtrip(pre: TablePreprocessor) -> TablePreprocessor:
    """Save to JSON text and an .npz file in memory, and load back."""
    meta, arrays = pre.to_state()
    text = json.dumps(meta)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer) as saved:
        loaded = {name: saved[name] for name in saved.files}
    return TablePreprocessor.from_state(json.loads(text), loaded)


# ---------------------------------------------------------------------- target encoding


def test_seed_example_plain_category_means():
    # smooth=0 turns off the shrinkage toward the global mean: (sum + 0·mean) / (n + 0);
    # fit then transform (no folds) encodes every row with its whole category's mean.
    X = np.array(CARS, dtype=object)[:, None]
    sold = make_target_encoder("binary", smooth=0).fit(X, SOLD).transform(X).ravel()
    np.testing.assert_allclose(sold, [2 / 3] * 3 + [1 / 2] * 2 + [1.0] * 2)
    price = make_target_encoder("regression", smooth=0).fit(X, PRICE).transform(X).ravel()
    np.testing.assert_allclose(price, [3.2667] * 3 + [50.0] * 2 + [530.0] * 2, atol=1e-4)


@pytest.mark.parametrize("target, values, means", [("sold", SOLD, SOLD_MEANS),
                                                   ("price", PRICE, PRICE_MEANS)])
def test_seed_example_through_the_preprocessor(target, values, means):
    df = pd.DataFrame({"car": CARS, target: values})
    pre = TablePreprocessor(target, smooth=0, max_onehot=0).fit(df)  # max_onehot=0: encode
    assert pre.roles_.target_encoded == ["car"]
    assert pre.task_ == ("binary" if target == "sold" else "regression")
    encoder = encoder_of(pre)
    learned = dict(zip(encoder.categories_[0].tolist(), encoder.encodings_[0], strict=True))
    assert learned == pytest.approx(means, abs=1e-4)
    # transform = the category means, standardized with the training rows' mean and scale
    scaler = scaler_of(pre, "te")
    column = pre.transform(df)[:, 0].astype(float) * scaler.scale_[0] + scaler.mean_[0]
    np.testing.assert_allclose(column, [means[c] for c in CARS], rtol=1e-5, atol=1e-4)
    # an unseen car gets the global mean
    unseen = pre.transform(pd.DataFrame({"car": ["Tata"]}))[0, 0] * scaler.scale_[0]
    assert unseen + scaler.mean_[0] == pytest.approx(np.mean(values), rel=1e-5)


def test_auto_smoothing_shrinks_toward_the_global_mean():
    df = pd.DataFrame({"car": CARS, "sold": SOLD})
    plain = encoder_of(TablePreprocessor("sold", smooth=0, max_onehot=0).fit(df)).encodings_[0]
    auto = encoder_of(TablePreprocessor("sold", max_onehot=0).fit(df)).encodings_[0]
    mean = np.mean(SOLD)
    assert np.all(np.abs(auto - mean) <= np.abs(plain - mean) + 1e-12)
    assert np.any(np.abs(auto - mean) < np.abs(plain - mean))


def test_multiclass_target_encoding_has_one_column_per_class():
    df = load_dataset("wage")
    # max_onehot=10: age (61 levels) target encoded; by default it would be one-hot
    pre = TablePreprocessor("education", categorical=["age"], drop=["logwage", "wage"],
                            max_onehot=10)
    X = pre.fit_transform(df)
    assert pre.task_ == "multiclass" and len(pre.classes_) == 5
    assert pre.roles_.target_encoded == ["age"]
    te_names = [n for n in pre.feature_names_out_ if n.startswith("te__")]
    assert te_names == [f"te__age_{k}" for k in range(5)]  # one per class index
    assert X.shape == (3000, pre.n_features_out_)
    # out-of-fold class shares, standardized: mean 0, sd 1 on the training rows
    te = X[:, [pre.feature_names_out_.index(n) for n in te_names]]
    np.testing.assert_allclose(te.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(te.std(axis=0), 1, atol=1e-4)


def test_out_of_fold_encoding_stops_memorizing_an_id_column():
    # "id" is pure noise with about 2 rows per level; y depends on x only.
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({"x": rng.normal(size=n),
                       "id": [f"p{i}" for i in rng.integers(0, 1000, n)]})
    df["y"] = df["x"] + rng.normal(size=n)
    train, val = df.iloc[:2000], df.iloc[2000:]
    pre = TablePreprocessor("y")
    X_oof = pre.fit_transform(train)  # each row encoded without its own target
    X_in = pre.transform(train)  # in-sample: each row's encoding includes its own target
    X_val = pre.transform(val)
    assert pre.feature_names_out_ == ["num__x", "te__id"]

    def scores(X, Xv):
        model = DecisionTreeRegressor(max_depth=5, min_samples_leaf=20, random_state=0)
        model.fit(X, train["y"])
        return r2_score(train["y"], model.predict(X)), r2_score(val["y"], model.predict(Xv))

    train_in, val_in = scores(X_in, X_val)
    train_oof, val_oof = scores(X_oof, X_val)
    _, val_no_id = scores(X_in[:, :1], X_val[:, :1])
    assert train_in - val_in > 0.3  # memorized the id through its own target
    assert train_oof - val_oof < 0.15  # out-of-fold: no more than the tree's own overfitting
    assert val_oof > val_in + 0.1
    assert abs(val_oof - val_no_id) < 0.03  # as good as leaving the noise column out


# --------------------------------------------------------------------------- leakage


def test_fit_uses_training_rows_only():
    # numeric="standard": the μ and σ checked below (test_encoding_rules.py checks the others)
    df = load_dataset("baseball").iloc[:8000]
    train, val, test = split_frame(df, "r", seed=1)
    pre = TablePreprocessor("r", numeric="standard").fit(train)
    meta, arrays = pre.to_state()
    # the validation rows can be anything: the state learned from train is the same
    garbage = val.copy()
    garbage["r"] = 10_000
    garbage["g"] = -5.0
    garbage["id"] = "someone else"
    again = TablePreprocessor("r", numeric="standard").fit(train)
    meta2, arrays2 = again.to_state()
    assert meta2 == meta
    assert all(np.array_equal(arrays[k], arrays2[k]) for k in arrays)
    # transforming other rows learns nothing
    again.transform(garbage)
    meta3, arrays3 = again.to_state()
    assert meta3 == meta and all(np.array_equal(arrays[k], arrays3[k]) for k in arrays)
    # fitting with those rows in would change it
    mixed, mixed_arrays = TablePreprocessor("r", numeric="standard").fit(
        pd.concat([train, garbage])).to_state()
    assert not np.array_equal(mixed_arrays["num.scale.mean"], arrays["num.scale.mean"])
    # μ and σ from the training rows: exactly standard there, not on other rows
    X_train = pre.transform(train)
    numeric = [i for i, n in enumerate(pre.feature_names_out_) if n.startswith("num__")]
    np.testing.assert_allclose(X_train[:, numeric].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(X_train[:, numeric].std(axis=0), 1, atol=1e-3)
    medians = train[pre.roles_.numeric].median().to_numpy()
    np.testing.assert_allclose(arrays["num.median"], medians)


def test_fit_and_fit_transform_learn_the_same_state():
    df = load_dataset("baseball").iloc[:4000]
    # max_onehot=10: id and team target encoded (by default both are one-hot on 4,000 rows)
    a = TablePreprocessor("r", max_onehot=10).fit(df)
    b = TablePreprocessor("r", max_onehot=10)
    X = b.fit_transform(df)
    meta_a, arrays_a = a.to_state()
    meta_b, arrays_b = b.to_state()
    assert meta_a == meta_b and all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a)
    te = [i for i, n in enumerate(b.feature_names_out_) if n.startswith("te__")]
    assert not np.allclose(X[:, te], b.transform(df)[:, te])  # out-of-fold ≠ in-sample


# ------------------------------------------------------------- missing and unseen values


def test_missing_values_and_unseen_categories():
    train = pd.DataFrame({
        "a": [1.0, np.nan, 3.0, 4.0, 10.0, 6.0] * 5,
        "b": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] * 5,
        "color": ["red", None, "blue", "red", "blue", "red"] * 5,
        "y": [0.5, 1.5, 2.0, 3.5, 4.0, 6.0] * 5,
    })
    pre = TablePreprocessor("y", numeric="standard").fit(train)  # the μ, σ checked below
    assert pre.feature_names_out_ == [
        "num__a", "num__b", "num__missingindicator_a",  # indicator only where training had NaN
        "onehot__color___missing__", "onehot__color_blue", "onehot__color_red",
    ]
    new = pd.DataFrame({"a": [np.nan], "b": [np.nan], "color": ["green"]})
    row = pre.transform(new)[0]
    scale = scaler_of(pre, "num")
    a_median = np.median([1.0, 3.0, 4.0, 10.0, 6.0])
    assert row[0] == pytest.approx((a_median - scale.mean_[0]) / scale.scale_[0])
    assert row[1] == pytest.approx((3.5 - scale.mean_[1]) / scale.scale_[1])  # median of b
    assert row[2] == pytest.approx((1 - scale.mean_[2]) / scale.scale_[2])  # missing
    assert row[3:].tolist() == [0, 0, 0]  # an unseen color: all zeros
    missing_color = pre.transform(train.assign(color=None).iloc[:1])[0]
    assert missing_color[3:].tolist() == [1, 0, 0]  # missing is a level of its own


def test_unseen_categories_are_named_when_predicting_and_silent_otherwise():
    """Levels the training rows never had (a missing value where training had none, too):
    one warning naming each column, its unseen levels most frequent first and their rows;
    the matrix is the same as without the warning, and a plain transform (what a search does
    with its own validation rows) is silent."""
    train = pd.DataFrame({"x": np.arange(12.0), "color": ["red", "blue", "green"] * 4,
                          "size": ["S", "M"] * 6, "y": np.arange(12.0)})
    pre = TablePreprocessor("y", codes=True).fit(train)
    new = pd.DataFrame({"x": [1.0] * 8,
                        "color": ["red", "pink", "pink", "teal", "grey", "gold", "gold", None],
                        "size": ["S", "M", "XL", "S", "M", "S", "M", "S"]})
    with pytest.warns(UserWarning) as caught:
        X = pre.transform(new, warn_unseen=True)
    assert [str(w.message) for w in caught] == [
        "7 of 8 row(s) hold categories unseen in training, predicted as no known level: "
        "'color' ('pink' in 2 rows, 'gold' in 2 rows, 'teal' in 1 row, 2 more level(s)); "
        "'size' ('XL' in 1 row)"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(pre.transform(new), X)
        pre.transform(train, warn_unseen=True)  # every level known: no warning
    assert X[1, -1] == 0 and X[0, -1] > 0  # the unseen level's embedding code is 0
    with pytest.warns(UserWarning, match=r"1 of 1 row\(s\).*'color' \(missing in 1 row\)"):
        pre.transform(new.iloc[7:], warn_unseen=True)


def test_integer_codes_and_numbers_as_categories():
    df = pd.DataFrame({"code": [7, 3, 7, 3, 5, 7] * 5, "y": [0, 1, 1, 0, 1, 0] * 5})
    pre = TablePreprocessor("y", categorical=["code"]).fit(df)
    assert pre.roles_.onehot == ["code"]
    assert pre.feature_names_out_ == ["onehot__code_3", "onehot__code_5", "onehot__code_7"]
    # the same codes read as floats (e.g. because of a missing value) are the same levels
    floats = pd.DataFrame({"code": [7.0, np.nan, 5.0]})
    assert pre.transform(floats).tolist() == [[0, 0, 1], [0, 0, 0], [0, 1, 0]]


# ----------------------------------------------------------------------------- targets


def test_encode_and_decode_targets():
    df = load_dataset("default")
    pre = TablePreprocessor("default").fit(df)
    y = pre.encode_target(df["default"])
    assert y.dtype == np.int64 and pre.classes_.tolist() == ["No", "Yes"]
    assert y.sum() == (df["default"] == "Yes").sum()
    assert pre.decode_target(y).tolist() == df["default"].tolist()
    with pytest.raises(DataError, match=r"class\(es\) unknown at training, such as 'Maybe'") as e:
        pre.encode_target(["No", "Maybe"])
    one_line(e)
    assert "regression" not in str(e.value)  # labels that are words: no quantity to suggest
    # whole numbers of few values are taken for labels (a year): the task may be the fix
    years = pd.DataFrame({"x": range(40), "year": [1986, 1987, 1988, 1989] * 10})
    by_year = TablePreprocessor("year").fit(years)
    assert by_year.task_ == "multiclass"
    with pytest.raises(DataError, match=r"unknown at training, such as 1985; .*rows that hold "
                                        r"them; if the target is a quantity, not labels, train "
                                        r"with --task regression") as e:
        by_year.encode_target([1986, 1985])
    one_line(e)

    wage = load_dataset("wage")
    reg = TablePreprocessor("wage", drop=["logwage"]).fit(wage)
    z = reg.encode_target(wage["wage"])
    assert z.dtype == np.float32
    assert reg.target_mean_ == pytest.approx(wage["wage"].mean())
    assert reg.target_std_ == pytest.approx(wage["wage"].std(ddof=0))
    assert abs(z.mean()) < 1e-5 and z.std() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(reg.decode_target(z), wage["wage"], rtol=1e-6)

    ints = pd.DataFrame({"x": np.arange(30.0), "k": [3, 1, 2] * 10})
    pre = TablePreprocessor("k").fit(ints)
    assert pre.task_ == "multiclass" and pre.classes_.tolist() == [1, 2, 3]
    assert pre.encode_target([3, 1, 2.0]).tolist() == [2, 0, 1]
    assert pre.decode_target([2, 0]).tolist() == [3, 1]


# ---------------------------------------------------------------------- bad input


def test_fit_errors_are_one_line():
    df = load_dataset("wage")
    with pytest.raises(DataError, match=r"'wagee' not found \(did you mean wage") as e:
        TablePreprocessor("wagee").fit(df)
    one_line(e)
    with pytest.raises(DataError, match=r"target column 'wage' is all missing") as e:
        TablePreprocessor("wage").fit(df.assign(wage=np.nan))
    one_line(e)
    with pytest.raises(DataError, match=r"target 'region' has a single value") as e:
        TablePreprocessor("region").fit(df)
    one_line(e)
    bad = df.assign(age=df["age"].astype(str))
    bad.loc[42, "age"] = "forty"
    with pytest.raises(DataError, match=r"column 'age' holds numbers.*'forty' \(row 42\)") as e:
        TablePreprocessor("wage").fit(bad)
    one_line(e)


def test_missing_target_rows_are_dropped_with_a_warning():
    df = load_dataset("wage")
    df.loc[[3, 5, 8], "wage"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 3 of 3000 rows whose target 'wage' is missing"):
        X = TablePreprocessor("wage", drop=["logwage"]).fit_transform(df)
    assert X.shape[0] == 2997


def test_predict_time_errors_and_warnings():
    df = load_dataset("default")
    pre = TablePreprocessor("default").fit(df)
    with pytest.raises(DataError, match=r"lacks 2 column\(s\).*'balance', 'student'") as e:
        pre.transform(df.drop(columns=["balance", "student"]))
    one_line(e)
    with pytest.warns(UserWarning, match=r"ignoring 2 column\(s\) unknown at training: "
                                         r"'notes', 'extra'"):
        X = pre.transform(df.assign(notes="hi", extra=1.0))
    np.testing.assert_array_equal(X, pre.transform(df))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the target and known columns are not "extra"
        assert pre.transform(df.drop(columns=["default"])).shape == (10000, 4)
    text = df.assign(income=df["income"].astype(object))
    text.loc[7, "income"] = "n/a?"
    with pytest.raises(DataError, match=r"numeric column 'income' holds text such as 'n/a\?' "
                                        r"\(row 7\)") as e:
        pre.transform(text)
    one_line(e)


# ------------------------------------------------------------------------- real data


def test_real_data_shapes():
    default = TablePreprocessor("default")
    X = default.fit_transform(load_dataset("default"))
    assert X.shape == (10000, 4) and X.dtype == np.float32
    assert default.feature_names_out_ == ["num__balance", "num__income", "onehot__student_No",
                                          "onehot__student_Yes"]

    wage = TablePreprocessor("wage", drop=["logwage"])
    X = wage.fit_transform(load_dataset("wage"))
    assert X.shape == (3000, 2 + 5 + 4 + 5 + 2 + 2 + 2)
    assert "region" in wage.roles_.ignored and "logwage" in wage.roles_.ignored
    assert not any("logwage" in n or "region" in n for n in wage.feature_names_out_)

    baseball = TablePreprocessor("r")
    X = baseball.fit_transform(load_dataset("baseball"))
    indicators = [n for n in baseball.feature_names_out_ if "missingindicator" in n]
    assert {n.split("_")[-1] for n in indicators} == {
        "rbi", "sb", "cs", "so", "ibb", "hbp", "sh", "sf", "gidp"}
    # numeric, indicators, team (132 levels), lg (+missing), te: id (1,228 levels > 1,000)
    assert baseball.n_features_out_ == 18 + 9 + 132 + 7 + 1
    assert baseball.roles_.onehot == ["team", "lg"]
    assert baseball.feature_names_out_[-1] == "te__id"
    assert X.shape == (21699, 167) and np.isfinite(X).all()
    assert baseball.columns_["id"] == "O" and baseball.columns_["cs"] == "f"

    diamonds = TablePreprocessor("price")
    X = diamonds.fit_transform(load_dataset("diamonds"))
    assert X.shape == (53940, 6 + 5 + 7 + 8)
    assert "Unnamed: 0" in diamonds.roles_.ignored


# ------------------------------------------------------------------------ save / load


def test_state_roundtrip_regression_with_unseen_and_missing():
    df = load_dataset("baseball")
    train, val, test = split_frame(df, "r", seed=2)
    pre = TablePreprocessor("r", random_state=7).fit(train)
    other = test.copy()
    other.loc[other.index[:50], "id"] = "new_player"  # unseen categories
    other.loc[other.index[50:100], "team"] = None
    other.loc[other.index[100:150], "lg"] = "XL"
    other.loc[other.index[:200:3], ["g", "cs", "ab"]] = np.nan  # g, ab: no training NaN
    loaded = roundtrip(pre)
    check_is_fitted(loaded.column_transformer_)
    assert loaded.get_params() == pre.get_params()
    assert loaded.roles_ == pre.roles_ and loaded.columns_ == pre.columns_
    assert loaded.feature_names_out_ == pre.feature_names_out_
    for rows in (other, train, val):
        np.testing.assert_array_equal(loaded.transform(rows), pre.transform(rows))
    z = pre.encode_target(test["r"])
    np.testing.assert_array_equal(loaded.encode_target(test["r"]), z)
    np.testing.assert_array_equal(loaded.decode_target(z), pre.decode_target(z))


@pytest.mark.parametrize("labels", [["No", "Yes", "Maybe"], [0, 1, 2], [False, True]])
def test_state_roundtrip_classification_keeps_label_types(labels):
    df = load_dataset("wage").drop(columns=["logwage"])
    rng = np.random.default_rng(0)
    df["label"] = [labels[i] for i in rng.integers(0, len(labels), len(df))]
    df.loc[df.index[::7], "maritl"] = None
    # max_onehot=10: age (61 levels) target encoded, as by default it would be one-hot
    pre = TablePreprocessor("label", categorical=["age", "year"], max_onehot=10).fit(
        df.iloc[:2000])
    assert pre.roles_.target_encoded == ["age"]  # year: 7 levels, one-hot
    loaded = roundtrip(pre)
    rest = df.iloc[2000:].copy()
    rest.loc[rest.index[:20], "age"] = 99  # unseen
    np.testing.assert_array_equal(loaded.transform(rest), pre.transform(rest))
    assert loaded.classes_.tolist() == pre.classes_.tolist() == sorted(labels)
    assert loaded.classes_.dtype == pre.classes_.dtype
    y = pre.encode_target(rest["label"])
    decoded = loaded.decode_target(y)
    assert decoded.tolist() == rest["label"].tolist()
    assert [type(v) for v in decoded.tolist()] == [type(v) for v in rest["label"].tolist()]


def test_from_state_rejects_foreign_state():
    with pytest.raises(DataError, match=r"not a saved TablePreprocessor") as e:
        TablePreprocessor.from_state({"format": "something else"}, {})
    one_line(e)


def test_alternative_scalings_are_scikit_learns_and_survive_saving():
    """``numeric_alternatives``: the numeric values scaled another way, in a last block (before
    the codes), each its scaler (a scikit-learn transformer) fitted on the median-imputed
    training values; the first block, the categoricals and the codes are those of the table
    without it."""
    df = load_dataset("hpc_data").drop(columns="rownames")
    df.loc[::7, "compounds"] = np.nan  # the imputed median is scaled too
    train, test = df.iloc[:3000], df.iloc[3000:]
    both = TablePreprocessor("class", numeric_alternatives=("quantile",), codes=True)
    X = both.fit_transform(train)
    plain = TablePreprocessor("class", codes=True)
    X_plain = plain.fit_transform(train)
    block = both.numeric_alternative_columns()["quantile"]
    numeric = list(plain.roles_.numeric)
    assert [both.feature_names_out_[j] for j in block["columns"]] == [
        f"num_quantile__{c}" for c in numeric]
    values = train[numeric].fillna(train[numeric].median()).to_numpy(dtype=float)
    # the benchmarks' quantile transform of those values: 3000 // 30 quantiles, the jitter
    # drawn from the preprocessor's seed
    reference = QuantileNormalScaler(n_quantiles=100, random_state=both.random_state).fit(values)
    for Xp, rows in ((X, train), (both.transform(test), test)):
        expected = reference.transform(
            rows[numeric].fillna(train[numeric].median()).to_numpy(dtype=float))
        np.testing.assert_allclose(Xp[:, block["columns"]], expected, atol=1e-5)
    # numeric_columns (more than two values) map into the block in their order
    names = [plain.feature_names_out_[j].removeprefix("num__") for j in plain.numeric_columns()]
    assert [both.feature_names_out_[j] for j in block["numeric"]] == [
        f"num_quantile__{c}" for c in names]
    others = [j for j in range(X.shape[1]) if j not in block["columns"]]
    np.testing.assert_array_equal(X[:, others], X_plain)
    again = roundtrip(both)
    np.testing.assert_array_equal(again.transform(test), both.transform(test))
    assert again.numeric_alternative_columns() == both.numeric_alternative_columns()
    with pytest.raises(DataError, match="numeric scalings must differ"):
        TablePreprocessor("class", numeric_alternatives=("robust",)).fit(train)
    with pytest.raises(DataError, match="numeric must be one of robust, asinh, quantile, standard, "
                                        "robust-or-quantile, got 'log'"):
        TablePreprocessor("class", numeric_alternatives=("log",)).fit(train)


def test_each_output_column_is_made_from_one_feature_of_its_own_row():
    """``feature_columns``: every output column belongs to one feature, and shuffling that
    feature's rows in the table shuffles exactly its columns (what permutation importance
    shuffles instead of preprocessing the table again): numbers with missing values (and
    their indicator), the same in another scaling, a date's parts, one-hot, a target-encoded
    identifier (one column per class) and codes."""
    rng = np.random.default_rng(0)
    n = 240
    df = pd.DataFrame({
        "size": np.where(rng.random(n) < 0.2, np.nan, rng.lognormal(size=n)),
        "count": rng.integers(0, 9, n).astype(float),
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 900, n), "h"),
        "shade": rng.choice(["ash", "bone", "clay"], n),
        "shop": rng.choice([f"s{i}" for i in range(60)], n),
        "grade": rng.choice(["a", "b", "c"], n)})
    pre = TablePreprocessor(target="grade", max_onehot=5, codes=True,
                            numeric_alternatives=["quantile"])
    pre.fit(df)
    assert pre.roles_.target_encoded == ["shop"] and pre.roles_.datetime == ["when"]
    made_from = pre.feature_columns()
    assert list(made_from) == pre.roles_.features
    assert sorted(j for cols in made_from.values() for j in cols) == list(
        range(pre.n_features_out_))
    names = pre.feature_names_out_
    assert {names[j] for j in made_from["size"]} == {
        "num__size", "num__missingindicator_size", "num_quantile__size"}
    assert len(made_from["shop"]) == 3 + 1  # a column per class, and its code
    encoded, order = pre.transform(df), rng.permutation(n)
    for feature, columns in made_from.items():
        shuffled = df.copy()
        shuffled[feature] = df[feature].to_numpy()[order]
        expected = encoded.copy()
        expected[:, columns] = encoded[order][:, columns]
        np.testing.assert_array_equal(pre.transform(shuffled), expected, err_msg=feature)
