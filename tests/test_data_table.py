"""Reading tables, the task, column roles and splits (caviar.data, caviar.datasets)."""

import gzip
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from caviar.data import (
    DataError,
    Roles,
    TablePreprocessor,
    infer_roles,
    infer_task,
    prepare,
    read_table,
    split_frame,
)
from caviar.data.numbers import to_numbers
from caviar.datasets import dataset_path, list_datasets, load_dataset


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------- datasets


def test_bundled_datasets():
    assert list_datasets() == ["baseball", "default", "diamonds", "hi", "hpc_data",
                               "loans_full_schema", "snmesp", "txhousing", "wage"]
    assert dataset_path("wage").is_file()
    assert load_dataset("default").shape == (10000, 4)
    assert load_dataset("wage").shape == (3000, 11)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(ValueError, match=r"'wag'.*did you mean wage.*known: baseball"):
        load_dataset("wag")


# ----------------------------------------------------------------------------- read_table


def test_read_csv_gz_parquet_and_frame(tmp_path):
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    df.to_csv(tmp_path / "t.csv", index=False)
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        df.to_csv(f, index=False)
    df.to_parquet(tmp_path / "t.parquet")
    (tmp_path / "semi.csv").write_text("a;b\n1;x\n2;y\n3;\n")
    for name in ("t.csv", "t.csv.gz", "t.parquet", "semi.csv"):
        got = read_table(tmp_path / name)
        assert got["a"].tolist() == [1, 2, 3], name
        assert got["b"].isna().tolist() == [False, False, True], name
    copy = read_table(df)
    copy.loc[0, "a"] = 99
    assert df.loc[0, "a"] == 1  # a copy
    assert read_table(str(tmp_path / "t.csv")).shape == (3, 2)
    assert read_table(pd.DataFrame({0: [1], 1: [2]})).columns.tolist() == ["0", "1"]


def test_read_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match=r"not found.*check the path") as e:
        read_table(tmp_path / "nope.csv")
    one_line(e)
    (tmp_path / "data.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match=r"did you mean data.csv") as e:
        read_table(tmp_path / "dta.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"'.*empty.csv' is empty") as e:
        read_table(tmp_path / "empty.csv")
    one_line(e)
    (tmp_path / "blank.csv").write_text("\n\n")
    with pytest.raises(DataError, match=r"no data") as e:
        read_table(tmp_path / "blank.csv")
    one_line(e)
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"header but no rows") as e:
        read_table(tmp_path / "header.csv")
    one_line(e)
    (tmp_path / "book.xlsx").write_bytes(b"PK\x03\x04 not really excel")
    with pytest.raises(DataError, match=r"book\.xlsx' as an Excel workbook \(.*\); open it in "
                                        r"a spreadsheet and save it again, or as CSV") as e:
        read_table(tmp_path / "book.xlsx")
    one_line(e)
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0 an old workbook")
    with pytest.raises(DataError, match=r"\.xls files are not supported; save it as CSV, "
                                        r"Parquet or \.xlsx") as e:
        read_table(tmp_path / "old.xls")
    one_line(e)
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"can't read .*binary.csv") as e:
        read_table(tmp_path / "binary.csv")
    one_line(e)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"can't read .*broken.parquet") as e:
        read_table(tmp_path / "broken.parquet")
    one_line(e)
    with pytest.raises(DataError, match=r"is a folder") as e:
        read_table(tmp_path)
    with pytest.raises(DataError, match=r"can't read a list") as e:
        read_table([1, 2])


# ------------------------------------------------------------------------------ infer_task


@pytest.mark.parametrize(
    "y, task",
    [
        (["No", "Yes", "No"], "binary"),
        ([True, False, True], "binary"),
        (pd.Series(["a", "b", "c", "a"], dtype="category"), "multiclass"),
        ([0, 1, 1, 0, 1], "binary"),
        ([0.0, 1.0, np.nan, 1.0], "binary"),  # 0/1 read as floats because of a missing value
        ([1, 2, 3, 1, 2, 3, 1, 2], "multiclass"),
        ([1.5, 2.0, 3.25], "regression"),
        (list(range(50)) * 2, "regression"),  # integers with many distinct values
        ([1, 2, 3, 4, 5, 6], "regression"),  # every value distinct: continuous
    ],
)
def test_infer_task(y, task):
    assert infer_task(y) == task


