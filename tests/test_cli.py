import click
import pytest

from meshfl import cli, node_cli, server_cli
from meshfl.cli import main


def test_agents_lists_all_ten_with_status(capsys):
    assert main(["agents"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10
    assert any(line.startswith("anomaly") and "built" in line for line in out)
    assert any(line.startswith("federated_learning") and "server" in line for line in out)


def test_simulate_prints_a_per_round_table_and_saves(tmp_path, capsys):
    code = main(
        [
            "simulate",
            "--agent",
            "anomaly",
            "--msps",
            "3",
            "--rounds",
            "2",
            "--samples",
            "80",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "round" in out and "auc" in out and "pooled held-out" in out
    assert (tmp_path / "anomaly.npz").exists() and (tmp_path / "anomaly_history.csv").exists()


def test_bad_input_is_one_readable_line(capsys):
    assert main(["simulate", "--agent", "federated_learning", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshfl: error:") and "meshfl-server" in err


def test_bench_privacy_writes_table_markdown_and_plot(tmp_path, capsys):
    code = main(
        [
            "bench",
            "privacy",
            "--agent",
            "anomaly",
            "--epsilons",
            "0.5,inf",
            "--msps",
            "3",
            "--rounds",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "federated + DP" in out and "local-only" in out
    import pandas as pd

    table = pd.read_csv(tmp_path / "privacy_anomaly.csv")
    private = table[table["setting"] == "federated + DP"]
    assert len(private) == 1 and private["epsilon_spent_max"].iloc[0] <= 0.5
    assert (tmp_path / "privacy_anomaly.md").read_text().startswith("| setting")
    assert (tmp_path / "privacy_anomaly.png").stat().st_size > 10_000


def test_bench_privacy_keeps_embeddings_and_adds_a_reference_federation(tmp_path):
    cache, out = tmp_path / "embeddings", tmp_path / "out"
    args = ["bench", "privacy", "--agent", "threat_intel", "--epsilons", "0.1,inf"]
    args += ["--msps", "2", "--samples", "60", "--encoder", "tiny", "--no-progress"]
    args += ["--agent-config", '{"trainer": "closed_form", "closed_form": "nearest_mean"}']
    args += ["--reference-config", '{"local_epochs": 1}', "--no-local-only"]
    args += ["--secure-aggregation", "plaintext", "--embedding-cache", str(cache)]
    assert main([*args, "--out", str(out)]) == 0
    assert list(cache.rglob("shard-*.npz"))  # the embeddings were kept on disk
    import pandas as pd

    table = pd.read_csv(out / "privacy_threat_intel.csv")
    assert "federated, reference config" in set(table["setting"])
    assert not table["setting"].str.startswith("local-only").any()


def test_bench_privacy_without_dp_points_still_plots(tmp_path):
    args = ["bench", "privacy", "--agent", "anomaly", "--epsilons", "inf"]
    args += ["--msps", "2", "--rounds", "1", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    assert (tmp_path / "privacy_anomaly.png").stat().st_size > 10_000


def test_bench_privacy_rejects_bad_epsilons(capsys):
    assert main(["bench", "privacy", "--agent", "anomaly", "--epsilons", "0.1,abc"]) == 2
    assert "--epsilons must be a comma-separated list" in capsys.readouterr().err


def test_keys_init_writes_a_key_set_and_refuses_to_overwrite(tmp_path, capsys):
    from meshfl.secure.ckks import CKKSAggregator, CKKSSealer
    from meshfl.secure.keys import KeyFileError

    assert main(["keys", "init", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "msp.secret.ckks" in out and "coordinator.public.ckks" in out
    sealer = CKKSSealer.from_file(tmp_path / "msp.secret.ckks")
    aggregator = CKKSAggregator.from_file(tmp_path / "coordinator.public.ckks")
    assert sealer.key_id == aggregator.key_id and sealer.key_id in out
    import pytest

    with pytest.raises(KeyFileError):
        CKKSAggregator.from_file(tmp_path / "msp.secret.ckks")
    assert main(["keys", "init", "--out", str(tmp_path)]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_certs_and_node_keys_init_write_files_and_refuse_to_overwrite(tmp_path, capsys):
    from cryptography import x509

    assert main(["certs", "init", "--out", str(tmp_path / "certs"), "--host", "mesh.example"]) == 0
    server = x509.load_pem_x509_certificate((tmp_path / "certs" / "server.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mesh.example"]
    assert main(["certs", "init", "--out", str(tmp_path / "certs")]) == 2
    assert "--overwrite" in capsys.readouterr().err

    assert main(["node-keys", "init", "--out", str(tmp_path / "msp-0")]) == 0
    assert (tmp_path / "msp-0.pub").read_text().rstrip().endswith(" msp-0")
    assert "register-node" in capsys.readouterr().out
    assert main(["node-keys", "init", "--out", str(tmp_path / "msp-0")]) == 2


def test_agent_config_option_must_be_a_json_object(capsys):
    args = ["simulate", "--agent", "anomaly", "--agent-config", "[1, 2]", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--agent-config option must be a JSON object" in err and "[1, 2]" in err


def test_simulate_takes_agent_config_and_the_agents_suggested_rounds(capsys):
    args = ["simulate", "--agent", "revenue", "--msps", "3", "--no-progress"]
    args += ["--agent-config", '{"yearly_order": 3}']
    assert main(args) == 0
    assert "3 MSPs, 1 rounds" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "prog"), [(cli, "meshfl"), (server_cli, "meshfl-server"), (node_cli, "meshfl-node")]
)
def test_version_names_the_installed_package(module, prog, capsys):
    from importlib.metadata import version

    assert module.main(["--version"]) == 0
    assert capsys.readouterr().out == f"{prog} {version('meshfl')}\n"


def test_bench_privacy_without_matplotlib_keeps_its_table_and_says_why(tmp_path, monkeypatch):
    import sys

    import pytest

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in a plain install
    args = ["bench", "privacy", "--agent", "anomaly", "--epsilons", "inf"]
    args += ["--msps", "2", "--rounds", "1", "--no-progress", "--out", str(tmp_path)]
    with pytest.warns(UserWarning, match=r"No plot: matplotlib is not installed"):
        assert main(args) == 0
    assert (tmp_path / "privacy_anomaly.csv").exists()
    assert not (tmp_path / "privacy_anomaly.png").exists()


def test_agents_show_lists_the_schema_metric_and_update(capsys):
    from meshfl.agents import get

    assert main(["agents", "show", "anomaly"]) == 0
    out = capsys.readouterr().out
    assert "metric: auc (higher is better)" in out
    for column in get("anomaly").schema.columns:
        assert column.name in out
    assert "numbers per round" in out


def test_agents_sample_writes_a_csv_the_agent_accepts(tmp_path, capsys):
    from meshfl.agents import get

    out = tmp_path / "anomaly.csv"
    assert main(["agents", "sample", "anomaly", "--out", str(out), "--rows", "30"]) == 0
    assert len(get("anomaly")({}).load_data(out)) == 30
    assert main(["agents", "sample", "nope", "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err


SCRIPTS = {"meshfl": cli, "meshfl-server": server_cli, "meshfl-node": node_cli}


def _commands():
    """``(name, click command)`` of every command of the three scripts, subcommands too."""
    for prog, module in SCRIPTS.items():
        for path, command in cli.walk(module.build_command()):
            yield " ".join([prog, *path]), command


def _no_default(param: click.Parameter) -> bool:
    """An option with nothing worth showing as its default: none, an off flag, a list."""
    default = param.default
    return default is None or default is False or default == () or default == []


@pytest.mark.parametrize(("name", "command"), list(_commands()), ids=lambda v: str(v))
def test_every_command_and_option_has_help_and_shows_its_default(name, command):
    assert command.help, f"{name}: no help"
    ctx = click.Context(command, info_name=name)
    for param in command.params:
        record = param.get_help_record(ctx)
        assert record is not None, f"{name} {param.name}: hidden"
        label, text = record
        assert param.help and param.help in text, f"{name} {label}: no help"
        if isinstance(param, click.Option) and not _no_default(param):
            shown = param.opts[0].lstrip("-") if param.default is True else str(param.default)
            assert f"[default: {shown}]" in text, f"{name} {label}: default not shown"
        for markup in ("`", ":func:", ":mod:", "\\["):
            assert markup not in text, f"{name} {label}: {markup!r} in its help"
    for markup in ("`", ":func:", ":mod:"):
        assert markup not in command.help, f"{name}: {markup!r} in its help"


def test_every_script_has_commands_with_options():
    names = [name for name, _ in _commands()]
    assert {"meshfl simulate", "meshfl bench privacy", "meshfl agents sample"} <= set(names)
    assert {"meshfl-server register-node", "meshfl-server export", "meshfl-node"} <= set(names)


def test_help_is_plain_text_off_a_terminal(capsys):
    assert main(["simulate", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: meshfl simulate [OPTIONS]")
    assert "--num-msps, --msps" in out and "[default: 5]" in out and "[default: 400]" in out
    assert "\x1b[" not in out and "╭" not in out and "\\[" not in out  # no colour, no boxes


def test_a_usage_error_is_clicks_message_and_exit_code_2(capsys):
    assert main(["simulate", "--num-msps", "many"]) == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--num-msps'" in err and "Traceback" not in err
    assert server_cli.main(["export", "--state-dir", "s"]) == 2
    assert "Missing option '--agent'" in capsys.readouterr().err


def test_no_command_shows_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr()
    assert "simulate" in out.out + out.err and "node-keys" in out.out + out.err


def test_simulate_own_data_dir_with_privacy(tmp_path, capsys):
    for i in range(3):
        out = tmp_path / f"msp-{i}" / "anomaly.csv"
        assert main(["agents", "sample", "anomaly", "--out", str(out), "--rows", "120"]) == 0
    args = ["simulate", "--agent", "anomaly", "--data", str(tmp_path), "--epsilon", "2"]
    assert main([*args, "--rounds", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 MSPs, 2 rounds, seed 0, ε = 2" in out and "auc" in out


def test_simulate_data_dir_without_the_agents_csv_is_explained(tmp_path, capsys):
    (tmp_path / "msp-0").mkdir()
    assert main(["simulate", "--agent", "anomaly", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "msp-0/anomaly.csv" in err and "meshfl agents sample anomaly" in err


def test_help_texts_lose_their_rst_markup():
    text = "see :func:`meshfl.simulate`, ``--data-dir`` and `meshfl agents` (:mod:`~meshfl.cli`)"
    assert cli.plain(text) == "see meshfl.simulate, --data-dir and meshfl agents (meshfl.cli)"
    help_text = cli.build_command().commands["open"].help
    assert help_text == "open a model meshfl-server export wrote, with the MSPs' secret key"
