"""What secure aggregation costs: CKKS against the plaintext twin, in bytes and in time.

For vectors of 10^4, 10^5 and 10^6 parameters (payloads ``[w·v, w, tag]`` of n + 9 values) and
3, 10 and 100 MSPs, on one core (meshfl's TenSEAL contexts run one thread; numpy does
no multi-threaded work here):

* **bytes on the wire per parameter**, against float32 (4 bytes): the upload of one MSP and
  the summed global model sent back; beside them TenSEAL's own serialization of the same
  ciphertexts, and the ciphertext size of two common settings, *measured* here with TenSEAL
  (a full ciphertext, values only, no keys): NVIDIA FLARE's default HE context
  (N = 8192, primes [60, 40, 40], scale 2^40; quoted as 14.4x float32) and the setting of
  TenSEAL's README and tutorials (N = 8192, [60, 40, 40, 60], 2^40; quoted as 20x).
* **time**: seal (encode, encrypt, serialize) per MSP, with its throughput in values/s;
  the coordinator's check per MSP; the sum; one MSP opening the sum. A **round** is all
  MSPs sealing one after the other, the coordinator checking and adding, one MSP opening:
  ``K * seal + K * check + sum + open``; the same round with the plaintext backend.
  MSPs seal in parallel in a deployment, so the table also gives the round's critical
  path, ``seal + K * check + sum + open``.

Sealing is measured once per vector size and its ciphertexts are copied for every MSP in
the sum: K distinct buffers, as K MSPs' ciphertexts are (each chunk is deserialized and
added once per MSP; the same buffer K times would stay in the processor's cache and flatter
the sum). The check is timed on one payload and counted K times.

What stops the bytes going lower: a CKKS ciphertext is 2 polynomials of N coefficients for
N/2 values, i.e. 4 coefficients per value, each a uniformly random residue modulo the data
prime. meshfl uses one 60-bit data prime (SEAL's largest: everything, range, precision and
noise, must fit in it) and packs each coefficient into its 60 bits: 4 x 60 / 8 = 30 bytes
per value, 7.5x float32, the floor for this modulus. Lower needs a smaller modulus (less
range and precision) or seeded ciphertexts (the random half of a fresh ciphertext sent as a
seed: half the upload, not the sum; TenSEAL does not expose it).

**Masked** (issue 13, :mod:`meshfl.secure.secagg`), measured in the same run on the same
ciphertexts, for rounds of at least 3 MSPs over the default neighbour graph (complete up to
24 MSPs, then ``3·log2 K`` neighbours) with 10% of the MSPs dropping between sending and
unmasking:

* **bytes** per MSP: the masked upload (same size as the CKKS one) plus its encrypted Shamir
  shares and public key, the unmask request it receives and its answer; against the CKKS
  upload (``masked_bytes_x_ckks``; goal <= 1.1);
* **MSP time**, against sealing alone (``msp_x_ckks``; goal <= 1.5), as the ClientApp
  spends it: the mask (key agreement with each neighbour, self-mask and one expansion per
  neighbour, shares, their encryption) depends on the payload's length only, so it is
  started when the round's plan arrives and computed while the MSP trains
  (:func:`~meshfl.secure.secagg.start_mask`); what the MSP waits for after training is
  sealing with it (:func:`~meshfl.secure.secagg.seal_masked`), and later answering the
  unmask request. Beside it: the same ratio in CPU time with the mask's own work included
  (``msp_x_ckks_cpu``: what the mask costs, wherever it runs), and in wall time with the
  mask started only as sealing starts (``msp_x_ckks_unhidden``: a round with no training to
  hide it behind; the mask then runs in the worker thread while the ciphertexts are
  encrypted, which needs a free core). Timed 31, 11 and 3 times for 10^4, 10^5 and 10^6
  values (medians), each time with a fresh key pair, as in a run's first round (no X25519
  secret agreed yet; later rounds reuse the secrets agreed with neighbours met before), and
  sealing alone is timed as often, in turns with it (``paired_seal_s``), so that both sides
  of the ratio see the same load on a shared machine;
* **coordinator time**: ``K * check + sum`` against ``K * check + sum`` of the masked
  ciphertexts plus drawing the graph, taking the shares, the unmask requests, rebuilding
  every survivor's seed from ``t`` shares, expanding and subtracting the masks
  (``coordinator_x_ckks``; goal <= 2 at 100 MSPs). Its result is checked against the
  plaintext sum of the survivors.

    .venv/bin/python benchmarks/secure_aggregation.py
    .venv/bin/python benchmarks/secure_aggregation.py --sizes 10000 100000 --msps 3 10

Prints a table and writes benchmarks/results/secure_aggregation.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import tenseal as ts

from meshfl.secure import CKKSParams, plaintext_backend, seal_payload
from meshfl.secure.binding import TAG_SLOTS
from meshfl.secure.ckks import CKKSAggregator, CKKSSealer, ckks_vector_from, ephemeral_ckks_backend
from meshfl.secure.masking import KeyPair, default_degree, round_scope
from meshfl.secure.secagg import (
    MIN_MASKED,
    RoundMasking,
    answer_unmask,
    mask_for,
    seal_masked,
    start_mask,
)

RESULTS = Path(__file__).parent / "results"
FLOAT32 = 4
GOAL_RATIO, GOAL_RATE = 8.0, 1e6
GOAL_MASKED = {"bytes": 1.1, "msp": 1.5, "coordinator": 2.0}
DROPOUT = 0.1
ANCHORS = {  # name: (poly_modulus_degree, primes, scale_bits, quoted x float32)
    "NVIDIA FLARE default": (8192, [60, 40, 40], 40, 14.4),
    "TenSEAL README": (8192, [60, 40, 40, 60], 40, 20.0),
}
T = TypeVar("T")


def timed(fn: Callable[[], T], reps: int) -> tuple[float, T]:
    """Median seconds over ``reps`` runs, and the last result."""
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result  # type: ignore[return-value]


def _seconds(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call (one thread: CPU time leaves out the time the
    process waited for a core on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _copy(sealed: Any) -> Any:
    """The same ciphertexts in buffers of their own."""
    return replace(sealed, chunks=tuple(bytes(bytearray(c)) for c in sealed.chunks))


def anchor_bytes_per_value(degree: int, primes: list[int], scale_bits: int) -> float:
    """Bytes per value of one full TenSEAL CKKS ciphertext under these parameters."""
    context = ts.context(ts.SCHEME_TYPE.CKKS, degree, coeff_mod_bit_sizes=primes, n_threads=1)
    context.global_scale = 2.0**scale_bits
    values = np.random.default_rng(0).standard_normal(degree // 2)
    return len(ts.ckks_vector(context, values.tolist()).serialize()) / values.size


def masked_round(
    sealer: CKKSSealer,
    aggregator: CKKSAggregator,
    payload: np.ndarray,
    sealed: Any,
    k: int,
    samples: int = 3,
    reps: int = 1,
) -> dict[str, Any]:
    """One masked round of ``k`` MSPs (all sealing ``sealed``), 10% dropping before unmasking,
    and ``samples`` timings of one MSP's path against sealing alone.

    Every MSP masks for real (its own key pair, seed, neighbours and shares); the
    coordinator's unmasked sum is checked against the plaintext sum of the ``k`` payloads.
    """
    length = sealed.length
    nodes = list(range(1, k + 1))
    keys = {node: KeyPair() for node in nodes}
    scope = round_scope("bench", "session", "agent", 1)
    coordinator = 0.0
    start = time.perf_counter()
    masking = RoundMasking.draw(nodes, {n: kp.public for n, kp in keys.items()})
    coordinator += time.perf_counter() - start
    # An MSP's path, ``samples`` times, each time with a fresh key pair (as in a run's first
    # round: no X25519 secret agreed yet; what it masks with is thrown away), as the
    # ClientApp does: the mask started when the round's plan arrives, computed while the
    # MSP trains (here: waited for), then sealing with it. Timed: the wait after training
    # (sealing with the mask), and the CPU time of all of it, the mask included; and the
    # wall time when the mask starts only as sealing does (no training to hide it behind).
    # Sealing alone is timed in turns with it (alone first, then masked first), so that
    # both sides of the ratio see the same load.
    after_training: list[tuple[float, float]] = []
    unhidden: list[float] = []
    seal_times: list[tuple[float, float]] = []
    for i in range(samples):
        node = nodes[i % k]
        plan = masking.plan_for(node)

        def start(node: int = node, plan: Any = plan) -> Any:
            return start_mask(sealer, length, node=node, keys=KeyPair(), plan=plan, scope=scope)

        for alone in (True, False) if i % 2 == 0 else (False, True):
            if alone:
                seal_times.append(_seconds(lambda: sealer.seal(payload)))
                continue
            cpu = time.process_time()
            pending = start()
            pending.result()  # training, meanwhile
            wall, _ = _seconds(lambda p=pending: seal_masked(sealer, payload, p))
            after_training.append((wall, time.process_time() - cpu))
            unhidden.append(_seconds(lambda: seal_masked(sealer, payload, start()))[0])
    masked, upload = [], []
    for node in nodes:
        plan = masking.plan_for(node)
        mask, shares = mask_for(sealer, length, node=node, keys=keys[node], plan=plan, scope=scope)
        if node == nodes[0]:  # sealing with the mask, as an MSP does
            ciphertext = sealer.seal(payload, mask=mask)
        else:  # the same ciphertexts, masked after sealing (sealing again costs only time)
            ciphertext = sealer.shift(sealed, mask)
        start = time.perf_counter()
        masking.accept(node, shares)
        coordinator += time.perf_counter() - start
        masked.append(ciphertext)
        upload.append(
            ciphertext.nbytes + sum(map(len, shares.boxes)) + 32 + 8 * len(shares.holders)
        )
    check_s, _ = timed(lambda: aggregator.check(masked[0], expected_length=length), 3)
    sum_s, total = timed(lambda: aggregator.add(masked), reps)
    start = time.perf_counter()
    requests = masking.requests(nodes, nodes)
    coordinator += time.perf_counter() - start
    gone = set(nodes[: int(DROPOUT * k)])  # sent, then vanished before unmasking
    replies, answer_times, unmask_bytes = {}, [], []
    for node in nodes:
        request = requests[node]
        start, cpu = time.perf_counter(), time.process_time()
        reply = answer_unmask(
            request,
            node=node,
            keys=keys[node],
            neighbours={p: keys[p].public for p in masking.graph[node]},
            scope=scope,
            min_survivors=max(MIN_MASKED, masking.threshold),
        )
        answer_times.append((time.perf_counter() - start, time.process_time() - cpu))
        unmask_bytes.append(
            sum(map(len, request.boxes.values()))
            + 8 * (len(request.boxes) + len(request.survivors))
            + sum(map(len, reply.shares.values()))
            + 8 * len(reply.shares)
        )
        if node not in gone:
            replies[node] = reply
    start = time.perf_counter()
    correction = masking.correction(nodes, nodes, replies, aggregator, length)
    unmasked = aggregator.shift(total, correction, subtract=True)
    coordinator += time.perf_counter() - start
    opened = sealer.open(unmasked)
    expected = k * payload
    error = float(np.max(np.abs(opened - expected)) / np.max(np.abs(expected)))
    return {
        "masked_neighbours": default_degree(k),
        "masked_threshold": masking.threshold,
        "masked_upload_bytes": float(np.median(upload)),
        "masked_unmask_bytes": float(np.median(unmask_bytes)),
        "mask_and_seal_s": float(np.median([w for w, _ in after_training])),
        "paired_seal_s": float(np.median([w for w, _ in seal_times])),
        "mask_and_seal_unhidden_s": float(np.median(unhidden)),
        "answer_s": float(np.median([w for w, _ in answer_times])),
        "mask_and_seal_cpu_s": float(np.median([c for _, c in after_training])),
        "paired_seal_cpu_s": float(np.median([c for _, c in seal_times])),
        "answer_cpu_s": float(np.median([c for _, c in answer_times])),
        "masked_check_s": check_s,
        "masked_sum_s": sum_s,
        "unmask_s": coordinator,
        "masked_rel_error": error,
    }


def run(sizes: list[int], msps: list[int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sealer, aggregator = ephemeral_ckks_backend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the comparison is the point here
        plain_sealer, plain_aggregator = plaintext_backend()
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        reps = 5 if n <= 10**4 else 3 if n <= 10**5 else 1
        # weight: 100 examples; the binding tag's slots (their values do not matter here)
        payload = seal_payload(rng.standard_normal(n) * 0.1, 100.0, tag=np.zeros(TAG_SLOTS))
        length = payload.size
        seal_s, sealed = timed(lambda p=payload: sealer.seal(p), reps)
        check_s, _ = timed(lambda s=sealed, m=length: aggregator.check(s, expected_length=m), reps)
        tenseal_bytes = sum(
            len(ckks_vector_from(aggregator.context, c).serialize()) for c in sealed.chunks
        )
        plain_seal_s, plain_sealed = timed(lambda p=payload: plain_sealer.seal(p), reps)
        plain_check_s, _ = timed(
            lambda s=plain_sealed, m=length: plain_aggregator.check(s, expected_length=m), reps
        )
        for k in msps:
            copies = [_copy(sealed) for _ in range(k)]  # K MSPs' ciphertexts: K buffers
            sum_s, total = timed(lambda c=copies: aggregator.add(c), reps)
            del copies
            open_s, opened = timed(lambda t=total: sealer.open(t), reps)
            expected = k * payload
            error = float(np.max(np.abs(opened - expected)) / np.max(np.abs(expected)))
            plain_sum_s, plain_total = timed(
                lambda s=plain_sealed, k=k: plain_aggregator.add([s] * k), reps
            )
            plain_open_s, _ = timed(lambda t=plain_total: plain_sealer.open(t), reps)
            ckks_round = k * seal_s + k * check_s + sum_s + open_s
            plain_round = k * plain_seal_s + k * plain_check_s + plain_sum_s + plain_open_s
            masked: dict[str, Any] = {}
            if k >= MIN_MASKED:
                samples = 31 if n <= 10**4 else 11 if n <= 10**5 else 3
                m = masked_round(sealer, aggregator, payload, sealed, k, samples, reps)
                coordinator_s = k * check_s + sum_s
                masked_coordinator_s = k * m["masked_check_s"] + m["masked_sum_s"] + m["unmask_s"]
                masked = {
                    **m,
                    "masked_bytes_x_ckks": (m["masked_upload_bytes"] + m["masked_unmask_bytes"])
                    / sealed.nbytes,
                    "msp_s": m["paired_seal_s"],
                    "masked_msp_s": m["mask_and_seal_s"] + m["answer_s"],
                    "msp_x_ckks": (m["mask_and_seal_s"] + m["answer_s"]) / m["paired_seal_s"],
                    "msp_x_ckks_unhidden": (m["mask_and_seal_unhidden_s"] + m["answer_s"])
                    / m["paired_seal_s"],
                    "msp_x_ckks_cpu": (m["mask_and_seal_cpu_s"] + m["answer_cpu_s"])
                    / m["paired_seal_cpu_s"],
                    "coordinator_s": coordinator_s,
                    "masked_coordinator_s": masked_coordinator_s,
                    "coordinator_x_ckks": masked_coordinator_s / coordinator_s,
                }
            rows.append(
                {
                    **masked,
                    "params": n,
                    "msps": k,
                    "payload_values": length,
                    "ciphertexts": len(sealed.chunks),
                    "upload_bytes_per_param": sealed.nbytes / n,
                    "upload_x_float32": sealed.nbytes / n / FLOAT32,
                    "global_bytes_per_param": total.nbytes / n,
                    "global_x_float32": total.nbytes / n / FLOAT32,
                    "tenseal_serialization_x_float32": tenseal_bytes / n / FLOAT32,
                    "seal_s": seal_s,
                    "seal_values_per_s": length / seal_s,
                    "check_s": check_s,
                    "sum_s": sum_s,
                    "open_s": open_s,
                    "round_s": ckks_round,
                    "round_critical_path_s": seal_s + k * check_s + sum_s + open_s,
                    "plaintext_round_s": plain_round,
                    "round_slowdown": ckks_round / plain_round,
                    "max_rel_error": error,
                }
            )
            extra = (
                f"; masked: bytes x{masked['masked_bytes_x_ckks']:.3f}, MSP "
                f"x{masked['msp_x_ckks']:.2f}, coordinator x{masked['coordinator_x_ckks']:.2f}, "
                f"rel. error {masked['masked_rel_error']:.1e}"
                if masked
                else ""
            )
            print(
                f"  n={n:>8,} K={k:>3}: round {ckks_round:8.3f} s (plaintext "
                f"{plain_round:.4f} s), rel. error {error:.1e}{extra}",
                flush=True,
            )
    params = CKKSParams()
    full = sealer.seal(np.ones(sealer.values_per_chunk))
    meta = {
        "full_ciphertext_x_float32": full.nbytes / full.length / FLOAT32,
        "ckks_params": params.model_dump(mode="json"),
        "max_abs": sealer.max_abs,
        "max_seal_abs": sealer.max_seal_abs,
        "values_per_ciphertext": sealer.values_per_chunk,
        "anchors": {
            name: {
                "poly_modulus_degree": degree,
                "coeff_mod_bit_sizes": primes,
                "scale_bits": scale_bits,
                "quoted_x_float32": quoted,
                "measured_x_float32": anchor_bytes_per_value(degree, primes, scale_bits) / FLOAT32,
            }
            for name, (degree, primes, scale_bits, quoted) in ANCHORS.items()
        },
        "notes": (
            "One core. Seal timed once per size; its ciphertexts reused for all MSPs in the "
            "sum; check timed on one payload and counted K times. round_s = K*seal + K*check "
            "+ sum + open (MSPs one after the other); round_critical_path_s = seal + K*check "
            "+ sum + open (MSPs in parallel)."
        ),
        "tenseal": ts.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    return rows, meta


def print_table(table: pd.DataFrame, meta: dict[str, Any]) -> None:
    show = pd.DataFrame(
        {
            "params": table["params"].map("{:,}".format),
            "MSPs": table["msps"],
            "up x f32": table["upload_x_float32"].map("{:.2f}".format),
            "global x f32": table["global_x_float32"].map("{:.2f}".format),
            "TenSEAL x f32": table["tenseal_serialization_x_float32"].map("{:.2f}".format),
            "seal s": table["seal_s"].map("{:.4f}".format),
            "Mvals/s": (table["seal_values_per_s"] / 1e6).map("{:.2f}".format),
            "check s": table["check_s"].map("{:.4f}".format),
            "sum s": table["sum_s"].map("{:.4f}".format),
            "open s": table["open_s"].map("{:.4f}".format),
            "round s": table["round_s"].map("{:.3f}".format),
            "crit. s": table["round_critical_path_s"].map("{:.3f}".format),
            "plain s": table["plaintext_round_s"].map("{:.4f}".format),
            "rel err": table["max_rel_error"].map("{:.1e}".format),
        }
    )
    print()
    print(show.to_string(index=False))
    print()
    print("Ciphertext bytes per value against float32, for comparison (one full ciphertext):")
    print(
        "  meshfl (N=4096, one 60-bit data prime, packed): "
        f"{meta['full_ciphertext_x_float32']:.2f}x"
    )
    for name, anchor in meta["anchors"].items():
        print(
            f"  {name} (N={anchor['poly_modulus_degree']}, {anchor['coeff_mod_bit_sizes']}, "
            f"2^{anchor['scale_bits']}): measured {anchor['measured_x_float32']:.1f}x, "
            f"quoted {anchor['quoted_x_float32']}x"
        )
    rate = table["seal_values_per_s"].min()
    ratio = table["upload_x_float32"].max()
    print(
        f"Goals: <= {GOAL_RATIO:g}x float32 (worst here {ratio:.2f}x: "
        f"{'met' if ratio <= GOAL_RATIO else 'MISSED'}); >= {GOAL_RATE:,.0f} values/s sealing on "
        f"one core (slowest here {rate:,.0f}: {'met' if rate >= GOAL_RATE else 'MISSED'})."
    )
    print(
        f"Range: sums decrypt below {meta['max_abs']:.3g}; one payload seals below "
        f"{meta['max_seal_abs']:.3g}."
    )
    if "masked_bytes_x_ckks" in table:
        masked = table.dropna(subset=["masked_bytes_x_ckks"])
        print()
        print(
            f"Masked (pairwise masks inside the ciphertexts; {DROPOUT:.0%} of MSPs drop before "
            "unmasking), against CKKS in the same run:"
        )
        show = pd.DataFrame(
            {
                "params": masked["params"].map("{:,}".format),
                "MSPs": masked["msps"],
                "nbrs": masked["masked_neighbours"].astype(int),
                "t": masked["masked_threshold"].astype(int),
                "bytes x": masked["masked_bytes_x_ckks"].map("{:.3f}".format),
                "MSP s": masked["msp_s"].map("{:.4f}".format),
                "masked MSP s": masked["masked_msp_s"].map("{:.4f}".format),
                "MSP x": masked["msp_x_ckks"].map("{:.2f}".format),
                "MSP x cpu": masked["msp_x_ckks_cpu"].map("{:.2f}".format),
                "MSP x unhidden": masked["msp_x_ckks_unhidden"].map("{:.2f}".format),
                "coord. s": masked["coordinator_s"].map("{:.3f}".format),
                "masked coord. s": masked["masked_coordinator_s"].map("{:.3f}".format),
                "coord. x": masked["coordinator_x_ckks"].map("{:.2f}".format),
                "rel err": masked["masked_rel_error"].map("{:.1e}".format),
            }
        )
        print(show.to_string(index=False))
        at_100 = masked[masked["msps"] == masked["msps"].max()]
        for name, column, goal in (
            ("bytes", "masked_bytes_x_ckks", GOAL_MASKED["bytes"]),
            ("MSP time", "msp_x_ckks", GOAL_MASKED["msp"]),
        ):
            worst = masked[column].max()
            verdict = "met" if worst <= goal else "MISSED"
            cpu = (
                f"; in CPU time, the mask included, {masked['msp_x_ckks_cpu'].max():.2f}x; "
                f"with the mask started only as sealing starts, "
                f"{masked['msp_x_ckks_unhidden'].max():.2f}x"
                if column == "msp_x_ckks"
                else ""
            )
            print(f"Goal {name} <= {goal}x CKKS: worst {worst:.2f}x ({verdict}){cpu}")
        worst = at_100["coordinator_x_ckks"].max()
        goal = GOAL_MASKED["coordinator"]
        print(
            f"Goal coordinator at {int(masked['msps'].max())} MSPs <= {goal}x CKKS: worst "
            f"{worst:.2f}x ({'met' if worst <= goal else 'MISSED'})"
        )


def plot(table: pd.DataFrame, meta: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    first = table.drop_duplicates("params")
    left.plot(first["params"], first["upload_x_float32"], "o-", label="meshfl upload (packed)")
    left.plot(first["params"], first["global_x_float32"], "s--", label="meshfl global (sum)")
    left.plot(
        first["params"],
        first["tenseal_serialization_x_float32"],
        "^:",
        label="same ciphertexts, TenSEAL serialization",
    )
    for name, anchor in meta["anchors"].items():
        left.axhline(anchor["measured_x_float32"], ls="-.", lw=1, color="gray")
        left.annotate(
            f"{name}: {anchor['measured_x_float32']:.1f}x",
            (first["params"].min(), anchor["measured_x_float32"]),
            textcoords="offset points",
            xytext=(0, 3),
            fontsize=8,
        )
    left.axhline(GOAL_RATIO, color="red", lw=1, label=f"goal: {GOAL_RATIO:g}x")
    left.axhline(1.0, color="black", lw=1, label="float32 plaintext")
    left.set(
        xscale="log",
        ylim=(0, 26),
        xlabel="parameters",
        ylabel="x float32 (bytes per parameter / 4)",
    )
    left.set_title("Bytes on the wire, x float32")
    left.legend(fontsize=8, loc="center right")
    for k, color in zip(sorted(table["msps"].unique()), ("C0", "C1", "C2"), strict=False):
        rows = table[table["msps"] == k]
        right.plot(rows["params"], rows["round_s"], "o-", color=color, label=f"CKKS, {k} MSPs")
        right.plot(
            rows["params"], rows["plaintext_round_s"], "x--", color=color, label=f"plaintext, {k}"
        )
    right.set(xscale="log", yscale="log", xlabel="parameters", ylabel="seconds (one core)")
    right.set_title("One round: all MSPs seal, coordinator checks + adds, one opens")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--msps", type=int, nargs="+", default=[3, 10, 100])
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    rows, meta = run(args.sizes, args.msps)
    table = pd.DataFrame(rows)
    print_table(table, meta)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / "secure_aggregation"
    table.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    written = [".csv", ".json"]
    if not args.no_plot:
        plot(table, meta, stem.with_suffix(".png"))
        written.append(".png")
    print(f"wrote {stem}{{{','.join(written)}}}")


if __name__ == "__main__":
    main()
