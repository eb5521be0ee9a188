"""What a deployed round costs over its work: meshfl-server and 3 meshfl-node on loopback.

Side by side in one run (these machines are noisy), the same plan (anomaly, CKKS, TLS and
SuperNode authentication, 3 MSPs of ``--rows`` rows, ``--rounds`` rounds):

* **in-process**: ``meshfl.simulate`` on the same CSV files, every message through Flower's
  wire format: the work of a round (the MSPs one after another, the coordinator's sum);
* **fresh processes, 3 s poll**: ``meshfl-node --fresh-processes --poll-interval 3``, as
  Flower runs a SuperNode by default (a new ``flwr-clientapp`` process per message; the
  SuperNode asks for messages every 3 s);
* **warm** (meshfl-node's default): ClientApps forked from a warm SuperExec, 0.5 s poll;
* **warm, 0.2 s poll**.

A deployed round's overhead is its time minus the in-process round's. Round 1 is left out
(it waits for the nodes to connect and the SuperExec to warm up). The nodes of a deployed
round work in parallel, so the difference slightly understates the overhead on a machine
with a core per node. Goal (issue 14): <= 3 s of overhead per round.

    .venv/bin/python benchmarks/deploy_overhead.py [--rounds 6] [--rows 300]

Prints the table and writes benchmarks/results/deploy_overhead.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

RESULTS = Path(__file__).parent / "results"
CONFIG = {"trees_per_round": 5, "depth": 6}
GOAL_S = 3.0
VARIANTS = {
    "fresh processes, 3 s poll": ["--fresh-processes", "--poll-interval", "3"],
    "warm (default)": [],
    "warm, 0.2 s poll": ["--poll-interval", "0.2"],
}


def deployed(root: Path, rounds: int, rows: int, node_args: list[str]) -> list[float]:
    """Seconds of each round of one loopback deployment."""
    from meshfl.deploy.loopback import AgentSetup, LoopbackMesh

    settings = {"rounds": rounds, "min_msps": 3, "min_available_msps": 3, "round_timeout": 120}
    mesh = LoopbackMesh(root, {"anomaly": AgentSetup(CONFIG, rows, settings)}, node_args=node_args)
    try:
        server = mesh.server()
        mesh.register_nodes()
        mesh.start_nodes()
        deadline = time.monotonic() + 120 + 60 * rounds
        while server.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(mesh.processes.log("meshfl-server"))
            mesh.processes.check_running("msp-0", "msp-1", "msp-2")
            time.sleep(0.5)
        if server.returncode != 0:
            raise RuntimeError(mesh.processes.log("meshfl-server"))
        records = mesh.rounds()
    finally:
        mesh.processes.stop()
    if len(records) != rounds:
        raise RuntimeError(f"expected {rounds} rounds, the coordinator wrote {len(records)}")
    return [float(r["seconds"]) for r in records]


def in_process(csvs: list[Path], rounds: int) -> list[float]:
    """Seconds of each round of the same plan in ``meshfl.simulate``."""
    import meshfl

    result = meshfl.simulate(
        agent="anomaly",
        data=[str(p) for p in csvs],
        num_msps=len(csvs),
        rounds=rounds,
        agent_config=CONFIG,
        secure_aggregation="ckks",
        serialize_messages=True,
        progress=False,
    )
    return [float(s) for s in result.history["seconds"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="meshfl-deploy-") as tmp:
        per_round: dict[str, list[float]] = {}
        for i, (name, node_args) in enumerate(VARIANTS.items()):
            start = time.perf_counter()
            per_round[name] = deployed(Path(tmp) / str(i), args.rounds, args.rows, node_args)
            print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        csvs = sorted((Path(tmp) / "0").glob("msp-*/data/anomaly.csv"))
        per_round["in-process"] = in_process(csvs, args.rounds)
    work = statistics.median(per_round["in-process"][1:])
    for name, seconds in per_round.items():
        median = statistics.median(seconds[1:])
        rows.append(
            {
                "variant": name,
                "round_s": round(median, 2),
                "overhead_s": round(median - work, 2) if name != "in-process" else 0.0,
                "rounds_s": [round(s, 2) for s in seconds],
            }
        )
    table = pd.DataFrame(rows)
    print(table[["variant", "round_s", "overhead_s"]].to_string(index=False))
    print(f"goal: overhead <= {GOAL_S} s per round (median of rounds 2..{args.rounds})")

    RESULTS.mkdir(exist_ok=True)
    table.drop(columns="rounds_s").to_csv(RESULTS / "deploy_overhead.csv", index=False)
    meta = {"machine": platform.platform(), "rounds": args.rounds, "rows": args.rows}
    (RESULTS / "deploy_overhead.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1)
    )
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(table["variant"], table["round_s"], color="#4c72b0")
    ax.axvline(work + GOAL_S, color="#c44e52", linestyle="--", label=f"work + {GOAL_S:.0f} s goal")
    ax.set_xlabel("seconds per round (median of rounds 2..)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "deploy_overhead.png", dpi=120)


if __name__ == "__main__":
    main()
