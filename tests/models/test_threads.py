"""A prediction of a few rows runs on one torch thread; the thread count comes back after."""

import threading

import torch

from meshfl.models.threads import SMALL_BATCH, threads_for


def test_a_small_batch_runs_on_one_thread_and_the_count_comes_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads_for(1):
            assert torch.get_num_threads() == 1
            with threads_for(SMALL_BATCH):  # nested: still one, and not restored early
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads_for(SMALL_BATCH + 1):  # a real batch keeps the pool
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_each_thread_sets_and_restores_its_own_count():
    seen = []

    def predict():
        torch.set_num_threads(2)
        with threads_for(1):
            seen.append(torch.get_num_threads())
        seen.append(torch.get_num_threads())

    workers = [threading.Thread(target=predict) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert sorted(seen) == [1, 1, 1, 2, 2, 2]
