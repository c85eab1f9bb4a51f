"""Conv2d (the reference of npse/nn/conv2d.py): gradients against central differences, im2col/col2im
adjointness, linearity, errors. Its faster formulations are checked in tests/test_formulations.py."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import UseBackend, to_backend
from npse import backend, nn
from npse.gradcheck import gradcheck, relative_error
from npse.nn.im2col import col2im, im2col
from strategies import normal, seeds, window_cases

TOL = 1e-6


@given(case=window_cases(), out_channels=st.integers(1, 4), bias=st.booleans())
def test_conv2d_gradients(backend_name, case, out_channels, bias):
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        conv = nn.Conv2d(case.c, out_channels, case.kernel, case.stride, case.padding, bias=bias,
                         dtype="float64", rng=rng)
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        result = gradcheck(conv, x, seed=case.seed)
        assert set(result.errors) == {"input", "weight"} | ({"bias"} if bias else set())
        assert result.max_error <= TOL, result.errors


@given(case=window_cases())
def test_col2im_is_the_adjoint_of_im2col(backend_name, case):
    """<im2col(x), c> == <x, col2im(c)> for random x and c."""
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(case.seed)
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        cols = im2col(x, case.kernel, case.stride, case.padding)
        c = xp.asarray(normal(rng, cols.shape))
        lhs = float((cols * c).sum())
        rhs = float((x * col2im(c, x.shape, case.kernel, case.stride, case.padding)).sum())
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@given(case=window_cases(), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_conv2d_without_bias_is_linear_in_input_and_weight(case, a, b):
    rng = np.random.default_rng(case.seed)
    x1, x2 = normal(rng, (2, case.n, case.c, case.h, case.w))
    w1, w2 = normal(rng, (2, 3, case.c) + case.kernel)

    def conv(x, w):
        return nn.conv2d_forward(x, w, None, case.stride, case.padding)[0]

    scale = np.abs(conv(x1, w1)).max() + np.abs(conv(x2, w1)).max() + 1
    np.testing.assert_allclose(conv(a * x1 + b * x2, w1), a * conv(x1, w1) + b * conv(x2, w1),
                               atol=1e-12 * scale * 10)
    np.testing.assert_allclose(conv(x1, a * w1 + b * w2), a * conv(x1, w1) + b * conv(x1, w2),
                               atol=1e-12 * scale * 10)


def test_conv2d_matches_a_direct_loop():
    """The im2col product equals the textbook sum over channels and kernel offsets."""
    rng = np.random.default_rng(1)
    x, w, b = normal(rng, (2, 3, 7, 6)), normal(rng, (4, 3, 3, 2)), normal(rng, (4,))
    stride, pad = (2, 1), (1, 0)
    y, _ = nn.conv2d_forward(x, w, b, stride, pad)
    xp_ = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    oh, ow = (7 + 2 - 3) // 2 + 1, (6 - 2) // 1 + 1
    ref = np.zeros((2, 4, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            patch = xp_[:, :, oy * 2:oy * 2 + 3, ox:ox + 2]
            ref[:, :, oy, ox] = np.einsum("nchw,ochw->no", patch, w) + b
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@given(seed=seeds)
def test_conv2d_float32_agrees_with_float64(seed):
    rng = np.random.default_rng(seed)
    c64 = nn.Conv2d(3, 5, 3, padding=1, dtype="float64", rng=seed)
    c32 = nn.Conv2d(3, 5, 3, padding=1, rng=seed)
    x = normal(rng, (2, 3, 8, 8))
    y64, y32 = c64(x), c32(x.astype(np.float32))
    assert y32.dtype == np.float32
    assert relative_error(y32, y64) <= 1e-5


def test_conv2d_errors_name_the_layer_and_values():
    conv = nn.Conv2d(3, 4, 5)
    with pytest.raises(ValueError, match=r"Conv2d: input must have 4 dimensions, got 3"):
        conv(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: input has 2 channels .* expected 3"):
        conv(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: kernel 5x5 is larger than the padded input 4x4"):
        conv(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(TypeError, match=r"Conv2d: input must be a floating-point array, got dtype int64"):
        conv(np.zeros((1, 3, 8, 8), np.int64))
    with pytest.raises(TypeError, match=r"Conv2d: input must be a floating-point array, got dtype complex"):
        conv(np.zeros((1, 3, 8, 8), np.complex64))
    with pytest.raises(TypeError, match=r"Conv2d: input has dtype float64 but the layer is float32"):
        conv(np.zeros((1, 3, 8, 8), np.float64))
    with pytest.raises(TypeError, match=r"Conv2d: input must be a NumPy or CuPy array, got list"):
        conv([[1.0]])
    with pytest.raises(ValueError, match=r"Conv2d: in_channels must be a positive int, got 0"):
        nn.Conv2d(0, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size and stride must be >= 1"):
        nn.Conv2d(1, 4, 3, stride=0)
    with pytest.raises(ValueError, match=r"Conv2d.backward: dy has shape \(1, 3, 4, 4\) .* forward pass produced shape \(1, 4, 4, 4\)"):
        conv.eval()
        conv(np.zeros((1, 3, 8, 8), np.float32))
        conv.backward(np.zeros((1, 3, 4, 4), np.float32))


def test_conv2d_default_init_is_pytorchs():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    conv = nn.Conv2d(16, 32, 3, rng=0)
    bound = 1 / np.sqrt(16 * 9)
    for p in (conv.weight.data, conv.bias.data):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.9 * bound
    assert conv.weight.shape == (32, 16, 3, 3)
    assert backend.get_array_module(conv.weight.data) is np
