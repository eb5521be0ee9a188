"""Column schemas for the data an MSP brings, and the one loader that checks it.

Every agent declares a :class:`Schema`: the columns it reads, the kind of values each must
hold, and which ones it can do without. :func:`load_frame` turns what a user hands over (a
DataFrame, a CSV or Parquet file) into a frame whose columns have the dtypes the agent
expects, or stops with a sentence that names the column, what it must hold and an example
of what it holds instead, so that bad data is caught before a federated round starts rather
than as a shape error deep inside training.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from meshfl.config.errors import ConfigError, DataSchemaError

__all__ = [
    "ClipReport",
    "Column",
    "ColumnClipping",
    "ColumnKind",
    "Schema",
    "check_category_lists",
    "count_clipped",
    "encode_categories",
    "feature_matrix",
    "label_array",
    "inherit_validation",
    "is_validated",
    "load_frame",
    "remember_validated",
]

ColumnKind = Literal["text", "category", "number", "integer", "bool", "datetime"]
"""The kinds of values a :class:`Column` can hold."""

_KINDS: tuple[str, ...] = get_args(ColumnKind)

# How an error message says what a column of each kind must hold.
_KIND_PHRASE = {
    "text": "text",
    "category": "category labels",
    "number": "finite numbers",
    "integer": "whole numbers",
    "bool": "booleans (true/false, 1/0, yes/no)",
    "datetime": "dates or timestamps",
}

_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})

_PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})

# Unix times: the largest magnitude (exclusive) each unit is assumed for.
_EPOCH_UNITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", float("inf")))


@dataclass(frozen=True)
class Column:
    """One column of a :class:`Schema`.

    Parameters
    ----------
    name : str
        The column's name in the user's data (case-sensitive).
    kind : {"text", "category", "number", "integer", "bool", "datetime"}
        What the column holds. ``text`` and ``category`` become strings, ``number``
        ``float64``, ``integer`` ``int64``, ``bool`` ``bool`` (``0/1`` and ``"true"/"false"``
        accepted) and ``datetime`` ``datetime64`` (strings parsed with
        :func:`pandas.to_datetime`, several formats allowed; time zones that differ between
        rows are converted to UTC; numbers read as Unix times, in seconds, milliseconds,
        microseconds or nanoseconds as their magnitude shows).
    required : bool, default True
        Whether data without this column, or with missing values in it, is rejected.
    description : str, default ""
        What the column means, for documentation and error messages.
    nullable : bool, default False
        Whether a required column may still hold missing values (the column must be there;
        some of its values may be empty).
    """

    name: str
    kind: ColumnKind
    required: bool = True
    description: str = ""
    nullable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                f"The 'name' parameter of Column must be a non-empty string. "
                f"Got {self.name!r} instead."
            )
        if self.kind not in _KINDS:
            raise ConfigError(
                f"The 'kind' parameter of Column {self.name!r} must be one of "
                f"{', '.join(map(repr, _KINDS))}. Got {self.kind!r} instead."
            )

    def describe(self) -> str:
        """The column as ``"name (kind)"``, as error messages list it."""
        return f"{self.name} ({self.kind})"


@dataclass(frozen=True)
class Schema:
    """The columns one agent reads from an MSP's data.

    Parameters
    ----------
    name : str
        How messages refer to the data, after "the": ``"threat_intel data"`` gives
        "Column 'message' of the threat_intel data ...".
    columns : tuple of Column
        The columns, required and optional. A list is accepted and stored as a tuple.

    Examples
    --------
    >>> import pandas as pd
    >>> schema = Schema("demo data", (Column("x", "number"), Column("ok", "bool")))
    >>> schema.validate(pd.DataFrame({"x": ["1.5", 2], "ok": ["true", 0]})).dtypes.tolist()
    [dtype('float64'), dtype('bool')]
    """

    name: str
    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        columns = tuple(self.columns)
        object.__setattr__(self, "columns", columns)
        if not columns or not all(isinstance(col, Column) for col in columns):
            raise ConfigError(
                f"The 'columns' parameter of Schema {self.name!r} must be a non-empty "
                f"sequence of Column. Got {columns!r} instead."
            )
        seen: set[str] = set()
        for col in columns:
            if col.name in seen:
                raise ConfigError(
                    f"Schema {self.name!r} declares column {col.name!r} twice; "
                    "each column may appear once."
                )
            seen.add(col.name)

    @property
    def names(self) -> tuple[str, ...]:
        """The names of all columns, in declaration order."""
        return tuple(col.name for col in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        """The names of the required columns, in declaration order."""
        return tuple(col.name for col in self.columns if col.required)

    def describe(self) -> str:
        """The expected columns as one phrase, for error messages."""
        needed = [col.describe() for col in self.columns if col.required]
        optional = [col.describe() for col in self.columns if not col.required]
        text = ", ".join(needed) if needed else "no required columns"
        if optional:
            text += ", and optionally " + ", ".join(optional)
        return text

    def validate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Check ``frame`` against the schema and coerce its columns to their kinds.

        Parameters
        ----------
        frame : pandas.DataFrame
            The user's data. It is not modified.

        Returns
        -------
        pandas.DataFrame
            A new frame with the same rows, index and columns (columns the schema does not
            name are kept untouched) in which every schema column present has its kind's
            dtype. Optional ``integer`` and ``bool`` columns with missing values get the
            nullable ``Int64`` and ``boolean`` dtypes.

        Raises
        ------
        DataSchemaError
            If the frame is empty, lacks a required column, has missing values in a
            required column, or has a value that cannot be read as its column's kind.
        """
        if not isinstance(frame, pd.DataFrame):
            raise DataSchemaError(
                f"The {self.name} must be a pandas DataFrame. Got a {type(frame).__name__} instead."
            )
        if is_validated(frame, self):
            return frame
        if len(frame) == 0:
            raise DataSchemaError(
                f"The {self.name} is empty (0 rows); it needs at least one row with "
                f"columns {self.describe()}."
            )
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        clashing = [name for name in duplicated if name in self.names]
        if clashing:
            raise DataSchemaError(
                f"The {self.name} has more than one column named "
                f"{', '.join(map(repr, clashing))}; rename or drop the duplicates."
            )
        self._check_columns_present(frame)

        out = frame.copy()
        for col in self.columns:
            if col.name in out.columns:
                before = out[col.name]
                after = self._coerce(col, before)
                if after is not before:
                    out[col.name] = after
        return remember_validated(out, self)

    # -- helpers ------------------------------------------------------------------------
    def _check_columns_present(self, frame: pd.DataFrame) -> None:
        present = {str(c) for c in frame.columns}
        missing = [name for name in self.required if name not in present]
        if not missing:
            return
        lowered = {name.lower().strip(): name for name in present}
        hints = [
            f"{lowered[name.lower()]!r} for {name!r}" for name in missing if name.lower() in lowered
        ]
        noun = "column" if len(missing) == 1 else "columns"
        message = (
            f"The {self.name} has no {noun} {', '.join(map(repr, missing))}. "
            f"Expected columns: {self.describe()}. "
            f"Got columns: {', '.join(map(str, frame.columns)) or 'none'}."
        )
        if hints:
            message += f" Column names are case-sensitive: rename {', '.join(hints)}."
        raise DataSchemaError(message)

    def _coerce(self, col: Column, series: pd.Series) -> pd.Series:
        if series.dtype == np.float64:  # the common case, without pandas' NA machinery
            missing = np.isnan(series.to_numpy())
        elif series.dtype == np.bool_:
            missing = np.zeros(len(series), dtype=bool)
        else:
            missing = series.isna().to_numpy()
        if col.required and not col.nullable and missing.any():
            rows = series.index[missing]
            raise DataSchemaError(
                f"Column {col.name!r} of the {self.name} has missing values in "
                f"{len(rows)} of {len(series)} rows (first: row {_label(rows[0])}); "
                "fill or drop those rows."
            )
        converter = _CONVERTERS[col.kind]
        values, bad = converter(series, missing)
        if bad.any():
            rows = series.index[bad]
            value = series.to_numpy()[np.flatnonzero(bad)[0]]
            if isinstance(value, np.generic):  # show 2.5, not np.float64(2.5)
                value = value.item()
            more = f" ({len(rows) - 1} more rows are wrong too)" if len(rows) > 1 else ""
            raise DataSchemaError(
                f"Column {col.name!r} of the {self.name} must hold {_KIND_PHRASE[col.kind]}; "
                f"row {_label(rows[0])} holds {value!r}{more}."
            )
        return values


