import pytest

from meshfl.config.errors import ConfigError
from meshfl.service.config import load_mesh_config

GOOD = """
[coordinator]
public_key = "keys/coordinator.public.ckks"

[coordinator.tls]
ca_cert = "certs/ca.crt"
cert = "certs/server.pem"
key = "certs/server.key"

[agents.anomaly]
rounds = 2
min_msps = 3
privacy = { epsilon = 1.0 }
config = { trees_per_round = 5 }

[agents.threat_intel]
rounds = 4
"""


def _write(tmp_path, text):
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    return path


def test_a_valid_file_gives_plans_and_absolute_paths(tmp_path):
    config = load_mesh_config(_write(tmp_path, GOOD))
    plans = config.plans()
    assert [p.agent for p in plans] == ["anomaly", "threat_intel"]
    assert plans[0].rounds == 2 and plans[0].privacy.epsilon == 1.0
    assert plans[0].agent_config == {"trees_per_round": 5}
    assert config.coordinator.public_key == tmp_path / "keys/coordinator.public.ckks"
    assert config.coordinator.tls.ca_cert == tmp_path / "certs/ca.crt"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            ("rounds = 2", "rounds = 0"),
            "agents.anomaly: The 'rounds' parameter of AgentSection",
        ),
        (
            ("rounds = 2", "roundz = 2"),
            "agents.anomaly: 'roundz' is not a parameter of AgentSection",
        ),
        (("[agents.threat_intel]", "[agents.threat_intell]"), "Unknown agent 'threat_intell'"),
        (("[agents.threat_intel]", "[agents.federated_learning]"), "meshfl-server"),
        (("privacy = { epsilon = 1.0 }", "privacy = { epsilon = -1 }"), "epsilon"),
        (
            ('public_key = "', 'address = "127.0.0.1"\npublic_key = "'),
            "coordinator: The .address. parameter .*host:port",
        ),
        (
            ('public_key = "', 'fleet_address = "127.0.0.1:9092"\npublic_key = "'),
            "'fleet_address' is not a parameter",
        ),
        (('public_key = "', 'run_name = "a b"\npublic_key = "'), "run_name"),
    ],
)
def test_bad_values_name_their_path(tmp_path, edit, match):
    with pytest.raises(ConfigError, match=match):
        load_mesh_config(_write(tmp_path, GOOD.replace(*edit)))


def test_the_superlink_has_one_address_and_the_run_a_stable_name(tmp_path):
    config = load_mesh_config(_write(tmp_path, GOOD))
    assert config.coordinator.address == "127.0.0.1:9092"
    assert config.coordinator.run_name == "mesh"
    text = GOOD.replace(
        'public_key = "', 'address = "0.0.0.0:9200"\nrun_name = "q3-2026"\npublic_key = "'
    ).replace("rounds = 2", "rounds = 2\nconnect_timeout = 30")
    config = load_mesh_config(_write(tmp_path, text))
    assert (config.coordinator.address, config.coordinator.run_name) == ("0.0.0.0:9200", "q3-2026")
    assert config.plans()[0].connect_timeout == 30


def test_missing_file_and_bad_toml_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="No mesh configuration"):
        load_mesh_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_mesh_config(_write(tmp_path, "[coordinator\n"))


def test_insecure_settings_warn(tmp_path):
    text = GOOD.split("[coordinator.tls]")[0] + GOOD.split('key = "certs/server.key"')[1]
    config = load_mesh_config(
        _write(
            tmp_path,
            text.replace("[agents.anomaly]", "[agents.anomaly]\nsecure_aggregation = 'plaintext'"),
        )
    )
    with pytest.warns(UserWarning, match="unencrypted channel"):
        config.warn_about_weak_settings()


def _ready(tmp_path, text=GOOD):
    """GOOD with its key set and certificates written, and a free port."""
    from meshfl.deploy.certs import generate_tls
    from meshfl.deploy.processes import free_ports
    from meshfl.secure.keys import COORDINATOR_FILE, generate_keys

    keys = generate_keys(tmp_path / "keyset")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / COORDINATOR_FILE).write_bytes(keys.public.read_bytes())
    tls = generate_tls(tmp_path / "certs")
    (tmp_path / "certs" / "server.pem").write_bytes(tls.server_cert.read_bytes())
    (port,) = free_ports(1)
    text = text.replace("[coordinator]\n", f'[coordinator]\naddress = "127.0.0.1:{port}"\n', 1)
    return load_mesh_config(_write(tmp_path, text)), keys, port


def test_preflight_finds_what_would_fail_late_and_names_the_setting(tmp_path):
    import socket

    from meshfl.secure.keys import COORDINATOR_FILE
    from meshfl.service.config import preflight

    config, keys, port = _ready(tmp_path)
    preflight(config)  # all good: nothing raised

    typo = GOOD.replace("config = { trees_per_round = 5 }", "config = { trees_per_rnd = 5 }")
    bad, _, _ = _ready(tmp_path / "typo", typo)
    with pytest.raises(ConfigError, match=r"\[agents.anomaly\] config: 'trees_per_rnd' is not"):
        preflight(bad)

    # The MSPs' secret context given as the coordinator's public key.
    (tmp_path / "keys" / COORDINATOR_FILE).write_bytes(keys.secret.read_bytes())
    with pytest.raises(ConfigError, match=r"\[coordinator\] public_key = .*coordinator"):
        preflight(config)
    (tmp_path / "keys" / COORDINATOR_FILE).write_bytes(keys.public.read_bytes())

    with socket.socket() as taken:  # another coordinator listens on the port
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(ConfigError, match=r"address = '127.0.0.1:\d+': the port is in use"):
            preflight(config)
