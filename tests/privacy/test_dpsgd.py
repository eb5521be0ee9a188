"""DP-SGD for heads: per-sample gradients, clipping, noise, Poisson sampling, training."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.models.heads import MultiTaskHead, multitask_loss, predict_proba
from meshfl.privacy.dpsgd import (
    DPIncompatibleModelError,
    PrivateTrainingResult,
    check_dp_compatible,
    clip_factors,
    per_sample_gradients,
    private_gradient,
    train_private,
)
from meshfl.privacy.noise import fixed_noise_for_tests

pytestmark = [
    # the fast path checks itself and falls back when wrong; here a fallback is a failure
    pytest.mark.filterwarnings("error:meshfl DP-SGD. the fast linear-layer path:UserWarning"),
]


def first_task_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y[:, 0])


def sequence_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out.mean(1), y[:, 0])


class SharedLayer(nn.Module):
    """A layer applied twice: its per-sample gradient is a sum over both uses."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


class WithLayerNorm(nn.Module):
    """Trainable non-linear parameters: needs the torch.func path."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU())
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def frozen_body_head() -> nn.Module:
    head = MultiTaskHead(6, (3, 2), hidden=5, dropout=0.0)
    head.body[0].weight.requires_grad_(False)
    return head


# model factory, loss, input shape
MODELS = {
    "multitask_head": (
        lambda: MultiTaskHead(6, (3, 2), hidden=5, dropout=0.0),
        multitask_loss,
        (6,),
    ),
    "linear_probe": (lambda: MultiTaskHead(6, (3, 2), hidden=0), multitask_loss, (6,)),
    "frozen_body": (frozen_body_head, multitask_loss, (6,)),
    "sequence_input": (
        lambda: nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)),
        sequence_loss,
        (4, 6),
    ),
    "shared_layer": (SharedLayer, first_task_loss, (6,)),
    "layer_norm": (WithLayerNorm, first_task_loss, (6,)),
}


def batch(
    n: int, shape: tuple[int, ...] = (6,), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen)
    y = torch.stack(
        [torch.randint(0, 3, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)], 1
    )
    return x, y


def naive_per_sample(module: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn) -> dict:
    """One backward pass per record: the definition of a per-sample gradient."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for i in range(len(x)):
        module.zero_grad()
        loss_fn(module(x[i : i + 1]), y[i : i + 1]).backward()
        params = dict(module.named_parameters())
        for n in names:
            out[n].append(params[n].grad.detach().clone())
    return {n: torch.stack(v) for n, v in out.items()}


def numpy_data(n: int, seed: int = 0, separable: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    if separable:
        y = np.stack([(x[:, 0] > 0), (x[:, 1] + x[:, 2] > 0)], axis=1).astype(np.int64)
    else:
        y = np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n)], axis=1)
    return x, y


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- compatibility


class TestCompatibility:
    def test_batchnorm_is_rejected_with_layer_reason_and_fix(self):
        model = nn.Sequential()
        model.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU())
        model.out = nn.Linear(8, 2)
        with pytest.raises(DPIncompatibleModelError) as info:
            check_dp_compatible(model)
        message = str(info.value)
        assert isinstance(info.value, MeshflError) and isinstance(info.value, ValueError)
        assert "BatchNorm1d at 'body.1'" in message
        assert "per-sample gradient" in message  # why
        assert "GroupNorm" in message and "ModuleValidator.fix" in message  # what to do

    def test_frozen_batchnorm_is_rejected_although_opacus_lets_it_through(self):
        model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, affine=False), nn.Linear(8, 2))
        with pytest.raises(DPIncompatibleModelError, match=r"BatchNorm1d at '1'.*by hand"):
            check_dp_compatible(model)

    def test_train_private_rejects_before_touching_the_model(self):
        model = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
        before = state(model)
        x, y = numpy_data(32)
        with pytest.raises(DPIncompatibleModelError):
            train_private(
                model, x, y[:, :1], loss_fn=first_task_loss, epochs=1, batch_size=8, lr=0.1,
                noise_multiplier=1.0, max_grad_norm=1.0, seed=0,
            )  # fmt: skip
        assert all(torch.equal(before[k], v) for k, v in state(model).items())

    def test_meshfl_heads_pass_in_eval_mode_too(self):
        check_dp_compatible(MultiTaskHead(384, (8, 4), hidden=128).eval())
        check_dp_compatible(WithLayerNorm())


