"""meshfl.deploy against Flower's own validators and loaders, without starting the runtime.

Fast: these check what ``flwr run``, ``flower-superlink`` and ``flower-supernode`` will
accept (the project, the CLI connection, the certificates and node keys) and how the apps
turn Flower's run config and node config into meshfl's arguments.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.app import Context, RecordDict

import meshfl.agents
from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.deploy import (
    CLIENT_APP_REF,
    SERVER_APP_REF,
    apps,
    write_app_project,
    write_flower_config,
)
from meshfl.deploy.apps import (
    RunRecorder,
    load_aggregator,
    load_sealed,
    node_data,
    parse_plans,
)
from meshfl.deploy.certs import generate_supernode_keys, generate_tls
from meshfl.federation import InProcessGrid, make_client_app
from meshfl.federation.server_app import AgentPlan, AgentRun
from meshfl.secure.backend import Sealed
from meshfl.secure.keys import KeyFileError, generate_keys
from meshfl.simulation import make_partitions
from meshfl.store.model_store import ModelStore

PLAN = {"agent": "anomaly", "rounds": 2, "agent_config": {"trees_per_round": 5, "depth": 6}}


def test_the_project_is_a_flower_app_whose_bundle_carries_no_code(tmp_path):
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.config_utils import load_and_validate

    app = write_app_project(tmp_path / "app", run_config={"plans": json.dumps([PLAN])})
    # check_module=True: Flower finds both components in the installed meshfl package.
    config, _ = load_and_validate(app / "pyproject.toml", check_module=True)
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": SERVER_APP_REF, "clientapp": CLIENT_APP_REF}
    run_config = config["tool"]["flwr"]["app"]["config"]
    assert set(run_config) == {"plans", "public-key", "run-name", "state-dir"}
    assert parse_plans(run_config)[0].agent == "anomaly"
    fab = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app)))
    assert sorted(fab.namelist()) == [".info/CONTENT", "pyproject.toml"]


def test_write_app_project_rejects_unknown_keys(tmp_path):
    with pytest.raises(ConfigError, match="Unknown run config key"):
        write_app_project(tmp_path, run_config={"secret-key": "x"})


def test_flower_reads_the_connection(tmp_path, monkeypatch):
    from flwr.cli.flower_config import read_superlink_connection

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    write_flower_config(tmp_path / "home", "127.0.0.1:9093")
    conn = read_superlink_connection(None)  # the default connection
    assert (conn.name, conn.address, conn.insecure) == ("meshfl", "127.0.0.1:9093", True)

    tls = generate_tls(tmp_path / "tls")
    write_flower_config(
        tmp_path / "home", "localhost:9093", name="mesh", root_certificates=tls.ca_cert
    )
    conn = read_superlink_connection("mesh")
    assert conn.insecure is False
    assert conn.root_certificates == str(tls.ca_cert.resolve())


def test_parse_plans_accepts_json_text_and_files(tmp_path):
    assert parse_plans({"plans": json.dumps(PLAN)}) == [AgentPlan(**PLAN)]
    (tmp_path / "plans.json").write_text(json.dumps([PLAN]))
    assert parse_plans({"plans": str(tmp_path / "plans.json")})[0].rounds == 2
    (tmp_path / "plans.toml").write_text(
        '[[plans]]\nagent = "anomaly"\nrounds = 4\n[plans.agent_config]\ndepth = 5\n'
    )
    (plan,) = parse_plans({"plans": str(tmp_path / "plans.toml")})
    assert (plan.rounds, plan.agent_config) == (4, {"depth": 5})


@pytest.mark.parametrize(
    ("plans", "message"),
    [
        ("", "is empty"),
        ("[{", "not valid JSON"),
        ("[]", "non-empty list"),
        ("/no/such/plans.json", "not a file"),
        (json.dumps([PLAN, PLAN]), "name an agent twice"),
        (json.dumps([{"agent": "anomaly", "rounds": 0}]), "rounds"),
    ],
)
def test_parse_plans_errors(plans, message):
    with pytest.raises(ConfigError, match=message):
        parse_plans({"plans": plans})


def test_the_coordinator_refuses_the_secret_key(tmp_path):
    keys = generate_keys(tmp_path)
    with pytest.raises(KeyFileError, match="secret key"):
        load_aggregator({"public-key": str(keys.secret)})
    with pytest.raises(ConfigError, match="public-key"):
        load_aggregator({})
    aggregator = load_aggregator({"public-key": str(keys.public)})
    assert aggregator.key_id == keys.key_id
    assert not aggregator.context.has_secret_key()


def _context(node_config, run_config=None) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config=node_config,
        state=RecordDict(),
        run_config=run_config or {"plans": json.dumps([PLAN])},
    )


def test_node_data_reads_and_splits_the_msps_csv(tmp_path):
    agent = meshfl.agents.get("anomaly")()
    agent.synthetic_data(200, seed=3).to_csv(tmp_path / "anomaly.csv", index=False)
    data = node_data("anomaly", _context({"data-dir": str(tmp_path), "test-fraction": 0.2}))
    assert data.test is not None
    assert (len(data.train), len(data.test)) == (160, 40)

    with pytest.raises(ConfigError, match="data-dir"):
        node_data("anomaly", _context({}))
    with pytest.raises(ConfigError, match="no data for agent 'threat_intel'"):
        node_data("threat_intel", _context({"data-dir": str(tmp_path)}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "anomaly.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataSchemaError, match="no columns"):
        node_data("anomaly", _context({"data-dir": str(tmp_path / "broken")}))


def test_node_data_from_the_msps_own_loader(tmp_path, monkeypatch):
    module = tmp_path / "msp_loader.py"
    module.write_text(
        "import meshfl\n"
        "def load(agent_name, context):\n"
        "    return meshfl.agents.get(agent_name)().synthetic_data(100, seed=1)\n"
        "def bad(agent_name, context):\n"
        "    frame = meshfl.agents.get(agent_name)().synthetic_data(10, seed=1)\n"
        "    return frame.drop(columns=['cpu_pct'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = node_data("anomaly", _context({"data-loader": "msp_loader:load"}))
    assert data.test is not None and len(data.train) + len(data.test) == 100
    with pytest.raises(DataSchemaError, match="cpu_pct"):
        node_data("anomaly", _context({"data-loader": "msp_loader:bad"}))
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        node_data("anomaly", _context({"data-loader": "msp_loader:nope"}))


def test_run_recorder_writes_what_the_caller_reads_back(tmp_path, capsys):
    recorder = RunRecorder({"state-dir": str(tmp_path)}, run_id=42)
    plan = AgentPlan(**PLAN)
    record = {"agent": "anomaly", "round": 1, "msps": 3, "auc": 0.9, "seconds": 1.5}
    recorder.round(record)
    sealed = Sealed(backend="ckks", key_id="abc", length=3, chunks=(b"\x00\x01", b"\xff"))
    run = AgentRun(agent=plan.build_agent(), seed=0, sealed_history=[sealed], history=[record])
    recorder.finish([plan], {"anomaly": run}, None)

    out = tmp_path / "runs" / "42"
    assert json.loads((out / "rounds.jsonl").read_text()) == record
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["agents"]["anomaly"]["rounds"] == 1
    assert load_sealed(out / "anomaly.sealed.json") == [sealed]
    assert "[meshfl] anomaly round 1 msps=3 auc=0.9000" in capsys.readouterr().out


def test_certificates_and_node_keys_load_as_flower_loads_them(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key

    tls = generate_tls(tmp_path, hosts=["127.0.0.1", "localhost"])
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]

    keys = generate_supernode_keys(tmp_path / "node" / "key", comment="msp-0")
    private = load_ssh_private_key(keys.private.read_bytes(), None)  # as flower-supernode
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert try_load_public_key(keys.public)  # as `flwr supernode register`
    for secret in (tls.ca_key, tls.server_key, keys.private):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_the_apps_are_the_objects_flower_loads():
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.supercore.object_ref import load_app

    assert isinstance(load_app(SERVER_APP_REF, ValueError, Path.cwd()), ServerApp)
    assert isinstance(load_app(CLIENT_APP_REF, ValueError, Path.cwd()), ClientApp)


class _CrashError(Exception):
    pass


class _CrashingGrid:
    """The grid of a coordinator that dies when it sends its ``calls``-th message batch."""

    def __init__(self, grid: InProcessGrid, calls: int) -> None:
        self.grid, self.left = grid, calls

    def __getattr__(self, name):
        return getattr(self.grid, name)

    def push_messages(self, messages):
        self.left -= 1
        if self.left == 0:
            raise _CrashError
        return self.grid.push_messages(messages)


def test_the_deployed_coordinator_commits_to_its_store_and_resumes_a_named_run(tmp_path):
    from meshfl.secure.ckks import CKKSSealer

    keys = generate_keys(tmp_path / "keys")
    plan = AgentPlan(**PLAN)
    parts = make_partitions(plan.build_agent(), num_msps=3, seed=0, samples_per_msp=80)
    client = make_client_app(
        lambda a, ctx: parts[ctx.node_config["partition-id"]],
        sealer=lambda ctx: CKKSSealer.from_file(keys.secret),
    )
    state = tmp_path / "state"
    run_config = {
        "plans": json.dumps([PLAN]),
        "public-key": str(keys.public),
        "state-dir": str(state),
        "run-name": "mesh-1",
    }

    def context(flwr_run_id: int) -> Context:
        return Context(
            run_id=flwr_run_id, node_id=0, node_config={}, state=RecordDict(),
            run_config=run_config,
        )  # fmt: skip

    # Dies sending round 2's training batch (batch 5: masking keys, train 1, unmask 1,
    # evaluate 1, train 2).
    with pytest.raises(_CrashError):
        apps._coordinate(_CrashingGrid(InProcessGrid(client, 3), calls=5), context(11))
    with ModelStore(state, read_only=True) as store:
        assert [v.round for v in store.versions("anomaly")] == [1]
    assert json.loads((state / "runs" / "11" / "summary.json").read_text())["status"] == "failed"

    apps._coordinate(InProcessGrid(client, 3), context(12))  # resubmitted under the name
    summary = json.loads((state / "runs" / "12" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["run_name"] == "mesh-1"
    rounds = (state / "runs" / "12" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in rounds] == [2]  # round 1 not repeated
    with ModelStore(state, read_only=True) as store:
        versions = store.versions("anomaly")
        assert [(v.run_id, v.round) for v in versions] == [("mesh-1", 1), ("mesh-1", 2)]
        assert store.runs("anomaly")[0].status == "completed"
        assert len(store.load_history(versions[-1])) == 2

    # A run that completed does nothing when resubmitted; another name starts afresh.
    apps._coordinate(InProcessGrid(client, 3), context(13))
    assert not (state / "runs" / "13" / "rounds.jsonl").exists()
    run_config["run-name"] = ""
    apps._coordinate(InProcessGrid(client, 3), context(14))
    with ModelStore(state, read_only=True) as store:
        assert [v.round for v in store.versions("anomaly", run_id="flwr-14")] == [1, 2]


def test_a_run_in_which_no_round_trained_ends_untrained_and_says_why(tmp_path):
    keys = generate_keys(tmp_path / "keys")

    def broken(agent, context):
        raise DataSchemaError("the MSP's CSV lacks a column")

    from meshfl.secure.ckks import CKKSSealer

    # Every MSP holds the key but fails on its data, in every message.
    client = make_client_app(broken, sealer=lambda ctx: CKKSSealer.from_file(keys.secret))
    state = tmp_path / "state"
    run_config = {
        "plans": json.dumps([{**PLAN, "rounds": 1, "round_timeout": 5}]),
        "public-key": str(keys.public),
        "state-dir": str(state),
    }
    context = Context(
        run_id=21, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    apps._coordinate(InProcessGrid(client, 3), context)
    summary = json.loads((state / "runs" / "21" / "summary.json").read_text())
    assert summary["status"] == "untrained"
    assert "no round trained" in summary["error"]
    assert "anomaly: 1 round(s), 3 update(s) dropped" in summary["error"]
    # Each drop is counted by its kind: here the code the MSPs replied with.
    last = summary["agents"]["anomaly"]["last_round"]
    assert last["dropped_by_kind"] == {"E_DATA": 3} and last["no_reply"] == 0
