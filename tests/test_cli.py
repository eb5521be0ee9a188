from meshfl.cli import main


def test_agents_lists_all_ten_with_status(capsys):
    assert main(["agents"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10
    assert any(line.startswith("anomaly") and "built" in line for line in out)
    assert any(line.startswith("revenue") and "planned" in line for line in out)


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
    assert main(["simulate", "--agent", "revenue", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshfl: error:") and "not built" in err
