import socket
import urllib.request

from meshfl.service.metrics import MeshMetrics


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels)


def test_round_records_move_the_counters():
    m = MeshMetrics()
    record = {
        "agent": "anomaly",
        "round": 1,
        "sampled": 4,
        "msps": 2,
        "declined": 1,
        "dropped": 0,
        "no_reply": 1,
        "skipped": False,
        "auc": 0.91,
        "update_bytes": 1000,
    }
    m.observe_round(record, {0: 0.2, 1: 0.25})
    m.observe_round({**record, "round": 2, "auc": 0.93}, {0: 0.4, 1: 0.5})
    assert _value(m, "meshfl_rounds_completed_total", agent="anomaly") == 2
    assert _value(m, "meshfl_msp_dropouts_total", agent="anomaly") == 2
    assert _value(m, "meshfl_msp_declines_total", agent="anomaly") == 2
    assert _value(m, "meshfl_update_bytes_received_total", agent="anomaly") == 2000
    assert _value(m, "meshfl_epsilon_spent", agent="anomaly", msp="1") == 0.5
    assert _value(m, "meshfl_evaluation", agent="anomaly", metric="auc") == 0.93
    m.observe_round({**record, "round": 3, "dropped": 1, "dropped_by_kind": {"E_DATA": 1}}, {})
    by = {"agent": "anomaly"}
    assert _value(m, "meshfl_updates_dropped_total", **by, reason="no_reply") == 3
    assert _value(m, "meshfl_updates_dropped_total", **by, reason="E_DATA") == 1


def test_metrics_endpoint_serves_the_counters():
    m = MeshMetrics()
    port = _free_port()
    m.serve(port)
    m.observe_round({"agent": "threat_intel", "msps": 3, "sampled": 3, "accuracy": 0.8}, {})
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'meshfl_rounds_completed_total{agent="threat_intel"} 1.0' in text
    assert 'meshfl_evaluation{agent="threat_intel",metric="accuracy"} 0.8' in text


def test_a_restarted_coordinator_replays_committed_rounds(tmp_path):
    from meshfl.federation import AgentPlan, InProcessGrid, make_client_app
    from meshfl.federation.server_app import run_plan
    from meshfl.service.coordinator import replay_committed
    from meshfl.simulation import make_partitions, simulation_keys
    from meshfl.store.model_store import ModelStore

    plan = AgentPlan(agent="anomaly", agent_config={"trees_per_round": 4, "depth": 5}, rounds=2)
    parts = make_partitions(plan.build_agent(), num_msps=3, seed=0, samples_per_msp=60)
    sealer_for, aggregator, _ = simulation_keys("ckks")
    app = make_client_app(lambda a, ctx: parts[ctx.node_config["partition-id"]], sealer=sealer_for)
    with ModelStore(tmp_path) as store:
        run_plan(InProcessGrid(app, 3), plan, aggregator, store=store, run_id="mesh-1")
    m = MeshMetrics()
    assert replay_committed(m, tmp_path, "mesh-1") == 2
    assert _value(m, "meshfl_rounds_completed_total", agent="anomaly") == 2
    assert _value(m, "meshfl_round_msps", agent="anomaly") == 3
    assert replay_committed(MeshMetrics(), tmp_path, "another-run") == 0
    assert replay_committed(MeshMetrics(), tmp_path / "empty", "mesh-1") == 0


def test_msps_are_labelled_by_their_registered_names():
    m = MeshMetrics(names={7311: "acme-it"})
    m.observe_round({"agent": "anomaly", "msps": 2, "sampled": 2}, {7311: 0.3, 42: 0.1})
    assert _value(m, "meshfl_epsilon_spent", agent="anomaly", msp="acme-it") == 0.3
    assert _value(m, "meshfl_epsilon_spent", agent="anomaly", msp="42") == 0.1  # no name
    assert _value(m, "meshfl_epsilon_spent", agent="anomaly", msp="7311") is None


def test_connected_msps_are_counted_before_the_first_round():
    m = MeshMetrics(names={1: "acme-it", 2: "globex"})
    m.start(["anomaly"])
    assert _value(m, "meshfl_rounds_completed_total", agent="anomaly") == 0
    assert _value(m, "meshfl_msps_connected") == 0
    nodes = [  # as `flwr supernode list --format json` gives them
        {"node-id": "1", "status": "online"},
        {"node-id": "2", "status": "offline"},
        {"node-id": "3", "status": "registered"},
        {"node-id": "4", "status": "unregistered"},
    ]
    m.observe_nodes(nodes)
    assert _value(m, "meshfl_msps_connected") == 1
    assert _value(m, "meshfl_msps_registered") == 3
    assert _value(m, "meshfl_msp_online", msp="acme-it") == 1
    assert _value(m, "meshfl_msp_online", msp="globex") == 0
    assert _value(m, "meshfl_msp_online", msp="3") == 0
    m.observe_nodes([{"node-id": "2", "status": "online"}])
    assert _value(m, "meshfl_msps_connected") == 1
    assert _value(m, "meshfl_msp_online", msp="globex") == 1
