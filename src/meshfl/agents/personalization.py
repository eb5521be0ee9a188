"""One MSP's own model from the federation's: personalization, and the choice that keeps it
never worse than going alone.

:meth:`meshfl.agents.base.Agent.personalize` builds a personalized model from the global one
(local fine-tuning by default; partial pooling of summed statistics where the agent has
them). Neither is guaranteed to beat the MSP's own model on its own data: a fine-tune can
overfit a small MSP, and an MSP whose data differ from everyone's may be best alone.
:func:`personalize` therefore lets the MSP choose, on a validation split of its own
training rows, among three candidates:

* ``"personalized"`` — :meth:`Agent.personalize` of the global model;
* ``"global"`` — the federated model as it is;
* ``"local"`` — the MSP's own model, trained on its rows alone with the federation's rounds
  (:meth:`Agent.fit_alone`).

Each candidate is trained and scored on several validation splits of the MSP's training rows
(:func:`validation_splits`: stratified k-fold for a random split, every row held out once;
for an agent whose split holds out the *last* periods, rolling forecast origins, with the
origins that hold out the forecast's own months a year or more before), and :func:`select`
applies a one-standard-error rule that favours going alone: the MSP keeps its local-only
model unless another candidate beats it, on the paired per-split differences, by more than
one standard error of their mean (Hastie, Tibshirani & Friedman, *The Elements of
Statistical Learning*, 2nd ed., §7.10), widened for the two candidates tried (Bonferroni:
1.41 normal standard errors), for splits whose fits overlap, and for a standard error
estimated from few splits: Nadeau & Bengio's corrected resampled t-test ("Inference for
the generalization error", *Machine Learning* 52, 2003: the overlap of k-fold, and of
rolling origins, whose fits are nested histories; Student's t with k - 1 degrees of
freedom, 1.72 standard errors for 5 splits). A forecast must also be no worse than
local-only on the origins that hold out its own months, and without such an origin (a
history of about one year) the MSP keeps local-only: a gain on other months says nothing
about the months forecast. The kept candidate is then rebuilt on all the MSP's training
rows. The choice is the MSP's and uses only its data; nothing of it leaves the MSP.

The global model was trained on all the MSP's training rows, the held-out rows of each
split too, so its validation scores (and the personalized model's, built from it) would be
optimistic. Where the agent can take the MSP's rows out of the global model (``revenue``'s
summed statistics: ``Revenue.without_rows``), the candidates are validated without them.
For the others (neural heads, boosted trees, forests), ``fold_globals`` gives one global
model per split, trained by the federation without that split's held-out rows
(:func:`meshfl.simulation.cross_fitted_globals`: one federation per fold, every MSP's fold
held out at once); :func:`meshfl.baselines.compare` and
:meth:`meshfl.simulation.SimulationResult.personalized` pass them. Without either, the leak
stays (client_health, one MSP: 0.03 to 0.07 AUC per split) and the margin above guards
against part of it only. In a deployment the same takes one extra federation per fold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from meshfl.agents.base import Agent, GlobalModel
from meshfl.config.errors import ConfigError, MeshflError
from meshfl.data.schema import inherit_validation

__all__ = ["Choice", "Personalized", "personalize", "select", "validation_splits"]

Choice = Literal["personalized", "global", "local"]
CHOICES: tuple[Choice, ...] = get_args(Choice)


@dataclass(frozen=True)
class Personalized:
    """One MSP's model after personalization, and why it is that one."""

    model: GlobalModel
    choice: Choice
    """Which candidate the MSP kept (``"personalized"``, ``"global"`` or ``"local"``)."""
    validation: dict[str, float] = field(default_factory=dict)
    """Each candidate's headline metric on the validation rows, averaged over the splits
    (empty: no choice made)."""
    folds: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Each candidate's metric on each validation split (NaN where it could not be scored)."""


