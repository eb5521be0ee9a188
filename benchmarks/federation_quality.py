"""Federated vs local-only vs centralized: quality on everyone's held-out data, and time per round.

For each agent, a non-IID federation of MSPs (Dirichlet label skew ``alpha``) is simulated;
the same rounds are then run by every MSP alone (local-only) and by one party holding all
training rows (centralized). Every model is scored on the pooled held-out rows of all MSPs.

    .venv/bin/python benchmarks/federation_quality.py                 # both agents, 3 seeds
    .venv/bin/python benchmarks/federation_quality.py --agents anomaly --seeds 0

Prints a table and writes benchmarks/results/federation_quality.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

import meshfl
from meshfl.baselines import centralized, local_only
from meshfl.federation import AgentPlan

ROUNDS = {"threat_intel": 5, "anomaly": 5}  # others: the agent's suggested rounds


def run_one(agent: str, *, seed: int, msps: int, rounds: int, alpha: float) -> dict:
    start = time.perf_counter()
    result = meshfl.simulate(
        agent=agent, num_msps=msps, rounds=rounds, seed=seed, alpha=alpha, progress=False
    )
    federated_seconds = (time.perf_counter() - start) / rounds
    metric = result.model.agent.metric
    test = result.test_data
    plan = AgentPlan(agent=agent, rounds=rounds, seed=seed)
    local_models, local_spr = local_only(plan, result.partitions)
    local = [m.evaluate(test)[metric] for m in local_models]
    central_model, central_spr = centralized(plan, result.partitions)
    return {
        "agent": agent,
        "metric": metric,
        "seed": seed,
        "msps": msps,
        "rounds": rounds,
        "alpha": alpha,
        "federated": result.evaluate()[metric],
        "local_mean": float(np.mean(local)),
        "local_min": float(np.min(local)),
        "local_max": float(np.max(local)),
        "centralized": central_model.evaluate(test)[metric],
        "federated_s_per_round": federated_seconds,
        "federated_round_s_steady": float(result.history["seconds"].iloc[1:].mean()),
        "local_s_per_round": local_spr,
        "centralized_s_per_round": central_spr,
        "test_rows": len(test),
        "bytes_per_round": (result.bytes_sent + result.bytes_received) / rounds,
    }


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    cols = [
        "federated",
        "local_mean",
        "centralized",
        "federated_round_s_steady",
        "local_s_per_round",
        "centralized_s_per_round",
        "bytes_per_round",
    ]
    grouped = rows.groupby(["agent", "metric"])[cols]
    mean, std = grouped.mean(), grouped.std().fillna(0.0)
    table = mean.copy()
    for c in ["federated", "local_mean", "centralized"]:
        table[c] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(mean[c], std[c], strict=True)]
    for c in ["federated_round_s_steady", "local_s_per_round", "centralized_s_per_round"]:
        table[c] = [f"{m:.3f}" for m in mean[c]]
    table["bytes_per_round"] = [f"{m / 1e6:.2f} MB" for m in mean["bytes_per_round"]]
    table["federated - local"] = [f"{d:+.3f}" for d in (mean["federated"] - mean["local_mean"])]
    return table.reset_index()


def plot(rows: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents = sorted(rows["agent"].unique())
    fig, axes = plt.subplots(1, len(agents), figsize=(4.5 * len(agents), 3.8), squeeze=False)
    for ax, agent in zip(axes[0], agents, strict=True):
        sub = rows[rows["agent"] == agent]
        names = ["local-only\n(mean MSP)", "federated", "centralized\n(pooled)"]
        values = [sub["local_mean"], sub["federated"], sub["centralized"]]
        ax.bar(
            names,
            [v.mean() for v in values],
            yerr=[v.std() for v in values],
            color=["#bbbbbb", "#2a7ab0", "#6c6c6c"],
            capsize=4,
        )
        for x, v in enumerate(values):
            ax.text(x, v.mean(), f"{v.mean():.3f}", ha="center", va="bottom", fontsize=9)
        lo, hi = min(v.min() for v in values), max(v.max() for v in values)
        if lo >= 0.0 and hi <= 1.0:  # a score in [0, 1]
            ax.set_ylim(max(0.0, lo - 0.1), 1.0)
        ax.set_title(f"{agent} ({sub['metric'].iloc[0]}, {sub['msps'].iloc[0]} MSPs)")
    fig.suptitle("Pooled held-out quality: federated vs local-only vs centralized")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default=",".join(meshfl.agents.built()))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--msps", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, help="default: 5, or the agent's suggestion")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="federation_quality", help="output file stem")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)

    rows = []
    for agent in args.agents.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            suggested = ROUNDS.get(agent) or meshfl.agents.get(agent)().suggested_rounds()
            rounds = args.rounds or suggested
            rows.append(run_one(agent, seed=seed, msps=args.msps, rounds=rounds, alpha=args.alpha))
            print(
                f"  {agent} seed {seed}: federated {rows[-1]['federated']:.3f}, "
                f"local {rows[-1]['local_mean']:.3f}, central {rows[-1]['centralized']:.3f}",
                flush=True,
            )
    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / f"{args.name}.csv", index=False)
    table = summarize(frame)
    (out / f"{args.name}.json").write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "runs": rows,
                "summary": table.to_dict(orient="records"),
            },
            indent=2,
        )
    )
    plot(frame, out / f"{args.name}.png")
    print()
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    print(f"\nwrote {out}/{args.name}.csv, .json, .png")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
