"""The dispatch environment, its baseline dispatchers, and the REINFORCE policy and loss."""

import numpy as np
import pytest
import torch

from meshfl.models.dispatch_env import (
    FEATURES,
    EnvParams,
    Episode,
    EpisodeBatch,
    Outcome,
    earliest_completion_choice,
    greedy_choice,
    random_choice,
    run,
)
from meshfl.models.policy import (
    DispatchPolicy,
    episode_records,
    reinforce_loss,
    sampling_choice,
)
from meshfl.privacy.dpsgd import per_sample_gradients

PARAMS = EnvParams(travel_hours=1.0, unskilled_factor=2.0, overtime_rate=1.5)


def two_techs(**tickets):
    """Tech 0: skill 0, 8-16 at site 0; tech 1: skill 1, 8-12 at site 1."""
    base = dict(
        arrival=[9.0],
        skill=[0],
        priority=[1],
        sla=[2.0],
        effort=[1.0],
        site=[0],
    )
    base.update(tickets)
    return Episode(
        **{k: np.asarray(v) for k, v in base.items()},
        tech_skills=np.array([[True, False], [False, True]]),
        shift_start=np.array([8.0, 8.0]),
        shift_end=np.array([16.0, 12.0]),
        tech_site=np.array([0, 1]),
    )


def fixed(actions):
    return lambda obs: np.full(len(obs.valid), actions[obs.t])


def random_episode(rng, tickets, techs, skills=3):
    return Episode(
        arrival=rng.uniform(6, 17, tickets),
        skill=rng.integers(skills, size=tickets),
        priority=rng.integers(1, 5, size=tickets),
        sla=rng.uniform(1, 10, tickets),
        effort=rng.uniform(0.2, 3, tickets),
        site=rng.integers(2, size=tickets),
        tech_skills=rng.random((techs, skills)) < 0.5,
        shift_start=rng.uniform(6, 10, techs),
        shift_end=rng.uniform(14, 18, techs),
        tech_site=rng.integers(2, size=techs),
    )


def test_schedule_follows_the_rules_by_hand():
    # ticket 0 (9:00, skill 0, 1 h, site 0) -> tech 0: 9-10, on time, no travel
    # ticket 1 (9:30, skill 0, 1 h, site 1, SLA 2 h) -> tech 0 again: starts 10:00 when free,
    #   travels 1 h to site 1, works 1 h: done 12:00 > 11:30, SLA missed
    # ticket 2 (11:00, skill 0, 1 h, site 1) -> tech 1: unskilled (x2), at site 1: 11-13,
    #   of which 1 h past the 12:00 shift end is overtime (paid 1.5x)
    ep = two_techs(
        arrival=[9.0, 9.5, 11.0],
        skill=[0, 0, 0],
        priority=[1, 2, 3],
        sla=[2.0, 2.0, 4.0],
        effort=[1.0, 1.0, 1.0],
        site=[0, 1, 1],
    )
    out = run(EpisodeBatch.stack([ep]), fixed([0, 0, 1]), PARAMS)
    np.testing.assert_array_equal(out.hit[0], [True, False, True])
    np.testing.assert_allclose(out.hours[0], [1.0, 2.0, 2.0 + 0.5 * 1.0])
    np.testing.assert_allclose(out.overtime[0], [0.0, 0.0, 1.0])
    totals = out.totals()
    assert totals == {"tickets": 3.0, "hits": 2.0, "hours": 5.5, "overtime": 1.0}


def test_work_waits_for_the_shift_and_past_it_is_all_overtime():
    early = two_techs(arrival=[7.0], sla=[0.5])  # tech 0 starts at 8: misses a 7:30 SLA
    assert not run(EpisodeBatch.stack([early]), fixed([0]), PARAMS).hit[0, 0]
    late = two_techs(arrival=[13.0], skill=[1], site=[1], sla=[5.0])  # tech 1 left at 12
    out = run(EpisodeBatch.stack([late]), fixed([1]), PARAMS)
    assert out.overtime[0, 0] == pytest.approx(1.0) and out.hours[0, 0] == pytest.approx(1.5)