def personalize(
    agent: Agent[Any],
    vector: np.ndarray,
    train: pd.DataFrame | str | os.PathLike[str],
    *,
    rounds: int,
    seed: int,
    choose: bool = True,
    validation_fraction: float = 0.25,
    folds: int = 5,
    local: np.ndarray | None = None,
    fold_globals: Sequence[np.ndarray] | None = None,
) -> Personalized:
    """The model one MSP keeps for its own data, from the global ``vector``.

    Parameters
    ----------
    agent : Agent
        The agent of the global model.
    vector : numpy.ndarray
        The global model's vector.
    train : DataFrame or path
        The MSP's training rows (of the agent's schema).
    rounds : int
        Rounds of the MSP's local-only candidate (use the federation's).
    seed : int
        Seeds the splits, fine-tuning and local training.
    choose : bool
        Choose among personalized, global and local-only on validation splits (default).
        ``False`` returns the personalized model.
    validation_fraction : float
        Share of the training rows held out in each validation split (the agent's own split:
        the last periods of each series for ``revenue``).
    folds : int
        Validation splits to choose on (:func:`validation_splits`; fewer where the rows run
        out, e.g. a short revenue history).
    local : numpy.ndarray, optional
        The MSP's local-only model on all its training rows, when already trained (saves
        training it again if it is chosen).
    fold_globals : sequence of numpy.ndarray, optional
        One global model per validation split (:func:`validation_splits`, same ``seed``,
        ``folds`` and ``validation_fraction``), each trained by the federation without
        that split's held-out rows (:func:`cross_fitted_globals`). The candidates are then
        validated from them, so the global model has not seen the rows it is scored on.
        Without them (and without the agent's ``without_rows``), the global model saw every
        validation row and its scores are optimistic.

    Returns
    -------
    Personalized
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(
            f"The 'rounds' parameter of personalize must be an int >= 1. Got {rounds!r}."
        )
    if not 0 < validation_fraction < 1:
        raise ConfigError(
            "The 'validation_fraction' parameter of personalize must be a float in (0, 1). "
            f"Got {validation_fraction!r} instead."
        )
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(
            f"The 'folds' parameter of personalize must be an int >= 2. Got {folds!r} instead."
        )
    vector = np.asarray(vector, dtype=np.float64)
    frame = agent.load_data(train)
    forget = getattr(agent, "without_rows", None)
    everything: list[Any] = []

    def build(choice: Choice, rows: Any, *, fold: int | None = None) -> np.ndarray:
        start = vector
        if fold is not None and fold_globals is not None:
            start = np.asarray(fold_globals[fold], dtype=np.float64)
        elif fold is not None and callable(forget):
            # the global model summed all the MSP's rows, the held-out ones too
            if not everything:
                everything.append(agent.prepare(frame))
            start = forget(vector, everything[0], rows)
        if choice == "global":
            return start
        if choice == "personalized":
            return agent.personalize(start, rows, seed=seed)
        return agent.fit_alone(rows, rounds=rounds, seed=seed)

    per_fold: dict[str, tuple[float, ...]] = {}
    overlap = 0.0
    aligned: tuple[bool, ...] | None = None
    if choose:
        per_fold, overlap, aligned = _validate(
            agent, frame, build, seed, validation_fraction, folds
        )
    choice: Choice = "personalized"
    if per_fold:
        choice = select(
            per_fold, higher_is_better=agent.higher_is_better, overlap=overlap, aligned=aligned
        )
    if choice == "global":
        chosen = vector
    elif choice == "local" and local is not None:
        chosen = np.asarray(local, dtype=np.float64)
    else:
        chosen = build(choice, agent.prepare(frame))
    means = {c: float(np.nanmean(v)) for c, v in per_fold.items() if np.isfinite(v).any()}
    return Personalized(agent.model(chosen), choice, means, per_fold)


def select(
    scores: Mapping[str, Sequence[float]],
    *,
    higher_is_better: bool,
    overlap: float = 0.0,
    aligned: Sequence[bool] | None = None,
) -> Choice:
    """The candidate an MSP keeps, from each candidate's metric on the same validation splits.

    One-standard-error rule in favour of going alone: ``"local"`` is kept unless another
    candidate's mean paired improvement over it (split by split) exceeds one standard error
    of that mean, read against Student's t with one degree of freedom fewer than the
    splits, at the tail that one normal standard error leaves, shared by the candidates
    tried (Bonferroni); of the candidates that do, the one with the best mean improvement wins
    (ties: personalized before global). Without a local-only score (it could not be trained
    or scored), the best mean wins (ties: personalized, global).

    Parameters
    ----------
    scores : mapping
        ``{"personalized" | "global" | "local": per-split metric}``, aligned by split; NaN
        where a candidate could not be scored on a split.
    higher_is_better : bool
        The metric's direction.
    overlap : float
        ``n_held / n_fit`` of splits whose training rows overlap (repeated random splits,
        k-fold): the variance of the mean difference is then ``(1/k + overlap) s²`` rather
        than ``s²/k`` (Nadeau & Bengio, 2003). 0 for splits that do not overlap.
    aligned : sequence of bool, optional
        For a forecast (rolling origins), which splits hold out the same part of the year as
        the forecast the MSP will make (:func:`validation_splits`). Given, a candidate must
        also be no worse than local-only on those splits, and without such a split the MSP
        keeps local-only: a gain on other months says nothing about the months forecast
        (a shape pooled for summer may miss the MSP's own holidays).

    Returns
    -------
    Choice

    Examples
    --------
    >>> select({"personalized": [0.80, 0.90, 0.70], "local": [0.85, 0.92, 0.75]},
    ...        higher_is_better=True)
    'local'
    >>> select({"personalized": [0.90, 0.95, 0.85], "local": [0.80, 0.86, 0.74]},
    ...        higher_is_better=True)
    'personalized'
    """
    sign = 1.0 if higher_is_better else -1.0
    values = {c: np.asarray(scores[c], dtype=np.float64) for c in CHOICES if c in scores}
    if "local" not in values or not np.isfinite(values["local"]).any():
        means = {c: np.nanmean(v) for c, v in values.items() if np.isfinite(v).any()}
        if not means:
            return "personalized"
        return max(means, key=lambda c: (sign * means[c], -CHOICES.index(c)))
    season = None if aligned is None else np.asarray(aligned, dtype=bool)
    if season is not None and not season.any():
        return "local"  # nothing checks the months the MSP forecasts
    # one standard error for one candidate; with m candidates tried, the margin whose
    # chance of being passed by noise alone (a normal gain of mean 0) is the same in all:
    # tail (1 - Φ(1)) / m (Bonferroni; 1.41 normal standard errors for personalized and
    # global). The standard error comes from k splits, so the margin is Student's t with
    # k - 1 degrees of freedom at that tail (Nadeau & Bengio's corrected resampled t-test):
    # 1.72 for 5 splits and two candidates, the normal 1.41 as k grows.
    tried = sum(c in values for c in ("personalized", "global"))
    tail = (1.0 - NormalDist().cdf(1.0)) / max(tried, 1)
    best: Choice = "local"
    best_gain = 0.0
    for candidate in ("personalized", "global"):
        if candidate not in values:
            continue
        paired = sign * (values[candidate] - values["local"])
        finite = np.isfinite(paired)
        diff = paired[finite]
        if len(diff) < 2:
            continue  # one split gives no standard error: not clearly better
        if season is not None:
            same_months = paired[finite & season]
            if len(same_months) == 0 or same_months.mean() < 0:
                continue  # worse (or unscored) on the months the MSP forecasts
        gain = float(diff.mean())
        se = float(np.sqrt((1.0 / len(diff) + overlap) * diff.var(ddof=1)))
        margin = float(student_t.ppf(1.0 - tail, len(diff) - 1))
        if gain > margin * se and gain > best_gain:
            best, best_gain = candidate, gain
    return best


@dataclass(frozen=True)
class _Splits:
    splits: list[tuple[pd.DataFrame, pd.DataFrame]]
    overlap: float
    aligned: tuple[bool, ...] | None = None


def validation_splits(
    agent: Agent[Any], frame: pd.DataFrame, *, fraction: float, seed: int, folds: int
) -> tuple[list[tuple[pd.DataFrame, pd.DataFrame]], float]:
    """Up to ``folds`` (fit, held-out) splits of one MSP's training rows, and their overlap.

    * An agent with the default random split (:meth:`Agent.split` not overridden):
      stratified ``folds``-fold cross-validation, shuffled by ``seed``: every row is held out
      once, each class (the agent's ``label_column``, and ``is_anomaly`` where the rows have
      it) spread evenly over the folds, so that a small MSP's rare class is in every fold's
      training rows and every fold can be scored; each fit uses ``1 - 1/folds`` of the rows.
      Overlap ``1 / (folds - 1)``.
    * An agent whose split is random but its own: ``folds`` splits with seeds
      ``seed, seed + 1, ...`` (repeated random splits), overlap ``fraction / (1 - fraction)``.
    * An agent whose split does not depend on the seed (it holds out the *last* periods, e.g.
      ``revenue``): rolling forecast origins: the last periods, then the periods before them
      forecast from the history before those, and so on while the history allows; their
      held-out periods do not overlap (overlap 0). Where the rows are dated (``date``), the
      origins also include those whose held-out periods are the months of the forecast the
      MSP will make, one, two, ... years before, from a history of at least a year (as the
      forecast's own): see :func:`select`'s ``aligned``.
    """
    out = _validation_splits(agent, frame, fraction=fraction, seed=seed, folds=folds)
    return out.splits, out.overlap


def _validation_splits(
    agent: Agent[Any], frame: pd.DataFrame, *, fraction: float, seed: int, folds: int
) -> _Splits:
    if type(agent).split is Agent.split:
        return _stratified_folds(agent, frame, seed=seed, folds=folds)
    try:
        first = agent.split(frame, test_fraction=fraction, seed=seed)
    except MeshflError:
        return _Splits([], 0.0)
    out = [first]
    try:
        again = agent.split(frame, test_fraction=fraction, seed=seed + 1)
    except MeshflError:
        return _Splits(out, 0.0)
    if not _same_rows(first[1], again[1]):
        for k in range(1, folds):
            out.append(
                again if k == 1 else agent.split(frame, test_fraction=fraction, seed=seed + k)
            )
        return _Splits(out, fraction / (1.0 - fraction))
    return _rolling_origins(agent, frame, first, fraction=fraction, seed=seed, folds=folds)


def _stratified_folds(agent: Agent[Any], frame: pd.DataFrame, *, seed: int, folds: int) -> _Splits:
    n = len(frame)
    k = min(folds, n)
    if k < 2:
        return _Splits([], 0.0)
    columns = [
        c
        for c in dict.fromkeys((getattr(agent, "label_column", None), "is_anomaly"))
        if c is not None and c in frame.columns
    ]
    rng = np.random.default_rng([seed, 0x5F01D])
    order = rng.permutation(n)
    if columns:
        strata = frame[columns].astype(str).agg("|".join, axis=1).to_numpy()[order]
        order = order[np.argsort(strata, kind="stable")]  # class by class, shuffled within
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % k  # deal each class out over the folds in turn
    splits = []
    for f in range(k):
        fit = _take(frame, np.flatnonzero(fold != f))
        held = _take(frame, np.flatnonzero(fold == f))
        inherit_validation(frame, fit, held)
        splits.append((fit, held))
    return _Splits(splits, 1.0 / (k - 1))


def _take(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    rows = frame.take(positions)
    rows.index = pd.RangeIndex(len(positions))
    return rows


def _rolling_origins(
    agent: Agent[Any],
    frame: pd.DataFrame,
    first: tuple[pd.DataFrame, pd.DataFrame],
    *,
    fraction: float,
    seed: int,
    folds: int,
) -> _Splits:
    held = first[1]
    dated = "date" in frame.columns and "is_holdout" in held.columns
    if not dated:
        out, fit = [first], first[0]
        while len(out) < folds:
            try:
                fit, held_rows = agent.split(fit, test_fraction=fraction, seed=seed)
            except MeshflError:
                break
            out.append((fit, held_rows))
        return _Splits(out, 0.0)
    # periods per series: the forecast's horizon h, the length of a year in periods
    names = held["series"] if "series" in held.columns else pd.Series(0, index=held.index)
    h = int(held["is_holdout"].groupby(names.to_numpy()).sum().iloc[0])
    season = _periods_per_year(frame)
    lengths = frame.groupby("series").size() if "series" in frame.columns else [len(frame)]
    shortest = int(min(lengths))
    skips = sorted(
        {k * h for k in range(folds)}
        | {j * season - h for j in range(1, shortest // max(season, 1) + 1) if j * season >= h}
    )
    out, aligned, ratios = [], [], []
    for skip in skips:
        try:
            fit, held_rows = (
                first
                if skip == 0
                else agent.split(_drop_last(frame, skip), test_fraction=fraction, seed=seed)
            )
        except MeshflError:
            continue
        same_months = season > 0 and (skip + h) % season == 0
        year_of_history = shortest - skip - h >= season  # as the forecast has (or more)
        if skip >= folds * h and not (same_months and year_of_history):
            continue
        out.append((fit, held_rows))
        aligned.append(bool(same_months and year_of_history))
        ratios.append(h / max(shortest - skip - h, 1))
    # the fits are nested histories (each holds most of the next one's periods): their
    # errors are correlated as overlapping random splits' are; the same correction, with
    # the mean of n_held / n_fit
    return _Splits(out, float(np.mean(ratios)) if ratios else 0.0, tuple(aligned))


def _periods_per_year(frame: pd.DataFrame) -> int:
    """Periods in a year of a dated frame (52 weekly, 12 monthly), from its dates' spacing."""
    dates = pd.DatetimeIndex(frame["date"])
    if "series" in frame.columns:
        first = frame["series"].iloc[0]
        dates = pd.DatetimeIndex(frame.loc[frame["series"] == first, "date"])
    if len(dates) < 2:
        return 0
    days = float(np.median(np.diff(dates.as_unit("ns").asi8)) / 86_400e9)
    return round(365.25 / days) if days > 0 else 0


def _drop_last(frame: pd.DataFrame, periods: int) -> pd.DataFrame:
    """``frame`` less the last ``periods`` rows of each series (rows sorted by date)."""
    if "series" not in frame.columns:
        rows = frame.iloc[: max(len(frame) - periods, 0)]
    else:
        from_end = frame.groupby("series", sort=False).cumcount(ascending=False)
        rows = frame[from_end.to_numpy() >= periods]
    rows = rows.reset_index(drop=True)
    inherit_validation(frame, rows)
    return rows


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.shape == b.shape and bool(a.reset_index(drop=True).equals(b.reset_index(drop=True)))


def _validate(
    agent: Agent[Any], frame: pd.DataFrame, build: Any, seed: int, fraction: float, folds: int
) -> tuple[dict[str, tuple[float, ...]], float, tuple[bool, ...] | None]:
    """Each candidate's metric on each validation split of ``frame`` (NaN where it cannot be
    scored), the splits' overlap and (rolling origins of dated rows) which splits hold out
    the months forecast; ``{}`` without a split the personalized candidate scores on (too
    few rows to split, or held-out rows the metric cannot score)."""
    found = _validation_splits(agent, frame, fraction=fraction, seed=seed, folds=folds)
    scores: dict[str, list[float]] = {c: [] for c in CHOICES}
    aligned: list[bool] = []
    for i, (fit, held) in enumerate(found.splits):
        try:
            fit_rows, held_rows = agent.prepare(fit), agent.prepare(held)
        except MeshflError:
            continue
        if len(fit_rows) == 0 or len(held_rows) == 0:
            continue
        for choice in CHOICES:
            try:
                model = build(choice, fit_rows, fold=i)
                value = agent.evaluate(model, held_rows).get(agent.metric)
            except MeshflError:  # e.g. a local model that cannot train on too few rows
                value = None
            scores[choice].append(float("nan") if value is None else float(value))
        if found.aligned is not None:
            aligned.append(found.aligned[i])
    if not np.isfinite(scores["personalized"]).any():
        return {}, found.overlap, None
    return (
        {c: tuple(v) for c, v in scores.items()},
        found.overlap,
        None if found.aligned is None else tuple(aligned),
    )
