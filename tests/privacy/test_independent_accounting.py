"""Independent privacy audit (issue 11): ε recomputed from the noise actually drawn.

The ledger records what each MSP *planned*; this audit does not read it to compute ε. While
:func:`meshfl.privacy.noise.record_releases_for_tests` is active, every privacy noise draw
reports the standard deviation it drew (and the root mean square of the values drawn), the
sensitivity it was calibrated for and how many shares of a sum's noise it is, and every
Poisson draw the rate it used; :func:`~meshfl.privacy.noise.attribute_releases` labels them
with the MSP, node, run and round. From those records alone, Google's dp-accounting (PLD)
composes for every MSP the mechanisms it was actually subject to, at the run's δ, and the
audit asserts ε ≤ budget (1 % tolerance, the PLD's own discretisation being ~0.1 %).

* ``unit="sample"``: DP-SGD (threat_intel) composes, per step, a Poisson-sampled Gaussian at
  the rate of that step's batch draw with sigma = std / (C / E); the Gaussian mechanism (anomaly)
  a Gaussian with sigma = std / sensitivity.
* ``unit="msp"``: the noise in each *kept* sum is sqrt(Σ share variances of its
  contributors), read from the shares the contributors drew (contributors from the sum's
  binding). Who took part in a round is known to the coordinator and, through each sum's
  contributor list, to every MSP, so sampling MSPs does not amplify: an MSP is charged, at
  rate 1, the rounds whose sums it is in.

Scenarios: MSPs of different sizes, dropouts (absent MSPs and a reply lost after training),
a restart on the same state directory, two concurrent runs on one state directory, and
MSP-level DP with and without Poisson sampling, and a restart under it (which overspent,
ε = 1.39 on a budget of 1, while ledgers charged MSP-level rounds at the amplified rate).
"""

from __future__ import annotations

import math
import random
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

import meshfl
import meshfl.federation.strategy as strategy_module
import meshfl.simulation as simulation_module
from meshfl.agents import registry
from meshfl.federation import InProcessGrid, NodeData
from meshfl.federation.server_app import planned_noise
from meshfl.privacy import DPConfig
from meshfl.privacy.ledger import PrivacyLedger
from meshfl.privacy.noise import NoiseDraw, PoissonDraw, record_releases_for_tests
from meshfl.secure.binding import Binding
from meshfl.simulation import SimulationResult

dp_accounting = pytest.importorskip("dp_accounting")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Secure aggregation is OFF"),
    pytest.mark.filterwarnings("ignore:The private .* model is worse than a trivial baseline"),
    pytest.mark.filterwarnings("ignore:MSP-level DP with"),
    pytest.mark.filterwarnings("ignore:DPConfig.delta"),
]

BUDGET = 1.0
DELTA = 1e-5
TOLERANCE = 1.01
TINY = {"encoder": "tiny", "local_epochs": 1, "dp_batch_size": 32}
FOREST = {"trees_per_round": 4, "depth": 5}
SIZES = (40, 80, 160, 320)  # training rows of MSPs 0-3: Poisson rates 0.8, 0.4, 0.2, 0.1

FIGURES: dict[str, dict[int, tuple[float, float]]] = {}
"""Scenario -> MSP -> (ε recomputed here, ε by the MSP's ledger); printed at the end."""

Step = tuple[float, float, int]  # (noise multiplier, Poisson rate, steps)


# --------------------------------------------------------------------------- accounting


def pld_epsilon(steps: Sequence[Step], delta: float = DELTA) -> float:
    """ε of composing ``steps`` with dp-accounting's PLD accountant (0 for no step)."""
    merged: list[list[Any]] = []
    for sigma, rate, count in steps:  # consecutive equal mechanisms: one self-composition
        if merged and merged[-1][:2] == [sigma, rate]:
            merged[-1][2] += count
        else:
            merged.append([sigma, rate, count])
    if not merged:
        return 0.0
    accountant = dp_accounting.pld.PLDAccountant()
    for sigma, rate, count in merged:
        if not sigma > 0:
            return math.inf
        gaussian = dp_accounting.GaussianDpEvent(sigma)
        event = gaussian if rate >= 1 else dp_accounting.PoissonSampledDpEvent(rate, gaussian)
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


