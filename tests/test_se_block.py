"""SEBlock: gradients through both paths, every squeeze and gate, properties, errors."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from conftest import UseBackend, to_backend
from npse import nn
from npse.gradcheck import gradcheck, relative_error
from strategies import batch, normal, seeds

TOL = 1e-6


@given(n=batch, c=st.integers(1, 12), h=st.integers(1, 5), w=st.integers(1, 5),
       reduction=st.sampled_from([1, 2, 4, 16]), squeeze=st.sampled_from(["avg", "max"]),
       excitation=st.sampled_from(["sigmoid", "tanh", "relu"]), bias=st.booleans(), seed=seeds)
def test_se_block_gradients(backend_name, n, c, h, w, reduction, squeeze, excitation, bias, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        se = nn.SEBlock(c, reduction, squeeze, excitation, bias=bias, dtype="float64", rng=rng)
        x = to_backend(normal(rng, (n, c, h, w)) + 0.5, backend_name)
        result = gradcheck(se, x, seed=seed)
        # The hidden ReLU (and a ReLU gate, and a max squeeze) have kinks; a step that crosses one
        # does not estimate a derivative, so such rare draws are discarded, not passed.
        assume(not result.crossed_kink)
        assert result.max_error <= TOL, result.errors


def test_se_block_gradient_flows_through_the_squeeze():
    """dx = dy * s + (squeeze path); dropping the second term changes dx."""
    rng = np.random.default_rng(0)
    se = nn.SEBlock(4, 2, dtype="float64", rng=0)
    x = normal(rng, (2, 4, 3, 3))
    dy = normal(rng, (2, 4, 3, 3))
    se(x)
    dx = se.backward(dy)
    only_scale = dy * se.gate[:, :, None, None]
    assert relative_error(only_scale, dx) > 1e-3


@given(c=st.integers(1, 10), excitation=st.sampled_from(["sigmoid", "tanh", "relu"]), seed=seeds)
def test_se_block_with_zero_fc2_weights_gates_at_gate_of_bias(c, excitation, seed):
    rng = np.random.default_rng(seed)
    se = nn.SEBlock(c, 2, excitation=excitation, dtype="float64", rng=rng)
    se.fc2.weight.data[...] = 0
    x = normal(rng, (3, c, 4, 2))
    y = se(x)
    b = se.fc2.bias.data
    expected = {"sigmoid": 1 / (1 + np.exp(-b)), "tanh": np.tanh(b), "relu": np.maximum(b, 0)}[excitation]
    np.testing.assert_allclose(se.gate, np.broadcast_to(expected, (3, c)), rtol=1e-12)
    np.testing.assert_allclose(y, x * expected[None, :, None, None], rtol=1e-12)


def test_se_block_shapes_names_and_float32():
    se = nn.SEBlock(64, reduction=16, rng=0)
    assert se.hidden == 4
    assert nn.SEBlock(8, reduction=16).hidden == 1            # h = max(1, C // r)
    assert [k for k in se.state_dict()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert se.fc1.weight.shape == (4, 64) and se.fc2.weight.shape == (64, 4)
    assert [k for k in nn.SEBlock(8, bias=False).state_dict()] == ["fc1.weight", "fc2.weight"]
    x = normal(np.random.default_rng(0), (2, 64, 5, 5))
    y32 = se(x.astype(np.float32))
    assert se.gate.shape == (2, 64) and y32.dtype == np.float32
    y64 = nn.SEBlock(64, reduction=16, dtype="float64", rng=0)(x)
    assert relative_error(y32, y64) <= 1e-5


def test_se_block_errors():
    with pytest.raises(ValueError, match=r"SEBlock: squeeze must be one of \['avg', 'max'\], got 'mean'"):
        nn.SEBlock(8, squeeze="mean")
    with pytest.raises(ValueError, match=r"SEBlock: excitation must be one of"):
        nn.SEBlock(8, excitation="softmax")
    with pytest.raises(ValueError, match=r"SEBlock: input has 4 channels .* expected 8"):
        nn.SEBlock(8)(np.zeros((1, 4, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"SEBlock: reduction must be a positive int, got 0"):
        nn.SEBlock(8, reduction=0)


@given(n=batch, c=st.integers(1, 8), h=st.integers(1, 4), w=st.integers(1, 4),
       squeeze=st.sampled_from(["avg", "max"]), excitation=st.sampled_from(["sigmoid", "tanh", "relu"]),
       bias=st.booleans(), seed=seeds)
def test_the_module_equals_the_functional_block(n, c, h, w, squeeze, excitation, bias, seed):
    """SEBlock runs its fc1 and fc2 children; se_block_forward/backward is the same block as one
    pair of functions: same y, gate, dx and fc gradients."""
    rng = np.random.default_rng(seed)
    se = nn.SEBlock(c, 2, squeeze, excitation, bias=bias, dtype="float64", rng=rng)
    x, dy = normal(rng, (n, c, h, w)), normal(rng, (n, c, h, w))
    y = se(x)
    dx = se.backward(dy)
    b1, b2 = (se.fc1.bias.data, se.fc2.bias.data) if bias else (None, None)
    y_ref, cache = nn.se_block_forward(x, se.fc1.weight.data, b1, se.fc2.weight.data, b2,
                                       squeeze, excitation)
    dx_ref, dw1, db1, dw2, db2 = nn.se_block_backward(dy, cache)
    assert np.array_equal(y, y_ref) and np.array_equal(se.gate, cache["gate"])
    assert relative_error(dx, dx_ref) <= 1e-12
    assert relative_error(se.fc1.weight.grad, dw1) <= 1e-12
    assert relative_error(se.fc2.weight.grad, dw2) <= 1e-12
    if bias:
        assert relative_error(se.fc1.bias.grad, db1) <= 1e-12
        assert relative_error(se.fc2.bias.grad, db2) <= 1e-12