def _label(label: Any) -> str:
    if isinstance(label, (int, np.integer)):
        return str(int(label))
    return repr(label)


# Each converter takes the series and its missing-value mask and returns the converted
# series and a mask of the present values that could not be converted.
_Converter = Callable[[pd.Series, np.ndarray], tuple[pd.Series, np.ndarray]]


def _to_text(series: pd.Series, missing: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    none_bad = np.zeros(len(series), dtype=bool)
    if isinstance(series.dtype, pd.StringDtype):
        return series, none_bad
    return series.astype(object).map(str, na_action="ignore"), none_bad


def _to_number(series: pd.Series, missing: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    if series.dtype == np.float64:  # the common case, without pandas' conversions
        return series, ~missing & ~np.isfinite(series.to_numpy())
    if pd.api.types.is_bool_dtype(series.dtype):
        series = series.astype("float64")
    numbers = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = ~missing & ~np.isfinite(numbers.to_numpy())
    return numbers, bad


def _to_integer(series: pd.Series, missing: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    numbers, bad = _to_number(series, missing)
    arr = numbers.to_numpy()
    with np.errstate(invalid="ignore"):
        bad |= ~missing & (np.round(arr) != arr)
    if bad.any():
        return numbers, bad
    if missing.any():
        return numbers.astype("Int64"), bad
    return numbers.astype("int64"), bad


def _to_bool(series: pd.Series, missing: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_bool_dtype(series.dtype):
        none_bad = np.zeros(len(series), dtype=bool)
        if series.dtype == np.bool_:
            return series, none_bad
        return (series.astype("boolean") if missing.any() else series.astype(bool)), none_bad

    def parse(value: Any) -> bool | None:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        return None

    parsed = [None if gone else parse(v) for v, gone in zip(series.tolist(), missing, strict=True)]
    bad = np.array([p is None for p in parsed], dtype=bool) & ~missing
    if bad.any() or missing.any():
        return pd.Series(parsed, index=series.index, dtype="boolean"), bad
    return pd.Series(parsed, index=series.index, dtype=bool), bad


def _to_datetime(series: pd.Series, missing: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series, np.zeros(len(series), dtype=bool)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        # Numbers are Unix times; their magnitude tells the unit (1.7e9 s = 1.7e12 ms).
        numbers = series.astype("float64")
        bad = ~missing & ~np.isfinite(numbers.to_numpy())
        magnitude = float(numbers[~missing & ~bad].abs().max()) if (~missing & ~bad).any() else 0
        unit = next(u for u, top in _EPOCH_UNITS if magnitude < top)
        return pd.to_datetime(numbers.where(~bad), unit=unit), bad
    try:
        stamps = pd.to_datetime(series, errors="coerce")
    except (ValueError, TypeError):  # e.g. mixed time zones
        stamps = None
    if stamps is None or (~missing & stamps.isna().to_numpy()).any():
        # The fast path infers one format from the first value; data with several
        # formats needs element-wise parsing.
        try:
            stamps = pd.to_datetime(series, errors="coerce", format="mixed")
        except (ValueError, TypeError):
            stamps = pd.to_datetime(series, errors="coerce", format="mixed", utc=True)
    bad = ~missing & stamps.isna().to_numpy()
    return stamps, bad


_CONVERTERS: dict[str, _Converter] = {
    "text": _to_text,
    "category": _to_text,
    "number": _to_number,
    "integer": _to_integer,
    "bool": _to_bool,
    "datetime": _to_datetime,
}


# Frames this process validated, by identity: a frame that comes back (the node's rows at
# every round, the parts of a validated frame) is not checked again. A frame is only
# remembered while it lives, and only for the schema it was checked against.
_validated: dict[int, tuple[weakref.ref[pd.DataFrame], Schema]] = {}


def remember_validated(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Record that ``frame`` holds valid ``schema`` data (it came out of a validation, or is
    rows of a frame that did); returns ``frame``. Change such a frame and validate a copy."""
    key = id(frame)
    _validated[key] = (weakref.ref(frame, lambda _ref: _validated.pop(key, None)), schema)
    return frame


def is_validated(frame: pd.DataFrame, schema: Schema) -> bool:
    """Whether ``frame`` itself passed ``schema`` (or came from rows of a frame that did)."""
    hit = _validated.get(id(frame))
    return hit is not None and hit[0]() is frame and hit[1] == schema


def inherit_validation(parent: pd.DataFrame, *parts: pd.DataFrame) -> None:
    """Rows taken from a validated frame are valid under the same schema: record it."""
    hit = _validated.get(id(parent))
    if hit is not None and hit[0]() is parent:
        for part in parts:
            remember_validated(part, hit[1])


def load_frame(data: pd.DataFrame | str | os.PathLike[str], schema: Schema) -> pd.DataFrame:
    """Read and validate a user's data against ``schema``.

    Parameters
    ----------
    data : pandas.DataFrame, str or os.PathLike
        A DataFrame (validated, not modified), or the path of a CSV file (``.tsv`` is read
        tab-separated; compressed CSV such as ``.csv.gz`` works) or of a Parquet file
        (``.parquet``/``.pq``, which needs ``pyarrow`` or ``fastparquet``).
    schema : Schema
        The columns the data must hold.

    Returns
    -------
    pandas.DataFrame
        The validated frame; see :meth:`Schema.validate`.

    Raises
    ------
    DataSchemaError
        If the path does not exist or cannot be read, if ``data`` is of another type, or
        if the data does not match the schema.

    Examples
    --------
    >>> import pandas as pd
    >>> schema = Schema("demo data", (Column("cpu_pct", "number"),))
    >>> load_frame(pd.DataFrame({"cpu_pct": [12, "40.5"]}), schema)["cpu_pct"].tolist()
    [12.0, 40.5]
    """
    if isinstance(data, pd.DataFrame):
        return schema.validate(data)
    if isinstance(data, (str, os.PathLike)):
        return schema.validate(_read(Path(os.fspath(data)), schema))
    raise DataSchemaError(
        f"The {schema.name} must be a pandas DataFrame or the path of a CSV or Parquet file "
        f"(str or os.PathLike). Got a {type(data).__name__} instead."
    )


def _read(path: Path, schema: Schema) -> pd.DataFrame:
    if not path.exists():
        raise DataSchemaError(
            f"There is no file at '{path}' to read the {schema.name} from; check the path "
            f"(relative paths are resolved from {Path.cwd()})."
        )
    if path.is_dir():
        raise DataSchemaError(
            f"'{path}' is a directory; the {schema.name} must be one CSV or Parquet file."
        )
    suffix = path.suffix.lower()
    try:
        if suffix in _PARQUET_SUFFIXES:
            return _read_parquet(path, schema)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except DataSchemaError:
        raise
    except pd.errors.EmptyDataError:
        raise DataSchemaError(
            f"The file '{path}' is empty; the {schema.name} needs a header row and at least "
            "one data row."
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise DataSchemaError(
            f"Could not read the {schema.name} from '{path}' as "
            f"{'Parquet' if suffix in _PARQUET_SUFFIXES else 'CSV'}: {err}"
        ) from err


def _read_parquet(path: Path, schema: Schema) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError:
        raise DataSchemaError(
            f"Reading the {schema.name} from the Parquet file '{path}' needs pyarrow "
            "(pip install pyarrow); or save the data as CSV instead."
        ) from None


# ---------------------------------------------------------------------------------------
# Public category lists
# ---------------------------------------------------------------------------------------


def check_category_lists(
    categorical: Mapping[str, tuple[str, ...]], features: tuple[str, ...], most: int
) -> None:
    """Check an agent config's public category lists (``ValueError`` naming the problem):
    every key a feature, categories distinct non-empty strings, at most ``most`` of them."""
    unknown = [c for c in categorical if c not in features]
    if unknown:
        raise ValueError(
            f"'categorical' must name features; {', '.join(unknown)} "
            f"{'is' if len(unknown) == 1 else 'are'} not in 'features'"
        )
    for name, cats in categorical.items():
        if not cats:
            raise ValueError(f"give feature {name!r} at least one category in 'categorical'")
        if len(set(cats)) != len(cats) or not all(isinstance(c, str) and c for c in cats):
            raise ValueError(
                f"the categories of {name!r} in 'categorical' must be distinct, non-empty "
                f"strings; got {list(cats)!r}"
            )
        if len(cats) > most:
            raise ValueError(
                f"feature {name!r} lists {len(cats)} categories in 'categorical'; at most "
                f"{most} fit (2 more bins hold 'other' and 'missing'; raise n_bins if it "
                "limits them), or keep the frequent categories and let the rest count as "
                "'other'"
            )


def encode_categories(values: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
    """Codes of a categorical column: the index in the public list, ``len(categories)`` for
    a value not on it ("other"), ``len(categories) + 1`` for a missing one."""
    lookup = {c: i for i, c in enumerate(categories)}
    other, missing = len(categories), len(categories) + 1
    gone = values.isna().to_numpy()
    text = values.astype(object).to_numpy()
    codes = np.fromiter(
        (missing if g else lookup.get(str(v), other) for v, g in zip(text, gone, strict=True)),
        dtype=np.float64,
        count=len(text),
    )
    return codes


def feature_matrix(
    frame: pd.DataFrame,
    features: tuple[str, ...],
    categorical: Mapping[str, tuple[str, ...]],
    *,
    code_offset: float = 0.0,
) -> np.ndarray:
    """The input matrix of a validated frame, one column per feature in order: numeric
    columns as floats (NaN where missing), categorical ones as their codes
    (:func:`encode_categories`) plus ``code_offset``."""
    if not categorical and len(frame):
        # one conversion of the whole block, not one per column (thousands of MSPs); where
        # the frame's numeric columns are the features in order, without selecting them
        numbers = frame.select_dtypes("number")
        block = numbers if tuple(numbers.columns) == features else frame[list(features)]
        return block.to_numpy(dtype=np.float64, na_value=np.nan)
    columns = [
        encode_categories(frame[f], categorical[f]) + code_offset
        if f in categorical
        else frame[f].to_numpy(dtype=np.float64, na_value=np.nan)
        for f in features
    ]
    return np.column_stack(columns) if columns else np.zeros((len(frame), 0))


def label_array(frame: pd.DataFrame, column: str, missing: str) -> np.ndarray | None:
    """Column ``column`` of a validated frame as booleans, ``None`` when the frame has no
    such column; raises :class:`DataSchemaError` with the sentence ``missing`` when a value
    is missing."""
    if column not in frame:
        return None
    values = frame[column].to_numpy()
    if values.dtype != np.bool_ and pd.isna(values).any():
        raise DataSchemaError(missing)
    return values.astype(bool, copy=False)


# ---------------------------------------------------------------------------------------
# Values outside public bounds
# ---------------------------------------------------------------------------------------

_log = logging.getLogger("meshfl.data")


@dataclass(frozen=True)
class ColumnClipping:
    """How many of one column's values lie outside its public bounds.

    Parameters
    ----------
    column : str
        The column.
    low, high : float
        Its public bounds.
    values : int
        Values present (missing ones are not counted).
    below, above : int
        Values below ``low`` and above ``high``: a model that bins or splits inside the
        bounds treats them as the bound itself.
    """

    column: str
    low: float
    high: float
    values: int
    below: int
    above: int

    @property
    def clipped(self) -> int:
        """Values outside the bounds."""
        return self.below + self.above

    @property
    def share(self) -> float:
        """Share of the present values that are outside the bounds (0 without values)."""
        return self.clipped / self.values if self.values else 0.0


@dataclass(frozen=True)
class ClipReport:
    """Values outside the public bounds in one MSP's data, per column.

    It describes private data: it stays at the MSP (its log, its own code); meshfl never
    sends it to the coordinator. ``report["col"]`` is a :class:`ColumnClipping`.
    """

    columns: tuple[ColumnClipping, ...]

    def __getitem__(self, column: str) -> ColumnClipping:
        for item in self.columns:
            if item.column == column:
                return item
        raise KeyError(column)

    @property
    def clipped(self) -> int:
        """Values outside the bounds, all columns together."""
        return sum(item.clipped for item in self.columns)

    def to_frame(self) -> pd.DataFrame:
        """One row per column: ``column, low, high, values, below, above, clipped, share``."""
        return pd.DataFrame(
            [
                {
                    "column": c.column,
                    "low": c.low,
                    "high": c.high,
                    "values": c.values,
                    "below": c.below,
                    "above": c.above,
                    "clipped": c.clipped,
                    "share": c.share,
                }
                for c in self.columns
            ],
            columns=["column", "low", "high", "values", "below", "above", "clipped", "share"],
        )

    def warn(self, what: str, *, logger: logging.Logger | None = None) -> None:
        """Log a warning for every column with values outside its bounds.

        ``what`` names the data, e.g. ``"client_health data"``.
        """
        log = logger or _log
        for c in self.columns:
            if c.clipped:
                log.warning(
                    "%s: %d of %d values (%.1f%%) of column %r lie outside its public bounds "
                    "[%g, %g] (%d below, %d above) and are treated as the bound; widen "
                    "'bounds' in the agent config if they are valid (docs/privacy.md, "
                    "'Choosing bounds'; meshfl.privacy.quantiles.dp_bounds estimates them "
                    "privately).",
                    what,
                    c.clipped,
                    c.values,
                    100.0 * c.share,
                    c.column,
                    c.low,
                    c.high,
                    c.below,
                    c.above,
                )


def count_clipped(
    data: pd.DataFrame | np.ndarray,
    bounds: Mapping[str, tuple[float, float]],
    columns: tuple[str, ...] | None = None,
) -> ClipReport:
    """Count the values of each bounded column that lie outside its public bounds.

    Parameters
    ----------
    data : pandas.DataFrame or numpy.ndarray
        The rows; an array's columns are ``columns`` in order.
    bounds : mapping of str to (float, float)
        Public ``(low, high)`` per column; only columns named here are counted.
    columns : tuple of str, optional
        The columns to count (default: the bounded columns of the frame, in ``bounds``
        order); required for an array.

    Returns
    -------
    ClipReport

    Examples
    --------
    >>> import pandas as pd
    >>> report = count_clipped(pd.DataFrame({"x": [-1.0, 0.5, 3.0, None]}), {"x": (0.0, 1.0)})
    >>> report["x"].below, report["x"].above, report["x"].values
    (1, 1, 3)
    """
    if isinstance(data, pd.DataFrame):
        names = columns or tuple(c for c in bounds if c in data.columns)
        names = tuple(c for c in names if c in bounds)
        matrix = (
            np.column_stack([data[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in names])
            if names
            else np.zeros((len(data), 0))
        )
    else:
        if columns is None:
            raise ConfigError("count_clipped needs 'columns' to name an array's columns.")
        matrix = np.asarray(data, dtype=np.float64)
        keep = [i for i, c in enumerate(columns) if c in bounds]
        names = tuple(columns[i] for i in keep)
        matrix = matrix[:, keep]
    # one pass over the block (NaN compares false: missing values count nowhere)
    lows = np.array([float(bounds[c][0]) for c in names])
    highs = np.array([float(bounds[c][1]) for c in names])
    values = (~np.isnan(matrix)).sum(axis=0)
    below = (matrix < lows).sum(axis=0)
    above = (matrix > highs).sum(axis=0)
    out = [
        ColumnClipping(name, lo, hi, int(v), int(b), int(a))
        for name, lo, hi, v, b, a in zip(
            names, lows.tolist(), highs.tolist(), values, below, above, strict=True
        )
    ]
    return ClipReport(tuple(out))