def test_task_override_is_checked():
    assert infer_task([0, 1, 2, 0, 1, 2, 0], task="regression") == "regression"
    with pytest.raises(DataError, match=r"task must be one of binary, multiclass, regression"):
        infer_task([0, 1], task="classification")
    with pytest.raises(DataError, match=r"task='binary' needs 2 classes but target 'y' has 3"):
        infer_task(pd.Series([0, 1, 2], name="y"), task="binary")
    with pytest.raises(DataError, match=r"can't be a regression target") as e:
        infer_task(["a", "b"], task="regression")
    one_line(e)


def test_target_all_missing_or_single_class():
    with pytest.raises(DataError, match=r"target 'y' is all missing") as e:
        infer_task(pd.Series([np.nan, np.nan], name="y"))
    one_line(e)
    with pytest.raises(DataError, match=r"target 'y' has a single value \('Yes'\)") as e:
        infer_task(pd.Series(["Yes", "Yes", None], name="y"))
    one_line(e)
    with pytest.raises(DataError, match=r"target 'y' has a single value \(1\)"):
        infer_task(pd.Series([1, 1, 1], name="y"))
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [None, None, None]})
    with pytest.raises(DataError, match=r"target column 'y' is all missing") as e:
        split_frame(df, "y")
    one_line(e)


def test_numbers_with_a_typo_are_not_classes():
    """A regression target read as text because one value is a typo would make every number
    a class (and leave no row to validate); numbers that look like labels stay labels."""
    prices = pd.Series(["3.5", "2.25", "oops", "7.0", "1.75", "5.5"], name="y")
    with pytest.raises(DataError, match=r"target 'y' is numbers except 1 value\(s\) such as "
                                        r"'oops' \(row 2\); fix them") as e:
        infer_task(prices)
    one_line(e)
    assert infer_task(prices, task="multiclass") == "multiclass"  # asked for: labels
    assert infer_task(["1", "2", "unknown", "1", "2", "unknown"]) == "multiclass"


def test_a_target_of_ids_is_refused_where_rows_must_be_held_back():
    df = pd.DataFrame({"x": np.arange(30.0), "y": [f"id{i}" for i in range(30)]})
    with pytest.raises(DataError, match=r"every class of target 'y' has a single row, such as "
                                        r"'id0': no row can be validated or tested") as e:
        split_frame(df, "y")
    one_line(e)
    train, val, test = split_frame(df, "y", val_size=0.0, test_size=0.0)  # nothing held back
    assert len(train) == 30


# ----------------------------------------------------------------------------- infer_roles


def toy(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "Unnamed: 0": np.arange(n) + 5,
        "size": rng.normal(size=n),
        "code": rng.integers(0, 3, n),
        "color": rng.choice(["red", "green", "blue"], n),
        "city": [f"c{i}" for i in rng.integers(0, 15, n)],
        "name": [f"person {i}" for i in range(n)],
        "flag": rng.random(n) < 0.5,
        "same": 3.0,
        "y": rng.choice(["no", "yes"], n),
    })


def test_infer_roles_toy():
    roles = infer_roles(toy(), "y")
    assert roles.task == "binary"
    assert roles.numeric == ["size", "code"]
    assert roles.onehot == ["color", "flag"]
    assert roles.target_encoded == ["city"]
    assert set(roles.ignored) == {"Unnamed: 0", "name", "same"}
    assert "row index" in roles.ignored["Unnamed: 0"]
    assert "identifier" in roles.ignored["name"]
    assert "constant" in roles.ignored["same"]
    forced = infer_roles(toy(), "y", categorical=["code"], drop=["color"], max_onehot=2)
    assert forced.onehot == ["flag"]
    assert forced.target_encoded == ["code", "city"]
    assert forced.ignored["color"].startswith("dropped by the user")
    assert "categorical=" in forced.reasons["code"]


