"""Partial pooling: one MSP's own statistics combined with the federation's.

A personalized model sits between the MSP's own fit (no pooling) and the federated one
(complete pooling). How far it sits is estimated from the MSP's own data by empirical
Bayes (Efron & Morris, JASA 1975): the federation's estimate is a prior whose strength
maximises the marginal likelihood of the MSP's data, so an MSP whose data follow the
federation's model borrows almost all of it, and an MSP whose data differ keeps its own.

* Linear models from sufficient statistics (``A = XᵀX``, ``b = Xᵀy``): the prior is the
  others' fit ``β_o`` with precision ``κ·A_o`` (a power prior, Ibrahim & Chen, Stat. Sci.
  2000: the others' data, down-weighted by ``κ``). The posterior mean is the solve of
  ``A + κ·A_o`` against ``b + κ·A_o β_o``: statistics again, so the agent's model reads them
  as it reads the global ones.
* Counts (histograms, leaf masses): per group, the MSP's counts are multinomial with
  probabilities drawn from a Dirichlet centred on the others' proportions with
  concentration ``alpha`` (Dirichlet-multinomial); the posterior mean is ``n + alpha·q``.

Everything here is pure: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

__all__ = ["dirichlet_concentration", "power_prior_weight"]

WEIGHT_GRID = np.concatenate([[0.0], np.logspace(-3, 3, 49), [np.inf]])
"""Relative prior weights ``ω`` tried by :func:`power_prior_weight` (0: own fit only;
inf: the others' fit only)."""


def _logdet(matrix: NDArray[np.float64]) -> float:
    sign, value = np.linalg.slogdet(matrix)
    return float(value) if sign > 0 else -np.inf


def power_prior_weight(
    A: ArrayLike,
    b: ArrayLike,
    c: float,
    dof: float,
    A_others: ArrayLike,
    beta_others: ArrayLike,
    *,
    ridge: float,
    grid: ArrayLike = WEIGHT_GRID,
) -> float:
    """The prior weight ``κ`` on the others' statistics that best explains one MSP's data.

    The MSP's model is ``y = Xβ + e``, ``e ~ N(0, sigma²)``, with its own statistics ``A = XᵀX``,
    ``b = Xᵀy``, ``c = yᵀy`` over ``dof`` residual degrees of freedom. The prior is
    ``β ~ N(m, sigma²P⁻¹)`` with ``P = κ·A_o + ridge·I`` and ``m = P⁻¹ κ A_o β_o``. With ``sigma²``
    profiled out, the log marginal likelihood is
    ``-dof/2 · log(Q/dof) - 1/2 · (log|P + A| - log|P|)``, ``Q = rᵀr - dᵀ(P + A)⁻¹d``, where
    ``r = y - Xm`` (``rᵀr = c - 2mᵀb + mᵀAm``) and ``d = Xᵀr = b - Am``. ``κ`` is searched as
    ``ω·tr(A)/tr(A_o)`` over ``grid``; ``ω = inf`` is the others' fit itself.

    Returns
    -------
    float
        ``κ`` (0: the MSP's own ridge fit; ``inf``: the others' ``β_o``).

    Examples
    --------
    An MSP whose data follow the others' coefficients borrows from them; one whose data
    differ a lot keeps (almost) its own:

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(30, 2)); e = rng.normal(0, 0.5, 30)
    >>> Ao, beta_o = (lambda Xo: Xo.T @ Xo)(rng.normal(size=(3000, 2))), [1.0, -1.0]
    >>> def kappa(y):
    ...     return power_prior_weight(X.T @ X, X.T @ y, y @ y, 28, Ao, beta_o, ridge=1e-3)
    >>> bool(kappa(X @ [1.0, -1.0] + e) > 100 * kappa(X @ [3.0, 1.0] + e))
    True
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    A_o = np.asarray(A_others, dtype=np.float64)
    beta_o = np.asarray(beta_others, dtype=np.float64)
    p = len(b)
    dof = max(float(dof), 1.0)
    scale = float(np.trace(A)) / max(float(np.trace(A_o)), 1e-300)
    best, best_ll = 0.0, -np.inf
    for omega in np.asarray(grid, dtype=np.float64):
        if np.isinf(omega):
            m = beta_o
            rr = c - 2 * m @ b + m @ A @ m
            ll = -0.5 * dof * np.log(max(rr, 1e-300) / dof)
            kappa = np.inf
        else:
            kappa = float(omega) * scale
            P = kappa * A_o + ridge * np.eye(p)
            m = np.linalg.solve(P, kappa * A_o @ beta_o)
            rr = c - 2 * m @ b + m @ A @ m
            d = b - A @ m
            Q = rr - d @ np.linalg.solve(P + A, d)
            ll = -0.5 * dof * np.log(max(Q, 1e-300) / dof) - 0.5 * (_logdet(P + A) - _logdet(P))
        if ll > best_ll + 1e-9:  # ties keep the smaller weight: the MSP's own data first
            best, best_ll = kappa, ll
    return best


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
