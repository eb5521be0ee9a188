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
        (("[agents.threat_intel]", "[agents.revenue]"), "not built"),
        (("privacy = { epsilon = 1.0 }", "privacy = { epsilon = -1 }"), "epsilon"),
    ],
)
def test_bad_values_name_their_path(tmp_path, edit, match):
    with pytest.raises(ConfigError, match=match):
        load_mesh_config(_write(tmp_path, GOOD.replace(*edit)))


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
