"""Conv2d: gradients against central differences, im2col/col2im adjointness, linearity, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import UseBackend, to_backend
from npse import backend, nn
from npse.gradcheck import gradcheck, relative_error
from npse.nn.conv2d import uses_per_image
from npse.nn.im2col import col2im, im2col, im2col_per_image
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


@given(case=window_cases(), out_channels=st.integers(1, 4), bias=st.booleans())
def test_conv2d_gradients_with_one_product_per_image(backend_name, case, out_channels, bias):
    """The per-image layout (chosen by size in real networks) forced on every drawn geometry."""
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        conv = nn.Conv2d(case.c, out_channels, case.kernel, case.stride, case.padding, bias=bias,
                         dtype="float64", rng=rng)
        conv.per_image = True
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        result = gradcheck(conv, x, seed=case.seed)
        assert result.max_error <= TOL, result.errors


@given(case=window_cases(), out_channels=st.integers(1, 4), bias=st.booleans())
def test_per_image_and_batch_wide_products_agree(backend_name, case, out_channels, bias):
    """Same y, and the same dx, dW, db from both caches, by the fast and the plain route."""
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(case.seed)
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        w = to_backend(normal(rng, (out_channels, case.c) + case.kernel), backend_name)
        b = to_backend(normal(rng, (out_channels,)), backend_name) if bias else None
        y1, cache1 = nn.conv2d_forward(x, w, b, case.stride, case.padding, per_image=True)
        y2, cache2 = nn.conv2d_forward(x, w, b, case.stride, case.padding, per_image=False)
        assert cache1[1].ndim == 3 and cache2[1].ndim == 2
        assert relative_error(y1, y2) <= 1e-12
        dy = xp.asarray(normal(rng, y1.shape))
        for fast in (True, False):
            g1 = nn.conv2d_backward(dy, cache1, fast=fast)
            g2 = nn.conv2d_backward(dy, cache2, fast=fast)
            for a, c in zip(g1, g2):
                assert (a is None) == (c is None)
                if a is not None:
                    assert relative_error(a, c) <= 1e-12


@given(case=window_cases())
def test_im2col_per_image_holds_the_same_columns(backend_name, case):
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        flat = backend.to_host(im2col(x, case.kernel, case.stride, case.padding))
        per_image = backend.to_host(im2col_per_image(x, case.kernel, case.stride, case.padding))
        n, k, pixels = per_image.shape
        assert flat.shape == (k, n * pixels)
        assert np.array_equal(per_image.transpose(1, 0, 2).reshape(k, n * pixels), flat)


def test_the_per_image_layout_is_chosen_by_output_size_on_numpy_only():
    class CuPyLike:
        __name__ = "cupy"
    assert uses_per_image(np, (32, 32)) and uses_per_image(np, (16, 16))
    assert not uses_per_image(np, (8, 8)) and not uses_per_image(np, (15, 16))
    assert not uses_per_image(CuPyLike(), (32, 32))


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
    with pytest.raises(ValueError, match=r"Conv2d.backward: dy has 3 channels .* expected 4"):
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


@given(case=window_cases(max_stride=1), out_channels=st.integers(1, 4))
def test_input_gradient_by_convolution_equals_col2im_route(backend_name, case, out_channels):
    """The fast stride-1 route to dx gives the plain col2im result."""
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(case.seed)
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        w = to_backend(normal(rng, (out_channels, case.c) + case.kernel), backend_name)
        y, cache = nn.conv2d_forward(x, w, None, 1, case.padding)
        dy = xp.asarray(normal(rng, y.shape))
        fast = nn.conv2d_backward(dy, cache, fast=True)
        plain = nn.conv2d_backward(dy, cache, fast=False)
        assert relative_error(fast[0], plain[0]) <= 1e-12
        assert relative_error(fast[1], plain[1]) <= 1e-12


def test_workspace_buffers_do_not_leak_into_outputs():
    """Two forward passes through one layer: the first output is not overwritten by the second."""
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 1, 2, 5, 5)).astype(np.float32)
    y1 = conv(x1)
    y1_copy = y1.copy()
    conv(x2)
    assert (y1 == y1_copy).all()


def test_workspaces_stay_bounded():
    """Batches of changing size replace a layer's buffers instead of piling them up, and
    evaluation under no_grad uses the shared buffers, not the layer's own."""
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    rng = np.random.default_rng(0)
    for n in (4, 3, 5, 4):
        y = conv(rng.standard_normal((n, 2, 6, 6)).astype(np.float32))
        conv.backward(np.ones_like(y))
    # float32 cols (18, 4*36) + padded input (4, 2, 8, 8) + product (3, 4*36), all for n = 4
    assert conv.workspace.nbytes() == 4 * (18 * 4 * 36 + 4 * 2 * 8 * 8 + 3 * 4 * 36)
    before = conv.workspace.nbytes()
    with nn.no_grad():
        conv(rng.standard_normal((50, 2, 6, 6)).astype(np.float32))
    assert conv.workspace.nbytes() == before