# --------------------------------------------------------------------------- per-sample grads


@pytest.mark.parametrize(
    ("name", "method"),
    [(name, method) for name in sorted(MODELS) for method in ("auto", "taps", "vmap")
     if not (name == "layer_norm" and method == "taps")],
)  # fmt: skip
def test_per_sample_gradients_equal_a_naive_loop(name, method):
    factory, loss_fn, shape = MODELS[name]
    torch.manual_seed(0)
    model = factory()
    x, y = batch(7, shape)
    expected = naive_per_sample(model, x, y, loss_fn)
    got = per_sample_gradients(model, x, y, loss_fn=loss_fn, method=method)
    assert list(got) == list(expected)
    for n in expected:
        assert got[n].shape == expected[n].shape
        torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-6)


def test_in_place_activation_falls_back_with_a_warning_and_stays_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 3))
    x, y = batch(7)
    expected = naive_per_sample(model, x, y, first_task_loss)
    with pytest.warns(UserWarning, match="falling back to torch.func"):
        got = per_sample_gradients(model, x, y, loss_fn=first_task_loss)
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="'taps'"):
        per_sample_gradients(model, x, y, loss_fn=first_task_loss, method="taps")


def test_taps_refuses_models_with_non_linear_parameters():
    x, y = batch(4)
    with pytest.raises(ConfigError, match=r"nn\.Linear"):
        per_sample_gradients(WithLayerNorm(), x, y, loss_fn=first_task_loss, method="taps")


# --------------------------------------------------------------------------- clipping and noise


@settings(max_examples=50, deadline=None)
@given(
    norms=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=20),
    max_grad_norm=st.floats(1e-3, 1e3),
)
def test_clip_factors_bound_the_norm_and_leave_small_gradients_alone(norms, max_grad_norm):
    t = torch.tensor(norms, dtype=torch.float64)
    factors = clip_factors(t, max_grad_norm)
    assert torch.all(factors <= 1.0) and torch.all(factors >= 0.0)
    assert torch.all(t * factors <= max_grad_norm * (1 + 1e-9))
    small = t <= max_grad_norm - 1e-5
    assert torch.all(factors[small] == 1.0)


@settings(max_examples=15, deadline=None)
@given(
    scale=st.floats(0.01, 100.0),
    max_grad_norm=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**16),
    method=st.sampled_from(["auto", "vmap"]),
)
def test_one_record_moves_the_clipped_sum_by_at_most_the_clipping_norm(
    scale, max_grad_norm, seed, method
):
    # the DP invariant: neighbouring batches (one record more) differ by <= C before noise
    torch.manual_seed(seed)
    model = MultiTaskHead(6, (3, 2), hidden=5, dropout=0.0)
    x, y = batch(9, seed=seed)
    x = x * scale
    kwargs = dict(
        loss_fn=multitask_loss, max_grad_norm=max_grad_norm, noise_multiplier=0.0,
        expected_batch_size=1.0, method=method,
    )  # fmt: skip
    with_all = private_gradient(model, x, y, **kwargs)
    without_last = private_gradient(model, x[:-1], y[:-1], **kwargs)
    diff = torch.cat([(with_all[n] - without_last[n]).flatten() for n in with_all])
    assert float(diff.norm()) <= max_grad_norm * (1 + 1e-4)
    clipped = per_sample_gradients(model, x, y, loss_fn=multitask_loss, method=method)
    norms = torch.cat([g.flatten(1) for g in clipped.values()], 1).norm(dim=1)
    assert torch.all(norms * clip_factors(norms, max_grad_norm) <= max_grad_norm * (1 + 1e-5))


