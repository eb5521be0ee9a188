"""A coordinator that dies mid-run resumes from its store: nothing lost, nothing repeated."""

import pytest

from meshfl.federation import AgentPlan, InProcessGrid, make_client_app
from meshfl.federation.sealed_model import open_global
from meshfl.federation.server_app import run_plan
from meshfl.privacy import DPConfig, PrivacyLedger
from meshfl.simulation import make_partitions, simulation_keys
from meshfl.store.model_store import ModelStore


class CrashError(Exception):
    pass


def test_resume_after_a_crash_continues_from_the_last_committed_round(tmp_path):
    plan = AgentPlan(
        agent="anomaly",
        agent_config={"trees_per_round": 4, "depth": 5},
        rounds=4,
        privacy=DPConfig(epsilon=2.0),
    )
    parts = make_partitions(plan.build_agent(), num_msps=3, seed=0, samples_per_msp=80)
    sealer_for, aggregator, sealer = simulation_keys("ckks")
    app = make_client_app(
        lambda a, ctx: parts[ctx.node_config["partition-id"]],
        sealer=sealer_for,
        state_dir=lambda ctx: tmp_path / f"msp-{ctx.node_config['partition-id']}",
    )

    def die_after_round_2(record):
        if record["round"] == 2:
            raise CrashError

    store = ModelStore(tmp_path / "coordinator")
    with pytest.raises(CrashError):
        run_plan(
            InProcessGrid(app, 3),
            plan,
            aggregator,
            store=store,
            run_id="run-1",
            on_round=die_after_round_2,
        )
    store.close()

    with ModelStore(tmp_path / "coordinator") as store:  # the restarted coordinator
        assert store.last_completed_round("run-1", "anomaly") == 2
        run = run_plan(InProcessGrid(app, 3), plan, aggregator, store=store, run_id="run-1")
        versions = [v.round for v in store.versions("anomaly")]
        mirror = store.epsilon_mirror("anomaly")
    assert [r["round"] for r in run.history] == [3, 4]
    assert versions == [1, 2, 3, 4]
    agent = plan.build_agent()
    vector = open_global(agent, run.sealed_history, sealer, seed=plan.seed)
    assert vector.size == 4 * agent.block_size  # four rounds of trees, none twice
    for msp in range(3):
        ledger = PrivacyLedger(tmp_path / f"msp-{msp}" / "privacy")
        assert len(ledger.events("anomaly")) == 4
        assert ledger.epsilon("anomaly", delta=1e-5) <= 2.0
    assert set(mirror) == {0, 1, 2} and max(mirror.values()) <= 2.0
