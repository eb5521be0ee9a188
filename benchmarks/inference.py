"""Single-row prediction latency per agent, on a busy machine, and cold start.

For each agent, a model is trained by ``meshfl.simulate`` (3 MSPs, one round, plaintext,
the agent's default config: the text agents run the bundled MiniLM encoder). Then, while one
busy process per core spins beside it, ``model.predict`` is called on one row at a time
(``--rows`` distinct rows, so no text comes from the encoder's cache), in two settings side
by side:

* **one thread** (meshfl's default): batches of up to ``SMALL_BATCH`` rows run on one
  torch thread (:mod:`meshfl.models.threads`);
* **thread pool**: ``SMALL_BATCH = 0``, torch's pool of one thread per core, as before.

Cold start is a fresh interpreter's ``import meshfl``, ``meshfl.load`` of the saved model
and its first prediction. Goal (issue 16): p99 <= 100 ms per single-row prediction.

    .venv/bin/python benchmarks/inference.py [--agents threat_intel collaboration] [--rows 200]

Prints the table and writes benchmarks/results/inference.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
AGENTS = (
    "threat_intel",
    "market_intel",
    "compliance",
    "collaboration",
    "nlp_query",
    "resource_allocation",
    "anomaly",
    "client_health",
)
GOAL_MS = 100.0
COLD = (
    "import sys, time; t = time.perf_counter(); import meshfl; m = meshfl.load(sys.argv[1]); "
    "import pandas as pd; m.predict(pd.read_csv(sys.argv[2])); print(time.perf_counter() - t)"
)


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def latencies(model: Any, rows: pd.DataFrame, settings: dict[str, int]) -> dict[str, np.ndarray]:
    """Milliseconds of ``model.predict`` on each row alone, the settings taking turns row by
    row (each on rows of its own: no text comes from the encoder's cache)."""
    from meshfl.models import threads

    out: dict[str, list[float]] = {name: [] for name in settings}
    names = list(settings)
    for i in range(len(rows)):
        name = names[i % len(names)]
        threads.SMALL_BATCH = settings[name]
        row = rows.iloc[[i]]
        start = time.perf_counter()
        model.predict(row)
        out[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.array(ms) for name, ms in out.items()}


def one_agent(agent: str, n_rows: int, tmp: Path) -> list[dict[str, Any]]:
    import meshfl
    from meshfl.models import threads

    result = meshfl.simulate(
        agent=agent, num_msps=3, rounds=1, samples_per_msp=80, seed=0,
        secure_aggregation="plaintext", progress=False,
    )  # fmt: skip
    model = result.model
    rows = model.agent.synthetic_data(2 * n_rows + 2, seed=7)
    model.predict(rows.iloc[[0]])  # warm: first-call allocations are not the steady state
    path, sample = tmp / f"{agent}.npz", tmp / f"{agent}.csv"
    model.save(path)
    rows.iloc[[1]].to_csv(sample, index=False)
    out = []
    stop = multiprocessing.Event()
    busy = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(2)]
    for p in busy:
        p.start()
    default = threads.SMALL_BATCH
    try:
        measured = latencies(model, rows.iloc[2:], {"one thread": default, "thread pool": 0})
    finally:
        threads.SMALL_BATCH = default
        stop.set()
        for p in busy:
            p.join()
    for setting, ms in measured.items():
        out.append(
            {"agent": agent, "setting": setting, "p50_ms": float(np.percentile(ms, 50)),
             "p99_ms": float(np.percentile(ms, 99))}
        )  # fmt: skip
    cold = subprocess.run(
        [sys.executable, "-c", COLD, str(path), str(sample)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for row in out:
        row["cold_start_s"] = float(cold.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=list(AGENTS))
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="meshfl-inference-") as tmp:
        for agent in args.agents:
            rows += one_agent(agent, args.rows, Path(tmp))
            print(pd.DataFrame(rows[-2:]).round(2).to_string(index=False), flush=True)
    table = pd.DataFrame(rows).round(2)
    print()
    print(table.to_string(index=False))
    print(f"goal: p99 <= {GOAL_MS:.0f} ms per single-row prediction, with the CPU busy")
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / "inference.csv", index=False)
    meta = {"machine": platform.platform(), "rows": args.rows, "goal_ms": GOAL_MS}
    (RESULTS / "inference.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return
    pivot = table.pivot(index="agent", columns="setting", values="p99_ms")
    ax = pivot.plot.barh(figsize=(7, 4), logx=True)
    ax.axvline(GOAL_MS, color="#c44e52", linestyle="--", label=f"{GOAL_MS:.0f} ms goal")
    ax.set_xlabel("p99 of one single-row prediction, ms (CPU busy)")
    ax.legend()
    ax.figure.tight_layout()
    ax.figure.savefig(RESULTS / "inference.png", dpi=120)


if __name__ == "__main__":
    main()
