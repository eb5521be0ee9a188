"""MSP-level DP: one planned sigma, Poisson sampling at the recorded rate, no plaintext.

On 2081f48 each MSP calibrated its own sigma (the sum carried a mix of noises while every
ledger assumed its own), the strategy sampled max(min_msps, ⌈f·N⌉) MSPs with a public seed
while ledgers recorded f, and unit="msp" ran over plaintext, where each update carries only
its 1/m share of the noise.
"""

from __future__ import annotations

import numpy as np
import pytest

import meshfl
from meshfl.federation import AgentPlan, AgentStrategy, InProcessGrid, make_client_app
from meshfl.federation.records import RoundContext
from meshfl.federation.server_app import planned_noise
from meshfl.privacy import DPConfig
from meshfl.privacy.events import PrivacyEvent
from meshfl.privacy.ledger import PrivacyLedger
from meshfl.secure import plaintext_backend

TINY = {"encoder": "tiny", "local_epochs": 1}
MSP_DP = DPConfig(epsilon=1.0, unit="msp")


def _simulate(state_dir, *, rounds):
    return meshfl.simulate(
        agent="threat_intel", num_msps=4, rounds=rounds, seed=0, progress=False,
        agent_config=TINY, samples_per_msp=60, privacy=MSP_DP, state_dir=state_dir,
    )  # fmt: skip


def _ledger_events(state_dir, msp, agent="threat_intel"):
    return PrivacyLedger(state_dir / f"msp-{msp}" / "privacy").events(agent)


@pytest.mark.filterwarnings("ignore:Secure aggregation is OFF")
def test_msp_sampling_is_poisson_from_os_entropy():
    sealer, aggregator = plaintext_backend()
    plan = AgentPlan(agent="anomaly", rounds=1)
    app = make_client_app(lambda *_: None, sealer=lambda _c: sealer)
    n, q = 60, 0.2
    grid = InProcessGrid(app, n)
    context = RoundContext(privacy=MSP_DP, noise_shares=1)
    strategy = AgentStrategy(
        plan.build_agent(), aggregator, fraction_train=q, min_msps=1, context=context
    )
    sizes = [len(list(strategy.configure_train(1, grid))) for _ in range(300)]
    # Poisson: mean q·N = 12, variance N·q·(1-q) = 9.6. Fixed-size sampling has variance 0.
    assert abs(np.mean(sizes) - q * n) < 1.0
    assert 5 < np.var(sizes) < 16
    picked = [m.metadata.dst_node_id for _ in range(200) for m in strategy.configure_train(1, grid)]
    rates = np.array([picked.count(node) for node in grid.get_node_ids()]) / 200
    assert abs(rates.mean() - q) < 0.02


def test_every_msp_adds_a_share_of_one_planned_sigma_and_is_charged_in_full(tmp_path):
    result = _simulate(tmp_path, rounds=2)
    sigma = planned_noise(result.plan)
    for msp in range(4):
        events = _ledger_events(tmp_path, msp)
        assert len(events) == 2
        assert {e.noise_multiplier for e in events} == {sigma}
        assert {e.sample_rate for e in events} == {1.0}  # charged in full: participation is known


def test_an_msp_that_cannot_afford_the_planned_sigma_declines_and_the_round_fails_closed(
    tmp_path,
):
    # MSP 0 spent most of its budget in an earlier run: on 2081f48 it calibrated a larger sigma
    # of its own, so the sum carried less noise than the other ledgers assumed.
    earlier = PrivacyEvent(
        mechanism="gaussian", noise_multiplier=1.0, sample_rate=1.0, steps=1, unit="msp"
    )
    PrivacyLedger(tmp_path / "msp-0" / "privacy").record("threat_intel", "old:1:s", earlier)
    result = _simulate(tmp_path, rounds=1)
    sigma = planned_noise(result.plan)
    assert _ledger_events(tmp_path, 0) == [earlier]  # declined: nothing trained or spent
    for msp in range(1, 4):
        assert [e.noise_multiplier for e in _ledger_events(tmp_path, msp)] == [sigma]
    # three shares of 1/4 of the noise each: the sum would be under-noised, so it is not kept
    assert result.history["skipped"].tolist() == [True]
    assert result.versions == []


def test_msp_level_dp_over_plaintext_is_refused_with_the_reason():
    with pytest.raises(meshfl.ConfigError, match="needs secure aggregation"):
        meshfl.simulate(
            agent="threat_intel",
            num_msps=3,
            rounds=1,
            progress=False,
            agent_config=TINY,
            samples_per_msp=40,
            privacy=MSP_DP,
            secure_aggregation="plaintext",
        )