def test_greedy_takes_the_least_loaded_skilled_technician():
    ep = Episode(
        arrival=np.array([9.0, 9.1, 9.2, 9.3]),
        skill=np.array([0, 0, 0, 2]),
        priority=np.full(4, 3),
        sla=np.full(4, 8.0),
        effort=np.full(4, 2.0),
        site=np.zeros(4, dtype=int),
        tech_skills=np.array([[True, False, False], [True, True, False], [False, True, False]]),
        shift_start=np.full(3, 8.0),
        shift_end=np.full(3, 16.0),
        tech_site=np.zeros(3, dtype=int),
    )
    out = run(EpisodeBatch.stack([ep]), greedy_choice, PARAMS)
    # skill 0: tech 0, then tech 1 (tech 0 busy), then tech 0 (free at 11 before tech 1 at
    # 11:06); skill 2 nobody has: the one free first overall, tech 2
    np.testing.assert_array_equal(out.actions[0], [0, 1, 0, 2])


def test_batched_run_equals_each_episode_alone():
    rng = np.random.default_rng(0)
    eps = [random_episode(rng, t, m) for t, m in ((7, 3), (12, 5), (3, 2))]
    together = run(EpisodeBatch.stack(eps), greedy_choice, PARAMS, record=True)
    for i, ep in enumerate(eps):
        alone = run(EpisodeBatch.stack([ep]), greedy_choice, PARAMS, record=True)
        n, m = ep.tickets, ep.technicians
        np.testing.assert_array_equal(together.actions[i, :n], alone.actions[0])
        np.testing.assert_array_equal(together.hit[i, :n], alone.hit[0])
        np.testing.assert_allclose(together.hours[i, :n], alone.hours[0])
        np.testing.assert_allclose(together.features[i, :n, :m], alone.features[0])
        assert not together.valid[i, :n, m:].any() and not together.valid[i, n:].any()
        assert together.hours[i, n:].sum() == 0 and not together.hit[i, n:].any()


def test_random_dispatcher_only_picks_rostered_technicians_and_is_seeded():
    rng = np.random.default_rng(1)
    batch = EpisodeBatch.stack([random_episode(rng, 30, 2), random_episode(rng, 30, 6)])
    a = run(batch, random_choice(np.random.default_rng(5)), PARAMS)
    b = run(batch, random_choice(np.random.default_rng(5)), PARAMS)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.actions[0].max() <= 1 and a.actions[1].max() > 1


def test_a_dispatcher_choosing_off_the_roster_is_refused():
    with pytest.raises(ValueError, match="not on the roster"):
        run(EpisodeBatch.stack([two_techs()]), fixed([5]), PARAMS)


# ------------------------------------------------------------------------- policy & loss


def recorded(seed, rollouts, eps):
    policy = DispatchPolicy(8)
    torch.manual_seed(seed)
    for p in policy.parameters():
        torch.nn.init.normal_(p, std=0.5)
    batch = EpisodeBatch.stack(eps, repeats=rollouts)
    out = run(batch, sampling_choice(policy, np.random.default_rng(seed)), PARAMS, record=True)
    return policy, out


def rows(out, lo, hi, t, m):
    return Outcome(
        out.actions[lo:hi, :t],
        out.hit[lo:hi, :t],
        out.hours[lo:hi, :t],
        out.overtime[lo:hi, :t],
        out.ticket_mask[lo:hi, :t],
        out.features[lo:hi, :t, :m],
        out.valid[lo:hi, :t, :m],
    )


