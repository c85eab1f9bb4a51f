"""MaxPool2d, AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d: gradients, tie rule, properties, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import UseBackend, to_backend
from npse import nn
from npse.gradcheck import gradcheck
from strategies import batch, channels, distinct, normal, seeds, window_cases

TOL = 1e-6
pool_cases = window_cases(max_kernel=4, half_kernel_padding=True)


@given(case=pool_cases)
def test_maxpool2d_gradients(backend_name, case):
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        pool = nn.MaxPool2d(case.kernel, case.stride, case.padding, dtype="float64")
        x = to_backend(distinct(rng, (case.n, case.c, case.h, case.w)), backend_name)
        result = gradcheck(pool, x, seed=case.seed)
        assert not result.crossed_kink   # distinct values: no winner can change within one step
        assert result.max_error <= TOL, result.errors


@given(case=pool_cases)
def test_avgpool2d_gradients(backend_name, case):
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        pool = nn.AvgPool2d(case.kernel, case.stride, case.padding, dtype="float64")
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        assert gradcheck(pool, x, seed=case.seed).max_error <= TOL


@given(n=batch, c=channels, h=st.integers(1, 7), w=st.integers(1, 7), seed=seeds,
       kind=st.sampled_from(["avg", "max"]))
def test_global_pool2d_gradients(backend_name, n, c, h, w, seed, kind):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        pool = (nn.GlobalAvgPool2d if kind == "avg" else nn.GlobalMaxPool2d)(dtype="float64")
        x = to_backend(distinct(rng, (n, c, h, w)), backend_name)
        result = gradcheck(pool, x, seed=seed)
        assert pool(x).shape == (n, c)
        assert result.max_error <= TOL, result.errors


def test_maxpool2d_tie_sends_gradient_to_first_maximum():
    """Equal values in a window: the whole gradient goes to the first in row-major order."""
    x = np.array([[[[1., 1., 0., 2.],
                    [1., 1., 2., 0.],
                    [3., 0., 5., 5.],
                    [0., 3., 5., 5.]]]])
    pool = nn.MaxPool2d(2, dtype="float64")
    y = pool(x)
    np.testing.assert_array_equal(y, [[[[1., 2.], [3., 5.]]]])
    dx = pool.backward(np.array([[[[10., 20.], [30., 40.]]]]))
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 0, 0], expected[0, 0, 0, 3], expected[0, 0, 2, 0], expected[0, 0, 2, 2] = 10, 20, 30, 40
    np.testing.assert_array_equal(dx, expected)
    gpool = nn.GlobalMaxPool2d(dtype="float64")
    gpool(x)
    dxg = gpool.backward(np.array([[7.0]]))
    assert dxg[0, 0, 2, 2] == 7 and dxg.sum() == 7        # first of the four 5s


def test_maxpool2d_overlapping_windows_accumulate():
    """A pixel that wins two overlapping windows receives both gradients."""
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 9
    pool = nn.MaxPool2d(2, stride=1, dtype="float64")
    pool(x)
    dx = pool.backward(np.ones((1, 1, 2, 2)))
    assert dx[0, 0, 1, 1] == 4 and dx.sum() == 4


def test_maxpool2d_pads_with_minus_infinity():
    x = -np.ones((1, 1, 2, 2))
    y = nn.MaxPool2d(2, stride=1, padding=1, dtype="float64")(x)
    assert (y == -1).all()     # zero padding would have given 0 at the borders


@given(case=window_cases(max_kernel=4, half_kernel_padding=False, max_pad=0),
       value=st.floats(-5, 5))
def test_avgpool2d_of_a_constant_is_that_constant(case, value):
    x = np.full((case.n, case.c, case.h, case.w), value)
    y = nn.AvgPool2d(case.kernel, case.stride, dtype="float64")(x)
    np.testing.assert_allclose(y, value, rtol=1e-12, atol=1e-12)


def test_avgpool2d_counts_padding():
    y = nn.AvgPool2d(3, stride=1, padding=1, dtype="float64")(np.ones((1, 1, 3, 3)))
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9) and y[0, 0, 1, 1] == pytest.approx(1.0)


def test_pooling_errors():
    with pytest.raises(ValueError, match=r"MaxPool2d: padding \(2, 2\) must be at most half the kernel \(3, 3\)"):
        nn.MaxPool2d(3, padding=2)
    with pytest.raises(ValueError, match=r"AvgPool2d: kernel 3x3 is larger than the padded input 2x2"):
        nn.AvgPool2d(3)(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2d: input must have 4 dimensions, got 2"):
        nn.GlobalAvgPool2d()(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match=r"MaxPool2d: input must be a floating-point array, got dtype int32"):
        nn.MaxPool2d(2)(np.zeros((1, 1, 4, 4), np.int32))
    with pytest.raises(TypeError, match=r"GlobalMaxPool2d: input has dtype float16 .* float32 or float64 only"):
        nn.GlobalMaxPool2d()(np.zeros((1, 1, 4, 4), np.float16))


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.GlobalAvgPool2d(),
                                   nn.GlobalMaxPool2d(), nn.ReLU(), nn.Sigmoid(), nn.Tanh()],
                         ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parameter_free_layers_take_either_float_dtype(layer, dtype):
    """As PyTorch's: no parameters, so the input's float32 or float64 is kept (whatever the
    layer was built with), forward and backward."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(dtype)
    y = layer(x)
    assert y.dtype == dtype
    assert layer.backward(np.ones_like(y)).dtype == dtype


def first_maximum_backward(x, dy, kernel, stride, padding):
    """Max pooling's dx written as loops: each window's dy goes to its first maximum in row-major
    order (numpy's argmax over the flattened window; -inf padding never wins)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    padded = np.full((n, c, h + 2 * ph, w + 2 * pw), -np.inf)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    dx = np.zeros_like(padded)
    for i, j, r, q in np.ndindex(*dy.shape):
        window = padded[i, j, r * sh:r * sh + kh, q * sw:q * sw + kw]
        k = int(np.argmax(window))                      # the first of equal maxima
        dx[i, j, r * sh + k // kw, q * sw + k % kw] += dy[i, j, r, q]
    return dx[:, :, ph:ph + h, pw:pw + w]


@given(case=pool_cases)
def test_maxpool2d_ties_go_to_the_first_maximum_on_drawn_windows(case):
    """A second guard for the tie rule, on drawn geometries whose inputs are full of ties
    (values from {0, 1, 2}): dx equals the loops above, entry for entry."""
    rng = np.random.default_rng(case.seed)
    x = rng.integers(0, 3, (case.n, case.c, case.h, case.w)).astype(np.float64)
    pool = nn.MaxPool2d(case.kernel, case.stride, case.padding, dtype="float64")
    y = pool(x)
    dy = rng.integers(1, 10, y.shape).astype(np.float64)
    np.testing.assert_array_equal(pool.backward(dy), first_maximum_backward(
        x, dy, case.kernel, case.stride, case.padding))
