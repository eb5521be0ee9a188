"""How many records the closed-form head needs at ε = 0.1 (issue 15, part 1).

From one agent's cached embeddings (``benchmarks/privacy_text.py`` leaves them in
``--embedding-cache``): 10 MSPs' statistics, each released once through the Gaussian
mechanism at ε = 0.1, δ = 1e-5 (sigma from the accountant), summed and solved; scored on a
fixed held-out fifth. Measured at subsets of the pooled rows; beyond the rows there are, the
statistics of ``k`` times as many records from the same distribution are ``k`` times the
sums with the same noise, i.e. the sums with noise ``sigma/k`` — the ``scale`` rows are that
extrapolation (labelled, not measured on more records)::

    python benchmarks/closed_form_records_needed.py --agent compliance --rows 200000
"""

from __future__ import annotations

import argparse

import numpy as np

from meshfl.agents import get
from meshfl.agents.text_classifier import TextData
from meshfl.models import closed_form as cf
from meshfl.privacy.accountant import calibrate_noise
from meshfl.privacy.mechanisms import add_gaussian_noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="compliance")
    parser.add_argument("--rows", type=int, default=200000, help="pooled rows (cached)")
    parser.add_argument("--msps", type=int, default=10)
    parser.add_argument("--closed-form", default="nearest_mean")
    parser.add_argument("--embedding-cache", default="results/cache/embeddings")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scales", default="2,4,8,16", help="extrapolation factors k")
    parser.add_argument("--fractions", default="0.25,0.5,1", help="measured subsets")
    args = parser.parse_args()
    agent = get(args.agent)({"trainer": "closed_form", "closed_form": args.closed_form})
    agent.use_cache_dir(args.embedding_cache)
    data = agent.prepare(agent.synthetic_data(args.rows, seed=0))
    order = np.random.default_rng(0).permutation(args.rows)
    test = TextData(data.features[order[: args.rows // 5]], data.targets[order[: args.rows // 5]])
    pool = order[args.rows // 5 :]
    layout, cap = agent.layout, agent.membership_cap()
    sens = cf.sensitivity(layout, cap)
    sigma = calibrate_noise(epsilon=0.1, delta=1e-5, sample_rate=1.0, steps=1)
    print(f"{args.agent}: sigma={sigma:.4g}, sensitivity={sens:.4g}, metric {agent.metric}")

    def score(rows: np.ndarray, noise: float) -> float:
        total = np.zeros(layout.size)
        for part in np.array_split(rows, args.msps):
            z = cf.memberships(data.targets[part], layout, cap)
            stats = cf.statistics(data.features[part], z, layout)
            if noise > 0:
                stats[layout.private] = add_gaussian_noise(
                    stats[layout.private], sensitivity=sens, noise_multiplier=noise
                )
                stats[-1] = (noise * sens) ** 2
            total += stats
        head = cf.DiscriminantHead(total, layout, shrinkage=agent.config.shrinkage)
        agent.__dict__["_discriminant"] = (None, head)
        agent.discriminant = lambda vector: head  # type: ignore[method-assign]
        return float(agent.evaluate(np.zeros(1), test)[agent.metric])

    reference = score(pool, 0.0)
    print(f"no DP, all {len(pool)} training rows: {reference:.4f}")
    print("| training records | how | ε=0.1 (mean of repeats) | ratio to no DP |")
    print("|---|---|---|---|")
    for fraction in map(float, args.fractions.split(",")):
        rows = pool[: int(len(pool) * fraction)]
        values = [score(rows, sigma) for _ in range(args.repeats)]
        print(
            f"| {len(rows)} | measured | {np.mean(values):.4f} | "
            f"{np.mean(values) / reference:.3f} |"
        )
    for k in map(int, args.scales.split(",")):
        values = [score(pool, sigma / k) for _ in range(args.repeats)]
        print(
            f"| {k * len(pool)} | scale (sigma/{k}) | {np.mean(values):.4f} | "
            f"{np.mean(values) / reference:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
