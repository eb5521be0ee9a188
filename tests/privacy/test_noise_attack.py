"""The regenerate-and-subtract attack of the privacy audit (issue 11 §1) must fail.

Until the fix every MSP drew its privacy noise, and DP-SGD its Poisson batches, from
generators seeded with the run's seed: ``simulate(seed=...)`` / ``mesh.toml``, 0 by default,
known to everyone. Whoever knows the seed then knows the noise: running the same code with
the same seed on data of their own and subtracting their own noiseless result gives exactly
the noise the MSP added, and subtracting that from the MSP's release gives the MSP's
noiseless update (cosine 1.000000, or the noiseless DP-SGD step to float rounding).

Each test here plays that attacker against one path that adds privacy noise: DP-SGD
(``train_private``, also behind resource_allocation's policy update), the Gaussian mechanism of the
statistics agents (anomaly, client_health, revenue) and MSP-level noise
(``msp_privacy.train_round``). They only use public entry points, so they run against any
version: on 2081f48 every one fails; now the noise and the batches come from OS entropy
(:mod:`meshfl.privacy.noise`), and the attacker's "recovered" update is as far from the
noiseless one as the noise itself.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import meshfl.agents
from meshfl.agents.update import Update
from meshfl.federation.msp_privacy import train_round
from meshfl.federation.records import RoundContext, RoundInstructions
from meshfl.models.heads import MultiTaskHead, multitask_loss
from meshfl.privacy.budget import DPStep
from meshfl.privacy.config import DPConfig
from meshfl.privacy.dpsgd import train_private
from meshfl.privacy.ledger import PrivacyLedger
from meshfl.privacy.mechanisms import clip_l2

pytestmark = [
    # the seeded-RNG warning of the old implementation (gone since noise comes from the OS)
    pytest.mark.filterwarnings("ignore:meshfl .*not cryptographically secure:UserWarning"),
    pytest.mark.filterwarnings("ignore:meshfl DP-SGD samples batches:UserWarning"),
    pytest.mark.filterwarnings("ignore:meshfl resource_allocation DP-SGD:UserWarning"),
]

SEED = 0  # the public seed everybody knows (the simulation's default)


def assert_attack_fails(release: np.ndarray, noise_guess: np.ndarray, noiseless: np.ndarray):
    """The attacker's ``release - noise_guess`` must miss ``noiseless`` by about the noise.

    With the seed in control of the noise the miss is rounding (~1e-7 of the noise); with
    independent noise it is ``sqrt(2)`` times the noise's norm (guess and noise both count).
    """
    noise = release - noiseless
    recovered = release - noise_guess
    miss = float(np.linalg.norm(recovered - noiseless))
    scale = float(np.linalg.norm(noise))
    assert scale > 0, "the release carries no noise at all"
    cosine = float(
        np.dot(recovered, noiseless) / (np.linalg.norm(recovered) * np.linalg.norm(noiseless))
    )
    assert miss > 0.5 * scale, (
        f"the seed gives the noise away: the attacker recovers the noiseless update to "
        f"{miss / scale:.2e} of the noise (cosine {cosine:.6f})"
    )


def flat(module: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).double().numpy()


# --------------------------------------------------------------------------- DP-SGD


def dpsgd_data(seed: int, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    return x, np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n)], axis=1)


def dpsgd_release(start: torch.nn.Module, data, *, noise_multiplier: float, **kw: Any):
    model = copy.deepcopy(start)
    x, y = data
    kwargs: dict[str, Any] = dict(
        loss_fn=multitask_loss, epochs=1, batch_size=len(x), lr=0.5, optimizer="sgd",
        max_grad_norm=1.0, seed=SEED,
    )  # fmt: skip
    kwargs.update(kw)
    train_private(model, x, y, noise_multiplier=noise_multiplier, **kwargs)
    return flat(model)


def test_dp_sgd_noise_cannot_be_regenerated_from_the_seed():
    # One SGD step on the full batch (q = 1): release = θ0 - lr (clipped mean + noise).
    torch.manual_seed(0)
    start = MultiTaskHead(16, (3, 2), hidden=8, dropout=0.0)
    victim, own = dpsgd_data(1), dpsgd_data(2)
    release = dpsgd_release(start, victim, noise_multiplier=2.0)
    # The attacker runs the same code with the public seed on data of its own: its noisy
    # minus its noiseless result is the noise the seed gives, also to the victim.
    guess = dpsgd_release(start, own, noise_multiplier=2.0) - dpsgd_release(
        start, own, noise_multiplier=0.0
    )
    noiseless = dpsgd_release(start, victim, noise_multiplier=0.0)
    assert_attack_fails(release, guess, noiseless)


@pytest.mark.parametrize("noise_multiplier", [0.0, 1.0])
def test_dp_sgd_batches_and_noise_differ_between_runs_with_one_seed(noise_multiplier):
    # The accountant's amplification by subsampling assumes nobody knows which records
    # a step used: with noise_multiplier 0 only the Poisson batches can make runs differ.
    torch.manual_seed(0)
    start = MultiTaskHead(16, (3, 2), hidden=8, dropout=0.0)
    x, y = dpsgd_data(3)
    batches: list[list[bytes]] = []
    results = []
    for _ in range(2):
        seen: list[bytes] = []
        model = copy.deepcopy(start)
        model.body[0].register_forward_hook(
            lambda m, i, o, seen=seen: seen.append(i[0].detach().numpy().tobytes())
        )
        train_private(
            model, x, y, loss_fn=multitask_loss, epochs=1, batch_size=16, lr=0.1,
            noise_multiplier=noise_multiplier, max_grad_norm=1.0, seed=SEED,
        )  # fmt: skip
        batches.append(seen)
        results.append(flat(model))
    assert batches[0] != batches[1], "the Poisson batches follow from the public seed"
    assert not np.array_equal(results[0], results[1])


def test_resource_allocation_dp_sgd_noise_cannot_be_regenerated_from_the_seed():
    from meshfl.data.dispatch_data import dispatch_history

    agent = meshfl.agents.get("resource_allocation")(
        {"hidden": 8, "rollouts": 2, "local_epochs": 1, "dp_optimizer": "sgd"}
    )
    victim = agent.prepare(dispatch_history(40, seed=1))
    own = agent.prepare(dispatch_history(40, seed=2))
    assert len(victim) == len(own) and agent.privacy_shape(victim)[1:] == (1.0, 1)
    vector = agent.init_vector(seed=0)

    def release(local: Any, sigma: float) -> np.ndarray:
        dp = DPStep("dp-sgd", sigma, 1.0, 1, 1.0, "sample")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            update = agent.local_update(vector, local, server_round=1, seed=SEED, dp=dp)
        return update.vector

    first = release(victim, 2.0)
    guess = release(own, 2.0) - release(own, 1e-12)
    assert_attack_fails(first, guess, release(victim, 1e-12))
    assert not np.array_equal(first, release(victim, 2.0)), "equal seeds, equal DP-SGD noise"


# --------------------------------------------------------------------------- Gaussian mechanism


def gaussian_case(name: str) -> tuple[Any, Any, Any]:
    """An agent and two MSPs' data of the same public shape (the victim's, the attacker's)."""
    if name == "anomaly":
        agent = meshfl.agents.get("anomaly")({"trees_per_round": 5, "depth": 6})
        frames = [agent.synthetic_data(200, seed=s) for s in (1, 2)]
    elif name == "client_health":
        agent = meshfl.agents.get("client_health")()
        frames = [agent.synthetic_data(200, seed=s) for s in (1, 2)]
    else:
        agent = meshfl.agents.get("revenue")()
        frame = agent.synthetic_data(104, seed=5)
        # same series and dates (public), other revenue: the same draws from the same seed
        other = frame.assign(revenue=frame["revenue"] * np.linspace(0.7, 1.4, len(frame)))
        frames = [frame, other]
    return agent, agent.prepare(frames[0]), agent.prepare(frames[1])


