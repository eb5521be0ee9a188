"""``simulate(...).privacy`` never shows less ε than was released (issue 11 §3).

On 2081f48 a garbled ledger made ``result.privacy`` show ε=0.0 for that MSP: the table
came from the coordinator's mirror, and an MSP that failed never reported. Now the table
reads every simulated MSP's own ledger, exact, and a ledger that cannot be trusted raises.
"""

from __future__ import annotations

import pytest

import meshfl
from meshfl.privacy import DPConfig
from meshfl.privacy.ledger import LedgerCorruptError, PrivacyLedger
from meshfl.privacy.report import reported_epsilon

KW = dict(
    agent="anomaly",
    num_msps=3,
    rounds=2,
    seed=0,
    progress=False,
    agent_config={"trees_per_round": 4, "depth": 5},
    samples_per_msp=80,
)


def test_the_table_is_the_ledgers_exact_and_the_mirror_coarse(tmp_path):
    result = meshfl.simulate(privacy=DPConfig(epsilon=1.0), state_dir=tmp_path, **KW)
    for row in result.privacy.itertuples():
        ledger = PrivacyLedger(tmp_path / f"msp-{row.msp}" / "privacy")
        assert row.epsilon_spent == ledger.epsilon("anomaly", delta=1e-5) > 0
        assert row.epsilon_reported == pytest.approx(reported_epsilon(row.epsilon_spent, 1.0))
        assert row.epsilon_reported >= row.epsilon_spent


def test_a_garbled_ledger_is_an_error_not_a_zero(tmp_path):
    meshfl.simulate(privacy=DPConfig(epsilon=1.0), state_dir=tmp_path, **KW)
    path = PrivacyLedger(tmp_path / "msp-1" / "privacy").path("anomaly")
    path.write_bytes(b"\x00" * path.stat().st_size)
    # The damaged MSP refuses to train; simulate names its error among the MSPs' errors.
    with pytest.raises(meshfl.FederationFailedError, match=LedgerCorruptError.__name__):
        meshfl.simulate(privacy=DPConfig(epsilon=1.0), state_dir=tmp_path, **KW)
