"""Personalized federated models against each MSP alone, on MSPs whose data really differ.

Each MSP is scored on its own held-out rows (:func:`meshfl.baselines.compare`): the
federated model, the MSP's personalized model (partial pooling or local fine-tuning, then
the MSP's choice among personalized / global / local-only on validation splits of its own
training rows (stratified 5-fold; for revenue, rolling forecast origins with those that
hold out the forecast's own weeks a year before), local-only unless another is better by
more than one standard error, widened for the two candidates tried and read against
Student's t (1.72 for 5 folds), and, for a forecast, no worse on its own weeks:
:func:`meshfl.agents.personalization.personalize`)
and its local-only model (the same rounds on its rows alone). The MSPs differ on purpose:

* ``revenue`` — each MSP's series gets a yearly wave of its own on top of the industry's
  shape (amplitude 0 to 0.4 in log revenue, random phases): different seasonal shapes, one
  series per MSP, weekly, no ``series`` column; every MSP has at least a year of history
  before its 13 held-out weeks (``--short-revenue`` allows half a year: such an MSP has
  never seen the part of the year it forecasts, and no check on its own data can tell
  whether the mesh's shape or none fits it);
* ``threat_intel``, ``market_intel`` — label skew: Dirichlet ``alpha=0.1`` over the class
  (each MSP sees mostly one or two classes);
* ``client_health`` — each MSP keeps its own churn rate (5 % to 50 %, by subsampling its
  churned or retained clients) on top of its own segment mix (``alpha=0.1``);
* ``anomaly`` — different normal regimes: Dirichlet ``alpha=0.1`` over the hosts' workload
  profile, so each MSP's normal load is mostly one profile's.

    .venv/bin/python benchmarks/personalization.py                    # every agent, 3 seeds
    .venv/bin/python benchmarks/personalization.py --agents revenue anomaly --seeds 0

Prints a per-agent summary and the per-MSP table, and writes
benchmarks/results/personalization.{csv,json} (+ .png with matplotlib).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import meshfl
from meshfl.agents import get
from meshfl.baselines import compare
from meshfl.data.revenue_data import revenue_partitions
from meshfl.federation.client_app import NodeData

AGENTS = ("revenue", "threat_intel", "market_intel", "client_health", "anomaly")
MIN_PERIODS = 52 + 13
"""Revenue histories: at least a year before the 13 held-out weeks (see the docstring)."""
ROUNDS = {"threat_intel": 5, "market_intel": 5, "anomaly": 5, "revenue": 1, "client_health": 30}


def revenue_data(msps: int, seed: int, *, short: bool = False) -> list[pd.DataFrame]:
    """One weekly series per MSP, each with a seasonal wave of its own."""
    shortest = 26 + 13 if short else MIN_PERIODS
    parts = revenue_partitions(msps, mean_periods=104, seed=seed, min_periods=shortest)
    rng = np.random.default_rng([seed, 7])
    out = []
    for i, part in enumerate(parts):
        amplitude = 0.4 * i / max(msps - 1, 1)  # MSP 0 follows the industry's shape
        phase = rng.uniform(0, 1)
        tau = (part["date"].dt.day_of_year.to_numpy() - 1) / 365.25
        wave = np.exp(amplitude * np.sin(2 * np.pi * (tau - phase)))
        out.append(part.assign(revenue=(part["revenue"] * wave).round(2)).drop(columns="series"))
    return out


def client_health_data(msps: int, seed: int, samples: int) -> list[pd.DataFrame]:
    """Each MSP's own segment mix and churn rate (5 % to 50 %)."""
    agent = get("client_health")()
    parts = agent.synthetic_partitions(msps, samples_per_msp=2 * samples, seed=seed, alpha=0.1)
    rng = np.random.default_rng([seed, 11])
    out = []
    for i, part in enumerate(parts):
        target = 0.05 + 0.45 * i / max(msps - 1, 1)
        churned = part[part["churned"]]
        stayed = part[~part["churned"]]
        n = min(len(part) // 2, int(len(churned) / target), int(len(stayed) / (1 - target)))
        k = round(target * n)
        take = pd.concat(
            [
                churned.sample(k, random_state=int(rng.integers(2**31))),
                stayed.sample(n - k, random_state=int(rng.integers(2**31))),
            ]
        )
        out.append(take.sample(frac=1.0, random_state=int(rng.integers(2**31))))
    return out


def held_out(
    agent: str, msps: int, seed: int, samples: int, fraction: float, alpha: float
) -> list[NodeData]:
    """Each MSP's rows split into training rows (on average ``0.75 * samples``, as
    simulate's 75/25 split of ``samples`` leaves) and held-out rows (``fraction`` of what
    is generated): a larger held-out share measures each MSP's scores with less noise and
    leaves what the models learn from as it was."""
    generated = round(samples * 0.75 / (1 - fraction))
    model = get(agent)()
    if agent == "client_health":
        parts = client_health_data(msps, seed, generated)
    else:
        parts = model.synthetic_partitions(msps, samples_per_msp=generated, seed=seed, alpha=alpha)
    out = []
    for i, part in enumerate(parts):
        train, test = model.split(model.load_data(part), test_fraction=fraction, seed=seed + i)
        out.append(NodeData(train, test))
    return out


def run_one(
    agent: str,
    *,
    seed: int,
    msps: int,
    samples: int,
    encoder: str,
    short_revenue: bool,
    held_out_fraction: float = 0.25,
) -> pd.DataFrame:
    config: dict = {}
    data: list | None = None
    alpha = 0.1
    if agent == "revenue":
        data = revenue_data(msps, seed, short=short_revenue)
    elif held_out_fraction != 0.25:
        data = held_out(agent, msps, seed, samples, held_out_fraction, alpha)
    elif agent == "client_health":
        data = client_health_data(msps, seed, samples)
    if agent in ("threat_intel", "market_intel"):
        config = {"encoder": encoder}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure aggregation is OFF.*")
        result = meshfl.simulate(
            agent=agent,
            num_msps=msps,
            rounds=ROUNDS[agent],
            seed=seed,
            data=data,
            samples_per_msp=samples,
            alpha=alpha,
            agent_config=config,
            secure_aggregation="plaintext",
            progress=False,
        )
        scores = compare(result, with_centralized=False)
    table = scores.per_msp.assign(
        agent=agent, metric=scores.metric, seed=seed, seconds=time.perf_counter() - start
    )
    return table


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for agent, sub in rows.groupby("agent", sort=False):
        gain = sub["personalized"] - sub["local_only"]
        out.append(
            {
                "agent": agent,
                "metric": sub["metric"].iloc[0],
                "MSPs (x seeds)": len(sub),
                "local-only": sub["local_only"].mean(),
                "federated": sub["federated"].mean(),
                "personalized": sub["personalized"].mean(),
                "personalized >= local-only": f"{int((gain >= -1e-9).sum())}/{gain.notna().sum()}",
                "worst personalized - local": gain.min(),
                "kept personalized/global/local": "/".join(
                    str(int((sub["choice"] == c).sum()))
                    for c in ("personalized", "global", "local")
                ),
            }
        )
    return pd.DataFrame(out)


def plot(rows: pd.DataFrame, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    agents = list(dict.fromkeys(rows["agent"]))
    fig, axes = plt.subplots(1, len(agents), figsize=(3.6 * len(agents), 3.4), squeeze=False)
    for ax, agent in zip(axes[0], agents, strict=True):
        sub = rows[rows["agent"] == agent]
        ax.scatter(sub["local_only"], sub["personalized"], s=18, label="personalized")
        ax.scatter(sub["local_only"], sub["federated"], s=18, marker="x", label="federated")
        lo = float(np.nanmin(sub[["local_only", "personalized", "federated"]].to_numpy()))
        hi = float(np.nanmax(sub[["local_only", "personalized", "federated"]].to_numpy()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_title(f"{agent} ({sub['metric'].iloc[0]})", fontsize=9)
        ax.set_xlabel("MSP alone (own rows)")
    axes[0][0].set_ylabel("with the mesh (own rows)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--msps", type=int, default=5)
    parser.add_argument("--samples", type=int, default=400, help="rows per MSP (not revenue)")
    parser.add_argument("--encoder", default="minilm", help="text agents' encoder")
    parser.add_argument(
        "--short-revenue", action="store_true", help="revenue histories from half a year"
    )
    parser.add_argument(
        "--held-out",
        type=float,
        default=0.25,
        help="share of each MSP's generated rows held out for its scores (not revenue); "
        "above 0.25 more rows are generated, so the training rows stay as many",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    logging.getLogger("meshfl").setLevel(logging.ERROR)
    frames = []
    for agent in args.agents:
        for seed in args.seeds:
            frames.append(
                run_one(
                    agent,
                    seed=seed,
                    msps=args.msps,
                    samples=args.samples,
                    encoder=args.encoder,
                    short_revenue=args.short_revenue,
                    held_out_fraction=args.held_out,
                )
            )
            print(f"{agent} seed {seed}: {frames[-1]['seconds'].iloc[0]:.0f} s", flush=True)
            args.out.mkdir(parents=True, exist_ok=True)  # what is done so far, if stopped
            pd.concat(frames, ignore_index=True).to_csv(args.out / "personalization.csv")
    rows = pd.concat(frames, ignore_index=True)
    cols = ["agent", "metric", "seed", "msp", "examples", "local_only", "federated"]
    rows = rows[[*cols, "personalized", "choice", "baseline", "seconds"]]
    summary = summarize(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print()
        print(
            rows.drop(columns="seconds").to_string(index=False, float_format=lambda v: f"{v:.3f}")
        )
    args.out.mkdir(parents=True, exist_ok=True)
    rows.to_csv(args.out / "personalization.csv", index=False)
    meta = {
        "command": "benchmarks/personalization.py "
        + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out"
        ),
        "platform": platform.platform(),
        "summary": summary.to_dict(orient="records"),
        "rows": rows.to_dict(orient="records"),
    }
    (args.out / "personalization.json").write_text(json.dumps(meta, indent=1, default=str))
    plot(rows, args.out / "personalization.png")


if __name__ == "__main__":
    main()
