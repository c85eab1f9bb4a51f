"""ShortcutA and SEBlockNoSqueeze: gradients against central differences, their function pairs,
float32/float64, errors."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from conftest import UseBackend, to_backend
from npse import nn
from npse.gradcheck import gradcheck, relative_error
from strategies import batch, normal, seeds

TOL = 1e-6


@given(n=batch, c=st.integers(1, 4), extra=st.integers(0, 5), h=st.integers(1, 6),
       w=st.integers(1, 6), stride=st.integers(1, 3), seed=seeds)
def test_shortcut_a_gradients(backend_name, n, c, extra, h, w, stride, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        layer = nn.ShortcutA(c, c + extra, stride, dtype="float64")
        x = to_backend(normal(rng, (n, c, h, w)), backend_name)
        result = gradcheck(layer, x, seed=seed)
        assert result.max_error <= TOL, result.errors


@given(n=batch, c=st.integers(1, 4), extra=st.integers(0, 5), h=st.integers(1, 6),
       w=st.integers(1, 6), stride=st.integers(1, 3), seed=seeds)
def test_shortcut_a_subsamples_and_pads_with_zero_channels(n, c, extra, h, w, stride, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, (n, c, h, w))
    y, cache = nn.shortcut_a_forward(x, c + extra, stride)
    before = extra // 2
    expected = np.zeros((n, c + extra) + x[:, :, ::stride, ::stride].shape[2:])
    expected[:, before:before + c] = x[:, :, ::stride, ::stride]
    assert np.array_equal(y, expected)
    dy = normal(rng, y.shape)
    dx = nn.shortcut_a_backward(dy, cache)
    # the adjoint: <y, dy> == <x, dx>
    assert abs(float((y * dy).sum()) - float((x * dx).sum())) <= 1e-12 * max(1.0, float(np.abs(y * dy).sum()))


def test_shortcut_a_takes_either_float_dtype_and_names_bad_input():
    layer = nn.ShortcutA(2, 4, 2)
    for dtype in (np.float32, np.float64):
        y = layer(np.ones((1, 2, 4, 4), dtype))
        assert y.dtype == dtype and y.shape == (1, 4, 2, 2)
        assert layer.backward(np.ones_like(y)).dtype == dtype
    with pytest.raises(ValueError, match=r"ShortcutA: input has 3 channels .* expected 2"):
        layer(np.ones((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"ShortcutA: out_channels \(1\) must be at least in_channels \(2\)"):
        nn.ShortcutA(2, 1, 1)
    with pytest.raises(ValueError, match=r"ShortcutA: stride must be a positive int, got 0"):
        nn.ShortcutA(2, 4, 0)


@given(n=batch, c=st.integers(1, 6), h=st.integers(1, 4), w=st.integers(1, 4),
       excitation=st.sampled_from(["sigmoid", "tanh", "relu"]), bias=st.booleans(), seed=seeds)
def test_se_no_squeeze_gradients(backend_name, n, c, h, w, excitation, bias, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        se = nn.SEBlockNoSqueeze(c, 2, excitation, bias=bias, dtype="float64", rng=rng)
        x = to_backend(normal(rng, (n, c, h, w)) + 0.5, backend_name)
        result = gradcheck(se, x, seed=seed)
        assume(not result.crossed_kink)       # the hidden ReLU's kinks, as in test_se_block.py
        assert result.max_error <= TOL, result.errors


@given(n=batch, c=st.integers(1, 6), h=st.integers(1, 4), w=st.integers(1, 4),
       excitation=st.sampled_from(["sigmoid", "tanh", "relu"]), bias=st.booleans(), seed=seeds)
def test_se_no_squeeze_module_equals_its_function_pair(n, c, h, w, excitation, bias, seed):
    rng = np.random.default_rng(seed)
    se = nn.SEBlockNoSqueeze(c, 2, excitation, bias=bias, dtype="float64", rng=rng)
    x, dy = normal(rng, (n, c, h, w)), normal(rng, (n, c, h, w))
    y = se(x)
    dx = se.backward(dy)
    b1, b2 = (se.fc1.bias.data, se.fc2.bias.data) if bias else (None, None)
    y_ref, cache = nn.se_no_squeeze_forward(x, se.fc1.weight.data, b1, se.fc2.weight.data, b2, excitation)
    grads = nn.se_no_squeeze_backward(dy, cache)
    assert relative_error(y, y_ref) <= 1e-12 and relative_error(se.gate, cache["gate"]) <= 1e-12
    params = [se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias]
    for got, ref in zip([dx] + [p.grad if p is not None else None for p in params], grads):
        assert (got is None) == (ref is None)
        if got is not None:
            assert relative_error(got, ref) <= 1e-12


def test_se_no_squeeze_errors():
    with pytest.raises(ValueError, match=r"SEBlockNoSqueeze: excitation must be one of"):
        nn.SEBlockNoSqueeze(8, excitation="softmax")
    with pytest.raises(ValueError, match=r"SEBlockNoSqueeze: channels must be a positive int, got 0"):
        nn.SEBlockNoSqueeze(0)
    with pytest.raises(ValueError, match=r"SEBlockNoSqueeze: input has 4 channels .* expected 8"):
        nn.SEBlockNoSqueeze(8)(np.zeros((1, 4, 2, 2), np.float32))
