"""Sample-level DP at ε = 0.1 for the text agents at realistic sizes (issue 15, part 1).

For each agent, ``meshfl.bench.privacy.privacy_sweep`` with the closed-form head
(``trainer="closed_form"``: summed statistics of the frozen embeddings, one Gaussian
mechanism) at ε ∈ {0.1, 1, ∞}, δ = 1e-5, add/remove adjacency of one text, plus (optional)
the non-private federation of the default SGD head as a reference. Embeddings are kept on
disk (``--embedding-cache``), so every ε and every later run encodes each text once.

Prints a table with the ratio of each row's metric to the non-private closed-form
federation's and to the best non-private federation's, and writes it as CSV and markdown::

    python benchmarks/privacy_text.py --agents compliance,market_intel,threat_intel \\
        --msps 10 --samples 20000 --reference-sgd
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import pandas as pd

from meshfl.bench.privacy import privacy_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="threat_intel,market_intel,compliance")
    parser.add_argument("--msps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20000, help="rows per MSP")
    parser.add_argument("--epsilons", default="0.1,1,inf")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--closed-form", default="lda", choices=["lda", "nearest_mean"])
    parser.add_argument("--reference-sgd", action="store_true", help="add the SGD head, no DP")
    parser.add_argument("--secure-aggregation", default="plaintext", choices=["plaintext", "ckks"])
    parser.add_argument("--embedding-cache", default="results/cache/embeddings")
    parser.add_argument("--out", default="benchmarks/results/privacy_text")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    frames = []
    for agent in args.agents.split(","):
        config = {
            "encoder": args.encoder,
            "trainer": "closed_form",
            "closed_form": args.closed_form,
        }
        start = time.perf_counter()
        frame = privacy_sweep(
            agent=agent,
            epsilons=epsilons,
            num_msps=args.msps,
            samples_per_msp=args.samples,
            agent_config=config,
            secure_aggregation=args.secure_aggregation,
            embedding_cache=args.embedding_cache,
            reference_config={"encoder": args.encoder} if args.reference_sgd else None,
            with_local_only=False,
            progress=False,
        )
        metric = frame.attrs["metric"]
        frame.insert(0, "agent", agent)
        frame.insert(1, "metric", metric)
        frame["value"] = frame[metric]
        frame["baseline"] = frame[f"baseline_{metric}"]
        closed_inf = frame.loc[(frame["setting"] == "federated"), "value"]
        best = frame.loc[frame["epsilon"].map(math.isinf), "value"].max()
        frame["ratio_to_closed_form_inf"] = frame["value"] / closed_inf.iloc[0]
        frame["ratio_to_best_nonprivate"] = frame["value"] / best
        frame["msps"], frame["samples_per_msp"] = args.msps, args.samples
        frame["config"] = json.dumps(config)
        frame["sweep_seconds"] = time.perf_counter() - start
        keep = [
            "agent",
            "metric",
            "setting",
            "epsilon",
            "epsilon_spent_max",
            "value",
            "baseline",
            "ratio_to_closed_form_inf",
            "ratio_to_best_nonprivate",
            "snr",
            "seconds",
            "msps",
            "samples_per_msp",
            "config",
        ]
        frames.append(frame[keep])
        table = pd.concat(frames, ignore_index=True)
        stem = out / f"privacy_text_{args.msps}x{args.samples}_{args.closed_form}"
        table.to_csv(stem.with_suffix(".csv"), index=False)
        stem.with_suffix(".md").write_text(_markdown(table) + "\n")
        print(frame[keep].to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)


def _markdown(table: pd.DataFrame) -> str:
    cols = [c for c in table.columns if c != "config"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