@pytest.mark.parametrize("name", ["multitask_head", "layer_norm", "shared_layer"])
def test_private_gradient_matches_opacus_dpoptimizer(name):
    factory, loss_fn, shape = MODELS[name]
    torch.manual_seed(0)
    model = factory()
    x, y = batch(8, shape)
    max_grad_norm, expected_batch_size = 0.05, 10
    norms = torch.cat(
        [g.flatten(1) for g in naive_per_sample(model, x, y, loss_fn).values()], 1
    ).norm(dim=1)
    assert torch.any(norms > max_grad_norm)  # clipping is active in this comparison

    reference = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm = GradSampleModule(reference)
        optimizer = DPOptimizer(
            torch.optim.SGD(reference.parameters(), lr=1.0),
            noise_multiplier=0.0,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
        )
        loss_fn(gsm(x), y).backward()
    before = {n: p.detach().clone() for n, p in reference.named_parameters()}
    optimizer.step()
    opacus = {n: before[n] - p.detach() for n, p in reference.named_parameters()}

    ours = private_gradient(
        model, x, y, loss_fn=loss_fn, max_grad_norm=max_grad_norm, noise_multiplier=0.0,
        expected_batch_size=expected_batch_size,
    )  # fmt: skip
    assert list(ours) == [n for n, p in reference.named_parameters() if p.requires_grad]
    for n in ours:
        torch.testing.assert_close(ours[n], opacus[n], rtol=1e-4, atol=1e-7)


def test_noise_has_std_noise_multiplier_times_clip_over_expected_batch():
    # the default generator: fresh from OS entropy (> 50,000 draws: the std within 2 % is
    # 6 sd, the mean within 0.005 is 7 sd)
    model = MultiTaskHead(384, (8, 4), hidden=128)
    x, y = batch(0, (384,))
    kwargs = dict(
        loss_fn=multitask_loss, max_grad_norm=0.5, noise_multiplier=2.0, expected_batch_size=10
    )
    grads = private_gradient(model, x, y, **kwargs)
    noise = torch.cat([g.flatten() for g in grads.values()])
    assert noise.numel() > 50_000
    assert abs(float(noise.mean())) < 0.01 * 0.1 * 5
    assert float(noise.std()) == pytest.approx(2.0 * 0.5 / 10, rel=0.02)
    again = torch.cat([g.flatten() for g in private_gradient(model, x, y, **kwargs).values()])
    assert abs(float(torch.corrcoef(torch.stack([noise, again]))[0, 1])) < 0.05  # fresh draws


# --------------------------------------------------------------------------- training


