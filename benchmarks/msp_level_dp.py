"""MSP-level DP for the statistics agents: quality at ε = 0.1 against the non-private federation.

Under ``unit="msp"`` each MSP scales its whole release (anomaly's leaf counts,
client_health's G/H histograms) to L2 norm C = ``max_grad_norm`` and adds a share
N(0, sigma²C²/m) of the noise (:func:`meshfl.federation.msp_privacy.bounded_contribution`);
sigma is planned once from ε, δ and the rounds. For each agent and mesh size the script runs
``meshfl.simulate`` twice on the same synthetic partitions (40 rows per MSP on average): at
ε = 0.1 (δ = 1e-5, ``unit="msp"``, secure aggregation as given) and without privacy (ε = ∞),
and reports the AUC on every MSP's held-out rows, the ratio (AUC - 0.5) / (AUC∞ - 0.5)
against the issue's 0.9 goal, sigma and the seconds each run took.

``revenue`` (one series per MSP, 40 periods on average; its whole statistics vector —
``XᵀX``, ``Xᵀy``, ``yᵀy``, counts, publicly scaled — scaled to norm C) is scored by sMAPE
(lower is better) on every MSP's held-out periods, against the seasonal-naive forecast of
the same periods: the ratio is (sMAPE_naive - sMAPE_ε) / (sMAPE_naive - sMAPE_∞), the share
of the federation's gain over the trivial forecast that survives the noise.

It also prints, per agent, how much of the per-MSP bound each way of bounding an MSP's
release spends on signal (the "efficiency": the release's norm over the bound it is noised
for, mean over MSPs), on the first round's statistics: scaling to norm C (what meshfl does),
per-MSP frequencies (anomaly: counts / rows, bound sqrt(trees)), and rows capped at the mean
(client_health: histograms · 1/max(1, rows/cap), bound cap·sqrt(features)).

    .venv/bin/python benchmarks/msp_level_dp.py --msps 1000,10000 --masking off

Secure aggregation is CKKS (required by ``unit="msp"``); ``--masking off`` leaves out the
pairwise masks inside the ciphertexts (they cost ~3x a round at 10,000 MSPs and do not change
the sum). The ε = ∞ run uses ``--baseline-aggregation`` (plaintext by default: the same sum
without encryption, several times faster at 10,000 MSPs). Writes
``benchmarks/results/msp_level_dp.csv`` and ``.json`` (rows appended as they finish).
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

import meshfl
from meshfl.agents import registry
from meshfl.federation.server_app import planned_noise
from meshfl.privacy import DPConfig

RESULTS = Path(__file__).parent / "results"

# Agent configs measured: anomaly's defaults; client_health with splits drawn from the public
# seed (a round grows a whole tree and sends 2**depth leaf sums, not every bin's histogram).
CONFIGS: dict[str, dict[str, Any]] = {
    "anomaly": {},
    "client_health": {"split_mode": "random"},
    "revenue": {},
}
ROUNDS = {"anomaly": 3, "client_health": 5, "revenue": 1}


def run(
    agent: str, num_msps: int, epsilon: float | None, *, aggregation: str, masking: bool
) -> dict[str, Any]:
    privacy = None if epsilon is None else DPConfig(epsilon=epsilon, delta=1e-5, unit="msp")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = meshfl.simulate(
            agent=agent,
            num_msps=num_msps,
            samples_per_msp=40,
            rounds=ROUNDS[agent],
            seed=0,
            agent_config=CONFIGS[agent],
            privacy=privacy,
            secure_aggregation=aggregation,  # type: ignore[arg-type]
            masking=masking,
            progress=False,
        )
    seconds = time.perf_counter() - start
    history = result.history
    if agent == "revenue":  # every MSP's held-out periods
        quality = {
            "smape": round(float(history["smape"].iloc[-1]), 3),
            "baseline_smape": round(-float(history["baseline_neg_smape"].iloc[-1]), 3),
        }
    else:  # every MSP's held-out rows, weighted by rows
        quality = {"auc": round(float(history["auc"].iloc[-1]), 4)}
    row: dict[str, Any] = {
        "agent": agent,
        "msps": num_msps,
        "epsilon": "inf" if epsilon is None else epsilon,
        "rounds": ROUNDS[agent],
        "aggregation": aggregation,
        "masking": masking,
        **quality,
        "sigma": round(planned_noise(result.plan), 2) if privacy else None,
        "min_msps": result.plan.min_msps,
        "skipped": int(history["skipped"].sum()) if "skipped" in history else 0,
        "epsilon_spent_max": (
            round(float(result.privacy["epsilon_spent"].max()), 4) if privacy else None
        ),
        "seconds": round(seconds, 1),
        "warned": sorted({str(w.message)[:60] for w in caught if "ε" in str(w.message)}),
    }
    return row


def efficiency(agent: str, num_msps: int) -> dict[str, Any]:
    """Share of the per-MSP bound that each way of bounding spends on signal (round 1)."""
    the = registry.get(agent)(CONFIGS[agent])
    parts = the.synthetic_partitions(num_msps, samples_per_msp=40, seed=0)
    locals_ = [the.prepare(p) for p in parts]
    vector = the.init_vector(seed=0)
    rows = np.array([len(x) for x in locals_], dtype=float)
    stats = [the.local_update(vector, x, server_round=1, seed=0).vector for x in locals_]
    norms = np.array([np.linalg.norm(s) for s in stats])
    c = 1.0  # max_grad_norm
    scaled = np.minimum(norms, c) / c
    if agent == "anomaly":
        trees = the.config.trees_per_round
        other = norms / rows / np.sqrt(trees)  # frequencies, bound sqrt(trees)
        other_name = "frequencies"
    else:
        cap = float(rows.mean())
        per_client = the.sensitivity  # (g, c·h) of one client: norm below this
        other = norms / np.maximum(1.0, rows / cap) / (cap * per_client)
        other_name = f"rows capped at {cap:.0f}"
    return {
        "agent": agent,
        "msps": num_msps,
        "scaled to C": round(float(scaled.mean()), 3),
        "alternative": other_name,
        "alternative efficiency": round(float(other.mean()), 3),
    }


def revenue_needed(
    base: int, factors: list[int], *, epsilon: float, draws: int = 3, evaluated: int = 300
) -> list[dict[str, Any]]:
    """MSPs revenue needs at ε: an emulation of meshes ``factor`` times ``base`` MSPs.

    Runs the MSP side for real on ``base`` synthetic MSPs (statistics of the training
    periods, :func:`meshfl.federation.msp_privacy.msp_statistics`, bounded to C = 1), then
    emulates a mesh of ``factor·base`` MSPs drawn alike: the bounded sum grows ``factor``-fold
    while the noise stays N(0, sigma²C²) (sigma planned for 1 round at ``epsilon``,
    δ = 1e-5). The sum goes through the agent's own ``msp_release``, ``combine`` and shared
    fit; sMAPE on the first ``evaluated`` MSPs' held-out periods, mean of ``draws`` noise
    draws; ratio against the seasonal naive and the non-private sum of the same MSPs.
    """
    from meshfl.federation import AgentPlan
    from meshfl.federation.msp_privacy import msp_statistics
    from meshfl.privacy.mechanisms import clip_l2

    sigma = planned_noise(
        AgentPlan(
            agent="revenue",
            rounds=1,
            min_msps=3,
            privacy=DPConfig(epsilon=epsilon, delta=1e-5, unit="msp"),
        )
    )
    the = registry.get("revenue")()
    parts = the.synthetic_partitions(base, samples_per_msp=40, seed=0)
    splits = [the.split(f, test_fraction=0.2, seed=i) for i, f in enumerate(parts)]
    v0 = the.init_vector(seed=0)
    raws = [
        the.local_update(v0, the.prepare(tr), server_round=1, seed=0).vector for tr, _ in splits
    ]
    tests = [the.prepare(te) for _, te in splits[:evaluated]]

    def score(vector: np.ndarray) -> tuple[float, float]:
        out = [the.evaluate(vector, t) for t in tests]
        return (
            float(np.mean([o["smape"] for o in out])),
            float(np.mean([-o["baseline_neg_smape"] for o in out])),
        )

    open_, naive = score(the.combine(v0, np.sum(raws, 0), base, server_round=1))
    bounded = np.sum([clip_l2(msp_statistics(the, r), 1.0)[0] for r in raws], 0)
    rows = []
    for factor in [0, *factors]:  # 0: the bounded sum without noise, at base MSPs
        smapes = []
        for draw in range(draws if factor else 1):
            noise = np.random.default_rng(draw).normal(0.0, sigma, bounded.shape)
            noisy = (factor * bounded + noise) if factor else bounded
            std = sigma if factor else 0.0
            released = the.msp_release(noisy, noise_std=std, shares=1)
            smapes.append(
                score(the.combine(v0, released, base * max(factor, 1), server_round=1))[0]
            )
        ratio = (naive - float(np.mean(smapes))) / (naive - open_)
        rows.append(
            {
                "MSPs (emulated)": base * factor if factor else f"{base}, no noise",
                f"sMAPE ε={epsilon:g}": round(float(np.mean(smapes)), 3),
                "sMAPE ε=∞": round(open_, 3),
                "naive": round(naive, 3),
                "ratio": round(ratio, 3),
                "goal 0.9": "met" if ratio >= 0.9 else "missed",
            }
        )
        print(markdown(rows[-1:]), flush=True)
    return rows


def _load(out: Path) -> dict[str, Any]:
    """Earlier results at ``out`` (``runs``, ``table``, ...), or empty ones."""
    path = out.with_suffix(".json")
    if not path.exists():
        return {"runs": [], "table": []}
    saved = json.loads(path.read_text())
    saved.setdefault("runs", [])
    saved.setdefault("table", [])
    return saved


def _table_row(
    agent: str, num_msps: int, epsilon: float, private: dict[str, Any], open_: dict[str, Any]
) -> dict[str, Any]:
    """One line of the summary table: quality at ε and at ε = ∞, the ratio, the goal."""
    if agent == "revenue":
        # sMAPE, lower is better: the share of the gain over the seasonal-naive forecast
        # (same held-out periods) that survives the noise
        naive = open_["baseline_smape"]
        ratio = (naive - private["smape"]) / (naive - open_["smape"])
        quality = {
            f"quality ε={epsilon:g}": f"sMAPE {private['smape']}",
            "quality ε=∞": f"sMAPE {open_['smape']}",
            "ratio": round(ratio, 3),
            "ratio is": f"(naive - sMAPE_ε)/(naive - sMAPE_∞), naive sMAPE {naive}",
        }
    else:
        ratio = (private["auc"] - 0.5) / (open_["auc"] - 0.5)
        quality = {
            f"quality ε={epsilon:g}": f"AUC {private['auc']}",
            "quality ε=∞": f"AUC {open_['auc']}",
            "ratio": round(ratio, 3),
            "ratio is": "(AUC_ε - 0.5)/(AUC_∞ - 0.5)",
        }
    return {
        "agent": agent,
        "MSPs": num_msps,
        **quality,
        "goal 0.9": "met" if ratio >= 0.9 else "missed",
        "sigma": private["sigma"],
        "rounds": private["rounds"],
        "seconds (ε, ∞)": f"{private['seconds']:.0f}, {open_['seconds']:.0f}",
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """``rows`` as a Markdown table (no tabulate dependency)."""
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="anomaly,client_health")
    parser.add_argument("--msps", default="1000,10000")
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--aggregation", default="ckks", choices=["ckks"])
    parser.add_argument(
        "--baseline-aggregation", default="plaintext", choices=["ckks", "plaintext"]
    )
    parser.add_argument("--masking", default="on", choices=["on", "off"])
    parser.add_argument("--out", default=str(RESULTS / "msp_level_dp"))
    parser.add_argument(
        "--revenue-needed",
        default="",
        help="instead of simulating: emulate revenue at these multiples of the first "
        "--msps (e.g. 1,10,30,100) and report the MSPs it needs (revenue_needed)",
    )
    args = parser.parse_args()
    if args.revenue_needed:
        base = int(args.msps.split(",")[0])
        factors = [int(v) for v in args.revenue_needed.split(",")]
        needed = revenue_needed(base, factors, epsilon=args.epsilon)
        path = Path(args.out).with_suffix(".json")
        saved = _load(Path(args.out))
        saved["revenue_needed"] = needed
        path.write_text(json.dumps(saved, indent=2, default=str, ensure_ascii=False))
        print(markdown(needed))
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    masking = args.masking == "on"
    rows: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    # rows of earlier runs (other agents, other sizes) are kept; a rerun replaces its own
    old = _load(out)
    for num_msps in (int(v) for v in args.msps.split(",")):
        for agent in args.agents.split(","):
            private = run(
                agent, num_msps, args.epsilon, aggregation=args.aggregation, masking=masking
            )
            open_ = run(
                agent, num_msps, None, aggregation=args.baseline_aggregation, masking=masking
            )
            rows += [private, open_]
            table.append(_table_row(agent, num_msps, args.epsilon, private, open_))
            ran = {(r["agent"], r["msps"]) for r in rows}
            keep_runs = [r for r in old["runs"] if (r["agent"], r["msps"]) not in ran]
            keep_table = [r for r in old["table"] if (r["agent"], r["MSPs"]) not in ran]
            everything = {"runs": keep_runs + rows, "table": keep_table + table}
            pd.DataFrame(everything["runs"]).to_csv(out.with_suffix(".csv"), index=False)
            out.with_suffix(".json").write_text(
                json.dumps({**old, **everything}, indent=2, default=str, ensure_ascii=False)
            )
            print(markdown(table), flush=True)
    smallest = min(int(v) for v in args.msps.split(","))
    counting = [a for a in args.agents.split(",") if a in ("anomaly", "client_health")]
    eff = [efficiency(agent, smallest) for agent in counting]
    if eff:
        saved = json.loads(out.with_suffix(".json").read_text())
        saved["efficiency"] = eff
        out.with_suffix(".json").write_text(
            json.dumps(saved, indent=2, default=str, ensure_ascii=False)
        )
    print()
    print(markdown(table))
    if eff:
        print()
        print(markdown(eff))


if __name__ == "__main__":
    main()