@pytest.mark.parametrize("name", ["anomaly", "client_health", "revenue"])
def test_gaussian_mechanism_noise_cannot_be_regenerated_from_the_seed(name, monkeypatch):
    agent, victim, own = gaussian_case(name)
    vector = agent.init_vector(seed=0)
    step = DPStep("gaussian", 2.0, 1.0, 1, 1.0, "sample")
    module = __import__(type(agent).__module__, fromlist=["add_gaussian_noise"])
    original = module.add_gaussian_noise
    inputs: list[np.ndarray] = []

    def spy(vec: np.ndarray, **kwargs: Any) -> np.ndarray:
        inputs.append(np.array(vec, dtype=np.float64))  # the statistic before its noise
        return original(vec, **kwargs)

    monkeypatch.setattr(module, "add_gaussian_noise", spy)

    def release(local: Any) -> tuple[np.ndarray, np.ndarray]:
        """What the MSP sends where noise is added, and the same without the noise."""
        out = agent.local_update(vector, local, server_round=1, seed=SEED, dp=step).vector
        clean = inputs.pop()
        if name == "revenue":  # noise on the revenue-dependent slice only
            p = agent.spec.n_features
            m = p * (p + 1) // 2
            out = out[m : m + p + 1]
        return np.asarray(out, dtype=np.float64), clean

    first, noiseless = release(victim)
    own_noisy, own_clean = release(own)
    assert_attack_fails(first, own_noisy - own_clean, noiseless)
    again, _ = release(victim)
    assert not np.array_equal(first, again), "equal seeds gave equal Gaussian noise"