def train(model: nn.Module, x, y, **overrides) -> PrivateTrainingResult:
    kwargs = dict(
        loss_fn=multitask_loss, epochs=2, batch_size=16, lr=1e-2, noise_multiplier=1.0,
        max_grad_norm=1.0, seed=0,
    )  # fmt: skip
    kwargs.update(overrides)
    return train_private(model, x, y, **kwargs)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_without_noise_or_clipping_a_full_batch_step_is_a_plain_step(optimizer):
    # q = 1 includes every record, so the expected batch equals the drawn one
    x, y = numpy_data(40)
    torch.manual_seed(0)
    model = MultiTaskHead(16, (3, 2), hidden=8, dropout=0.0)
    plain = copy.deepcopy(model)
    result = train(
        model, x, y, epochs=3, batch_size=40, noise_multiplier=0.0, max_grad_norm=1e6,
        optimizer=optimizer, lr=0.05,
    )  # fmt: skip
    assert (result.steps, result.sample_rate) == (3, 1.0)

    make = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    opt = make(plain.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(3):
        opt.zero_grad()
        multitask_loss(plain(xt), yt).backward()
        opt.step()
    for (n, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=n)


def test_loss_is_the_mean_over_the_records_of_the_last_epoch():
    x, y = numpy_data(48)
    torch.manual_seed(0)
    model = MultiTaskHead(16, (3, 2), hidden=8, dropout=0.0)
    with torch.no_grad():
        expected = float(multitask_loss(model(torch.from_numpy(x)), torch.from_numpy(y)))
    result = train(model, x, y, epochs=1, batch_size=48)  # q = 1: one step over every record
    assert result.loss == pytest.approx(expected, rel=1e-5)


def test_steps_and_sample_rate_are_what_the_accountant_needs(monkeypatch):
    calls = []
    original = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    x, y = numpy_data(100)
    result = train(MultiTaskHead(16, (3, 2), hidden=8), x, y, epochs=2, batch_size=30)
    assert result.sample_rate == pytest.approx(0.3)
    assert result.steps == 2 * round(100 / 30) == 6
    assert len(calls) == result.steps


def test_fewer_records_than_a_batch_means_full_batch_steps():
    x, y = numpy_data(20)
    result = train(MultiTaskHead(16, (3, 2), hidden=8), x, y, epochs=3, batch_size=32)
    assert (result.sample_rate, result.steps) == (1.0, 3)


def test_empty_poisson_batches_still_take_a_noisy_step():
    # q = 1/50: about a third of the steps draw nobody
    x, y = numpy_data(50)
    model = MultiTaskHead(16, (3, 2), hidden=8)
    biases = []
    model.tasks[0].register_forward_hook(lambda m, i, o: biases.append(len(i[0])))
    before = state(model)
    result = train(model, x, y, epochs=1, batch_size=1, optimizer="sgd")
    assert result.steps == 50
    assert len(biases) < 50  # some steps had no forward pass: empty batches
    assert np.isfinite(result.loss)
    after = state(model)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not torch.equal(before["tasks.0.weight"], after["tasks.0.weight"])
    empty = private_gradient(
        model, torch.zeros(0, 16), torch.zeros(0, 2, dtype=torch.long), loss_fn=multitask_loss,
        max_grad_norm=1.0, noise_multiplier=0.0, expected_batch_size=1.0,
    )  # fmt: skip
    assert all(torch.count_nonzero(g) == 0 for g in empty.values())


def test_noise_aside_same_seed_same_model_and_the_caller_rng_is_untouched():
    # The seed still fixes the dropout masks, and nothing else but the privacy noise and the
    # Poisson batches varies: with those pinned (test-only), equal seeds give equal models.
    x, y = numpy_data(64)
    models = []
    for draws, seed in ((1, 3), (2, 3), (1, 4)):
        torch.manual_seed(0)
        model = MultiTaskHead(16, (3, 2), hidden=8, dropout=0.3)
        torch.rand(draws)  # the caller's RNG state must not matter, dropout masks included
        rng_before = torch.get_rng_state()
        with fixed_noise_for_tests(0):
            result = train(model, x, y, seed=seed)
        assert torch.equal(torch.get_rng_state(), rng_before)
        models.append((state(model), result.loss))
    (a, loss_a), (b, loss_b), (c, _) = models
    assert loss_a == loss_b
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # other dropout masks


def test_the_seed_does_not_fix_the_noise_or_the_batches():
    x, y = numpy_data(64)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MultiTaskHead(16, (3, 2), hidden=8, dropout=0.0)
        rng_before = torch.get_rng_state()
        train(model, x, y, seed=3)
        assert torch.equal(torch.get_rng_state(), rng_before)
        runs.append(state(model))
    assert not all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_no_weak_rng_warning_any_more():
    # noise and batches come from OS entropy, so the old "seeded Mersenne Twister, use
    # Opacus' secure_mode" warning is gone (see meshfl.privacy.noise for what remains)
    x, y = numpy_data(32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(MultiTaskHead(16, (3, 2), hidden=8), x, y, epochs=1)
    weak = ("secure_mode", "Mersenne", "cryptographically")
    assert not [w for w in caught if any(word in str(w.message) for word in weak)]


def test_only_trainable_parameters_change_and_mode_and_grads_are_restored():
    x, y = numpy_data(64)
    model = MultiTaskHead(16, (3, 2), hidden=8)
    model.body[0].requires_grad_(False)
    model.eval()
    before = state(model)
    train(model, x, y)
    after = state(model)
    assert torch.equal(before["body.0.weight"], after["body.0.weight"])
    assert not torch.equal(before["tasks.0.weight"], after["tasks.0.weight"])
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_the_head_learns_a_separable_problem_under_noise():
    x, y = numpy_data(1024, separable=True)
    x_test, y_test = numpy_data(512, seed=1, separable=True)
    torch.manual_seed(0)
    model = MultiTaskHead(16, (2, 2), hidden=32)
    chance = [max(np.mean(y_test[:, t]), 1 - np.mean(y_test[:, t])) for t in range(2)]
    first = train(model, x, y, epochs=1, batch_size=64, lr=5e-3, noise_multiplier=1.0)
    last = train(model, x, y, epochs=8, batch_size=64, lr=5e-3, noise_multiplier=1.0, seed=1)
    assert last.loss < first.loss
    accuracy = [
        float(np.mean(p.argmax(1) == y_test[:, t]))
        for t, p in enumerate(predict_proba(model, x_test))
    ]
    assert all(acc > c + 0.3 for acc, c in zip(accuracy, chance, strict=True)), accuracy


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"batch_size": 0}, "'batch_size'.*Got 0"),
        ({"noise_multiplier": -1.0}, "'noise_multiplier'.*Got -1.0"),
        ({"max_grad_norm": 0.0}, "'max_grad_norm'.*Got 0.0"),
        ({"epochs": 0}, "'epochs'.*Got 0"),
        ({"optimizer": "rmsprop"}, "'optimizer'.*'adam' or 'sgd'.*'rmsprop'"),
        ({"method": "ghost"}, "'method'.*'ghost'"),
    ],
)
def test_bad_arguments_say_what_and_got_what(overrides, match):
    x, y = numpy_data(64)
    with pytest.raises(ConfigError, match=match):
        train(MultiTaskHead(16, (3, 2), hidden=8), x, y, **overrides)


