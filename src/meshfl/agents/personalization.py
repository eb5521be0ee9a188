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

The candidate that scores best on the validation rows (ties: in the order above) is then
rebuilt on all the MSP's training rows. The choice is the MSP's and uses only its data; nothing
of it leaves the MSP. It is plain model selection on held-out rows: it costs the candidates'
training on a part of the rows, and on very small MSPs the validation score is itself noisy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from meshfl.agents.base import Agent, GlobalModel
from meshfl.config.errors import ConfigError, MeshflError

__all__ = ["Choice", "Personalized", "personalize"]

Choice = Literal["personalized", "global", "local"]
CHOICES: tuple[Choice, ...] = get_args(Choice)


@dataclass(frozen=True)
class Personalized:
    """One MSP's model after personalization, and why it is that one."""

    model: GlobalModel
    choice: Choice
    """Which candidate the MSP kept (``"personalized"``, ``"global"`` or ``"local"``)."""
    validation: dict[str, float] = field(default_factory=dict)
    """Each candidate's headline metric on the validation rows (empty: no choice made)."""


def personalize(
    agent: Agent[Any],
    vector: np.ndarray,
    train: pd.DataFrame | str | os.PathLike[str],
    *,
    rounds: int,
    seed: int,
    choose: bool = True,
    validation_fraction: float = 0.25,
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
        Seeds the split, fine-tuning and local training.
    choose : bool
        Choose among personalized, global and local-only on a validation split (default).
        ``False`` returns the personalized model.
    validation_fraction : float
        Share of the training rows held out to choose on (the agent's own split: the last
        periods of each series for ``revenue``).
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
    vector = np.asarray(vector, dtype=np.float64)
    frame = agent.load_data(train)

    def build(choice: Choice, rows: Any) -> np.ndarray:
        if choice == "global":
            return vector
        if choice == "personalized":
            return agent.personalize(vector, rows, seed=seed)
        return agent.fit_alone(rows, rounds=rounds, seed=seed)

    scores = _validate(agent, frame, build, seed, validation_fraction) if choose else {}
    choice: Choice = "personalized"
    if scores:
        sign = 1.0 if agent.higher_is_better else -1.0
        scored = [c for c in CHOICES if c in scores]
        choice = max(scored, key=lambda c: (sign * scores[c], -CHOICES.index(c)))
    if choice == "global":
        chosen = vector
    elif choice == "local" and local is not None:
        chosen = np.asarray(local, dtype=np.float64)
    else:
        chosen = build(choice, agent.prepare(frame))
    return Personalized(agent.model(chosen), choice, scores)


def _validate(
    agent: Agent[Any], frame: pd.DataFrame, build: Any, seed: int, fraction: float
) -> dict[str, float]:
    """Each candidate's metric on a validation split of ``frame``; ``{}`` when it has none
    (too few rows to split, or validation rows the metric cannot score)."""
    try:
        fit, held = agent.split(frame, test_fraction=fraction, seed=seed)
        fit_rows, held_rows = agent.prepare(fit), agent.prepare(held)
    except MeshflError:
        return {}
    if len(fit_rows) == 0 or len(held_rows) == 0:
        return {}
    scores: dict[str, float] = {}
    for choice in CHOICES:
        try:
            value = agent.evaluate(build(choice, fit_rows), held_rows).get(agent.metric)
        except MeshflError:  # e.g. a local model that cannot train on too few rows
            continue
        if value is not None and np.isfinite(value):
            scores[choice] = float(value)
    return scores if "personalized" in scores else {}
