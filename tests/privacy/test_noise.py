"""meshfl.privacy.noise: the OS-entropy source of privacy noise and DP sampling."""

from __future__ import annotations

import inspect
import pathlib
import threading

import numpy as np
import pytest
import torch

import meshfl
from meshfl.privacy import noise
from meshfl.privacy.noise import fixed_noise_for_tests, noise_rng, noise_torch_generator

SRC = pathlib.Path(meshfl.__file__).parent


def test_every_numpy_generator_is_fresh_and_ignores_the_global_seed():
    saved = np.random.get_state()  # noqa: NPY002
    try:
        draws = []
        for _ in range(2):
            np.random.seed(0)  # noqa: NPY002 - a seeded global state must not reach the noise
            draws.append(noise_rng().normal(size=8))
            # ... nor does the noise read or move it
            assert np.random.random() == np.random.RandomState(0).random_sample()  # noqa: NPY002
        assert not np.array_equal(*draws)
    finally:
        np.random.set_state(saved)  # noqa: NPY002


def test_every_torch_generator_is_fresh_ignores_manual_seed_and_leaves_global_state():
    saved = torch.get_rng_state()
    try:
        draws = []
        for _ in range(2):
            torch.manual_seed(0)
            before = torch.get_rng_state()
            g = noise_torch_generator()
            draws.append(torch.randn(8, generator=g))
            assert torch.equal(torch.get_rng_state(), before)  # neither read nor moved
            assert g.device == torch.device("cpu")
        assert not torch.equal(*draws)
    finally:
        torch.set_rng_state(saved)


def test_the_seeds_come_from_the_os_and_from_nothing_else(monkeypatch):
    # the only input is secrets.randbits: pin it, and the draws repeat
    calls: list[int] = []
    monkeypatch.setattr(noise.secrets, "randbits", lambda k: calls.append(k) or 12345)
    np.testing.assert_array_equal(noise_rng().normal(size=4), noise_rng().normal(size=4))
    assert torch.equal(
        torch.randn(4, generator=noise_torch_generator()),
        torch.randn(4, generator=noise_torch_generator()),
    )
    assert calls == [128, 128, 64, 64]
    for fn in (noise_rng, noise_torch_generator):  # nothing to pass a seed with
        assert not {"seed", "rng", "generator"} & set(inspect.signature(fn).parameters)


def test_fixed_noise_for_tests_repeats_a_sequence_and_then_lets_go():
    def draws() -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        return (
            noise_rng().normal(size=4),
            noise_rng().normal(size=4),
            torch.randn(4, generator=noise_torch_generator()),
        )

    with fixed_noise_for_tests(1):
        first = draws()
    with fixed_noise_for_tests(1):
        second = draws()
    with fixed_noise_for_tests(2):
        other = draws()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert torch.equal(first[2], second[2])
    assert not np.array_equal(first[0], first[1])  # each call still gets its own seed
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(draws()[0], first[0])  # outside: the OS again
    with fixed_noise_for_tests(1), pytest.raises(RuntimeError, match="nest"):  # noqa: SIM117
        with fixed_noise_for_tests(1):
            pass


def test_the_test_only_injection_is_used_nowhere_in_meshfl():
    users = [
        p.relative_to(SRC)
        for p in SRC.rglob("*.py")
        if "fixed_noise_for_tests" in p.read_text(encoding="utf-8")
    ]
    assert users == [pathlib.Path("privacy/noise.py")]


def test_generators_can_be_taken_from_many_threads():
    out: list[float] = []

    def work() -> None:
        out.append(float(noise_rng().normal()))
        out.append(float(torch.randn(1, generator=noise_torch_generator())))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_generator_draws_on_the_device():
    g = noise_torch_generator("cuda")
    assert g.device.type == "cuda"
    x = torch.empty(1000, device="cuda").normal_(generator=g)
    y = torch.empty(1000, device="cuda").normal_(generator=noise_torch_generator("cuda"))
    assert not torch.equal(x, y)
