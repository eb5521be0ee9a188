"""revenue: one config against both real monthly sets and the synthetic federation, side by side.

For a ``RevenueConfig`` override (JSON), the federated sMAPE (%) without DP, at ε=1 and at
ε=0.1 (sample level, δ=1e-5, one round) on ``texas_housing`` (seeds 0-2), ``retail_sales``
(seed 0: the same five series for every seed) and the synthetic federation of
``benchmarks/revenue_forecast.py`` (5 MSPs, mean 80 weeks, seeds 0-4), each MSP scored on
its own held-out periods, and the seasonal naive forecast. It runs the statistics path of
``meshfl.simulate`` directly (each MSP's update, summed, plaintext; no Flower runtime), so a
config takes seconds: the tool behind the table of docs/agents.md's revenue section. DP noise
comes from OS entropy: private figures are the mean of ``--repeats`` runs per seed.

    .venv/bin/python benchmarks/revenue_ablation.py --label defaults
    .venv/bin/python benchmarks/revenue_ablation.py --label "3 changepoints" \\
        --config '{"changepoints_per_year": 0, "n_changepoints": 3}'

Prints one JSON row and appends it to benchmarks/results/revenue_ablation.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from meshfl.agents.base import PartitionRequest
from meshfl.agents.revenue import Revenue, RevenueConfig
from meshfl.bench import real_data
from meshfl.privacy import DPConfig
from meshfl.privacy.budget import DPStep, plan_round

EPSILONS = (1.0, 0.1)


def _step(epsilon: float) -> DPStep:
    return plan_round(
        DPConfig(epsilon=epsilon), [], mechanism="gaussian", sample_rate=1.0, steps=1, rounds_left=1
    )


def _federation(
    frames: list[pd.DataFrame], config: dict[str, Any], repeats: int
) -> dict[str, float]:
    agent = Revenue(RevenueConfig(**config))
    splits = [agent.split(frame, test_fraction=0.25, seed=0) for frame in frames]
    train = [agent.prepare(tr) for tr, _ in splits]
    test = [agent.prepare(te) for _, te in splits]

    def score(dp: DPStep | None) -> tuple[float, float]:
        vector = agent.init_vector(seed=0)
        updates = [
            agent.local_update(vector, local, server_round=1, seed=0, dp=dp) for local in train
        ]
        summed = np.sum([u.vector for u in updates], axis=0)
        vector = agent.combine(vector, summed, len(train), server_round=1)
        metrics = [agent.evaluate(vector, local) for local in test]
        weights = [m["examples"] for m in metrics]
        fed = np.average([m["smape"] for m in metrics], weights=weights)
        naive = np.average([-m["baseline_neg_smape"] for m in metrics], weights=weights)
        return float(fed), float(naive)

    out: dict[str, float] = {}
    out["federated"], out["seasonal naive"] = score(None)
    for eps in EPSILONS:
        out[f"ε={eps:g}"] = float(np.mean([score(_step(eps))[0] for _ in range(repeats)]))
    return out


def _sets() -> dict[str, list[tuple[list[pd.DataFrame], dict[str, Any]]]]:
    sets: dict[str, list[tuple[list[pd.DataFrame], dict[str, Any]]]] = {}
    for name, seeds in (("texas_housing", (0, 1, 2)), ("retail_sales", (0,))):
        loaded = [real_data.load(name, seed=seed) for seed in seeds]
        sets[name] = [(list(d.partitions), dict(d.agent_config)) for d in loaded]
    synthetic = Revenue(RevenueConfig())
    sets["synthetic"] = [
        (
            synthetic._partition_synthetic(
                PartitionRequest(num_msps=5, samples_per_msp=80, seed=seed)
            ),
            {},
        )
        for seed in range(5)
    ]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="defaults")
    parser.add_argument("--config", default="{}", help="RevenueConfig overrides, as JSON")
    parser.add_argument("--repeats", type=int, default=3, help="private runs per seed and ε")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    override = json.loads(args.config)
    row: dict[str, Any] = {"label": args.label, "config": override}
    start = time.perf_counter()
    for name, runs in _sets().items():
        scores = [
            _federation(frames, {**config, **override}, args.repeats) for frames, config in runs
        ]
        for key in scores[0]:
            row[f"{name}: {key}"] = round(float(np.mean([s[key] for s in scores])), 2)
    row["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(row, ensure_ascii=False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "revenue_ablation.jsonl").open("a") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