def check_measured(draws: Iterable[NoiseDraw]) -> None:
    """The values drawn have the standard deviation the draws claim (pooled, ~6 SE)."""
    draws = [d for d in draws if d.size > 0]
    if not draws:
        return
    claimed = sum(d.size * d.std**2 for d in draws)
    measured = sum(d.size * d.measured_std**2 for d in draws)
    size = sum(d.size for d in draws)
    assert measured / claimed == pytest.approx(1.0, abs=6 * math.sqrt(2 / size) + 1e-3)


def sample_level_steps(
    records: Sequence[NoiseDraw | PoissonDraw],
) -> dict[int, list[Step]]:
    """Per MSP, the mechanisms of every release under unit="sample", in order."""
    groups: dict[tuple[int, str, int], list[NoiseDraw | PoissonDraw]] = defaultdict(list)
    for record in records:
        if isinstance(record, PoissonDraw) and record.where == "msp":
            continue  # the coordinator's draw of MSPs (unit="msp" only)
        labels = record.labels
        groups[(labels["msp"], labels["run"], labels["round"])].append(record)
    steps: dict[int, list[Step]] = defaultdict(list)
    for (msp, _run, _round), group in groups.items():
        noise = [r for r in group if isinstance(r, NoiseDraw)]
        check_measured(noise)
        sampling = [r for r in group if isinstance(r, PoissonDraw)]
        dpsgd = [d for d in noise if d.mechanism == "dp-sgd"]
        gaussian = [d for d in noise if d.mechanism == "gaussian"]
        # DP-SGD: one batch draw then one noise draw per step
        assert len(sampling) == len(dpsgd), (msp, len(sampling), len(dpsgd))
        for poisson, draw in zip(sampling, dpsgd, strict=True):
            steps[msp].append((draw.std / draw.sensitivity, poisson.rate, 1))
        for draw in gaussian:  # the Gaussian mechanism on an MSP's own statistics
            assert draw.shares == 1
            steps[msp].append((draw.std / draw.sensitivity, 1.0, 1))
    return steps


def msp_level_steps(
    records: Sequence[NoiseDraw | PoissonDraw], versions: Iterable[Any], clip: float, msps: int
) -> tuple[dict[int, list[Step]], list[float]]:
    """Per MSP (of ``msps``), the mechanism of every kept sum under unit="msp"; each sum's sigma."""
    shares: dict[tuple[str, int, int], NoiseDraw] = {}
    msp_of: dict[int, int] = {}
    for record in records:
        if isinstance(record, NoiseDraw):
            labels = record.labels
            key = (labels["run"], labels["round"], labels["node"])
            assert key not in shares, f"two noise draws for one update: {key}"
            assert record.mechanism == "gaussian" and record.sensitivity == clip
            shares[key] = record
            msp_of[labels["node"]] = labels["msp"]
    check_measured(shares.values())
    rates: dict[str, list[float]] = defaultdict(list)  # run -> the rate of each round's draw
    for record in records:
        if isinstance(record, PoissonDraw) and record.where == "msp":
            rates[record.labels["run"]].append(record.rate)
    steps: dict[int, list[Step]] = defaultdict(list)
    sigmas = []
    for version in versions:
        binding = Binding.from_json(version.binding)
        drawn = [shares[(binding.run_id, binding.server_round, n)] for n in binding.contributors]
        sigma = math.sqrt(sum(d.std**2 for d in drawn)) / clip
        sigmas.append(sigma)
        assert 0 < rates[binding.run_id][binding.server_round - 1] <= 1
        # Who took part is known to the coordinator and, through each sum's contributor
        # list, to every MSP: no amplification by sampling; each MSP pays for its own sums.
        # (On 2081f48..ba22b77 ledgers charged rate q while participation was public: a
        # restart reached ε = 1.39 on a budget of 1.)
        for node in binding.contributors:
            steps[msp_of[node]].append((sigma, 1.0, 1))
    return steps, sigmas


