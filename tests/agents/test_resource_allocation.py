"""The resource_allocation agent: its data, held-out days, local training and DP-SGD shape."""

import warnings

import numpy as np
import pandas as pd
import pytest

from meshfl.agents.resource_allocation import ResourceAllocation
from meshfl.config.errors import DataSchemaError
from meshfl.data.dispatch_data import (
    Technician,
    dispatch_history,
    dispatch_partitions,
    format_roster,
    parse_roster,
)
from meshfl.privacy.budget import DPStep

FAST = {"hidden": 8, "rollouts": 2, "local_epochs": 1}


@pytest.fixture(scope="module")
def agent():
    return ResourceAllocation(FAST)


def test_roster_strings_round_trip_and_bad_ones_say_how_to_fix():
    techs = (
        Technician(("network", "server"), 8.0, 16.0, 0),
        Technician(("security",), 10, 18.5, 2),
    )
    assert parse_roster(format_roster(techs)) == techs
    with pytest.raises(DataSchemaError, match="'skills@start-end@site' separated by ';'"):
        parse_roster("network 8-16")
    with pytest.raises(DataSchemaError, match="end after it starts"):
        parse_roster("network@16-8@0")


def test_msps_own_different_environments_of_skewed_sizes():
    parts = dispatch_partitions(5, samples_per_msp=200, seed=0, size_skew=1.0)
    again = dispatch_partitions(5, samples_per_msp=200, seed=0, size_skew=1.0)
    assert all(a.equals(b) for a, b in zip(parts, again, strict=True))
    assert len({p["roster"].iloc[0] for p in parts}) == 5  # five different rosters
    assert len({len(p) for p in parts}) == 5
    assert all(p["episode"].nunique() >= 2 for p in parts)
    episodes = [set(p["episode"]) for p in parts]
    assert not set.intersection(*episodes)  # day ids never collide when pooled


def test_split_holds_out_the_last_whole_days(agent):
    frame = dispatch_history(200, seed=1)
    train, test = agent.split(frame, test_fraction=0.25, seed=0)
    days = list(dict.fromkeys(frame["episode"]))
    assert set(test["episode"]) == set(days[-round(0.25 * len(days)) :])
    assert not set(train["episode"]) & set(test["episode"])
    assert len(train) + len(test) == len(frame)
    with pytest.raises(DataSchemaError, match="at least two days"):
        agent.split(frame[frame["episode"] == days[0]], test_fraction=0.25, seed=0)


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("skill", "plumbing", "must hold one of network"),
        ("priority", 7, "from 1 .most urgent. to 4"),
        ("sla_hours", 0.0, "hours > 0"),
        ("roster", "plumbing@8-16@0", "skills 'plumbing' that are not"),
    ],
)
def test_bad_rows_are_named(agent, column, value, match):
    frame = dispatch_history(30, seed=2)
    frame.loc[3, column] = value
    with pytest.raises(DataSchemaError, match=match):
        agent.prepare(frame)


def test_local_training_beats_the_random_dispatcher_and_improves(agent):
    trainer = ResourceAllocation({"rollouts": 4, "local_epochs": 2})
    frame = dispatch_history(500, seed=3)
    train, test = trainer.split(frame, test_fraction=0.3, seed=0)
    local, held_out = trainer.prepare(train), trainer.prepare(test)
    vector = trainer.init_vector(seed=0)
    before = trainer.evaluate(vector, held_out)
    for r in range(3):
        vector = trainer.local_update(vector, local, server_round=r + 1, seed=r).vector
    after = trainer.evaluate(vector, held_out)
    assert after["sla_hit_rate"] > before["sla_hit_rate"] + 0.05
    assert after["sla_hit_rate"] > after["random_sla_hit_rate"] + 0.05
    assert after["tech_hours_per_ticket"] < after["random_tech_hours_per_ticket"]
    assert after["examples"] == len(test)


def test_dp_sgd_runs_the_planned_shape_over_episodes(agent):
    local = agent.prepare(dispatch_history(150, seed=4))
    mechanism, rate, steps = agent.privacy_shape(local)
    assert mechanism == "dp-sgd"
    assert rate == pytest.approx(min(1.0, 8 / len(local)))
    dp = DPStep("dp-sgd", 1.5, rate, steps, 1.0, "sample")
    vector = agent.init_vector(seed=0)
    with warnings.catch_warnings():  # noise from OS entropy: no weak-RNG warning any more
        warnings.filterwarnings("error", message=".*cryptographically secure.*")
        update = agent.local_update(vector, local, server_round=1, seed=3, dp=dp)
    assert update.privacy_event == dp.event()
    assert "train_sla_hit_rate" not in update.metrics  # raw-data numbers stay home under DP
    assert not np.array_equal(update.vector, vector)
    # the sampled days and the noise are secret: the public seed does not repeat them
    again = agent.local_update(vector, local, server_round=1, seed=3, dp=dp)
    assert not np.array_equal(update.vector, again.vector)


