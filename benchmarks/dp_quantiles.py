"""DP bounds: rank error of :func:`meshfl.privacy.quantiles.dp_bounds` by ε and rows.

For each ε and number of rows, ``dp_bounds`` estimates the 1 % and 99 % quantiles of two
columns at once (a normal on a fine linear grid, a log-normal revenue in billions on the
default grid) many times; the table gives, per column, the mean and 95th percentile of the
share of rows that lie outside the estimated bounds beyond the 1 % each side the quantiles
allow (the *excess*: bounds too tight), the share of runs with a bound far outside the data
(more than twice as far from the median as the 0.1 % or 99.9 % quantile: bounds too wide,
a wrong early turn of the search), and the share of runs that warned.

    .venv/bin/python benchmarks/dp_quantiles.py
    .venv/bin/python benchmarks/dp_quantiles.py --runs 20 --epsilons 0.1,1

Prints a table and writes benchmarks/results/dp_quantiles.csv.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from meshfl.privacy.quantiles import default_grid, dp_bounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", default="0.1,0.3,1")
    parser.add_argument("--rows", default="2000,20000,60000")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    grids = {"normal": np.linspace(0, 100, 1001), "revenue": default_grid()}
    out = []
    for n in (int(v) for v in args.rows.split(",")):
        frame = pd.DataFrame(
            {"normal": rng.normal(50, 10, n), "revenue": rng.lognormal(np.log(3e9), 1.0, n)}
        )
        for eps in (float(v) for v in args.epsilons.split(",")):
            excess: dict[str, list[float]] = {c: [] for c in frame}
            far: dict[str, int] = dict.fromkeys(frame, 0)
            warned = 0
            for _ in range(args.runs):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    est = dp_bounds(frame, epsilon=eps, delta=1e-5, grid=grids)
                warned += bool(caught)
                for c, (low, high) in est.bounds.items():
                    x = frame[c]
                    lo, mid, hi = x.quantile([0.001, 0.5, 0.999])
                    far[c] += low < mid - 2 * (mid - lo) or high > mid + 2 * (hi - mid)
                    excess[c].append(
                        max(0.0, (x < low).mean() - 0.01) + max(0.0, (x > high).mean() - 0.01)
                    )
            for c, values in excess.items():
                out.append(
                    {
                        "rows": n,
                        "epsilon": eps,
                        "column": c,
                        "sigma_rows": round(est.event.noise_multiplier, 1),
                        "excess_mean_pct": round(100 * float(np.mean(values)), 2),
                        "excess_p95_pct": round(100 * float(np.quantile(values, 0.95)), 2),
                        "far_pct": round(100 * far[c] / args.runs),
                        "warned_pct": round(100 * warned / args.runs),
                    }
                )
    table = pd.DataFrame(out)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + " --- |" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")
    path = Path(__file__).parent / "results" / "dp_quantiles.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
