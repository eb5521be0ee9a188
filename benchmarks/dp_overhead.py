"""What DP-SGD costs: one local epoch of the threat_intel head with and without DP.

The head is the one ``threat_intel`` trains (in_dim 384, tasks (8, 4); linear by default,
``--hidden 128`` for the MLP variant) on cached
encoder embeddings, here random float32 rows. One epoch is timed for:

* ``no DP``: ``meshfl.models.heads.train_head`` (Adam, shuffled fixed minibatches of 32;
  ceil(N / 32) steps);
* ``meshfl DP-SGD``: ``meshfl.privacy.dpsgd.train_private`` (Adam, Poisson sampling with
  expected batch 32, round(N / 32) steps, per-sample clipping and noise), with the default
  per-sample gradient engine (linear-layer taps) and, for reference, the ``torch.func`` one;
* ``Opacus <mode>``: Opacus' stock ``PrivacyEngine.make_private`` (Poisson sampling) with
  ``grad_sample_mode`` hooks (the default), ew (expanded weights) and functorch. Only the
  epoch is timed, not ``make_private``; meshfl's timings include all their set-up.

An epoch without DP processes N records; a Poisson epoch round(N / 32) x 32 in expectation
(384 for N = 400), so the table also gives the ratio per record processed. Methods run
interleaved, one epoch each per repetition after a warm-up, so load from other processes hits
all of them alike; the table shows medians.

    .venv/bin/python benchmarks/dp_overhead.py                  # N = 400 and 2000, 7 repetitions
    .venv/bin/python benchmarks/dp_overhead.py --n 400 --reps 3

Prints a table and writes benchmarks/results/dp_overhead_hidden<H>.{csv,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from opacus import PrivacyEngine

from meshfl.models.heads import MultiTaskHead, multitask_loss, train_head
from meshfl.privacy.dpsgd import train_private

IN_DIM, HIDDEN, TASKS = 384, 0, (8, 4)
BATCH, LR, NOISE, CLIP = 32, 1e-3, 1.0, 1.0
RESULTS = Path(__file__).parent / "results"


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, IN_DIM)).astype(np.float32)
    y = np.stack([rng.integers(0, k, n) for k in TASKS], axis=1)
    return x, y


def new_head() -> MultiTaskHead:
    torch.manual_seed(0)
    return MultiTaskHead(IN_DIM, TASKS, hidden=HIDDEN)


def no_dp(x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        train_head(new_head(), x, y, epochs=1, lr=LR, batch_size=BATCH, seed=0)

    return run


def meshfl_dp(x: np.ndarray, y: np.ndarray, method: str) -> Callable[[], None]:
    def run() -> None:
        train_private(
            new_head(),
            x,
            y,
            loss_fn=multitask_loss,
            epochs=1,
            batch_size=BATCH,
            lr=LR,
            noise_multiplier=NOISE,
            max_grad_norm=CLIP,
            seed=0,
            method=method,  # type: ignore[arg-type]
        )

    return run


def opacus_dp(x: np.ndarray, y: np.ndarray, mode: str) -> Callable[[], None]:
    def run() -> None:
        head = new_head()
        data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        module, optimizer, loader = PrivacyEngine().make_private(
            module=head,
            optimizer=torch.optim.Adam(head.parameters(), lr=LR),
            data_loader=torch.utils.data.DataLoader(data, batch_size=BATCH),
            noise_multiplier=NOISE,
            max_grad_norm=CLIP,
            poisson_sampling=True,
            grad_sample_mode=mode,
        )
        module.train()
        start = time.perf_counter()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = multitask_loss(module(xb), yb)
            loss.backward()
            optimizer.step()
            float(loss.detach())
        run.seconds = time.perf_counter() - start  # type: ignore[attr-defined]

    return run


def measure(n: int, reps: int) -> list[dict]:
    x, y = make_data(n)
    methods: dict[str, Callable[[], None]] = {
        "no DP (train_head)": no_dp(x, y),
        "meshfl DP-SGD (taps, default)": meshfl_dp(x, y, "taps"),
        "meshfl DP-SGD (torch.func vmap)": meshfl_dp(x, y, "vmap"),
        "Opacus make_private (hooks, stock)": opacus_dp(x, y, "hooks"),
        "Opacus make_private (ew)": opacus_dp(x, y, "ew"),
        "Opacus make_private (functorch)": opacus_dp(x, y, "functorch"),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for run in methods.values():  # warm-up: lazy imports, allocator, vmap tracing
        run()
    names = list(methods)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            run = methods[name]
            start = time.perf_counter()
            run()
            times[name].append(getattr(run, "seconds", time.perf_counter() - start))
    base = float(np.median(times["no DP (train_head)"]))
    rows = []
    for name, ts in times.items():
        dp = name != "no DP (train_head)"
        # records per epoch: N without DP; (steps x expected batch) with Poisson sampling
        records = max(1, round(n / BATCH)) * BATCH if dp else n
        rows.append(
            {
                "n": n,
                "method": name,
                "median_s_per_epoch": float(np.median(ts)),
                "min_s": float(np.min(ts)),
                "max_s": float(np.max(ts)),
                "ratio_to_no_dp": float(np.median(ts)) / base,
                "ratio_per_record": float(np.median(ts)) / records / (base / n),
                "records_per_epoch": records,
                "steps_per_epoch": max(1, round(n / BATCH)) if dp else math.ceil(n / BATCH),
                "reps": reps,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[400, 2000])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument(
        "--hidden", type=int, default=0, help="hidden width (threat_intel's default: 0, linear)"
    )
    args = parser.parse_args()
    global HIDDEN
    HIDDEN = args.hidden
    warnings.filterwarnings("ignore", message=".*secure.*", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*Full backward hook.*")
    warnings.filterwarnings("ignore", message=".*Secure RNG.*")

    rows = [row for n in args.n for row in measure(n, args.reps)]
    table = pd.DataFrame(rows)
    shown = table[
        [
            "n",
            "method",
            "median_s_per_epoch",
            "ratio_to_no_dp",
            "ratio_per_record",
            "steps_per_epoch",
        ]
    ]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    RESULTS.mkdir(parents=True, exist_ok=True)
    table.insert(0, "hidden", HIDDEN)
    table.to_csv(RESULTS / f"dp_overhead_hidden{HIDDEN}.csv", index=False)
    meta = {
        "model": {"in_dim": IN_DIM, "hidden": HIDDEN, "tasks": list(TASKS)},
        "batch_size": BATCH,
        "noise_multiplier": NOISE,
        "max_grad_norm": CLIP,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "goal": "meshfl DP-SGD ratio_to_no_dp <= 1.5",
    }
    stem = RESULTS / f"dp_overhead_hidden{HIDDEN}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {stem}.csv and {stem}.json")


if __name__ == "__main__":
    main()
