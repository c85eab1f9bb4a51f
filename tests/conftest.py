"""Shared test set-up: hypothesis profiles and the backend fixture.

Profiles: ``default`` (50 examples per property, used by CI), ``gpu-small`` (5 examples, for a short
run on a lent GPU machine), ``thorough`` (500).  Choose with ``HYPOTHESIS_PROFILE=name``.

The default profile is derandomized: every run draws the same examples (derived from each test's
name), so CI's verdict does not depend on the day's luck. ``thorough`` draws fresh random
examples every run: use it to explore, and when it finds a failing case, add that case
(``@example``) or fix what it found.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from npse import backend

settings.register_profile("default", max_examples=50, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("gpu-small", max_examples=5, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def one_thread_after_each_test():
    """npse's commands set the process-wide thread count (npse.fast.threads) as a command line
    would; a test that runs one through ``main`` must not leave it to the tests after it."""
    yield
    from npse.fast.threads import get_num_threads, set_num_threads
    if get_num_threads() != 1:
        set_num_threads(1)


@pytest.fixture(scope="session", params=["numpy", "cupy"])
def backend_name(request):
    """Runs a test once per backend; the CuPy run skips where CuPy or a GPU is absent."""
    if request.param == "cupy" and not backend.cupy_available():
        pytest.skip("CuPy with a GPU is not available")
    return request.param


@pytest.fixture
def on_backend(backend_name):
    """Makes ``backend_name`` the active backend for one test and restores the previous one."""
    previous = backend.get_backend()
    backend.set_backend(backend_name)
    yield backend_name
    backend.set_backend(previous)


class UseBackend:
    """Context manager form of ``on_backend`` for hypothesis tests (fixtures are set up once per
    test, not once per example)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.previous = backend.get_backend()
        backend.set_backend(self.name)
        return backend.module(self.name)

    def __exit__(self, *exc):
        backend.set_backend(self.previous)


def to_backend(a, name):
    return backend.to_device(np.asarray(a), name)