def test_columns_of_lists_are_not_features():
    # what pandas reads from Parquet list and struct columns: arrays and dicts in each cell
    n = 30
    df = pd.DataFrame({"x": np.linspace(0, 1, n), "y": [0, 1] * 15})
    df["tags"] = [np.array([i, i + 1]) for i in range(n)]
    df["meta"] = [{"k": i} for i in range(n)]
    roles = infer_roles(df, "y")
    assert roles.numeric == ["x"]
    assert roles.ignored["tags"].startswith("holds ndarrays, not single values")
    assert roles.ignored["meta"].startswith("holds dicts")
    with pytest.raises(DataError, match=r"target 'tags' holds ndarrays, not single values"):
        infer_roles(df, "tags")


def test_row_index_columns():
    n = 30
    x = np.linspace(0, 1, n)
    df = pd.DataFrame({"index": np.arange(n), "x": x, "count": np.arange(1, n + 1),
                       "y": [0, 1] * 15})
    roles = infer_roles(df, "y")
    assert list(roles.ignored) == ["index"]  # a first column named index counting the rows
    assert roles.numeric == ["x", "count"]  # a named column counting rows is kept
    blank = pd.DataFrame({"": np.arange(1, n + 1), "x": x, "y": [0, 1] * 15})
    assert list(infer_roles(blank, "y").ignored) == [""]


def test_roles_describe_and_json():
    roles = infer_roles(toy(), "y", drop=["color"])
    text = roles.describe()
    lines = text.splitlines()
    assert lines[0].split() == ["column", "role", "reason"]
    assert len(lines) == 1 + 9
    assert any(line.split()[:2] == ["city", "target_encoded"] for line in lines)
    assert any(line.split()[:3] == ["color", "ignored", "dropped"] for line in lines)
    again = Roles.from_dict(json.loads(json.dumps(roles.to_dict())))
    assert again == roles
    assert again.features == ["size", "code", "flag", "city"]


def test_unknown_names_suggest_close_ones():
    df = load_dataset("wage")
    with pytest.raises(DataError, match=r"'wagee' not found \(did you mean wage") as e:
        infer_roles(df, "wagee")
    one_line(e)
    with pytest.raises(DataError, match=r"unknown column 'logwag' in drop \(did you mean logwage"):
        infer_roles(df, "wage", drop=["logwag"])
    with pytest.raises(DataError, match=r"unknown column 'agee' in categorical.*did you mean age"):
        infer_roles(df, "wage", categorical=["agee"])
    with pytest.raises(DataError, match=r"drop lists the target 'wage'"):
        infer_roles(df, "wage", drop=["wage"])


def test_numeric_column_with_text_values():
    values = [str(v) for v in range(60)]
    values[17] = "oops"
    df = pd.DataFrame({"amount": values, "y": [0.5 * i for i in range(60)]})
    with pytest.raises(DataError, match=r"column 'amount' holds numbers.*'oops' \(row 17\)") as e:
        infer_roles(df, "y")
    one_line(e)
    assert "categorical=['amount']" in str(e.value)
    assert infer_roles(df, "y", categorical=["amount"]).target_encoded == ["amount"]
    df["amount"] = [str(v) for v in range(60)]  # numbers stored as text: numeric
    assert infer_roles(df, "y").numeric == ["amount"]
    df["amount"] = ["a", "b", "c", "1"] * 15  # mostly text: categorical
    assert infer_roles(df, "y").onehot == ["amount"]


def test_numbers_as_spreadsheets_write_them_are_numbers():
    """Amounts exported as "$1,234.50", "-$3", "($3.00)" or "12.5%" are the numbers they
    write: the same features as the plain numbers, not a category of as many levels as rows
    (or an ID)."""
    rng = np.random.default_rng(3)
    amount = np.round(rng.uniform(-5000, 5000, 80), 2)
    share = np.round(rng.uniform(0, 1, 80), 3)
    plain = pd.DataFrame({"amount": amount, "share": share,
                          "y": np.round(amount / 100 + rng.normal(size=80), 2)})
    written = pd.DataFrame({
        "amount": [("-$" if i % 2 else "($") + f"{-v:,.2f}" + ("" if i % 2 else ")") if v < 0
                   else "$" + f"{v:,.2f}" for i, v in enumerate(amount)],
        "share": [f"{100 * v:.1f}%" for v in share],
        "y": [f"{v:,.2f}" for v in plain["y"] * 1000]})
    roles = infer_roles(written, "y")
    assert roles.task == "regression"  # a price target saved as text: numbers, not classes
    assert roles.numeric == ["amount", "share"]
    assert roles.reasons["amount"] == "text holding numbers"
    pre = TablePreprocessor("y").fit(written)
    want = TablePreprocessor("y").fit(plain.assign(y=plain["y"] * 1000))
    np.testing.assert_allclose(pre.transform(written), want.transform(plain), atol=1e-6)
    np.testing.assert_allclose(pre.encode_target(written["y"]),
                               want.encode_target(plain["y"] * 1000), atol=1e-6)
    assert written["amount"].str.startswith("(").any()  # an accountant's negatives too
    # a value that is no number is still named, as for any numeric column
    written.loc[7, "amount"] = "$12.3.4"
    with pytest.raises(DataError, match=r"column 'amount' holds numbers but 1 value\(s\) are "
                                        r"text, such as '\$12.3.4' \(row 7\)"):
        infer_roles(written, "y")
    # labels stay labels: whole numbers of few levels, a declared category
    assert infer_task(["1", "2", "3"] * 5) == "multiclass"
    assert infer_task(pd.Series(["1.5", "2.5", "3.5"] * 5, dtype="category")) == "multiclass"