class OverBudgetError(AssertionError):
    """An MSP's ε, recomputed from the noise actually drawn, exceeds its budget."""


def ledger_epsilon(state_dir: Path, msp: int, agent: str) -> float:
    """What MSP ``msp``'s own ledger says it spent (meshfl's PRV accountant)."""
    ledger = PrivacyLedger(state_dir / f"msp-{msp}" / "privacy")
    return ledger.epsilon(agent, delta=DELTA, accountant="prv")


def audit(
    name: str, steps: dict[int, list[Step]], state_dir: Path, agent: str, msps: int
) -> dict[int, tuple[float, float]]:
    """Per MSP, (ε from the instrumentation, ε by its ledger); asserts the first ≤ budget."""
    figures = {
        msp: (pld_epsilon(steps.get(msp, [])), ledger_epsilon(state_dir, msp, agent))
        for msp in range(msps)
    }
    FIGURES[name] = figures
    over = {m: round(e, 4) for m, (e, _) in figures.items() if e > BUDGET * TOLERANCE}
    if over:
        raise OverBudgetError(f"{name}: ε recomputed from the noise drawn exceeds {BUDGET}: {over}")
    return figures


def ledger_rounds(state_dir: Path, msp: int, agent: str) -> set[tuple[str, int]]:
    keys = PrivacyLedger(state_dir / f"msp-{msp}" / "privacy").keys(agent)
    return {(k.split(":")[0], int(k.split(":")[1])) for k in keys}


def released_rounds(records: Iterable[NoiseDraw | PoissonDraw], msp: int) -> set[tuple[str, int]]:
    return {
        (r.labels["run"], r.labels["round"])
        for r in records
        if isinstance(r, NoiseDraw) and r.labels["msp"] == msp
    }


# --------------------------------------------------------------------------- the federation


class FlakyGrid(InProcessGrid):
    """An in-process grid on which chosen MSPs miss chosen training rounds.

    ``absent[round]``: partitions that never get that round's train message (dropped out);
    ``lost[round]``: partitions that train (and spend) but whose reply never arrives.
    """

    absent: ClassVar[dict[int, set[int]]] = {}
    lost: ClassVar[dict[int, set[int]]] = {}

    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
        ids = []
        for message in messages:
            train = message.metadata.message_type.startswith("train.")
            # "agent:round", or "agent:round:keys" / ":unmask" for masking's exchanges
            server_round = int(message.metadata.group_id.split(":")[1])
            node = message.metadata.dst_node_id
            partition = self._contexts[node].node_config["partition-id"]
            self.unavailable = (
                {node} if train and partition in self.absent.get(server_round, ()) else set()
            )
            (mid,) = super().push_messages([message])
            if train and partition in self.lost.get(server_round, ()):
                self._replies.pop(mid, None)
                self._reply_roots.pop(mid, None)
            ids.append(mid)
        return ids


def flaky(monkeypatch: pytest.MonkeyPatch, *, absent=None, lost=None) -> None:
    """Make ``meshfl.simulate`` run on a :class:`FlakyGrid` with these dropouts."""

    class Grid(FlakyGrid):
        pass

    Grid.absent, Grid.lost = dict(absent or {}), dict(lost or {})

    def run_in_process(
        server_app: Any, client_app: Any, *, num_nodes: int, seed: int = 0, serialize: bool = True
    ) -> Grid:
        grid = Grid(client_app, num_nodes, seed=seed, serialize=serialize)
        context = Context(
            run_id=1, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config={}
        )
        server_app(grid, context)
        return grid

    monkeypatch.setattr(simulation_module, "run_in_process", run_in_process)


def partitions(agent: str, sizes: Sequence[int] = SIZES) -> list[NodeData]:
    the_agent = registry.get(agent)(TINY if agent == "threat_intel" else FOREST)
    out = []
    for i, n in enumerate(sizes):
        frame = the_agent.synthetic_data(n + 24, seed=100 + i)
        out.append(
            NodeData(frame.iloc[:n].reset_index(drop=True), frame.iloc[n:].reset_index(drop=True))
        )
    return out