def test_a_fully_frozen_model_is_refused():
    x, y = numpy_data(64)
    model = MultiTaskHead(16, (3, 2), hidden=8).requires_grad_(False)
    with pytest.raises(ConfigError, match="trainable parameters"):
        train(model, x, y)


def test_train_planned_returns_the_plans_event_and_refuses_a_different_run():
    from meshfl.privacy.budget import DPStep
    from meshfl.privacy.dpsgd import train_planned

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 4)), rng.integers(0, 2, size=(100, 1))
    head = MultiTaskHead(4, (2,))
    # 50 / 100 records per step: rate 0.5, two steps per epoch.
    step = DPStep("dp-sgd", 1.0, 0.5, 2, 1.0, "sample")
    loss, event = train_planned(
        head, x, y, step, loss_fn=multitask_loss, epochs=1, batch_size=50, lr=0.1, seed=0
    )
    assert np.isfinite(loss) and event == step.event()
    wrong = DPStep("dp-sgd", 1.0, 0.5, 3, 1.0, "sample")
    with pytest.raises(RuntimeError, match="planned as 3"):
        train_planned(
            head, x, y, wrong, loss_fn=multitask_loss, epochs=1, batch_size=50, lr=0.1, seed=0
        )


def test_a_batch_fn_over_the_same_records_trains_exactly_as_the_arrays_do():
    """``batch_fn`` only changes where a batch comes from: same sampling, clipping, noise."""
    from meshfl.privacy.noise import PoissonDraw, record_releases_for_tests

    x, y = numpy_data(60)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    seen: list[list[int]] = []

    def batch_fn(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert idx.dtype == torch.int64 and len(idx) and bool((idx.diff() > 0).all())
        seen.append(idx.tolist())
        return xt[idx], yt[idx]

    runs = []
    for how in ("arrays", "batch_fn"):
        torch.manual_seed(0)
        model = MultiTaskHead(16, (3, 2), hidden=8)
        with fixed_noise_for_tests(7), record_releases_for_tests() as draws:
            if how == "arrays":
                result = train(model, x, y, batch_size=10)
            else:
                result = train(model, list(range(60)), None, batch_size=10, batch_fn=batch_fn)
        runs.append((result, draws, torch.cat([p.detach().flatten() for p in model.parameters()])))
    (a, draws_a, params_a), (b, draws_b, params_b) = runs
    assert (a.steps, a.sample_rate) == (b.steps, b.sample_rate) == (12, 1 / 6)
    assert a.loss == pytest.approx(b.loss, rel=1e-6)
    assert draws_a == draws_b
    assert sum(len(s) for s in seen) == sum(d.drawn for d in draws_b if isinstance(d, PoissonDraw))
    torch.testing.assert_close(params_a, params_b)


def test_train_private_takes_targets_or_a_batch_fn_not_both():
    x, y = numpy_data(20)
    model = MultiTaskHead(16, (3, 2), hidden=8)
    with pytest.raises(ConfigError, match="either 'targets' or a 'batch_fn'"):
        train(model, x, y, batch_fn=lambda idx: (x[idx], y[idx]))
    with pytest.raises(ConfigError, match="needs 'targets'"):
        train(model, x, None)
