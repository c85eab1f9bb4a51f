"""npse.fast.threads: the slices, their fixed order, errors, and what the setting changes.

The formulations that use the threads are held to the reference at 1, 2 and 4 threads by
tests/test_formulations.py; a resumed run at two threads matches an uninterrupted one bit for bit
in tests/test_train.py. Here: the machinery itself, and that a step at a fixed thread count
repeats bit for bit.
"""
import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npse import models, nn
from npse.fast import FAST, threads
from npse.optim import SGD


@pytest.fixture
def two_threads():
    threads.set_num_threads(2)
    yield
    threads.set_num_threads(1)


@given(n=st.integers(1, 500), parts=st.integers(1, 16))
def test_spans_cut_a_range_into_contiguous_nearly_equal_slices(n, parts):
    s = threads.spans(n, parts)
    assert len(s) == min(n, parts)
    assert s[0].start == 0 and s[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(s, s[1:]))
    sizes = [x.stop - x.start for x in s]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert threads.spans(n, parts) == s          # the same every time: what makes runs repeat


def test_one_thread_calls_once_with_everything():
    calls = []
    assert threads.in_slices(lambda s: calls.append(s) or 7, 10) == [7]
    assert calls == [slice(0, 10)]


def test_slices_run_in_other_threads_and_come_back_in_slice_order(two_threads):
    seen = {}

    def record(s):
        seen[s.start] = threading.current_thread().name
        return s.start
    assert threads.in_slices(record, 9) == [0, 5]
    assert seen[0] == threading.current_thread().name and seen[5] != seen[0]


def test_on_another_array_module_nothing_is_sliced(two_threads):
    class FakeCupy:
        __name__ = "cupy"
    assert threads.in_slices(lambda s: (s.start, s.stop), 8, FakeCupy()) == [(0, 8)]


def test_an_error_in_any_slice_is_raised_after_every_slice_finished(two_threads):
    finished = []

    def work(s):
        if s.start == 0:
            raise ValueError("first slice")
        finished.append(s)

    with pytest.raises(ValueError, match="first slice"):
        threads.in_slices(work, 4)
    assert finished == [slice(2, 4)]

    def late(s):
        if s.start:
            raise KeyError("second slice")
        finished.append(s)
    with pytest.raises(KeyError, match="second slice"):
        threads.in_slices(late, 4)


def test_a_slice_that_asks_for_slices_runs_them_itself(two_threads):
    inner = threads.in_slices(lambda s: threads.in_slices(lambda t: (t.start, t.stop), 6), 2)
    assert inner[1] == [(0, 6)]          # in a worker: not handed out again (no deadlock)


def test_combine_adds_in_slice_order():
    parts = [np.float32(1e8), np.float32(1.0), np.float32(-1e8)]
    assert threads.combine(parts) == (parts[0] + parts[1]) + parts[2]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_what_is_not_a_positive_int(bad):
    with pytest.raises(ValueError, match="set_num_threads: expected an integer >= 1"):
        threads.set_num_threads(bad)


def _one_step(n_threads):
    threads.set_num_threads(n_threads)
    try:
        model = models.cifar_resnet(depth=8, se="standard", widths=(4, 8, 8), se_reduction=2,
                                    seed=3).use_policy(FAST)
        opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
        y = rng.integers(0, 10, 6)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(2):
            opt.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
        return {k: v.copy() for k, v in model.state_dict().items()}
    finally:
        threads.set_num_threads(1)


def test_a_step_at_a_fixed_thread_count_repeats_bit_for_bit_and_agrees_across_counts():
    one, two, two_again, four = _one_step(1), _one_step(2), _one_step(2), _one_step(4)
    for key in one:
        np.testing.assert_array_equal(two[key], two_again[key], err_msg=key)
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(four[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_using_restores_the_thread_count_and_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"]
    before_blas, before = blas(), threads.get_num_threads()
    with threads.using(3) as n:
        assert n == threads.get_num_threads() == 3
        assert all(t == 1 for t in blas())          # single-threaded inside each slice
    assert threads.get_num_threads() == before and blas() == before_blas
