"""Technician dispatch: federated policy vs local-only policies vs greedy vs random.

Five MSPs, each with its own dispatch environment (roster, skills, shifts, sites, ticket mix,
load), train the ``resource_allocation`` policy federated; every MSP also trains it alone
(local-only) and one party trains it on all MSPs' days (centralized). Every policy, the
least-loaded-skilled greedy rule and a random dispatcher are scored on the same pooled
held-out (later) days of all MSPs: SLA hit rate and paid technician hours per ticket.

    .venv/bin/python benchmarks/dispatch.py                  # seeds 0,1,2, 5 rounds, CKKS
    .venv/bin/python benchmarks/dispatch.py --seeds 0 --epsilon 1

Prints a table and writes benchmarks/results/dispatch.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import meshfl
from meshfl.baselines import centralized, local_only
from meshfl.federation import AgentPlan
from meshfl.privacy import DPConfig

AGENT = "resource_allocation"
SETTINGS = (
    "federated",
    "federated + DP",
    "local-only (mean MSP)",
    "centralized",
    "greedy",
    "earliest completion",
    "random",
)


def run_one(*, seed: int, msps: int, rounds: int, epsilon: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(setting: str, metrics: dict[str, float], **extra: Any) -> None:
        rows.append(
            {
                "seed": seed,
                "setting": setting,
                "sla_hit_rate": metrics["sla_hit_rate"],
                "tech_hours_per_ticket": metrics["tech_hours_per_ticket"],
                "overtime_per_ticket": metrics["overtime_per_ticket"],
                **extra,
            }
        )

    start = time.perf_counter()
    result = meshfl.simulate(agent=AGENT, num_msps=msps, rounds=rounds, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    test = result.test_data
    ours = result.evaluate()
    add(
        "federated",
        ours,
        seconds=seconds,
        tickets=ours["examples"],
        per_round=list(result.history["sla_hit_rate"]),
    )
    baselines = {"greedy": "greedy_", "earliest completion": "ect_", "random": "random_"}
    for baseline, prefix in baselines.items():
        add(baseline, {k.removeprefix(prefix): v for k, v in ours.items() if k.startswith(prefix)})
    if not math.isinf(epsilon):
        private = meshfl.simulate(
            agent=AGENT,
            num_msps=msps,
            rounds=rounds,
            seed=seed,
            progress=False,
            privacy=DPConfig(epsilon=epsilon, delta=1e-5),
        )
        assert private.privacy is not None
        add(
            "federated + DP",
            private.evaluate(),
            epsilon=epsilon,
            epsilon_spent_max=float(private.privacy["epsilon_spent"].max()),
        )
    plan = AgentPlan(agent=AGENT, rounds=rounds, seed=seed)
    models, _ = local_only(plan, result.partitions)
    local = [m.evaluate(test) for m in models]
    mean = {k: float(np.mean([m[k] for m in local])) for k in local[0]}
    add(
        "local-only (mean MSP)",
        mean,
        local_min=min(m["sla_hit_rate"] for m in local),
        local_max=max(m["sla_hit_rate"] for m in local),
    )
    central, _ = centralized(plan, result.partitions)
    add("centralized", central.evaluate(test))
    return rows


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    grouped = rows.groupby("setting", sort=False)[["sla_hit_rate", "tech_hours_per_ticket"]]
    mean, std = grouped.mean(), grouped.std().fillna(0.0)
    table = pd.DataFrame(
        {
            "SLA hit rate": [
                f"{m:.3f} ± {s:.3f}"
                for m, s in zip(mean["sla_hit_rate"], std["sla_hit_rate"], strict=True)
            ],
            "tech hours / ticket": [
                f"{m:.3f} ± {s:.3f}"
                for m, s in zip(
                    mean["tech_hours_per_ticket"], std["tech_hours_per_ticket"], strict=True
                )
            ],
        },
        index=mean.index,
    )
    order = [s for s in SETTINGS if s in table.index]
    return table.loc[order].reset_index()


def paired_gains(rows: pd.DataFrame) -> dict[str, list[float]]:
    """Per seed, federated SLA hit rate minus each other setting's (same data, same days)."""
    wide = rows.pivot(index="seed", columns="setting", values="sla_hit_rate")
    return {
        other: [float(v) for v in wide["federated"] - wide[other]]
        for other in SETTINGS[1:]
        if other in wide.columns
    }


def plot(rows: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [s for s in SETTINGS if s in set(rows["setting"])]
    colors = {
        "federated": "#2a7ab0",
        "federated + DP": "#7fb3d5",
        "local-only (mean MSP)": "#bbbbbb",
        "centralized": "#6c6c6c",
        "greedy": "#d98c3f",
        "earliest completion": "#e6b36b",
        "random": "#c44e52",
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, label in (
        (axes[0], "sla_hit_rate", "SLA hit rate (higher is better)"),
        (axes[1], "tech_hours_per_ticket", "paid technician hours per ticket (lower is better)"),
    ):
        g = rows.groupby("setting")[col]
        means, stds = g.mean().reindex(order), g.std().fillna(0.0).reindex(order)
        ax.bar(range(len(order)), means, yerr=stds, capsize=4, color=[colors[s] for s in order])
        for x, v in enumerate(means):
            ax.text(x, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([s.replace(" (", "\n(") for s in order], fontsize=8)
        ax.set_title(label, fontsize=10)
        if col == "sla_hit_rate":
            ax.set_ylim(max(0.0, float(means.min()) - 0.1), 1.0)
    seeds = rows["seed"].nunique()
    fig.suptitle(f"resource_allocation: pooled held-out days of 5 MSPs ({seeds} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--msps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=1.0, help="DP budget ('inf': no DP run)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*cryptographically secure.*")

    rows: list[dict[str, Any]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        new = run_one(seed=seed, msps=args.msps, rounds=args.rounds, epsilon=args.epsilon)
        rows.extend(new)
        print(
            f"  seed {seed}: " + ", ".join(f"{r['setting']} {r['sla_hit_rate']:.3f}" for r in new),
            flush=True,
        )
    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["per_round"], errors="ignore").to_csv(out / "dispatch.csv", index=False)
    table = summarize(frame)
    gains = paired_gains(frame)
    (out / "dispatch.json").write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "msps": args.msps,
                "rounds": args.rounds,
                "runs": rows,
                "summary": table.to_dict(orient="records"),
                "federated_minus": gains,
            },
            indent=2,
        )
    )
    plot(frame, out / "dispatch.png")
    print()
    print(table.to_string(index=False))
    print("\nfederated minus, per seed (SLA hit rate):")
    for other, diffs in gains.items():
        each = ", ".join(f"{d:+.3f}" for d in diffs)
        print(f"  {other:<22} mean {np.mean(diffs):+.3f}  ({each})")
    print(f"\nwrote {out}/dispatch.csv, .json, .png")


if __name__ == "__main__":
    main()
