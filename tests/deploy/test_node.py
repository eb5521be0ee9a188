"""meshfl-node: the flower-supernode command line an MSP's files make, and its refusals."""

from __future__ import annotations

import pytest

from meshfl.config.errors import ConfigError
from meshfl.node_cli import build_command, main, supernode_command


@pytest.fixture
def msp(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "anomaly.csv").write_text("x\n1\n")
    (tmp_path / "msp.secret.ckks").write_bytes(b"k")
    (tmp_path / "ca.crt").write_text("c")
    (tmp_path / "node.key").write_text("n")
    return tmp_path


def test_the_command_carries_tls_node_auth_and_the_node_config(msp):
    args = supernode_command(
        superlink="10.0.0.1:9092",
        data_dir=msp / "data",
        secret_key=msp / "msp.secret.ckks",
        state_dir=msp / "state",
        root_certificates=msp / "ca.crt",
        auth_key=msp / "node.key",
        port=9100,
    )
    assert args[1:4] == ["-m", "meshfl.deploy.node_runtime", "supernode"]
    assert args[args.index("--isolation") + 1] == "process"  # ClientApps forked warm
    assert args[args.index("--superlink") + 1] == "10.0.0.1:9092"
    assert args[args.index("--root-certificates") + 1] == str(msp / "ca.crt")
    assert args[args.index("--auth-supernode-private-key") + 1] == str(msp / "node.key")
    assert args[args.index("--port") + 1] == "9100"
    assert "--insecure" not in args
    assert args[args.index("--node-config") + 1] == (
        f"data-dir='{msp / 'data'}' secret-key='{msp / 'msp.secret.ckks'}' "
        f"state-dir='{msp / 'state'}'"
    )
    assert (msp / "state").is_dir()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data_dir": "nope"}, "one <agent>.csv per agent"),
        ({"secret_key": "nope.ckks"}, "--secret-key nope.ckks does not exist"),
        ({"root_certificates": None}, "or --insecure"),
        ({"insecure": True}, "not both"),
        ({"auth_key": "nope.key"}, "--auth-key nope.key does not exist"),
    ],
)
def test_bad_files_are_refused_with_the_flag_to_fix(msp, change, message):
    kwargs = {
        "superlink": "127.0.0.1:9092",
        "data_dir": msp / "data",
        "secret_key": msp / "msp.secret.ckks",
        "state_dir": msp / "state",
        "root_certificates": msp / "ca.crt",
        **change,
    }
    with pytest.raises(ConfigError, match=message):
        supernode_command(**kwargs)


def test_a_quote_in_a_path_cannot_break_the_node_config(msp):
    (msp / "it's").mkdir()
    (msp / "it's" / "anomaly.csv").write_text("x\n")
    with pytest.raises(ConfigError, match="must not contain quotes"):
        supernode_command(
            superlink="h:1", data_dir=msp / "it's", secret_key=msp / "msp.secret.ckks",
            state_dir=msp / "state", insecure=True,
        )  # fmt: skip


def test_main_reports_errors_without_starting_flower(msp, capsys):
    args = ["--superlink", "h:1", "--data-dir", str(msp / "nope"), "--secret-key", "k"]
    code = main([*args, "--state-dir", str(msp / "state"), "--insecure"])
    assert code == 2
    assert "meshfl-node: error: --data-dir" in capsys.readouterr().err


def test_a_data_loader_replaces_the_data_dir(tmp_path):
    import pytest

    from meshfl.config.errors import ConfigError
    from meshfl.node_cli import supernode_command

    key = tmp_path / "msp.secret.ckks"
    key.write_bytes(b"x")
    command = supernode_command(
        superlink="127.0.0.1:9092",
        data_loader="mycompany.data:load",
        secret_key=key,
        state_dir=tmp_path / "state",
        insecure=True,
    )
    assert "data-loader='mycompany.data:load'" in command[command.index("--node-config") + 1]
    with pytest.raises(ConfigError, match="either --data-dir or --data-loader"):
        supernode_command(superlink="h:1", secret_key=key, state_dir=tmp_path, insecure=True)
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        supernode_command(
            superlink="h:1",
            data_loader="nocolon",
            secret_key=key,
            state_dir=tmp_path,
            insecure=True,
        )


def test_check_reads_every_file_as_the_node_would_and_starts_nothing(tmp_path, capsys):
    from meshfl.agents import get
    from meshfl.deploy.certs import generate_supernode_keys
    from meshfl.secure.keys import generate_keys

    keys = generate_keys(tmp_path / "keys")
    node_keys = generate_supernode_keys(tmp_path / "node.key")
    data = tmp_path / "data"
    data.mkdir()
    get("anomaly")({}).synthetic_data(40, seed=0).to_csv(data / "anomaly.csv", index=False)
    base = ["--superlink", "h:1", "--data-dir", str(data), "--state-dir", str(tmp_path / "s")]
    base += ["--insecure", "--auth-key", str(node_keys.private), "--check"]

    assert main([*base, "--secret-key", str(keys.secret)]) == 0
    out = capsys.readouterr().out
    assert "ok    anomaly.csv: 40 rows of anomaly data" in out
    assert "ok    --secret-key: key id" in out and "ok    --auth-key" in out

    (data / "revenue.csv").write_text("date,amount\n2024-01-01,3\n")  # a column missing
    (data / "tickets.csv").write_text("x\n1\n")  # no agent of that name
    assert main([*base, "--secret-key", str(keys.public)]) == 1  # the coordinator's key
    out = capsys.readouterr().out
    assert "FAIL  revenue.csv:" in out and "revenue" in out
    assert "FAIL  tickets.csv: no agent is named 'tickets'" in out
    assert "FAIL  --secret-key:" in out


def test_require_masking_reaches_the_node_config_as_a_boolean(msp):
    from flwr.common.config import parse_config_args

    kwargs = dict(
        superlink="h:1",
        data_dir=msp / "data",
        secret_key=msp / "msp.secret.ckks",
        state_dir=msp / "state",
        insecure=True,
    )
    plain = supernode_command(**kwargs)
    strict = supernode_command(**kwargs, require_masking=True)
    assert "require-masking" not in plain[plain.index("--node-config") + 1]
    config = parse_config_args([strict[strict.index("--node-config") + 1]])
    assert config["require-masking"] is True  # as Flower hands it to the ClientApp
    assert config["state-dir"] == str((msp / "state").resolve())
    args = ["--superlink", "h:1", "--data-dir", "d", "--secret-key", "k", "--state-dir", "s"]
    command = build_command()
    assert command.make_context("meshfl-node", [*args, "--require-masking"]).params[
        "require_masking"
    ]
    assert command.make_context("meshfl-node", args).params["require_masking"] is False