def planned_sigma(result: SimulationResult) -> float:
    """The noise multiplier the coordinator planned for a unit="msp" run."""
    assert result.plan is not None
    return planned_noise(result.plan)


def run(agent: str, state_dir: Path, **kwargs: Any) -> SimulationResult:
    config = TINY if agent == "threat_intel" else FOREST
    options: dict[str, Any] = {
        "secure_aggregation": "plaintext",
        "privacy": DPConfig(epsilon=BUDGET),
    }
    options.update(kwargs)
    return meshfl.simulate(
        agent=agent, seed=0, progress=False, agent_config=config, state_dir=state_dir, **options
    )


@pytest.fixture(scope="module", autouse=True)
def _print_figures():
    yield
    for name, figures in FIGURES.items():  # shown with -s
        cells = ", ".join(f"MSP {m}: {e:.4f} (ledger {r:.4f})" for m, (e, r) in figures.items())
        print(f"\n{name}: ε ≤ {BUDGET}? {cells}")


# --------------------------------------------------------------------------- the scenarios


def test_hooks_are_inert_outside_the_recorder():
    from meshfl.privacy import noise
    from meshfl.privacy.mechanisms import add_gaussian_noise

    assert not noise.observing()
    with noise.attribute_releases(msp=1):
        add_gaussian_noise(np.zeros(2), sensitivity=1.0, noise_multiplier=1.0)
    with record_releases_for_tests() as records:
        with pytest.raises(RuntimeError, match="does not nest"), record_releases_for_tests():
            pass
        with noise.attribute_releases(msp=1, round=2):
            add_gaussian_noise(np.zeros(4), sensitivity=2.0, noise_multiplier=3.0, shares=4)
    assert not noise.observing()
    (draw,) = records
    assert isinstance(draw, NoiseDraw)
    assert (draw.std, draw.sensitivity, draw.shares, draw.size) == (3.0, 2.0, 4, 4)
    assert dict(draw.labels) == {"msp": 1, "round": 2}


def test_resource_allocation_dpsgd_reports_each_batch_draw_and_its_noise():
    from meshfl.privacy import noise
    from meshfl.privacy.budget import DPStep

    agent = registry.get("resource_allocation")({"dp_batch_episodes": 1, "local_epochs": 1})
    local = agent.prepare(agent.synthetic_data(60, seed=0))  # two dispatch days
    mechanism, rate, steps = agent.privacy_shape(local)
    step = DPStep(mechanism, 2.0, rate, steps, 1.0, "sample")
    labels = {"msp": 0, "run": "r", "round": 1}
    with record_releases_for_tests() as records, noise.attribute_releases(**labels):
        agent.local_update(agent.init_vector(seed=0), local, server_round=1, seed=0, dp=step)
    assert (rate, steps) == (0.5, 2)
    assert sample_level_steps(records) == {0: [(2.0, 0.5, 1), (2.0, 0.5, 1)]}


def test_sample_level_dpsgd_on_msps_of_different_sizes(tmp_path):
    with record_releases_for_tests() as records:
        run("threat_intel", tmp_path, num_msps=4, rounds=2, data=partitions("threat_intel"))
    steps = sample_level_steps(records)
    # each MSP's batches were drawn at q = 32 / n, 1 / q steps per round
    assert {m: {q for _, q, _ in s} for m, s in steps.items()} == {
        0: {0.8},
        1: {0.4},
        2: {0.2},
        3: {0.1},
    }
    assert {m: len(s) for m, s in steps.items()} == {0: 2, 1: 4, 2: 10, 3: 20}
    figures = audit("sample-level DP-SGD, 40/80/160/320 rows", steps, tmp_path, "threat_intel", 4)
    for msp, (epsilon, recorded) in figures.items():
        assert released_rounds(records, msp) == ledger_rounds(tmp_path, msp, "threat_intel")
        # the mechanisms the ledger holds: dp-accounting's PLD and meshfl's PRV agree
        assert epsilon == pytest.approx(recorded, rel=0.03)


