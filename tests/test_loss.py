"""CrossEntropyLoss: gradient, stability, rows of the gradient sum to zero, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import UseBackend, to_backend
from npse import nn
from npse.gradcheck import numerical_gradient, relative_error
from strategies import normal, seeds


@given(n=st.integers(1, 6), k=st.integers(2, 8), scale=st.floats(0.1, 20), seed=seeds)
def test_cross_entropy_gradient(backend_name, n, k, scale, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        logits = to_backend(normal(rng, (n, k)) * scale, backend_name)
        targets = to_backend(rng.integers(0, k, n), backend_name)
        loss_fn = nn.CrossEntropyLoss()
        loss_fn(logits, targets)
        analytic = loss_fn.backward()
        numeric = numerical_gradient(lambda: loss_fn(logits, targets), logits)
        assert relative_error(analytic, numeric) <= 1e-6
        np.testing.assert_allclose(np.asarray(analytic.sum(axis=1).tolist()), 0, atol=1e-12)


def test_cross_entropy_value_and_large_logits():
    loss_fn = nn.CrossEntropyLoss()
    assert loss_fn(np.zeros((3, 4)), np.array([0, 1, 3])) == pytest.approx(np.log(4))
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is fine
        loss = loss_fn(np.array([[1000.0, -1000.0], [0.0, 1e4]], dtype=np.float32), np.array([1, 1]))
        assert loss == pytest.approx(1000.0, rel=1e-6)
        assert np.isfinite(loss_fn.backward()).all()


def test_cross_entropy_errors():
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: targets must lie in \[0, 3\), got values in \[0, 3\]"):
        loss_fn(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match=r"CrossEntropyLoss: targets must be an integer array"):
        loss_fn(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: targets must have shape \(2,\), got \(3,\)"):
        loss_fn(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: logits \(N, classes\) must have 2 dimensions"):
        loss_fn(np.zeros((2, 3, 1)), np.array([0, 1]))
