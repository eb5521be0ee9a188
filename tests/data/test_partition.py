"""Tests of meshfl.data.partition: non-IID splits over MSPs and train/test splits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.data.partition import label_distribution, partition, train_test_split


def labelled(n: int, num_classes: int = 6, seed: int = 0) -> pd.DataFrame:
    """Rows with a unique ``id`` and an imbalanced ``label``."""
    rng = np.random.default_rng(seed)
    weights = np.arange(num_classes, 0, -1, dtype=float)
    labels = rng.choice(num_classes, size=n, p=weights / weights.sum())
    return pd.DataFrame({"id": np.arange(n), "label": [f"c{k}" for k in labels]})


def label_skew(parts: list[pd.DataFrame], label_column: str = "label") -> float:
    """Mean total-variation distance of the MSPs' label distributions from the global one."""
    counts = label_distribution(parts, label_column).to_numpy(dtype=float)
    overall = counts.sum(axis=0) / counts.sum()
    local = counts / counts.sum(axis=1, keepdims=True)
    return float(np.mean(0.5 * np.abs(local - overall).sum(axis=1)))


# -- partition: invariants ---------------------------------------------------------------


@st.composite
def partition_cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 300))
    num_msps = draw(st.integers(1, min(n, 12)))
    return {
        "n": n,
        "num_classes": draw(st.integers(1, 8)),
        "num_msps": num_msps,
        "min_size": draw(st.integers(0, n // num_msps)),
        "alpha": draw(st.sampled_from([0.01, 0.1, 0.5, 5.0, math.inf])),
        "size_skew": draw(st.sampled_from([0.0, 0.5, 2.0])),
        "labelled": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31)),
    }


@settings(max_examples=60, deadline=None)
@given(case=partition_cases())
def test_partition_covers_every_row_once_respects_min_size_and_is_deterministic(
    case: dict,
) -> None:
    frame = labelled(case["n"], case["num_classes"])
    kwargs = {
        "label_column": "label" if case["labelled"] else None,
        "alpha": case["alpha"],
        "size_skew": case["size_skew"],
        "min_size": case["min_size"],
        "seed": case["seed"],
    }
    parts = partition(frame, case["num_msps"], **kwargs)

    assert len(parts) == case["num_msps"]
    ids = np.concatenate([p["id"].to_numpy() for p in parts])
    assert np.array_equal(np.sort(ids), np.arange(case["n"]))
    assert all(len(p) >= case["min_size"] for p in parts)
    for part in parts:
        assert part.index.equals(pd.RangeIndex(len(part)))
        assert part["id"].is_monotonic_increasing  # original order kept
    again = partition(frame, case["num_msps"], **kwargs)
    for a, b in zip(parts, again, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_partition_does_not_modify_the_frame() -> None:
    frame = labelled(200).set_axis(np.arange(200) * 3)
    before = frame.copy()
    partition(frame, 4, label_column="label", seed=1)
    pd.testing.assert_frame_equal(frame, before)


def test_different_seeds_give_different_splits() -> None:
    frame = labelled(500)
    a = partition(frame, 5, label_column="label", seed=1)
    b = partition(frame, 5, label_column="label", seed=2)
    assert any(not x["id"].equals(y["id"]) for x, y in zip(a, b, strict=True))


# -- partition: label and size skew ------------------------------------------------------


def test_smaller_alpha_gives_more_label_skew() -> None:
    frame = labelled(3000, num_classes=8)

    def mean_skew(alpha: float) -> float:
        return float(
            np.mean(
                [
                    label_skew(partition(frame, 10, label_column="label", alpha=alpha, seed=s))
                    for s in range(4)
                ]
            )
        )

    skews = [mean_skew(a) for a in (0.1, 1.0, 100.0, math.inf)]
    assert skews[0] > skews[1] + 0.1
    assert skews[1] > skews[2] + 0.1
    assert skews[2] > skews[3]
    assert skews[0] > 0.4
    assert skews[3] < 0.03  # alpha=inf is a stratified split


def test_no_label_column_is_iid_with_equal_sizes() -> None:
    frame = labelled(1003)
    parts = partition(frame, 7, seed=3)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert label_skew(parts) < 0.12


def test_equal_sizes_without_size_skew_even_under_label_skew() -> None:
    parts = partition(labelled(1000), 8, label_column="label", alpha=0.05, seed=0)
    assert {len(p) for p in parts} == {125}


def test_size_skew_spreads_sizes_and_min_size_holds() -> None:
    frame = labelled(2000)

    def spread(size_skew: float) -> float:
        sizes = [
            [len(p) for p in partition(frame, 10, size_skew=size_skew, min_size=20, seed=s)]
            for s in range(4)
        ]
        assert min(min(s) for s in sizes) >= 20
        return float(np.mean([np.std(s) / np.mean(s) for s in sizes]))

    assert spread(0.0) < 0.01
    assert spread(1.0) > 0.4
    assert spread(2.0) > spread(1.0)


def test_labels_missing_values_count_as_a_class() -> None:
    frame = pd.DataFrame({"id": range(40), "label": ["a", None] * 20})
    parts = partition(frame, 2, label_column="label", alpha=0.1, min_size=5, seed=0)
    assert sum(p["label"].isna().sum() for p in parts) == 20


# -- partition: errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_msps": 0}, "The 'num_msps' parameter of partition must be an integer >= 1. Got 0"),
        ({"num_msps": 2.0}, "The 'num_msps' parameter of partition must be an integer >= 1."),
        ({"alpha": 0}, "The 'alpha' parameter of partition must be a float in (0, inf]. Got 0"),
        ({"alpha": -1.0}, "The 'alpha' parameter of partition must be a float in (0, inf]."),
        ({"alpha": float("nan")}, "The 'alpha' parameter of partition must be a float"),
        ({"size_skew": -0.5}, "The 'size_skew' parameter of partition must be a float in [0,"),
        ({"size_skew": math.inf}, "The 'size_skew' parameter of partition must be a float in"),
        ({"min_size": -1}, "The 'min_size' parameter of partition must be an integer >= 0."),
        ({"seed": -3}, "The 'seed' parameter of partition must be an integer >= 0. Got -3"),
    ],
)
def test_partition_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"num_msps": 3, "label_column": "label", **kwargs}
    with pytest.raises(ConfigError) as err:
        partition(labelled(100), **arguments)
    assert str(err.value).startswith(message)


