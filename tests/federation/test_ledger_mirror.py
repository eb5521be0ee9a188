"""The coordinator's mirror of ε against an MSP's ledger (issue 11 §3).

On 2081f48, deleting an MSP's ledger (with whatever sat next to it) silently gave a fresh
budget. The MSP cannot notice a ledger that vanished with its high-water mark; the
coordinator's mirror of what it reported can. Each train message under DP carries the
mirror's ε for that MSP, and an MSP whose ledger shows less refuses to train.
"""

from __future__ import annotations

import shutil

import pytest

from meshfl import agents
from meshfl.federation import AgentStrategy, InProcessGrid, NodeData, make_client_app
from meshfl.federation.errors import E_LEDGER
from meshfl.federation.records import RoundContext
from meshfl.privacy import DPConfig
from meshfl.privacy.ledger import PrivacyLedger
from meshfl.secure import plaintext_backend

FAST = {"trees_per_round": 4, "depth": 5}


@pytest.mark.filterwarnings("ignore:Secure aggregation is OFF")
def test_an_msp_whose_ledger_vanished_refuses_to_train(tmp_path, caplog):
    sealer, aggregator = plaintext_backend()
    agent = agents.get("anomaly")(FAST)
    frames = [agent.synthetic_data(100, seed=i) for i in range(3)]
    app = make_client_app(
        lambda _a, ctx: NodeData(frames[ctx.node_config["partition-id"]]),
        sealer=lambda _c: sealer,
        state_dir=lambda ctx: tmp_path / f"msp-{ctx.node_config['partition-id']}",
        min_contributors=2,
    )
    grid = InProcessGrid(app, 3)
    dp = DPConfig(epsilon=1.0)
    context = RoundContext(run_id="r", session="s", total_rounds=3, privacy=dp)
    strategy = AgentStrategy(agent, aggregator, min_msps=2, context=context)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    assert strategy.aggregate_train(1, replies).changed
    assert strategy.epsilon_by_msp[0] > 0

    shutil.rmtree(tmp_path / "msp-0" / "privacy")  # the ledger and its mark, all gone
    replies = list(grid.send_and_receive(strategy.configure_train(2, grid)))
    errors = [r for r in replies if r.has_error()]
    assert [int(r.metadata.src_node_id) for r in errors] == [grid.node_id(0)]
    assert errors[0].error.code == E_LEDGER.code  # a fixed sentence: its ε stays home
    assert errors[0].error.reason == E_LEDGER.reason
    assert not PrivacyLedger(tmp_path / "msp-0" / "privacy").events("anomaly")  # nothing spent
    result = strategy.aggregate_train(2, replies)
    assert result.changed  # the other two go on
    assert result.accepted == 2
    for msp in (1, 2):
        assert len(PrivacyLedger(tmp_path / f"msp-{msp}" / "privacy").events("anomaly")) == 2