def test_clipping_bounds_what_one_dp_step_can_move_the_policy(agent):
    """Each sampled day's gradient is clipped to C and the sum divided by the expected batch
    q·n, so without noise one SGD step moves the vector by at most lr·C·n / (q·n)."""
    local = agent.prepare(dispatch_history(60, seed=5))
    _, rate, _ = agent.privacy_shape(local)
    clip = 1e-3
    dp = DPStep("dp-sgd", 1e-9, rate, 1, clip, "sample")
    vector = agent.init_vector(seed=0)
    step = agent.local_update(vector, local, server_round=1, seed=0, dp=dp)
    moved = np.linalg.norm(step.vector - vector)
    assert 0 < moved <= agent.config.dp_learning_rate * clip / rate * (1 + 1e-6)


def test_model_assigns_every_ticket_to_someone_on_its_roster(agent, tmp_path):
    frame = dispatch_history(80, seed=6)
    shuffled = frame.sample(frac=1.0, random_state=0)
    model = agent.model(agent.init_vector(seed=0))
    techs = model.predict(shuffled)
    assert techs.shape == (len(frame),)
    sizes = shuffled["roster"].map(lambda r: len(parse_roster(r))).to_numpy()
    assert (techs >= 0).all() and (techs < sizes).all()
    # rows are answered in the caller's order, whatever order the days come in
    by_index = pd.Series(techs, index=shuffled.index).sort_index().to_numpy()
    np.testing.assert_array_equal(by_index, model.predict(frame))


def _reference_dp_update(agent, vector, local, dp, *, server_round, seed):
    """The agent's former hand-written DP-SGD loop (before train_planned took a batch_fn):
    sampling generator, then noise generator; per step sample days, roll them out, clip, noise."""
    import torch

    from meshfl.models.flat import get_flat, set_flat
    from meshfl.models.policy import reinforce_loss
    from meshfl.privacy.dpsgd import private_gradient
    from meshfl.privacy.noise import noise_torch_generator

    policy = agent.policy()
    set_flat(policy, vector)
    rng = np.random.default_rng([seed, server_round])
    n, sampling, noise = len(local), noise_torch_generator(), noise_torch_generator()
    opt = torch.optim.SGD(policy.parameters(), lr=agent.config.dp_learning_rate)
    for _ in range(dp.steps):
        idx = (torch.rand(n, generator=sampling) < dp.sample_rate).nonzero().squeeze(1).tolist()
        if not idx:
            continue  # the new path takes a pure-noise step here; the test avoids it
        x, y, _ = agent._records(policy, [local.episodes[i] for i in idx], rng)
        grads = private_gradient(
            policy, x, y, loss_fn=lambda s, t: agent.config.dp_loss_scale * reinforce_loss(s, t),
            max_grad_norm=dp.max_grad_norm, noise_multiplier=dp.noise_multiplier,
            expected_batch_size=dp.sample_rate * n, generator=noise,
        )  # fmt: skip
        for p, g in zip(policy.parameters(), grads.values(), strict=True):
            p.grad = g.clone()
        opt.step()
    return get_flat(policy)


def test_dp_update_is_the_former_hand_written_loop_step_for_step(agent):
    """With the noise sources seeded (tests only), train_planned's batch_fn path samples the
    same days, rolls them out with the same actions, clips per day and adds the same noise."""
    from meshfl.privacy.noise import fixed_noise_for_tests

    local = agent.prepare(dispatch_history(150, seed=4))
    _, rate, steps = agent.privacy_shape(local)
    dp = DPStep("dp-sgd", 1.5, rate, steps, 1.0, "sample")
    vector = agent.init_vector(seed=0)
    with fixed_noise_for_tests(0):
        new = agent.local_update(vector, local, server_round=1, seed=3, dp=dp).vector
    with fixed_noise_for_tests(0):
        old = _reference_dp_update(agent, vector, local, dp, server_round=1, seed=3)
    assert not np.array_equal(new, vector)
    np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-7)
