"""Channels-last memory format: the conversions, and the reference layers' gradients with inputs
stored channels last. (That every faster formulation gives the reference's numbers in both
memory formats, dy included, is tests/test_formulations.py.)"""
import numpy as np
from hypothesis import assume, given, strategies as st

from conftest import UseBackend, to_backend
from npse import nn
from npse.gradcheck import gradcheck
from npse.fast.layout import is_channels_last, nhwc, to_channels_last
from strategies import batch, normal, seeds, window_cases

TOL = 1e-6
spatial = st.integers(1, 6)


def channels_last_input(rng, shape, backend_name, shift=0.0):
    x = to_channels_last(to_backend(normal(rng, shape) + shift, backend_name))
    assert is_channels_last(x) or shape[1] == 1 or shape[2] * shape[3] == 1
    return x


def test_is_channels_last_and_conversions():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    assert not is_channels_last(x)
    y = to_channels_last(x)
    assert is_channels_last(y) and y.shape == x.shape and (y == x).all()
    assert nhwc(y).base is not None and np.shares_memory(nhwc(y), y)        # a view, no copy
    assert (nhwc(x) == x.transpose(0, 2, 3, 1)).all()
    assert not is_channels_last(to_channels_last(x[:, :1]))                # one channel: both at once
    assert not is_channels_last(np.zeros((2, 3, 4)))


@given(case=window_cases(), out_channels=st.integers(1, 4), bias=st.booleans())
def test_conv2d_gradients_channels_last(backend_name, case, out_channels, bias):
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        conv = nn.Conv2d(case.c + 1, out_channels, case.kernel, case.stride, case.padding, bias=bias,
                         dtype="float64", rng=rng)
        x = channels_last_input(rng, (case.n, case.c + 1, case.h, case.w), backend_name)
        result = gradcheck(conv, x, seed=case.seed)
        assert result.max_error <= TOL, result.errors


@given(n=batch, c=st.integers(2, 12), h=st.integers(1, 5), w=st.integers(1, 5),
       squeeze=st.sampled_from(["avg", "max"]), excitation=st.sampled_from(["sigmoid", "tanh", "relu"]),
       seed=seeds)
def test_se_block_gradients_channels_last(backend_name, n, c, h, w, squeeze, excitation, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        se = nn.SEBlock(c, 2, squeeze, excitation, dtype="float64", rng=rng)
        x = channels_last_input(rng, (n, c, h, w), backend_name, shift=0.5)
        result = gradcheck(se, x, seed=seed)
        assume(not result.crossed_kink)      # as in test_se_block_gradients
        assert result.max_error <= TOL, result.errors


@given(n=batch, h=spatial, w=spatial, stride=st.integers(1, 2), seed=seeds)
def test_global_avgpool_and_shortcut_gradients_channels_last(backend_name, n, h, w, stride, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        x = channels_last_input(rng, (n, 3, h, w), backend_name)
        for layer in (nn.GlobalAvgPool2d(dtype="float64"), nn.ShortcutA(3, 5, stride, dtype="float64")):
            result = gradcheck(layer, x, seed=seed)
            assert result.max_error <= TOL, result.errors