def test_unknown_label_column_lists_the_columns() -> None:
    with pytest.raises(ConfigError, match=r"Got 'threat_class'; the columns are 'id', 'label'"):
        partition(labelled(100), 3, label_column="threat_class")


def test_impossible_min_size_says_what_would_fit() -> None:
    with pytest.raises(ConfigError) as err:
        partition(labelled(30), 5, min_size=10)
    text = str(err.value)
    assert "each of 5 MSPs at least min_size=10 rows" in text
    assert "only 30 rows" in text
    assert "'min_size' to at most 6" in text and "'num_msps' to at most 3" in text


def test_partition_rejects_non_frames_and_empty_frames() -> None:
    with pytest.raises(
        ConfigError, match=r"'frame' parameter of partition must be an instance of DataFrame"
    ):
        partition([1, 2, 3], 2)  # type: ignore[arg-type]
    with pytest.raises(DataSchemaError, match=r"empty frame"):
        partition(pd.DataFrame({"label": []}), 2, min_size=0)


# -- train_test_split --------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(2, 500),
    test_fraction=st.floats(0.001, 0.999),
    seed=st.integers(0, 2**31),
)
def test_train_test_split_partitions_the_rows(n: int, test_fraction: float, seed: int) -> None:
    frame = pd.DataFrame({"id": np.arange(n)})
    train, test = train_test_split(frame, test_fraction=test_fraction, seed=seed)
    assert len(train) >= 1 and len(test) >= 1
    assert abs(len(test) - n * test_fraction) <= 1
    ids = np.concatenate([train["id"].to_numpy(), test["id"].to_numpy()])
    assert np.array_equal(np.sort(ids), np.arange(n))
    assert train["id"].is_monotonic_increasing and test["id"].is_monotonic_increasing
    assert train.index.equals(pd.RangeIndex(len(train)))
    again = train_test_split(frame, test_fraction=test_fraction, seed=seed)
    pd.testing.assert_frame_equal(test, again[1])


def test_train_test_split_is_random_under_the_seed() -> None:
    frame = pd.DataFrame({"id": np.arange(1000)})
    _, a = train_test_split(frame, seed=0)
    _, b = train_test_split(frame, seed=1)
    assert len(a) == 200
    assert not a["id"].equals(b["id"])
    assert a["id"].iloc[-1] > 900  # drawn from the whole frame, not its head


def test_train_test_split_errors() -> None:
    with pytest.raises(DataSchemaError, match=r"at least 2 rows.*has 1"):
        train_test_split(pd.DataFrame({"x": [1]}))
    for bad in (0, 1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"'test_fraction' parameter .* in \(0, 1\)"):
            train_test_split(pd.DataFrame({"x": [1, 2, 3]}), test_fraction=bad)


# -- label_distribution ------------------------------------------------------------------


def test_label_distribution_counts_every_label_at_every_msp() -> None:
    parts = [
        pd.DataFrame({"y": ["b", "a", "a"]}),
        pd.DataFrame({"y": ["c"]}),
        pd.DataFrame({"y": ["a", "c"]}),
    ]
    table = label_distribution(parts, "y")
    assert list(table.columns) == ["a", "b", "c"]
    assert table.index.name == "msp" and table.columns.name == "y"
    assert table.to_numpy().tolist() == [[2, 1, 0], [0, 0, 1], [1, 0, 1]]
    assert all(dtype == np.int64 for dtype in table.dtypes)


def test_label_distribution_of_a_partition_sums_to_the_labels() -> None:
    frame = labelled(600)
    table = label_distribution(partition(frame, 6, label_column="label", seed=0), "label")
    assert table.sum(axis=0).to_dict() == frame["label"].value_counts().to_dict()


def test_label_distribution_missing_column_names_the_part() -> None:
    parts = [pd.DataFrame({"y": ["a"]}), pd.DataFrame({"z": ["a"]})]
    with pytest.raises(ConfigError, match=r"part 1 has no column 'y'"):
        label_distribution(parts, "y")


def test_cut_gives_consecutive_parts_indexed_from_zero_and_checks_the_sizes():
    from meshfl.data.partition import cut

    whole = pd.DataFrame({"x": range(6)})
    parts = cut(whole, [2, 0, 4])
    assert [p["x"].tolist() for p in parts] == [[0, 1], [], [2, 3, 4, 5]]
    assert all(p.index.equals(pd.RangeIndex(len(p))) for p in parts)
    with pytest.raises(ConfigError, match="add up to 5, but the frame has 6 rows"):
        cut(whole, [2, 3])
