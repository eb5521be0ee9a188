"""Every field that leaves an MSP in the clear, and what it says about the MSP's size (issue 11 §4).

On 2081f48 train replies carried the MSP's exact ε (with a fixed sigma, inverting it gave each
MSP's record count exactly), resource_allocation's episode count and revenue's series count,
and declines carried their exact ε before and after. Here two MSPs, one with twice the rows
of the other, answer the same train message under DP with CKKS; every plaintext field of
their replies is listed, and must be equal for both except the MSP's own identity and what
docs/threat-model.md lists (ε rounded up to 1/20 of the budget).
"""

from __future__ import annotations

import math

import pytest
from flwr.app import Message

from meshfl import agents
from meshfl.federation import AgentStrategy, InProcessGrid, NodeData, make_client_app
from meshfl.federation.records import RoundContext, decode_update
from meshfl.privacy import DPConfig
from meshfl.privacy.report import REPORT_STEPS
from meshfl.secure.aggregate import open_payload
from meshfl.secure.ckks import ephemeral_ckks_backend

FAST = {
    name: dict(agents.get(name).fast_config)
    for name in ("anomaly", "client_health", "revenue", "resource_allocation", "threat_intel")
}
IDENTITY = {"privacy.msp"}
"""Fields that name the MSP (its partition or node id): they differ by design."""
DOCUMENTED = {"privacy.epsilon_spent", "privacy.snr"}
"""Fields docs/threat-model.md lists as coarse functions of size: checked on their grid."""


@pytest.fixture(scope="module")
def keys():
    return ephemeral_ckks_backend()


def plaintext_fields(reply: Message) -> dict[str, object]:
    """Every value of a reply that is not ciphertext, as ``record.key``."""
    if reply.has_error():
        return {"error.code": reply.error.code, "error.reason": reply.error.reason}
    fields: dict[str, object] = {}
    content = reply.content
    for name, record in content.config_records.items():
        for key, value in record.items():
            if name == "update" and key == "chunks":
                fields["update.chunks(sizes)"] = [len(c) for c in value]  # ciphertext
            else:
                fields[f"{name}.{key}"] = value
    for name, record in content.metric_records.items():
        for key, value in record.items():
            fields[f"{name}.{key}"] = value
    assert not content.array_records, "no array leaves an MSP"
    return fields


def _replies(agent_name, keys, tmp_path, privacy, rows=(60, 120), *, raw=False):
    sealer, aggregator = keys
    agent = agents.get(agent_name)(FAST[agent_name])
    frames = [agent.synthetic_data(n, seed=i) for i, n in enumerate(rows)]
    app = make_client_app(
        lambda _a, ctx: NodeData(frames[ctx.node_config["partition-id"]]),
        sealer=lambda _c: sealer,
        state_dir=lambda ctx: tmp_path / f"msp-{ctx.node_config['partition-id']}",
    )
    grid = InProcessGrid(app, len(rows))
    context = RoundContext(run_id="r", session="s", total_rounds=3, privacy=privacy)
    strategy = AgentStrategy(agent, aggregator, min_msps=1, context=context)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    return replies if raw else [plaintext_fields(r) for r in replies]


@pytest.mark.parametrize("agent_name", sorted(FAST))
def test_no_clear_field_of_a_train_reply_depends_on_the_msps_size(agent_name, keys, tmp_path):
    dp = DPConfig(epsilon=1.0)
    small, large = _replies(agent_name, keys, tmp_path, dp)
    assert set(small) == set(large)
    assert set(small) <= {
        "update.backend",
        "update.key_id",
        "update.length",
        "update.binding",
        "update.chunks(sizes)",
        "privacy.epsilon_spent",
        "privacy.snr",
        "privacy.msp",
    }, "under DP no metric computed from raw rows leaves the MSP"
    for name in set(small) - IDENTITY - DOCUMENTED:
        assert small[name] == large[name], name
    for reply in (small, large):
        assert _on_grid(reply["privacy.epsilon_spent"], dp.epsilon)
        snr = reply.get("privacy.snr", 0.0)
        assert snr == 0 or math.log2(snr).is_integer(), "SNR leaves as a power of 2"


def test_with_a_fixed_sigma_the_reported_epsilon_is_a_coarse_bucket(keys, tmp_path):
    """Fixed sigma: ε is a function of the sampling rate, so of the size. It leaves as a bucket."""
    dp = DPConfig(epsilon=50.0, noise_multiplier=1.0)
    small, large = _replies("threat_intel", keys, tmp_path, dp, rows=(400, 410))
    for reply in (small, large):
        assert _on_grid(reply["privacy.epsilon_spent"], dp.epsilon)
    # 400 and 410 rows: exact ε differ, the buckets do not
    assert small["privacy.epsilon_spent"] == large["privacy.epsilon_spent"]


def test_a_decline_says_a_fixed_sentence_and_a_coarse_epsilon(keys, tmp_path):
    dp = DPConfig(epsilon=0.05, noise_multiplier=0.3)  # the first round already overspends
    small, large = _replies("threat_intel", keys, tmp_path, dp)
    assert (
        small.keys()
        == large.keys()
        == {
            "declined.reason",
            "declined.epsilon_spent",
            "declined.msp",
        }
    )
    assert small["declined.reason"] == large["declined.reason"]
    assert not any(ch.isdigit() for ch in small["declined.reason"])


def _on_grid(value, budget):
    units = value / (budget / REPORT_STEPS)
    return math.isclose(units, round(units), abs_tol=1e-9)


@pytest.mark.parametrize("agent_name", ["threat_intel", "resource_allocation"])
def test_under_dp_the_sealed_weight_is_not_the_row_count(agent_name, keys, tmp_path):
    """On 4968b20 the weight slot held the MSP's row count: every key holder read the exact
    total of rows from each sum, which no DP noise covers. Under DP every MSP weighs 1."""
    sealer, _ = keys
    replies = _replies(agent_name, keys, tmp_path, DPConfig(epsilon=1.0), raw=True)
    weights = [open_payload(sealer.open(decode_update(r).sealed))[1] for r in replies]
    assert weights == [pytest.approx(1.0, abs=1e-4)] * 2