def test_sample_level_gaussian_mechanism_with_a_dropout(tmp_path, monkeypatch):
    flaky(monkeypatch, absent={2: {1}})  # MSP 1 misses round 2
    with record_releases_for_tests() as records:
        run("anomaly", tmp_path, num_msps=4, rounds=3, data=partitions("anomaly"))
    steps = sample_level_steps(records)
    assert {m: len(s) for m, s in steps.items()} == {0: 3, 1: 2, 2: 3, 3: 3}
    audit("sample-level Gaussian mechanism, MSP 1 absent in round 2", steps, tmp_path, "anomaly", 4)
    assert {r for _, r in ledger_rounds(tmp_path, 1, "anomaly")} == {1, 3}


def test_msp_level_every_msp_sampled(tmp_path):
    dp = DPConfig(epsilon=BUDGET, unit="msp")
    with record_releases_for_tests() as records:
        result = meshfl.simulate(
            agent="threat_intel", num_msps=5, rounds=2, seed=0, progress=False,
            agent_config=TINY, samples_per_msp=60, size_skew=1.0, privacy=dp,
            state_dir=tmp_path,
        )  # fmt: skip
    assert result.plan is not None and result.plan.min_msps == 5 and len(result.versions) == 2
    steps, sigmas = msp_level_steps(records, result.versions, dp.max_grad_norm, 5)
    planned = planned_sigma(result)
    assert sigmas == pytest.approx([planned, planned], rel=1e-9)  # five shares of 1/5 each
    audit("MSP-level, 5 MSPs, fraction_train=1", steps, tmp_path, "threat_intel", 5)


def test_msp_level_with_poisson_sampling_of_msps(tmp_path):
    dp = DPConfig(epsilon=BUDGET, unit="msp")
    with record_releases_for_tests() as records:
        result = meshfl.simulate(
            agent="threat_intel", num_msps=5, rounds=2, seed=0, progress=False,
            agent_config=TINY, samples_per_msp=60, size_skew=1.0, privacy=dp,
            fraction_train=0.6, state_dir=tmp_path,
        )  # fmt: skip
    draws = [r for r in records if isinstance(r, PoissonDraw) and r.where == "msp"]
    assert [(d.rate, d.population) for d in draws] == [(0.6, 5), (0.6, 5)]
    steps, sigmas = msp_level_steps(records, result.versions, dp.max_grad_norm, 5)
    assert all(s >= planned_sigma(result) * (1 - 1e-9) for s in sigmas)
    audit("MSP-level, 5 MSPs, Poisson rate 0.6", steps, tmp_path, "threat_intel", 5)


def test_msp_level_dropouts_keep_the_planned_noise_or_fail_closed(tmp_path, monkeypatch):
    # MSP 3 drops out from round 2 on; in round 3 MSP 0 trains but its reply is lost: two
    # updates, fewer than the three shares of noise were provisioned for.
    flaky(monkeypatch, absent={2: {3}, 3: {3}}, lost={3: {0}})
    dp = DPConfig(epsilon=BUDGET, unit="msp")
    with record_releases_for_tests() as records:
        result = meshfl.simulate(
            agent="threat_intel", num_msps=4, rounds=3, seed=0, progress=False,
            agent_config=TINY, samples_per_msp=60, privacy=dp, min_msps=3,
            state_dir=tmp_path,
        )  # fmt: skip
    assert result.history["skipped"].tolist() == [False, False, True]
    assert [Binding.from_json(v.binding).server_round for v in result.versions] == [1, 2]
    steps, sigmas = msp_level_steps(records, result.versions, dp.max_grad_norm, 4)
    planned = planned_sigma(result)
    # round 1: four shares of sigma²/3; round 2: three, exactly the planned noise
    assert sigmas == pytest.approx([planned * math.sqrt(4 / 3), planned], rel=1e-9)
    figures = audit("MSP-level, dropouts", steps, tmp_path, "threat_intel", 4)
    # MSP 0 is charged for round 3 (its update left it), though no sum of round 3 was released
    assert {r for _, r in ledger_rounds(tmp_path, 0, "threat_intel")} == {1, 2, 3}
    assert figures[0][0] < figures[0][1]


