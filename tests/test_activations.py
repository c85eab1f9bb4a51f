"""ReLU, Sigmoid, Tanh: gradients, stability, dy never modified in place."""
import numpy as np
from hypothesis import given, strategies as st

from conftest import UseBackend, to_backend
from npse import nn
from npse.gradcheck import gradcheck
from strategies import away_from_zero, normal, seeds

TOL = 1e-6
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@given(shape=shapes, seed=seeds, name=st.sampled_from(["ReLU", "Sigmoid", "Tanh"]))
def test_activation_gradients(backend_name, shape, seed, name):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        layer = getattr(nn, name)(dtype="float64")
        # |x| <= 4: deep in saturation tanh'(x) ~ 1e-6 is far below the rounding of tanh(x)
        # itself, so a difference quotient there measures rounding (saturation is tested below).
        x = to_backend(np.clip(away_from_zero(rng, shape) * 2, -4, 4), backend_name)
        result = gradcheck(layer, x, seed=seed)
        assert not result.crossed_kink
        assert result.max_error <= TOL, result.errors


def test_relu_kink_is_detected():
    """A finite-difference step across x = 0 is reported, not silently averaged."""
    result = nn.ReLU(dtype="float64")
    from npse.gradcheck import gradcheck as check
    r = check(result, np.array([[0.0, 1.0, -1.0]]), h=1e-6)
    assert r.crossed_kink and r.kinks[0] == ("input", 0)


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    with np.errstate(all="raise"):
        y = nn.Sigmoid()(x)
    np.testing.assert_allclose(y, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_relu_at_zero_has_zero_gradient():
    relu = nn.ReLU(dtype="float64")
    relu(np.array([0.0, 2.0]))
    np.testing.assert_array_equal(relu.backward(np.array([5.0, 5.0])), [0.0, 5.0])


@given(seed=seeds)
def test_float32_activations_agree_with_float64(seed):
    x = normal(np.random.default_rng(seed), (4, 7)) * 4
    for name in ("ReLU", "Sigmoid", "Tanh"):
        y64 = getattr(nn, name)(dtype="float64")(x)
        y32 = getattr(nn, name)()(x.astype(np.float32))
        assert np.linalg.norm(y32 - y64) <= 1e-5 * np.linalg.norm(y64) + 1e-12
