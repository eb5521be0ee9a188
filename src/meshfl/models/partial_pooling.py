"""Partial pooling: one MSP's own statistics combined with the federation's.

A personalized model sits between the MSP's own fit (no pooling) and the federated one
(complete pooling). How far it sits is estimated from the MSP's own data by empirical
Bayes (Efron & Morris, JASA 1975): the federation's estimate is a prior whose strength is
fitted to the MSP's data, so an MSP whose data follow the
federation's model borrows almost all of it, and an MSP whose data differ keeps its own.

* Linear models from sufficient statistics (``A = XᵀX``, ``b = Xᵀy``): the prior is the
  others' fit ``β_o`` with precision ``κ·A_o`` (a power prior, Ibrahim & Chen, Stat. Sci.
  2000: the others' data, down-weighted by ``κ``; one ``κ`` per group of coefficients). The
  posterior mean is the solve of ``A + P`` against ``b + P β_o``: statistics again, so the
  agent's model reads them as it reads the global ones. ``κ`` is chosen by the MSP's
  leave-one-out prediction error rather than by the marginal likelihood, whose Occam factor
  favoured the others' coefficients even where they forecast the MSP's series worse.
* Counts (histograms, leaf masses): per group, the MSP's counts are multinomial with
  probabilities drawn from a Dirichlet centred on the others' proportions with
  concentration ``alpha`` (Dirichlet-multinomial); the posterior mean is ``n + alpha·q``.

Everything here is pure: arrays in, arrays out.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

__all__ = ["dirichlet_concentration", "loo_prior_precision"]

WEIGHT_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, np.inf)
"""Relative prior weights tried per group by :func:`loo_prior_precision` (0: own fit only;
inf: the others' coefficients as they are)."""


def loo_prior_precision(
    X: Sequence[ArrayLike],
    y: Sequence[ArrayLike],
    leverage: Sequence[ArrayLike],
    A_others: ArrayLike,
    beta_others: ArrayLike,
    *,
    groups: Sequence[ArrayLike],
    ridge: float,
    grid: Sequence[float] = WEIGHT_GRID,
) -> NDArray[np.float64]:
    """The prior precision on the others' coefficients that best predicts left-out rows.

    One MSP fits ``y = Xβ + e`` on its own blocks of rows (``X[k]``, ``y[k]``: a series each,
    after the nuisance part, e.g. its own trend, is projected out; ``leverage[k]`` is that
    nuisance part's leverage of each row). The prior ``β ~ N(β_o, sigma²·P⁻¹)`` has
    ``P = blockdiag(κ_g · A_o[g, g])`` over the coefficient ``groups`` (e.g. a seasonal shape
    and holiday effects, which MSPs may share to different degrees): the others' data,
    down-weighted by ``κ_g``. The posterior mean is ``β = (A + P + ridge·I)⁻¹(b + Pβ_o)``.
    ``κ_g = ω_g · tr(A[g, g]) / tr(A_o[g, g])`` is searched over ``grid`` for each group,
    minimising the leave-one-out error ``Σ (r_i / (1 - h_i))²`` (``h_i``: the row's total
    leverage; a linear smoother's exact leave-one-out residual, Allen 1974).

    Returns
    -------
    numpy.ndarray
        ``P`` (``p x p``); an ``inf`` weight is returned as a large finite one (``1e8`` times
        the group's own information), which reproduces ``β_o`` on that group.

    Examples
    --------
    An MSP whose rows follow the others' coefficients borrows them; one whose rows differ
    keeps its own:

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 2)); e = rng.normal(0, 0.5, 40); h = np.zeros(40)
    >>> Ao = 100.0 * X.T @ X
    >>> def weight(beta):
    ...     P = loo_prior_precision([X], [X @ beta + e], [h], Ao, [1.0, -1.0],
    ...                             groups=[[0, 1]], ridge=1e-3)
    ...     return P[0, 0] / Ao[0, 0]
    >>> bool(weight([1.0, -1.0]) > 0.1 > 0.01 >= weight([3.0, 1.0]))
    True
    """
    Xs = [np.asarray(x, dtype=np.float64) for x in X]
    ys = [np.asarray(v, dtype=np.float64) for v in y]
    hz = [np.asarray(v, dtype=np.float64) for v in leverage]
    A_o = np.asarray(A_others, dtype=np.float64)
    beta_o = np.asarray(beta_others, dtype=np.float64)
    p = len(beta_o)
    A = sum((x.T @ x for x in Xs), np.zeros((p, p)))
    b = sum((x.T @ v for x, v in zip(Xs, ys, strict=True)), np.zeros(p))
    index = [np.asarray(g, dtype=int) for g in groups]
    units = []
    for g in index:
        unit = np.zeros((p, p))
        ratio = np.trace(A[np.ix_(g, g)]) / max(np.trace(A_o[np.ix_(g, g)]), 1e-300)
        unit[np.ix_(g, g)] = A_o[np.ix_(g, g)] * ratio
        units.append(unit)

    def loo(P: NDArray[np.float64]) -> float:
        inv = np.linalg.inv(A + P + ridge * np.eye(p))
        beta = inv @ (b + P @ beta_o)
        total = 0.0
        for x, v, h0 in zip(Xs, ys, hz, strict=True):
            h = h0 + np.einsum("ij,jk,ik->i", x, inv, x)
            r = (v - x @ beta) / np.clip(1.0 - h, 1e-3, None)
            total += float(r @ r)
        return total

    best_P, best = np.zeros((p, p)), np.inf
    for omegas in itertools.product(grid, repeat=len(index)):
        P = sum(
            (u * (1e8 if np.isinf(w) else w) for u, w in zip(units, omegas, strict=True)),
            np.zeros((p, p)),
        )
        score = loo(P)
        if score < best * (1 - 1e-9):  # ties keep the smaller weights: the MSP's own first
            best_P, best = P, score
    return best_P


def dirichlet_concentration(
    counts: ArrayLike, prior: ArrayLike, *, grid: ArrayLike | None = None
) -> float:
    """The concentration ``alpha`` of a Dirichlet around ``prior`` that best explains ``counts``.

    ``counts`` and ``prior`` have one row per group (a tree) and one column per cell (its
    leaves); each row of ``prior`` holds proportions (rows are normalised here; a tiny floor
    keeps every cell possible). The Dirichlet-multinomial log-likelihood
    ``Σ_g [lnΓ(a) - lnΓ(a + N_g) + Σ_l (lnΓ(n_gl + a·q_gl) - lnΓ(a·q_gl))]`` (``a = alpha``)
    is maximised over
    ``grid`` (default: ``alpha = N̄·ω`` for ``ω`` in 10⁻³…10³, with ``N̄`` the mean row total);
    ``alpha = inf`` (the multinomial of ``prior`` itself) is also tried.

    Returns
    -------
    float
        ``alpha`` (``inf``: the counts look drawn from ``prior`` itself). The posterior mean
        proportions are ``(n + alpha·q) / (N + alpha)``.
    """
    n = np.atleast_2d(np.asarray(counts, dtype=np.float64)).clip(min=0.0)
    q = np.atleast_2d(np.asarray(prior, dtype=np.float64)).clip(min=0.0)
    q = q + 1e-6 * q.sum(axis=1, keepdims=True).clip(min=1e-300) / q.shape[1] + 1e-12
    q = q / q.sum(axis=1, keepdims=True)
    totals = n.sum(axis=1)
    if grid is None:
        grid = max(float(totals.mean()), 1.0) * np.logspace(-3, 3, 49)
    # both on one scale: the probability of the cells as an ordered sequence (the
    # Dirichlet-multinomial tends to the multinomial of the prior as alpha grows)
    best, best_ll = np.inf, float(np.sum(n * np.log(q)))
    for alpha in np.asarray(grid, dtype=np.float64):
        aq = alpha * q
        ll = float(
            np.sum(gammaln(alpha) - gammaln(alpha + totals)) + np.sum(gammaln(n + aq) - gammaln(aq))
        )
        if ll > best_ll + 1e-9:
            best, best_ll = float(alpha), ll
    return best