def test_sample_level_restart_on_the_same_state_dir(tmp_path, monkeypatch):
    with record_releases_for_tests() as records:
        with monkeypatch.context() as patch:  # run 1 loses every MSP after round 1
            flaky(patch, absent={2: {0, 1, 2, 3}, 3: {0, 1, 2, 3}})
            first = run(
                "threat_intel", tmp_path, num_msps=4, rounds=3, data=partitions("threat_intel")
            )
        assert first.history["msps"].tolist() == [4, 0, 0]
        spent = [ledger_epsilon(tmp_path, msp, "threat_intel") for msp in range(4)]
        second = run(
            "threat_intel", tmp_path, num_msps=4, rounds=2, data=partitions("threat_intel")
        )
    assert second.history["msps"].tolist() == [4, 4]  # the rest of the budget, over two rounds
    assert all(0.2 < e < 0.8 for e in spent)
    steps = sample_level_steps(records)
    figures = audit(
        "sample-level restart (1 of 3 rounds, then 2)", steps, tmp_path, "threat_intel", 4
    )
    assert all(figures[m][0] > spent[m] + 0.1 for m in range(4))  # run 2 spent the rest


def test_sample_level_concurrent_runs_on_one_state_dir(tmp_path):
    results: list[Any] = []
    errors: list[BaseException] = []

    def one_run() -> None:
        try:
            results.append(
                run("threat_intel", tmp_path, num_msps=4, rounds=2, data=partitions("threat_intel"))
            )
        except BaseException as err:  # re-raised below, in the test's thread
            errors.append(err)

    with record_releases_for_tests() as records:
        threads = [threading.Thread(target=one_run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert len({r.labels["run"] for r in records if isinstance(r, NoiseDraw)}) == 2
    steps = sample_level_steps(records)
    audit("sample-level, two concurrent runs, one state dir", steps, tmp_path, "threat_intel", 4)


class ScriptedDraws:
    """Stands in for the strategy's OS-entropy draws: each round samples the MSP in turn."""

    def __init__(self, picks: Sequence[int], population: int) -> None:
        self.values = iter(
            [0.0 if position == pick else 0.99 for pick in picks for position in range(population)]
        )
        self.sample = random.Random(0).sample  # evaluation: every MSP (fraction_evaluate=1)

    def random(self) -> float:
        return next(self.values)


def test_msp_level_poisson_restart_on_the_same_state_dir(tmp_path, monkeypatch):
    """Two runs of 3 rounds at q = 0.5 on one state dir: 6 released sums.

    On ba22b77 every ledger charged its MSP's rounds at the amplified rate q while sigma was
    planned for amplification, so every MSP afforded the second run: ε = 1.39 by PLD on a
    budget of 1. Now each participation is charged in full (rate 1) and sigma planned so.
    """
    # Four MSPs sampled at q = 0.5 (so min_msps = 1: each adds the whole noise). Each round
    # happens to draw exactly one MSP (probability 1/4 per round): MSPs 0, 1, 2, then 3, 0, 1.
    monkeypatch.setattr(strategy_module, "_ENTROPY", ScriptedDraws([0, 1, 2, 3, 0, 1], 4))
    dp = DPConfig(epsilon=BUDGET, unit="msp")
    options = dict(
        agent="threat_intel", num_msps=4, rounds=3, seed=0, progress=False, agent_config=TINY,
        samples_per_msp=60, privacy=dp, fraction_train=0.5, state_dir=tmp_path,
    )  # fmt: skip
    with record_releases_for_tests() as records:
        first = meshfl.simulate(**options)
        second = meshfl.simulate(**options)
    versions = [*first.versions, *second.versions]
    assert len(versions) == 6  # every MSP's ledger (1-2 rounds at q = 0.5) let it train
    steps, sigmas = msp_level_steps(records, versions, dp.max_grad_norm, 4)
    assert sigmas == pytest.approx([planned_sigma(first)] * 6, rel=1e-9)
    audit("MSP-level Poisson restart", steps, tmp_path, "threat_intel", 4)
