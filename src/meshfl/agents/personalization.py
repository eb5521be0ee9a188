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
(:func:`validation_splits`: repeated random splits, or, for an agent whose split holds out the
*last* periods, rolling forecast origins), and :func:`select` applies a one-standard-error
rule that favours going alone: the MSP keeps its local-only model unless another candidate
beats it, on the paired per-split differences, by more than one standard error of their mean
(Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, 2nd ed., §7.10; the
standard error of repeated random splits, which overlap, is corrected as in Nadeau & Bengio,
"Inference for the generalization error", *Machine Learning* 52, 2003). A single small split
picked wrongly one MSP in five; the rule trades some of personalization's gain for a choice
that is not worse than going alone unless the evidence says so. The kept candidate is then
rebuilt on all the MSP's training rows. The choice is the MSP's and uses only its data;
nothing of it leaves the MSP.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from meshfl.agents.base import Agent, GlobalModel
from meshfl.config.errors import ConfigError, MeshflError

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

    def build(choice: Choice, rows: Any) -> np.ndarray:
        if choice == "global":
            return vector
        if choice == "personalized":
            return agent.personalize(vector, rows, seed=seed)
        return agent.fit_alone(rows, rounds=rounds, seed=seed)

    per_fold: dict[str, tuple[float, ...]] = {}
    overlap = 0.0
    if choose:
        per_fold, overlap = _validate(agent, frame, build, seed, validation_fraction, folds)
    choice: Choice = "personalized"
    if per_fold:
        choice = select(per_fold, higher_is_better=agent.higher_is_better, overlap=overlap)
    if choice == "global":
        chosen = vector
    elif choice == "local" and local is not None:
        chosen = np.asarray(local, dtype=np.float64)
    else:
        chosen = build(choice, agent.prepare(frame))
    means = {c: float(np.nanmean(v)) for c, v in per_fold.items() if np.isfinite(v).any()}
    return Personalized(agent.model(chosen), choice, means, per_fold)


def select(
    scores: Mapping[str, Sequence[float]], *, higher_is_better: bool, overlap: float = 0.0
) -> Choice:
    """The candidate an MSP keeps, from each candidate's metric on the same validation splits.

    One-standard-error rule in favour of going alone: ``"local"`` is kept unless another
    candidate's mean paired improvement over it (split by split) exceeds one standard error
    of that mean; of the candidates that do, the one with the best mean improvement wins
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
        ``n_held / n_fit`` of repeated random splits, whose training rows overlap: the
        variance of the mean difference is then ``(1/k + overlap) s²`` rather than ``s²/k``
        (Nadeau & Bengio, 2003). 0 for splits whose held-out rows do not overlap.

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
    best: Choice = "local"
    best_gain = 0.0
    for candidate in ("personalized", "global"):
        if candidate not in values:
            continue
        diff = sign * (values[candidate] - values["local"])
        diff = diff[np.isfinite(diff)]
        if len(diff) < 2:
            continue  # one split gives no standard error: not clearly better
        gain = float(diff.mean())
        se = float(np.sqrt((1.0 / len(diff) + overlap) * diff.var(ddof=1)))
        if gain > se and gain > best_gain:
            best, best_gain = candidate, gain
    return best


def validation_splits(
    agent: Agent[Any], frame: pd.DataFrame, *, fraction: float, seed: int, folds: int
) -> tuple[list[tuple[pd.DataFrame, pd.DataFrame]], float]:
    """Up to ``folds`` (fit, held-out) splits of one MSP's training rows, and their overlap.

    Where :meth:`Agent.split` depends on the seed (a random split), ``folds`` splits with
    seeds ``seed, seed + 1, ...``: repeated random splits, whose overlap term is
    ``fraction / (1 - fraction)``. Where it does not (an agent that holds out the last
    periods, e.g. ``revenue``), rolling forecast origins: the last periods, then the periods
    before them forecast from the history before those, and so on while the history allows;
    their held-out periods do not overlap (overlap 0).
    """
    try:
        first = agent.split(frame, test_fraction=fraction, seed=seed)
    except MeshflError:
        return [], 0.0
    out = [first]
    try:
        again = agent.split(frame, test_fraction=fraction, seed=seed + 1)
    except MeshflError:
        return out, 0.0
    if not _same_rows(first[1], again[1]):
        for k in range(1, folds):
            out.append(
                again if k == 1 else agent.split(frame, test_fraction=fraction, seed=seed + k)
            )
        return out, fraction / (1.0 - fraction)
    fit = first[0]
    while len(out) < folds:
        try:
            fit, held = agent.split(fit, test_fraction=fraction, seed=seed)
        except MeshflError:
            break
        out.append((fit, held))
    return out, 0.0


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.shape == b.shape and bool(a.reset_index(drop=True).equals(b.reset_index(drop=True)))


def _validate(
    agent: Agent[Any], frame: pd.DataFrame, build: Any, seed: int, fraction: float, folds: int
) -> tuple[dict[str, tuple[float, ...]], float]:
    """Each candidate's metric on each validation split of ``frame`` (NaN where it cannot be
    scored), and the splits' overlap; ``{}`` without a split the personalized candidate
    scores on (too few rows to split, or held-out rows the metric cannot score)."""
    splits, overlap = validation_splits(agent, frame, fraction=fraction, seed=seed, folds=folds)
    scores: dict[str, list[float]] = {c: [] for c in CHOICES}
    for fit, held in splits:
        try:
            fit_rows, held_rows = agent.prepare(fit), agent.prepare(held)
        except MeshflError:
            continue
        if len(fit_rows) == 0 or len(held_rows) == 0:
            continue
        for choice in CHOICES:
            try:
                value = agent.evaluate(build(choice, fit_rows), held_rows).get(agent.metric)
            except MeshflError:  # e.g. a local model that cannot train on too few rows
                value = None
            scores[choice].append(float("nan") if value is None else float(value))
    if not np.isfinite(scores["personalized"]).any():
        return {}, overlap
    return {c: tuple(v) for c, v in scores.items()}, overlap