def test_a_text_column_s_numbers_are_each_value_s_own():
    """A text column is read one distinct value at a time, then spread over its rows: every
    row's number is what its value alone reads as, missing values stay missing, and the
    index is kept."""
    rng = np.random.default_rng(0)
    pool = np.array(["1,234.5", "$12", "(£40)", "12%", "7", None, "n/a", "2:31:38", " 3 ",
                     "1e3", "abc", "", "(12", "9007199254740993", "12:75"], dtype=object)
    for dtype in (object, "string"):
        column = pd.Series(rng.choice(pool, size=500), index=np.arange(500) * 3, dtype=dtype)
        alone = [to_numbers(pd.Series([v], dtype=dtype)).iloc[0] for v in column]
        read = to_numbers(column)
        assert read.index.equals(column.index)
        np.testing.assert_array_equal(read.to_numpy(), np.array(alone, dtype=float))
        assert read[column.isna()].isna().all()


def test_missing_value_markers_are_missing_values(tmp_path):
    """The UCI repository's '?' and a spreadsheet's failed cells (#DIV/0!, #VALUE!) in a
    file are missing values, named in one warning: a column of numbers stays numbers (with
    its missing-value indicator), a target's marked rows are dropped like blank ones."""
    rng = np.random.default_rng(0)
    x = [f"{v:.3f}" for v in rng.normal(size=40)]
    x[3], x[9], x[20] = "?", "#DIV/0!", " #VALUE! "
    y = [f"{v:.2f}" for v in rng.normal(size=40)]
    y[5] = "?"
    pd.DataFrame({"x": x, "k": ["a", "?"] * 20, "y": y}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.warns(UserWarning) as caught:
        df = read_table(tmp_path / "t.csv")
    message, = [str(w.message) for w in caught]
    assert message.endswith("read 24 value(s) '?' '#DIV/0!' '#VALUE!' as missing, in 'x', "
                            "'k', 'y'")
    assert df["x"].dtype == np.float64 and df["x"].isna().sum() == 3
    assert df["y"].dtype == np.float64 and df["y"].isna().sum() == 1
    roles = infer_roles(df, "y")
    assert roles.task == "regression" and roles.numeric == ["x"] and roles.onehot == ["k"]


def test_no_features_left():
    df = pd.DataFrame({"Unnamed: 0": range(5), "k": 1, "y": [1.0, 2.5, 3.0, 4.5, 5.0]})
    with pytest.raises(DataError, match=r"no usable feature columns") as e:
        infer_roles(df, "y")
    one_line(e)


# ------------------------------------------------------------------ real data: roles


def test_roles_default():
    roles = infer_roles(load_dataset("default"), "default")
    assert roles.task == "binary"
    assert roles.numeric == ["balance", "income"]
    assert roles.onehot == ["student"]
    assert roles.target_encoded == [] and roles.ignored == {}


def test_roles_wage():
    df = load_dataset("wage")
    roles = infer_roles(df, "wage", drop=["logwage"])
    assert roles.task == "regression"
    assert roles.numeric == ["year", "age"]
    assert roles.onehot == ["maritl", "race", "education", "jobclass", "health", "health_ins"]
    assert set(roles.ignored) == {"region", "logwage"}
    assert "constant" in roles.ignored["region"]
    assert "logwage" in infer_roles(df, "wage").numeric  # the leak, unless the user drops it


def test_roles_baseball():
    roles = infer_roles(load_dataset("baseball"), "r")
    assert roles.task == "regression"
    assert list(roles.ignored) == ["Unnamed: 0"]
    assert roles.target_encoded == ["id"]  # 1,228 levels: more than MAX_ONEHOT_WIDTH
    assert roles.onehot == ["team", "lg"]  # team: 132 levels, 164 rows each
    assert {"year", "g", "ab", "cs", "ibb", "sf", "gidp"} <= set(roles.numeric)
    assert len(roles.numeric) == 18


def test_roles_diamonds():
    roles = infer_roles(load_dataset("diamonds"), "price")
    assert roles.task == "regression"
    assert list(roles.ignored) == ["Unnamed: 0"]
    assert roles.onehot == ["cut", "color", "clarity"]
    assert roles.numeric == ["carat", "depth", "table", "x", "y", "z"]


# ------------------------------------------------------------------------------- splits


def test_split_frame_stratified():
    df = load_dataset("default")
    train, val, test = split_frame(df, "default", "binary", seed=3)
    assert (len(train), len(val), len(test)) == (6000, 2000, 2000)
    ids = set(train.index) | set(val.index) | set(test.index)
    assert len(ids) == len(df)  # disjoint and complete
    share = df["default"].eq("Yes").mean()
    for part in (train, val, test):
        assert abs(part["default"].eq("Yes").mean() - share) < 0.002
    again = split_frame(df, "default", "binary", seed=3)
    assert again[1].index.equals(val.index)


def test_a_large_table_validates_on_5000_rows_and_trains_on_the_rest():
    # AutoGluon's holdout when it tunes: a fifth of the table up to 25,000 rows, then 5,000
    rng = np.random.default_rng(0)
    big = pd.DataFrame({"x": rng.normal(size=40_000), "y": rng.normal(size=40_000)})
    prepared = prepare(big, "y", seed=1)
    assert (len(prepared.train), len(prepared.validation), len(prepared.test)) == (
        27_000, 5_000, 8_000)
    assert len(prepared.X_train) == 27_000 and len(prepared.X_val) == 5_000
    # the test rows are carved first: the same rows as under the old fifth
    _, _, test = split_frame(big, "y", test_size=0.2, val_size=0.2, seed=1)
    assert prepared.test.index.equals(test.index)
    small = prepare(big.iloc[:10_000], "y", seed=1)
    assert (len(small.train), len(small.validation), len(small.test)) == (6_000, 2_000, 2_000)
    given = prepare(big, "y", seed=1, validation=big.iloc[:100])
    assert len(given.validation) == 100 and len(given.train) == 32_000
    assert len(prepare(big, "y", seed=1, val_size=0.25).validation) == 10_000


def test_split_frame_regression_small_classes_and_empty_parts():
    df = pd.DataFrame({"x": range(50), "y": np.linspace(0, 1, 50)})
    train, val, test = split_frame(df, "y", test_size=0.2, val_size=0)
    assert (len(train), len(val), len(test)) == (40, 0, 10)
    # a class with one row can't be stratified: split anyway, and say what it means
    rare = pd.DataFrame({"x": range(30), "y": ["a"] * 29 + ["b"]})
    with pytest.warns(UserWarning, match=r"1 class\(es\) of the target have a single row, "
                      r"such as 'b'.*add rows of them, or drop those rows"):
        parts = split_frame(rare, "y")
    assert sum(len(p) for p in parts) == 30
    with pytest.raises(DataError, match=r"test_size and val_size"):
        split_frame(df, "y", test_size=0.6, val_size=0.5)


def test_split_frame_drops_missing_target_with_count():
    df = pd.DataFrame({"x": range(20), "y": [1.5, None, 2.5, None] * 5})
    with pytest.warns(UserWarning, match=r"dropped 10 of 20 rows whose target 'y' is missing"):
        train, val, test = split_frame(df, "y")
    assert len(train) + len(val) + len(test) == 10


def test_no_warning_without_missing_target():
    df = pd.DataFrame({"x": range(20), "y": np.linspace(0, 1, 20)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_frame(df, "y")
