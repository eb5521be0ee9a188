"""A dispatch policy network and its REINFORCE loss, one episode per record.

The policy scores every (ticket, technician) pair from the pair's features
(:data:`meshfl.models.dispatch_env.FEATURES`) with a small MLP shared by all pairs, and picks a
technician by a softmax over the roster: it works for any roster size, and its parameters are
what MSPs average.

It is trained by REINFORCE (Williams, "Simple statistical gradient-following algorithms for
connectionist reinforcement learning", Machine Learning 1992) with reward-to-go and the
leave-one-out baseline of Kool, van Hoof and Welling ("Buy 4 REINFORCE samples, get a
baseline for free!", ICLR 2019 workshop): each episode is rolled out ``K`` times and each
rollout's return is compared with the mean of the other ``K - 1`` at the same ticket. The
baseline and the advantage scaling use only the episode's own rollouts, so one episode's
loss term depends on that episode alone: an episode is a *record* for DP-SGD, whose
per-record clipping then bounds what one day of an MSP's tickets can change.

A record's features are ``(K·T, M, F)`` and its targets ``(K·T, 2 + M)``: the action, the
advantage weight and the roster mask of each decision (:func:`episode_records`);
:func:`reinforce_loss` is their mean over records.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from meshfl.models.dispatch_env import FEATURES, Chooser, Observation, Outcome

__all__ = [
    "DispatchPolicy",
    "episode_records",
    "greedy_policy_choice",
    "reinforce_loss",
    "sampling_choice",
]

_MASKED = -1e9


class DispatchPolicy(nn.Module):
    """MLP score of each (ticket, technician) pair; logits over the roster.

    Parameters
    ----------
    hidden : int
        Width of the hidden layer.
    """

    def __init__(self, hidden: int = 32):
        super().__init__()
        out = nn.Linear(hidden, 1)
        with torch.no_grad():  # start as the uniform random dispatcher
            out.weight.zero_()
            out.bias.zero_()
        self.net = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.Tanh(), out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``(..., M)`` of features ``(..., M, F)`` (mask them before the softmax)."""
        return self.net(features).squeeze(-1)

    def probabilities(self, obs: Observation) -> np.ndarray:
        """Choice probabilities ``(E, M)`` over the valid technicians of an observation."""
        with torch.no_grad():
            scores = self(torch.from_numpy(obs.features))
            scores = scores.masked_fill(~torch.from_numpy(obs.valid), _MASKED)
            return torch.softmax(scores.double(), dim=-1).numpy()


def sampling_choice(policy: DispatchPolicy, rng: np.random.Generator) -> Chooser:
    """A dispatcher that samples technicians from ``policy`` (for training rollouts)."""

    def choose(obs: Observation) -> np.ndarray:
        proba = policy.probabilities(obs)
        cum = np.cumsum(proba, axis=1)
        u = rng.random((len(cum), 1)) * cum[:, -1:]
        act = np.minimum((cum < u).sum(1), cum.shape[1] - 1)
        # rounding could land on a padded technician (probability ~0): take the mode then
        ok = obs.valid[np.arange(len(act)), act]
        return np.where(ok, act, proba.argmax(1))

    return choose


def greedy_policy_choice(policy: DispatchPolicy) -> Chooser:
    """A dispatcher that takes ``policy``'s most likely technician (for evaluation)."""

    def choose(obs: Observation) -> np.ndarray:
        return policy.probabilities(obs).argmax(1)

    return choose


def episode_records(
    outcome: Outcome, *, rollouts: int, discount: float, hours_cost: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode REINFORCE records of ``rollouts`` consecutive rows per episode.

    Parameters
    ----------
    outcome : Outcome
        A recorded run (``record=True``) of a batch stacked with ``repeats=rollouts``.
    rollouts : int
        Rollouts per episode ``K`` (>= 2 for the leave-one-out baseline).
    discount : float
        Discount per ticket of the reward-to-go.
    hours_cost : float
        Reward lost per paid technician hour.

    Returns
    -------
    features : numpy.ndarray
        ``(episodes, K·T, M, F)`` float32.
    targets : numpy.ndarray
        ``(episodes, K·T, 2 + M)`` float32: action, advantage weight, roster mask. The
        weights of one episode are its advantages scaled to unit RMS and divided by its
        number of decisions, so each record's loss is a mean over its own decisions.
    """
    if outcome.features is None or outcome.valid is None:
        raise ValueError("episode_records needs an Outcome recorded with record=True")
    rows, t_count, m_count, f_count = outcome.features.shape
    if rollouts < 2 or rows % rollouts:
        raise ValueError(f"rollouts must be >= 2 and divide the rows ({rows}); got {rollouts}")
    n_ep = rows // rollouts
    reward = outcome.rewards(hours_cost=hours_cost)
    ret = np.zeros_like(reward)
    running = np.zeros(rows)
    for t in range(t_count - 1, -1, -1):
        running = reward[:, t] + discount * running
        ret[:, t] = running
    ret = ret.reshape(n_ep, rollouts, t_count)
    mask = outcome.ticket_mask.reshape(n_ep, rollouts, t_count)
    baseline = (ret.sum(1, keepdims=True) - ret) / (rollouts - 1)  # leave one out
    adv = np.where(mask, ret - baseline, 0.0)
    count = np.maximum(mask.sum((1, 2), keepdims=True), 1)
    rms = np.sqrt((adv**2).sum((1, 2), keepdims=True) / count)
    weight = adv / (rms + 1e-8) / count
    features = outcome.features.reshape(n_ep, rollouts * t_count, m_count, f_count)
    targets = np.concatenate(
        [
            outcome.actions.reshape(n_ep, rollouts * t_count, 1).astype(np.float32),
            weight.reshape(n_ep, rollouts * t_count, 1).astype(np.float32),
            outcome.valid.reshape(n_ep, rollouts * t_count, m_count).astype(np.float32),
        ],
        axis=-1,
    )
    return np.ascontiguousarray(features), targets


def reinforce_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over records of ``-sum_decisions weight · log pi(action)``.

    ``scores`` is the policy's ``(B, L, M)`` output on the records' features, ``targets`` the
    ``(B, L, 2 + M)`` of :func:`episode_records`. No term mixes records (DP-SGD's premise).
    """
    action = targets[..., 0].long()
    weight = targets[..., 1]
    valid = targets[..., 2:] > 0.5
    logits = scores.masked_fill(~valid, _MASKED)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
    return -(weight * logp).sum(-1).mean()
