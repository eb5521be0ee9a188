"""client_health: federated histogram GBDT against LightGBM, central and local-only.

For each seed, a non-IID federation of MSPs (each with its own client-segment mix and
service quality) trains the ``client_health`` agent for ``trees x max_depth`` rounds:

* **federated, plaintext** and **federated, CKKS** (no DP): one tree level per round;
* **federated, DP ε=1** over CKKS, with a configuration suited to noise (``DP_CONFIG``:
  ``split_mode="random"``, splits drawn from a public seed, so each round grows a whole
  tree and only its leaf sums are noised);
* **central LightGBM**: ``lightgbm.train`` on every MSP's training rows pooled (its own
  255-bin quantile binning, which no MSP could compute without sharing data), with the same
  number of trees, depth, leaves, learning rate and regularisation;
* **local-only LightGBM**: the same, on each MSP's rows alone (mean, min and max over MSPs).

Every model is scored (AUC) on the pooled held-out rows of all MSPs. The exported federated
model is also loaded into ``lightgbm.Booster`` and its predictions compared with meshfl's.

    .venv/bin/python benchmarks/client_health_vs_lightgbm.py                # 3 seeds
    .venv/bin/python benchmarks/client_health_vs_lightgbm.py --seeds 0 --trees 5

Prints a table and writes benchmarks/results/client_health.{csv,json,png}.
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
from sklearn.metrics import roc_auc_score

import meshfl
from meshfl.agents.client_health import ClientHealth
from meshfl.data.client_health_data import CLIENT_HEALTH_FEATURES
from meshfl.privacy import DPConfig

CONFIG: dict[str, Any] = {
    "n_bins": 32,
    "max_depth": 3,
    "learning_rate": 0.2,
    "lambda_l2": 1.0,
    "min_child_hessian": 1.0,
}
DP_CONFIG: dict[str, Any] = {
    "split_mode": "random",  # splits from a public seed: only leaf sums are noised
    "n_bins": 8,
    "max_depth": 3,
    "learning_rate": 0.5,
    "lambda_l2": 5.0,
}
DP_ROUNDS = 10  # one tree per round in split_mode="random"


def lightgbm_params(config: dict[str, Any]) -> dict[str, Any]:
    """LightGBM's parameters for the same trees as the agent's config."""
    return {
        "objective": "binary",
        "num_leaves": 2 ** config["max_depth"],
        "max_depth": config["max_depth"],
        "learning_rate": config["learning_rate"],
        "lambda_l2": config["lambda_l2"],
        "min_sum_hessian_in_leaf": config["min_child_hessian"],
        "min_data_in_leaf": 1,
        "verbose": -1,
        "num_threads": 1,
        "deterministic": True,
        "seed": 0,
    }


def _xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame[list(CLIENT_HEALTH_FEATURES)].to_numpy(), frame["churned"].to_numpy(dtype=int)


def _auc_by_tree(model: Any, X: np.ndarray, y: np.ndarray) -> list[float]:
    """Pooled AUC of the federated model after each finished tree (= after each D rounds)."""
    agent: ClientHealth = model.agent
    forest = agent.forest(model.vector)
    block = (model.vector.size - 1) // max(forest.n_trees, 1)
    out = []
    for k in range(1, forest.n_trees + 1):
        vector = model.vector[: 1 + k * block]
        out.append(float(roc_auc_score(y, agent.predict_margin(vector, X))))
    return out


def run_one(*, seed: int, msps: int, trees: int, samples: int, alpha: float) -> dict[str, Any]:
    rounds = trees * CONFIG["max_depth"]
    common = dict(
        agent="client_health",
        num_msps=msps,
        seed=seed,
        alpha=alpha,
        samples_per_msp=samples,
        progress=False,
    )
    timings = {}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure aggregation is OFF.*")
        plain = meshfl.simulate(
            rounds=rounds, agent_config=CONFIG, secure_aggregation="plaintext", **common
        )
    timings["plaintext_s"] = time.perf_counter() - start
    start = time.perf_counter()
    sealed = meshfl.simulate(rounds=rounds, agent_config=CONFIG, **common)
    timings["ckks_s"] = time.perf_counter() - start
    start = time.perf_counter()
    private = meshfl.simulate(
        rounds=DP_ROUNDS,
        agent_config=DP_CONFIG,
        privacy=DPConfig(epsilon=1.0, delta=1e-5),
        **common,
    )
    timings["dp_ckks_s"] = time.perf_counter() - start

    test = plain.test_data
    X_test, y_test = _xy(test)
    params = lightgbm_params(CONFIG)
    X_pool, y_pool = _xy(pd.concat([p.train for p in plain.partitions], ignore_index=True))
    central = lgb.train(params, lgb.Dataset(X_pool, y_pool), num_boost_round=trees)
    local = []
    for part in plain.partitions:
        X, y = _xy(part.train)
        booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=trees)
        local.append(float(roc_auc_score(y_test, booster.predict(X_test))))
    exported = lgb.Booster(model_str=plain.model.to_lightgbm())
    export_gap = float(np.abs(exported.predict(X_test) - plain.model.predict_proba(test)).max())
    central_by_tree = [
        float(roc_auc_score(y_test, central.predict(X_test, num_iteration=k)))
        for k in range(1, trees + 1)
    ]
    agent = plain.model.agent
    return {
        "seed": seed,
        "msps": msps,
        "rounds": rounds,
        "trees": trees,
        "train_rows": len(X_pool),
        "test_rows": len(test),
        "update_length": agent.update_size(plain.model.vector),
        "federated_plaintext": plain.evaluate()["auc"],
        "federated_ckks": sealed.evaluate()["auc"],
        "federated_dp_eps1_ckks": private.evaluate()["auc"],
        "dp_epsilon_spent_max": float(private.privacy["epsilon_spent"].max()),
        "central_lightgbm": float(roc_auc_score(y_test, central.predict(X_test))),
        "local_lightgbm_mean": float(np.mean(local)),
        "local_lightgbm_min": float(np.min(local)),
        "local_lightgbm_max": float(np.max(local)),
        "export_max_abs_diff": export_gap,
        "auc_by_round_msp_weighted": [float(a) for a in plain.history["auc"]],
        "auc_by_tree_federated": _auc_by_tree(plain.model, X_test, y_test),
        "auc_by_tree_central_lightgbm": central_by_tree,
        **timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--msps", type=int, default=5)
    parser.add_argument("--trees", type=int, default=10)
    parser.add_argument("--samples-per-msp", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    logging.getLogger("meshfl").setLevel(logging.ERROR)

    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = run_one(
            seed=seed,
            msps=args.msps,
            trees=args.trees,
            samples=args.samples_per_msp,
            alpha=args.alpha,
        )
        rows.append(row)
        print(
            f"seed {seed}: federated {row['federated_plaintext']:.4f} (ckks "
            f"{row['federated_ckks']:.4f}, dp ε=1 {row['federated_dp_eps1_ckks']:.4f}), "
            f"central lightgbm {row['central_lightgbm']:.4f}, "
            f"local lightgbm {row['local_lightgbm_mean']:.4f}",
            flush=True,
        )
    frame = pd.DataFrame(rows)
    columns = [
        "federated_plaintext",
        "federated_ckks",
        "federated_dp_eps1_ckks",
        "central_lightgbm",
        "local_lightgbm_mean",
        "local_lightgbm_min",
        "local_lightgbm_max",
    ]
    table = frame[["seed", *columns]].copy()
    table["fed_minus_central"] = table["federated_plaintext"] - table["central_lightgbm"]
    mean = table.mean(numeric_only=True).to_frame().T
    mean["seed"] = "mean"
    table = pd.concat([table, mean], ignore_index=True)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(
        f"\nrounds={rows[0]['rounds']} ({args.trees} trees x depth {CONFIG['max_depth']}), "
        f"update length {rows[0]['update_length']} values, "
        f"DP: {DP_ROUNDS} rounds of {DP_CONFIG}; "
        f"export max |Δp| {frame['export_max_abs_diff'].max():.2e}"
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.drop(
        columns=[
            "auc_by_round_msp_weighted",
            "auc_by_tree_federated",
            "auc_by_tree_central_lightgbm",
        ]
    ).to_csv(out / "client_health.csv", index=False)
    meta = {
        "config": CONFIG,
        "dp_config": DP_CONFIG,
        "dp_rounds": DP_ROUNDS,
        "lightgbm_params": lightgbm_params(CONFIG),
        "lightgbm_version": lgb.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "args": vars(args),
        "rows": rows,
    }
    (out / "client_health.json").write_text(json.dumps(meta, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    trees = np.arange(1, args.trees + 1)
    fed = np.mean([r["auc_by_tree_federated"] for r in rows], axis=0)
    cen = np.mean([r["auc_by_tree_central_lightgbm"] for r in rows], axis=0)
    ax.plot(trees * CONFIG["max_depth"], fed, "o-", label="federated (meshfl, 5 MSPs)")
    ax.plot(trees * CONFIG["max_depth"], cen, "s--", label="central LightGBM (pooled rows)")
    ax.axhline(frame["local_lightgbm_mean"].mean(), color="grey", ls=":", label="local-only mean")
    ax.set_xlabel("federated round (one tree level each)")
    ax.set_ylabel("AUC on pooled held-out rows")
    ax.set_title(f"client_health, mean of {len(rows)} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "client_health.png", dpi=120)


if __name__ == "__main__":
    main()
