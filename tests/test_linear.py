"""Linear and Flatten: gradients, PyTorch layout, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import UseBackend, to_backend
from npse import nn
from npse.gradcheck import gradcheck, relative_error
from strategies import normal, seeds

TOL = 1e-6


@given(n=st.integers(1, 5), fin=st.integers(1, 7), fout=st.integers(1, 7), bias=st.booleans(), seed=seeds)
def test_linear_gradients(backend_name, n, fin, fout, bias, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        fc = nn.Linear(fin, fout, bias=bias, dtype="float64", rng=rng)
        x = to_backend(normal(rng, (n, fin)), backend_name)
        result = gradcheck(fc, x, seed=seed)
        assert result.max_error <= TOL, result.errors


@given(n=st.integers(1, 3), shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)), seed=seeds)
def test_flatten_then_linear_gradients(backend_name, n, shape, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        net = nn.Sequential(nn.Flatten(dtype="float64"),
                            nn.Linear(int(np.prod(shape)), 3, dtype="float64", rng=rng), dtype="float64")
        x = to_backend(normal(rng, (n,) + shape), backend_name)
        assert gradcheck(net, x, seed=seed).max_error <= TOL


def test_linear_layout_and_float32():
    fc = nn.Linear(4, 3, rng=0)
    assert fc.weight.shape == (3, 4) and fc.bias.shape == (3,)
    x = np.random.default_rng(0).standard_normal((2, 4))
    y32 = fc(x.astype(np.float32))
    np.testing.assert_allclose(y32, x @ fc.weight.data.T + fc.bias.data, rtol=1e-5)
    fc64 = nn.Linear(4, 3, dtype="float64", rng=0)
    assert relative_error(y32, fc64(x)) <= 1e-5


def test_linear_errors():
    fc = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"Linear: input \(N, in_features\) has 5 channels .* expected 4"):
        fc(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"Linear: input \(N, in_features\) must have 2 dimensions, got 4"):
        fc(np.zeros((2, 4, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"Linear: out_features must be a positive int, got -1"):
        nn.Linear(3, -1)