def test_a_record_depends_on_its_own_episode_only():
    rng = np.random.default_rng(2)
    eps = [random_episode(rng, 9, 3), random_episode(rng, 14, 5)]
    _, out = recorded(0, 3, eps)
    x, y = episode_records(out, rollouts=3, discount=0.9, hours_cost=0.05)
    assert x.shape == (2, 3 * 14, 5, len(FEATURES)) and y.shape == (2, 3 * 14, 2 + 5)
    x0, y0 = episode_records(rows(out, 0, 3, 9, 3), rollouts=3, discount=0.9, hours_cost=0.05)
    real = y[0, :, 2:].any(1)  # decisions of real tickets of episode 0
    np.testing.assert_allclose(y[0][real][:, :2], y0[0][:, :2], rtol=1e-6)
    np.testing.assert_allclose(x[0][real][:, :3], x0[0])
    assert np.all(y[0][~real][:, 1] == 0)  # padding carries no weight
    # per record, weights are unit-RMS advantages over its decisions, so sum |w| <= 1
    assert np.abs(y[:, :, 1]).sum(1).max() <= 1 + 1e-5


def test_identical_rollouts_have_no_advantage():
    rng = np.random.default_rng(3)
    out = run(
        EpisodeBatch.stack([random_episode(rng, 10, 4)], repeats=4),
        greedy_choice,
        PARAMS,
        record=True,
    )
    _, y = episode_records(out, rollouts=4, discount=0.9, hours_cost=0.05)
    np.testing.assert_allclose(y[..., 1], 0.0, atol=1e-6)


def test_a_gradient_step_makes_advantaged_actions_likelier_and_never_picks_padding():
    rng = np.random.default_rng(4)
    policy, out = recorded(1, 4, [random_episode(rng, 12, 4), random_episode(rng, 6, 2)])
    x, y = (
        torch.from_numpy(a) for a in episode_records(out, rollouts=4, discount=0.9, hours_cost=0.0)
    )
    before = reinforce_loss(policy(x), y)
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert float(reinforce_loss(policy(x), y)) < float(before)
    # the episode with two technicians never samples a padded one
    assert out.actions[4:][out.ticket_mask[4:]].max() <= 1


def test_policy_per_episode_gradients_are_exact_on_the_fast_path():
    rng = np.random.default_rng(5)
    policy, out = recorded(2, 2, [random_episode(rng, 8, 3), random_episode(rng, 5, 4)])
    x, y = (
        torch.from_numpy(a) for a in episode_records(out, rollouts=2, discount=0.9, hours_cost=0.05)
    )
    taps = per_sample_gradients(policy, x, y, loss_fn=reinforce_loss, method="taps")
    for i in range(len(x)):
        policy.zero_grad()
        reinforce_loss(policy(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in policy.named_parameters():
            torch.testing.assert_close(taps[name][i], p.grad, rtol=1e-4, atol=1e-6)


def test_the_initial_policy_is_the_uniform_dispatcher():
    ep = random_episode(np.random.default_rng(6), 5, 4)
    out = run(EpisodeBatch.stack([ep]), lambda obs: np.zeros(1, dtype=int), PARAMS)
    assert out.actions.shape == (1, 5)
    batch = EpisodeBatch.stack([ep])
    seen = []
    run(
        batch,
        lambda obs: seen.append(DispatchPolicy(8).probabilities(obs)) or np.zeros(1, int),
        PARAMS,
    )
    np.testing.assert_allclose(np.concatenate(seen), 0.25)


def test_earliest_completion_weighs_travel_and_skill_where_greedy_does_not():
    # Tech 0 has the skill but starts at noon on another site: done at 12 + 1 + 1 = 14.
    # Tech 1 lacks it but is here and free: done at 9 + 2 * 1 = 11.
    ep = Episode(
        arrival=np.array([9.0]),
        skill=np.array([0]),
        priority=np.full(1, 2),
        sla=np.full(1, 4.0),
        effort=np.full(1, 1.0),
        site=np.zeros(1, dtype=int),
        tech_skills=np.array([[True], [False]]),
        shift_start=np.array([12.0, 8.0]),
        shift_end=np.full(2, 18.0),
        tech_site=np.array([1, 0]),
    )
    batch = EpisodeBatch.stack([ep])
    greedy = run(batch, greedy_choice, PARAMS)
    ect = run(batch, earliest_completion_choice, PARAMS)
    assert greedy.actions[0, 0] == 0 and not greedy.hit[0, 0]
    assert ect.actions[0, 0] == 1 and ect.hit[0, 0]