def test_anomaly_counts_are_not_the_seeds_gaussian_draws_plus_the_clean_counts():
    # The audit's literal attack: np.random.default_rng(seed) regenerates the noise.
    agent, victim, _ = gaussian_case("anomaly")
    vector = agent.init_vector(seed=0)
    sigma = 2.0
    step = DPStep("gaussian", sigma, 1.0, 1, 1.0, "sample")
    noisy = agent.local_update(vector, victim, server_round=1, seed=SEED, dp=step).vector
    clean = agent.local_update(vector, victim, server_round=1, seed=SEED).vector
    std = sigma * np.sqrt(agent.config.trees_per_round)
    guess = np.random.default_rng(SEED).normal(0.0, std, size=clean.shape)
    assert_attack_fails(noisy, guess, clean)


# --------------------------------------------------------------------------- MSP-level DP


class DeltaAgent:
    """A parameter-averaging agent whose update is a deterministic function of its data."""

    name = "threat_intel"
    supports_msp_dp = True

    def local_update(self, vector: np.ndarray, local: np.ndarray, **_: Any) -> Update:
        return Update(vector=vector + local, weight=1.0, metrics={"examples": float(len(local))})

    def privacy_shape(self, local: Any) -> tuple[str, float, int]:
        return "gaussian", 1.0, 1


def msp_update(tmp_path, tag: str, local: np.ndarray, *, sigma: float, shares: int):
    dp = DPConfig(epsilon=50.0, unit="msp", noise_multiplier=sigma, max_grad_norm=1.0)
    context: dict[str, Any] = dict(
        run_id="run", session=tag, total_rounds=1, privacy=dp, noise_shares=shares
    )
    if "noise_multiplier" in {f.name for f in dataclasses.fields(RoundContext)}:
        context["noise_multiplier"] = sigma  # planned by the coordinator since 308a465
    ins = RoundInstructions(
        agent="threat_intel",
        agent_config={},
        sealed=(),
        server_round=1,
        seed=SEED,
        context=RoundContext(**context),
    )
    out = train_round(
        DeltaAgent(),  # type: ignore[arg-type]
        ins,
        np.zeros(local.size),
        local,
        seed=SEED,
        ledger=PrivacyLedger(tmp_path / tag),
        msp=0,
    )
    assert isinstance(out, tuple), out  # not a Decline
    return out[0]


def test_msp_level_noise_cannot_be_regenerated_from_the_seed(tmp_path):
    sigma, shares, d = 1.0, 5, 2_000
    rng = np.random.default_rng(7)
    victim = rng.normal(size=d) * (3.0 / np.sqrt(d))  # norm ~3: clipped to 1
    own = rng.normal(size=d) * (3.0 / np.sqrt(d))
    first = msp_update(tmp_path, "a", victim, sigma=sigma, shares=shares)
    noiseless, _ = clip_l2(victim, 1.0)
    # black box: the attacker's own MSP run with the public seed gives the noise away ...
    own_update = msp_update(tmp_path, "c", own, sigma=sigma, shares=shares)
    assert_attack_fails(first.vector, own_update.vector - clip_l2(own, 1.0)[0], noiseless)
    # ... and so does regenerating it directly (the audit: cosine 1.000000)
    std = first.privacy_event.noise_multiplier * 1.0 / np.sqrt(shares)
    guess = np.random.default_rng(SEED).normal(0.0, std, size=d)
    assert_attack_fails(first.vector, guess, noiseless)
    again = msp_update(tmp_path, "b", victim, sigma=sigma, shares=shares)
    assert not np.array_equal(first.vector, again.vector), "equal seeds gave equal MSP noise"
