"""Revenue forecasts: federated vs each MSP's local fit of the same model vs Prophet per MSP.

For each seed a federation of MSPs (one weekly revenue series each, histories from half a
year to a few years, all ending in late December) is simulated; every method forecasts each
MSP's last ``horizon`` weeks (Q4: Thanksgiving, Christmas, quarter-end renewals) from the
MSP's own history, and is scored on that MSP's held-out weeks:

* ``federated`` — the shared yearly shape fitted from the MSPs' summed statistics (CKKS);
* ``federated_dp_eps<ε>`` — the same under sample-level DP (Gaussian mechanism), CKKS;
* ``local`` — each MSP fits the same model on its own history only;
* ``centralized`` — one party holding every series (what privacy forbids);
* ``no_shape`` — per-series trend only (no seasonality, no holidays): what is left when
  nothing is learned about the shape;
* ``prophet`` — Prophet fitted per MSP (multiplicative seasonality, yearly seasonality
  "auto", US holidays), where ``prophet`` is installed.

    .venv/bin/python benchmarks/revenue_forecast.py                  # 5 seeds
    .venv/bin/python benchmarks/revenue_forecast.py --seeds 0 --periods 120

Prints a table and writes benchmarks/results/revenue.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
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
from meshfl.models.additive import mase, smape
from meshfl.privacy import DPConfig

try:  # optional extra
    from prophet import Prophet
except ImportError:  # pragma: no cover - depends on the environment
    Prophet = None


def _score(actual: np.ndarray, fc: pd.DataFrame, history: np.ndarray) -> dict[str, float]:
    yhat = fc["yhat"].to_numpy()
    inside = (actual >= fc["yhat_lower"].to_numpy()) & (actual <= fc["yhat_upper"].to_numpy())
    return {
        "smape": float(smape(actual, yhat).mean()),
        "mase": float(mase(actual, yhat, history).mean()),
        "coverage": float(inside.mean()),
    }


def _prophet(train: pd.DataFrame, dates: pd.Series) -> pd.DataFrame:
    assert Prophet is not None
    # Prophet's defaults, but for weekly data: yearly seasonality "auto" (on from two years
    # of history; forcing it on shorter histories makes Prophet much worse)
    model = Prophet(
        weekly_seasonality=False,
        daily_seasonality=False,
        seasonality_mode="multiplicative",
        interval_width=0.8,
    )
    model.add_country_holidays(country_name="US")
    model.fit(train.rename(columns={"date": "ds", "revenue": "y"})[["ds", "y"]])
    out = model.predict(pd.DataFrame({"ds": dates.to_numpy()}))
    return out[["yhat", "yhat_lower", "yhat_upper"]]


def run_seed(seed: int, *, msps: int, periods: int, epsilon: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    fed = meshfl.simulate(
        agent="revenue", num_msps=msps, rounds=1, seed=seed, samples_per_msp=periods, progress=False
    )
    fed_seconds = time.perf_counter() - start
    dp = meshfl.simulate(
        agent="revenue",
        num_msps=msps,
        rounds=1,
        seed=seed,
        samples_per_msp=periods,
        progress=False,
        privacy=DPConfig(epsilon=epsilon, delta=1e-5),
    )
    plan = AgentPlan(agent="revenue", rounds=1, seed=seed)
    local_models, _ = local_only(plan, fed.partitions)
    central, _ = centralized(plan, fed.partitions)
    agent = fed.model.agent
    no_shape = agent.model(agent.init_vector(seed=0))
    models = {
        "federated": fed.model,
        f"federated_dp_eps{epsilon:g}": dp.model,
        "centralized": central,
        "no_shape": no_shape,
    }
    for i, part in enumerate(fed.partitions):
        assert part.test is not None
        held = part.test[part.test["is_holdout"]]
        history = part.train["revenue"].to_numpy()
        actual = held["revenue"].to_numpy()
        base = {"seed": seed, "msp": i, "train_periods": len(part.train), "horizon": len(held)}
        for name, model in {**models, "local": local_models[i]}.items():
            m = model.evaluate(part.test)
            rows.append(
                {**base, "method": name, **{k: m[k] for k in ("smape", "mase", "coverage")}}
            )
        if Prophet is not None:
            t0 = time.perf_counter()
            fc = _prophet(part.train, held["date"])
            rows.append(
                {
                    **base,
                    "method": "prophet",
                    **_score(actual, fc, history),
                    "seconds": time.perf_counter() - t0,
                }
            )
    for row in rows:
        row.setdefault("seconds", fed_seconds if row["method"] == "federated" else np.nan)
        row["epsilon_spent_max"] = (
            float(dp.privacy["epsilon_spent"].max())
            if row["method"].startswith("federated_dp") and dp.privacy is not None
            else np.nan
        )
    return rows


def summarize(frame: pd.DataFrame, short: int) -> pd.DataFrame:
    per_seed = frame.groupby(["method", "seed"]).agg(
        smape=("smape", "mean"), mase=("mase", "mean"), coverage=("coverage", "mean")
    )
    table = per_seed.groupby("method").agg(
        smape=("smape", "mean"),
        smape_sd=("smape", "std"),
        mase=("mase", "mean"),
        coverage=("coverage", "mean"),
    )
    table["smape_short_history"] = (
        frame[frame["train_periods"] < short].groupby("method")["smape"].mean()
    )
    table["smape_long_history"] = (
        frame[frame["train_periods"] >= short].groupby("method")["smape"].mean()
    )
    return table.sort_values("smape")


def plot(frame: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.barh(table.index, table["smape"], xerr=table["smape_sd"].fillna(0), color="tab:blue")
    ax1.invert_yaxis()
    ax1.set_xlabel("sMAPE % on held-out weeks (mean over seeds; lower is better)")
    ax1.set_title("Revenue forecasts, Q4 horizon")
    for method, color in (
        ("local", "tab:orange"),
        ("federated", "tab:blue"),
        ("prophet", "tab:green"),
    ):
        sub = frame[frame["method"] == method]
        if len(sub):
            ax2.scatter(sub["train_periods"], sub["smape"], label=method, color=color, alpha=0.7)
    ax2.set_xscale("log")
    ax2.set_xlabel("weeks of history of the MSP")
    ax2.set_ylabel("sMAPE % of the MSP's held-out weeks")
    ax2.set_title("Who gains: MSPs with short histories")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--msps", type=int, default=5)
    parser.add_argument("--periods", type=int, default=80, help="mean weeks per MSP")
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    logging.getLogger("meshfl").setLevel(logging.ERROR)
    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        rows += run_seed(seed, msps=args.msps, periods=args.periods, epsilon=args.epsilon)
        print(f"seed {seed} done", flush=True)
    frame = pd.DataFrame(rows)
    table = summarize(frame, short=52)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "revenue.csv", index=False)
    summary = {
        "command": "benchmarks/revenue_forecast.py "
        f"--seeds {args.seeds} --msps {args.msps} --periods {args.periods} "
        f"--epsilon {args.epsilon:g}",
        "prophet_installed": Prophet is not None,
        "platform": platform.platform(),
        "meshfl_version": meshfl.__version__,
        "table": json.loads(table.reset_index().to_json(orient="records")),
    }
    (out / "revenue.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(frame, table, out / "revenue.png")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(table.to_string())
    print(f"wrote {out / 'revenue.csv'}, revenue.json, revenue.png")


if __name__ == "__main__":
    main()
