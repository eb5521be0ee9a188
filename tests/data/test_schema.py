"""Tests of meshfl.data.schema: coercion of users' data and the errors bad data gets."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshfl.config.errors import ConfigError, DataSchemaError, MeshflError
from meshfl.data.schema import Column, Schema, load_frame

METRICS = Schema(
    "operational-metrics data",
    (
        Column("cpu_pct", "number"),
        Column("samples", "integer"),
        Column("is_anomaly", "bool", required=False),
        Column("host", "text", required=False),
    ),
)

EVENTS = Schema(
    "threat_intel data",
    (
        Column("message", "text"),
        Column("threat_class", "category"),
        Column("timestamp", "datetime", required=False),
    ),
)


def metrics_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cpu_pct": ["12.5", 40, 99.0, "0"],
            "samples": [1, "2", 3.0, "4"],
            "is_anomaly": ["true", 0, "False", 1],
            "host": ["web-01", 7, "db-01", "fs-01"],
            "extra": ["kept", "as", "it", "is"],
        }
    )


# -- construction ------------------------------------------------------------------------


def test_names_and_required_follow_declaration_order() -> None:
    assert METRICS.names == ("cpu_pct", "samples", "is_anomaly", "host")
    assert METRICS.required == ("cpu_pct", "samples")


def test_columns_given_as_list_are_stored_as_tuple() -> None:
    schema = Schema("demo data", [Column("x", "number")])  # type: ignore[arg-type]
    assert isinstance(schema.columns, tuple)
    assert hash(schema) == hash(Schema("demo data", (Column("x", "number"),)))


def test_duplicate_column_in_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'x' twice"):
        Schema("demo data", (Column("x", "number"), Column("x", "text")))


def test_unknown_kind_lists_the_valid_kinds() -> None:
    with pytest.raises(ConfigError, match=r"'kind' parameter of Column 'x'.*'number'.*'float'"):
        Column("x", "float")  # type: ignore[arg-type]


# -- coercion ----------------------------------------------------------------------------


def test_validate_coerces_every_kind_and_keeps_extra_columns() -> None:
    out = METRICS.validate(metrics_frame())
    assert out["cpu_pct"].dtype == np.float64
    assert out["cpu_pct"].tolist() == [12.5, 40.0, 99.0, 0.0]
    assert out["samples"].dtype == np.int64
    assert out["samples"].tolist() == [1, 2, 3, 4]
    assert out["is_anomaly"].dtype == bool
    assert out["is_anomaly"].tolist() == [True, False, False, True]
    assert out["host"].tolist() == ["web-01", "7", "db-01", "fs-01"]
    assert pd.api.types.is_string_dtype(out["host"].dtype)
    assert out["extra"].tolist() == ["kept", "as", "it", "is"]
    assert list(out.columns) == list(metrics_frame().columns)


def test_validate_does_not_modify_the_input() -> None:
    frame = metrics_frame()
    before = frame.copy()
    METRICS.validate(frame)
    pd.testing.assert_frame_equal(frame, before)


def test_validate_keeps_the_index() -> None:
    frame = metrics_frame().set_axis(["a", "b", "c", "d"])
    assert METRICS.validate(frame).index.tolist() == ["a", "b", "c", "d"]


def test_datetime_and_category_columns() -> None:
    frame = pd.DataFrame(
        {
            "message": ["Failed password for root", "Accepted publickey"],
            "threat_class": ["brute_force", "benign"],
            "timestamp": ["2024-11-26 03:14:07", "2024-11-26T04:00:00"],
        }
    )
    out = EVENTS.validate(frame)
    assert pd.api.types.is_datetime64_any_dtype(out["timestamp"].dtype)
    assert out["timestamp"].iloc[1] == pd.Timestamp("2024-11-26 04:00:00")
    assert out["threat_class"].tolist() == ["brute_force", "benign"]


def test_optional_columns_may_be_absent() -> None:
    frame = metrics_frame().drop(columns=["is_anomaly", "host"])
    out = METRICS.validate(frame)
    assert "is_anomaly" not in out.columns
    assert out["cpu_pct"].dtype == np.float64


def test_missing_values_in_optional_columns_get_nullable_dtypes() -> None:
    schema = Schema(
        "demo data",
        (Column("x", "number"), Column("n", "integer", False), Column("b", "bool", False)),
    )
    out = schema.validate(pd.DataFrame({"x": [1.0, 2.0], "n": [3, None], "b": [None, "yes"]}))
    assert str(out["n"].dtype) == "Int64"
    assert out["n"].tolist()[0] == 3 and out["n"].isna().tolist() == [False, True]
    assert str(out["b"].dtype) == "boolean"
    assert out["b"].isna().tolist() == [True, False] and bool(out["b"].iloc[1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30))
def test_numbers_written_as_text_read_back_exactly(values: list[float]) -> None:
    schema = Schema("demo data", (Column("x", "number"),))
    out = schema.validate(pd.DataFrame({"x": [repr(v) for v in values]}))
    assert out["x"].tolist() == values


# -- errors ------------------------------------------------------------------------------


def test_missing_required_column_names_column_schema_and_expected_columns() -> None:
    frame = pd.DataFrame({"msg": ["x"], "threat_class": ["benign"]})
    with pytest.raises(DataSchemaError) as err:
        EVENTS.validate(frame)
    text = str(err.value)
    assert "the threat_intel data has no column 'message'" in text.lower()
    assert "message (text), threat_class (category)" in text
    assert "optionally timestamp (datetime)" in text
    assert "Got columns: msg, threat_class" in text


def test_missing_column_with_other_case_suggests_the_rename() -> None:
    frame = pd.DataFrame({"Message": ["x"], "threat_class": ["benign"]})
    with pytest.raises(DataSchemaError, match=r"rename 'Message' for 'message'"):
        EVENTS.validate(frame)


def test_mistyped_number_names_column_kind_row_and_value() -> None:
    frame = pd.DataFrame({"cpu_pct": [1.0, 2.0, 3.0, "high", "low"], "samples": [1] * 5})
    with pytest.raises(DataSchemaError) as err:
        METRICS.validate(frame)
    assert str(err.value).startswith(
        "Column 'cpu_pct' of the operational-metrics data must hold finite numbers; "
        "row 3 holds 'high'"
    )
    assert "1 more rows" in str(err.value)


def test_mistyped_integer_bool_and_datetime_are_named() -> None:
    base = {"cpu_pct": [1.0, 2.0], "samples": [1, 2]}
    with pytest.raises(DataSchemaError, match=r"'samples'.*whole numbers; row 1 holds 2.5"):
        METRICS.validate(pd.DataFrame({**base, "samples": [1, 2.5]}))
    with pytest.raises(DataSchemaError, match=r"'is_anomaly'.*booleans.*row 0 holds 'maybe'"):
        METRICS.validate(pd.DataFrame({**base, "is_anomaly": ["maybe", "true"]}))
    with pytest.raises(DataSchemaError, match=r"'is_anomaly'.*row 1 holds 2"):
        METRICS.validate(pd.DataFrame({**base, "is_anomaly": [0, 2]}))
    frame = pd.DataFrame(
        {"message": ["a", "b"], "threat_class": ["x", "y"], "timestamp": ["2024-01-01", "soon"]}
    )
    with pytest.raises(DataSchemaError, match=r"'timestamp'.*dates or timestamps; row 1 holds"):
        EVENTS.validate(frame)


def test_infinite_number_is_rejected() -> None:
    frame = pd.DataFrame({"cpu_pct": [1.0, math.inf], "samples": [1, 2]})
    with pytest.raises(DataSchemaError, match=r"row 1 holds inf"):
        METRICS.validate(frame)


def test_missing_values_in_required_column_name_column_and_count() -> None:
    frame = pd.DataFrame({"cpu_pct": [1.0, None, np.nan, 4.0], "samples": [1, 2, 3, 4]})
    with pytest.raises(DataSchemaError) as err:
        METRICS.validate(frame)
    assert "Column 'cpu_pct'" in str(err.value)
    assert "missing values in 2 of 4 rows (first: row 1)" in str(err.value)


def test_empty_frame_is_rejected() -> None:
    with pytest.raises(DataSchemaError, match=r"operational-metrics data is empty"):
        METRICS.validate(pd.DataFrame({"cpu_pct": [], "samples": []}))


def test_duplicate_schema_column_in_data_is_rejected() -> None:
    frame = pd.DataFrame([[1.0, 2.0, 3]], columns=["cpu_pct", "cpu_pct", "samples"])
    with pytest.raises(DataSchemaError, match=r"more than one column named 'cpu_pct'"):
        METRICS.validate(frame)


def test_schema_errors_are_value_errors_of_meshfl() -> None:
    with pytest.raises(ValueError) as err:
        METRICS.validate(pd.DataFrame({"x": [1]}))
    assert isinstance(err.value, MeshflError)


# -- load_frame --------------------------------------------------------------------------


def test_load_frame_validates_a_dataframe_without_modifying_it() -> None:
    frame = metrics_frame()
    out = load_frame(frame, METRICS)
    assert out is not frame
    assert out["samples"].dtype == np.int64
    assert frame["samples"].tolist() == [1, "2", 3.0, "4"]


def test_load_frame_reads_csv_from_str_and_path(tmp_path) -> None:
    path = tmp_path / "metrics.csv"
    METRICS.validate(metrics_frame()).to_csv(path, index=False)
    for data in (path, str(path)):
        out = load_frame(data, METRICS)
        assert out["cpu_pct"].tolist() == [12.5, 40.0, 99.0, 0.0]
        assert out["is_anomaly"].tolist() == [True, False, False, True]
        assert out["samples"].dtype == np.int64


def test_load_frame_reads_tsv(tmp_path) -> None:
    path = tmp_path / "metrics.tsv"
    path.write_text("cpu_pct\tsamples\n1.5\t2\n")
    assert load_frame(path, METRICS)["cpu_pct"].tolist() == [1.5]


def test_load_frame_errors_in_a_csv_name_the_column(tmp_path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("cpu_pct,samples\n1,1\n2,2\nhigh,3\n")
    with pytest.raises(DataSchemaError, match=r"Column 'cpu_pct'.*row 2 holds 'high'"):
        load_frame(path, METRICS)


def test_load_frame_nonexistent_path_is_named(tmp_path) -> None:
    path = tmp_path / "nowhere.csv"
    with pytest.raises(DataSchemaError, match=r"no file at '.*nowhere.csv'"):
        load_frame(path, METRICS)


def test_load_frame_directory_and_empty_file(tmp_path) -> None:
    with pytest.raises(DataSchemaError, match=r"is a directory"):
        load_frame(tmp_path, METRICS)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataSchemaError, match=r"is empty"):
        load_frame(empty, METRICS)


def test_load_frame_rejects_other_types_and_says_what_is_accepted() -> None:
    with pytest.raises(DataSchemaError) as err:
        load_frame([{"cpu_pct": 1}], METRICS)  # type: ignore[arg-type]
    assert "DataFrame or the path of a CSV or Parquet file" in str(err.value)
    assert "Got a list instead" in str(err.value)


_HAS_PARQUET = any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet"))


@pytest.mark.skipif(_HAS_PARQUET, reason="a Parquet engine is installed")
def test_parquet_without_engine_says_what_to_install(tmp_path) -> None:
    path = tmp_path / "metrics.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataSchemaError, match=r"needs pyarrow"):
        load_frame(path, METRICS)


@pytest.mark.skipif(not _HAS_PARQUET, reason="no Parquet engine installed")
def test_parquet_round_trip(tmp_path) -> None:  # pragma: no cover - depends on the env
    path = tmp_path / "metrics.parquet"
    METRICS.validate(metrics_frame()).to_parquet(path)
    assert load_frame(path, METRICS)["samples"].tolist() == [1, 2, 3, 4]


def test_categorical_text_becomes_strings_and_numbers_become_unix_times() -> None:
    frame = pd.DataFrame(
        {
            "message": pd.Categorical(["a", "b", "a"]),
            "threat_class": [1, 2, 1],
            "timestamp": [1_732_590_847, 1_732_590_848, 1_732_590_849],
        }
    )
    out = EVENTS.validate(frame)
    assert not isinstance(out["message"].dtype, pd.CategoricalDtype)
    assert out["message"].tolist() == ["a", "b", "a"]
    assert out["threat_class"].tolist() == ["1", "2", "1"]
    assert out["timestamp"].iloc[0] == pd.Timestamp("2024-11-26 03:14:07")
    millis = EVENTS.validate(frame.assign(timestamp=frame["timestamp"] * 1000))
    assert millis["timestamp"].equals(out["timestamp"].astype(millis["timestamp"].dtype))


def test_feature_matrix_takes_the_features_in_their_order_whatever_the_frame_holds():
    from meshfl.data.schema import feature_matrix

    frame = pd.DataFrame({"b": [1.0, np.nan], "a": [3.0, 4.0], "tag": ["x", "y"], "n": [5, 6]})
    # the frame's numeric block (b, a, n) is not the features: columns are selected
    assert np.array_equal(
        feature_matrix(frame, ("a", "b"), {}), [[3.0, 1.0], [4.0, np.nan]], equal_nan=True
    )
    # the numeric block is the features in order: read as one block, same values
    assert np.array_equal(
        feature_matrix(frame[["b", "a", "tag"]], ("b", "a"), {}),
        [[1.0, 3.0], [np.nan, 4.0]],
        equal_nan=True,
    )
    coded = feature_matrix(frame, ("tag", "a"), {"tag": ("y",)}, code_offset=0.5)
    assert coded.tolist() == [[1.5, 3.0], [0.5, 4.0]]  # "x" is other (1), "y" is 0


def test_label_array_refuses_missing_labels_with_the_given_sentence():
    from meshfl.data.schema import label_array

    assert label_array(pd.DataFrame({"x": [1]}), "y", "never") is None
    assert label_array(pd.DataFrame({"y": [True, False]}), "y", "never").tolist() == [True, False]
    with pytest.raises(DataSchemaError, match="give every label"):
        label_array(pd.DataFrame({"y": [True, None]}), "y", "give every label")
