"""Privacy against accuracy: the same federation at several budgets ε.

``meshfl bench privacy --agent threat_intel --epsilons 0.1,0.5,1,2,8,inf`` runs the
federation once per ε (``inf`` is the non-private federation) on the same data, adds the
local-only reference (each MSP alone, no privacy), and writes a CSV, a markdown table and a
PNG plot of the headline metric against ε.

Every row also has the trivial baseline on the same pooled held-out rows
(``baseline_<metric>``: the majority class, AUC 0.5, a seasonal naive forecast, ...),
whether the model is worse than it (``worse_than_baseline``, marked in the table and
plot, and warned about), and the federation's signal-to-noise estimate (``snr``, a power
of 2, the last round's; ``inf`` without privacy).
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from meshfl.agents import registry
from meshfl.baselines import local_only
from meshfl.federation.server_app import AgentPlan
from meshfl.privacy.config import DPConfig
from meshfl.simulation import simulate

if TYPE_CHECKING:
    from meshfl.agents.base import Agent
    from meshfl.federation.client_app import NodeData
    from meshfl.simulation import SimulationResult

__all__ = ["parse_epsilons", "privacy_sweep", "write_privacy_report"]

log = logging.getLogger("meshfl.bench")


def parse_epsilons(text: str) -> list[float]:
    """``"0.1,1,inf"`` → ``[0.1, 1.0, inf]``, with a readable error for anything else."""
    from meshfl.config.errors import ConfigError

    values = []
    for part in text.split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise ConfigError(
                f"--epsilons must be a comma-separated list of numbers > 0 or 'inf'. "
                f"Got {part.strip()!r} in {text!r}."
            ) from None
        if not value > 0:
            raise ConfigError(f"Every epsilon must be > 0 (or 'inf'). Got {value:g}.")
        values.append(value)
    return values


def privacy_sweep(
    *,
    agent: str,
    epsilons: Sequence[float],
    num_msps: int = 5,
    rounds: int | None = None,
    seed: int = 0,
    delta: float = 1e-5,
    unit: Literal["sample", "msp"] = "sample",
    agent_config: Mapping[str, Any] | None = None,
    samples_per_msp: int = 400,
    secure_aggregation: Literal["ckks", "plaintext"] = "ckks",
    progress: bool = True,
    embedding_cache: str | os.PathLike[str] | None = None,
    reference_config: Mapping[str, Any] | None = None,
    with_local_only: bool = True,
) -> pd.DataFrame:
    """One row per ε (and one local-only reference row): the metric on pooled held-out data.

    ``rounds=None`` takes the agent's suggested number of rounds; the other arguments are
    those of :func:`meshfl.simulate`. ``embedding_cache``: a directory where a text agent's
    encoder keeps its embeddings, so that every ε, and every later run, encodes each text
    once (within one sweep the encoder's memory cache already does). ``reference_config``
    adds a non-private federation with that agent config (e.g. ``{"trainer": "sgd"}`` beside
    a closed-form sweep), in a row of setting ``"federated, reference config"``.
    ``with_local_only=False`` leaves the local-only row out.
    """
    trained = registry.get(agent)(dict(agent_config or {}))
    if rounds is None:
        rounds = trained.suggested_rounds()
    if embedding_cache is not None and hasattr(trained, "encoder"):
        trained.use_cache_dir(embedding_cache)  # the encoder is shared by the process
    rows = []
    partitions = None
    metric = ""
    if reference_config is not None:
        reference = registry.get(agent)(dict(reference_config))
        start = time.perf_counter()
        result = simulate(
            agent=agent,
            num_msps=num_msps,
            rounds=reference.suggested_rounds(),
            seed=seed,
            agent_config=reference_config,
            samples_per_msp=samples_per_msp,
            secure_aggregation=secure_aggregation,
            progress=progress,
        )
        row = _federated_row(result, reference, math.inf, None, delta, unit, start)
        row["setting"] = "federated, reference config"
        row["rounds_completed"] = int((~result.history["skipped"]).sum())
        rows.append(row)
    for epsilon in epsilons:
        privacy = None if math.isinf(epsilon) else DPConfig(epsilon=epsilon, delta=delta, unit=unit)
        start = time.perf_counter()
        with warnings.catch_warnings():
            # the sweep compares with the baseline on pooled rows itself, and warns once
            warnings.filterwarnings("ignore", message=".*worse than a trivial baseline")
            result = simulate(
                agent=agent,
                num_msps=num_msps,
                rounds=rounds,
                seed=seed,
                agent_config=agent_config,
                samples_per_msp=samples_per_msp,
                privacy=privacy,
                secure_aggregation=secure_aggregation,
                progress=progress,
            )
        metric = result.model.agent.metric
        partitions = result.partitions
        rows.append(_federated_row(result, trained, epsilon, privacy, delta, unit, start))
        log.info(
            "%s ε=%s: %s=%.4f (trivial baseline %.4f, signal-to-noise ≈ %g)",
            agent,
            epsilon,
            metric,
            rows[-1][metric],
            rows[-1][f"baseline_{metric}"],
            rows[-1]["snr"],
        )
    assert partitions is not None
    if with_local_only:
        rows.append(
            _local_only_row(trained, metric, agent, agent_config, rounds, seed, partitions, rows)
        )
    frame = pd.DataFrame(rows)
    _warn_worse(frame, agent=agent, metric=metric)
    frame.attrs.update(
        {
            "agent": agent,
            "metric": metric,
            "msps": num_msps,
            "rounds": rounds,
            "samples_per_msp": samples_per_msp,
        }
    )
    return frame


def _federated_row(
    result: SimulationResult,
    trained: Agent[Any],
    epsilon: float,
    privacy: DPConfig | None,
    delta: float,
    unit: str,
    start: float,
) -> dict[str, Any]:
    """The sweep's row for one simulated federation (at ``epsilon``, or without DP)."""
    metric = result.model.agent.metric
    spent = float(result.privacy["epsilon_spent"].max()) if result.privacy is not None else math.inf
    pooled = result.evaluate()
    return {
        "setting": "federated" if privacy is None else "federated + DP",
        "epsilon": epsilon,
        "epsilon_spent_max": spent,
        "delta": delta if privacy is not None else 0.0,
        "unit": unit if privacy is not None else "-",
        metric: pooled[metric],
        f"baseline_{metric}": pooled.get(f"baseline_{metric}", math.nan),
        "worse_than_baseline": bool(trained.worse_than_baseline(pooled)),
        "snr": _last_snr(result.history) if privacy is not None else math.inf,
        "rounds_completed": int((~result.history["skipped"]).sum()),
        "seconds": time.perf_counter() - start,
    }


def _local_only_row(
    trained: Agent[Any],
    metric: str,
    agent: str,
    agent_config: Mapping[str, Any] | None,
    rounds: int,
    seed: int,
    partitions: list[NodeData],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The reference row: each MSP trained alone (no DP), the mean on the pooled rows."""
    plan = AgentPlan(
        agent=agent,
        agent_config=dict(agent_config or {}),
        rounds=rounds,
        seed=seed,
        min_msps=trained.min_msps,
    )
    models, _ = local_only(plan, partitions)
    test = pd.concat([p.test for p in partitions if p.test is not None], ignore_index=True)
    local = [m.evaluate(test)[metric] for m in models]
    baseline = float(rows[-1][f"baseline_{metric}"])  # the same pooled held-out rows
    local_metrics = {metric: float(np.mean(local)), f"baseline_{metric}": baseline}
    return {
        "setting": "local-only (mean MSP, no DP)",
        "epsilon": math.inf,
        "epsilon_spent_max": math.inf,
        "delta": 0.0,
        "unit": "-",
        metric: local_metrics[metric],
        f"baseline_{metric}": baseline,
        "worse_than_baseline": bool(trained.worse_than_baseline(local_metrics)),
        "snr": math.inf,
        "rounds_completed": rounds,
        "seconds": float("nan"),
    }


def _last_snr(history: pd.DataFrame) -> float:
    """The last round's signal-to-noise estimate that exists (NaN if none does)."""
    if "snr" not in history:
        return math.nan
    known = history["snr"].dropna()
    return float(known.iloc[-1]) if len(known) else math.nan


def _warn_worse(frame: pd.DataFrame, *, agent: str, metric: str) -> None:
    private = frame[(frame["setting"] == "federated + DP") & frame["worse_than_baseline"]]
    if private.empty:
        return
    listed = ", ".join(
        f"ε={row['epsilon']:g}: {row[metric]:.4g} against {row[f'baseline_{metric}']:.4g}"
        f" (signal-to-noise ≈ {row['snr']:g})"
        for _, row in private.iterrows()
    )
    message = (
        f"{agent}: the private model is worse than the trivial baseline on the pooled "
        f"held-out rows ({metric}) at {listed}; at those budgets the noise swamps the updates."
    )
    log.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def write_privacy_report(frame: pd.DataFrame, out: str | os.PathLike[str]) -> list[Path]:
    """Write ``privacy_<agent>.csv``, ``.md`` and ``.png`` into ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agent, metric = frame.attrs["agent"], frame.attrs["metric"]
    csv, md, png = (out / f"privacy_{agent}.{ext}" for ext in ("csv", "md", "png"))
    frame.to_csv(csv, index=False)
    md.write_text(_markdown(frame) + "\n")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn(
            f"No plot: matplotlib is not installed (pip install 'meshfl[plot]'). "
            f"The table is in {csv} and {md}.",
            stacklevel=2,
        )
        return [csv, md]
    _plot(frame, png, agent=agent, metric=metric)
    return [csv, md, png]


def _markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if c == "worse_than_baseline":
                cells.append("**yes** ⚠" if v else "no")
            else:
                cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _reference_line(ax: Any, values: pd.Series, color: str, ls: str, what: str) -> None:
    """A horizontal line at the first of ``values`` (a setting without ε), if there is one."""
    if len(values):
        value = values.iloc[0]
        ax.axhline(value, color=color, ls=ls, label=f"{what} ({value:.3f})")


def _plot(frame: pd.DataFrame, path: Path, *, agent: str, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    private = frame[frame["setting"] == "federated + DP"].sort_values("epsilon")
    public = frame[frame["setting"] == "federated"]
    local = frame[frame["setting"].str.startswith("local-only")]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(private["epsilon"], private[metric], "o-", color="#2a7ab0", label="federated + DP")
    for _, row in private.iterrows():
        ax.annotate(
            f"{row[metric]:.3f}",
            (row["epsilon"], row[metric]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    _reference_line(ax, public[metric], "#2a7ab0", "--", "federated, no DP")
    baseline = f"baseline_{metric}"
    if baseline in frame and frame[baseline].notna().any():
        value = float(frame[baseline].dropna().iloc[0])
        ax.axhline(value, color="#c0392b", ls="-.", lw=1, label=f"trivial baseline ({value:.3f})")
        worse = private[private["worse_than_baseline"].astype(bool)]
        if len(worse):
            ax.plot(worse["epsilon"], worse[metric], "x", color="#c0392b", ms=9, mew=2)
    _reference_line(ax, local[metric], "#888888", ":", "local-only mean MSP, no DP")
    if len(private):  # a sweep of only ε = inf has no DP points to put on a log axis
        ax.set_xscale("log")
    delta = private["delta"].iloc[0] if len(private) else 0.0
    ax.set_xlabel(f"ε per MSP (δ = {delta:g})")
    ax.set_ylabel(metric)
    ax.set_title(
        f"{agent}: {metric} against privacy budget\n"
        f"({frame.attrs['msps']} MSPs of about {frame.attrs['samples_per_msp']} rows, "
        f"{frame.attrs['rounds']} rounds)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
