"""Channels-last memory format: every layer that reads it gives the numbers of the contiguous path,
and its gradients pass the central-difference check with inputs stored channels last."""
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from conftest import UseBackend, to_backend
from npse import models, nn
from npse.gradcheck import gradcheck, relative_error
from npse.nn.batchnorm2d import ChannelsLastRows, channel_view
from npse.nn.im2col import col2im_channels_last, im2col, im2col_channels_last
from npse.nn import conv2d
from npse.nn.layout import from_nhwc, is_channels_last, nhwc, to_channels_last
from npse.nn.workspace import Workspace
from npse.nn.se_block import spatial_dot
from strategies import batch, normal, seeds, window_cases

TOL = 1e-6
spatial = st.integers(1, 6)
wide = st.integers(2, 6)          # at least two channels: with one, both layouts are the same memory


def channels_last_input(rng, shape, backend_name, shift=0.0):
    x = to_channels_last(to_backend(normal(rng, shape) + shift, backend_name))
    assert is_channels_last(x) or shape[1] == 1 or shape[2] * shape[3] == 1
    return x


def assert_same(a, b, tol=1e-12):
    assert (a is None) == (b is None)
    if a is not None:
        assert a.shape == b.shape
        assert relative_error(a, b) <= tol


# --- the memory format itself ---------------------------------------------------------------------
def test_is_channels_last_and_conversions():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    assert not is_channels_last(x)
    y = to_channels_last(x)
    assert is_channels_last(y) and y.shape == x.shape and (y == x).all()
    assert nhwc(y).base is not None and np.shares_memory(nhwc(y), y)        # a view, no copy
    assert (nhwc(x) == x.transpose(0, 2, 3, 1)).all()
    assert not is_channels_last(to_channels_last(x[:, :1]))                # one channel: both at once
    assert not is_channels_last(np.zeros((2, 3, 4)))


# --- convolution ----------------------------------------------------------------------------------
@given(case=window_cases(), out_channels=st.integers(1, 4), bias=st.booleans())
def test_conv2d_channels_last_agrees_with_contiguous(backend_name, case, out_channels, bias):
    """Same y (stored channels last), and the same dx, dW, db for dy stored either way, by the
    input-gradient-as-convolution route and by col2im."""
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(case.seed)
        shape = (case.n, case.c + 1, case.h, case.w)
        x = to_backend(normal(rng, shape), backend_name)
        w = to_backend(normal(rng, (out_channels, case.c + 1) + case.kernel), backend_name)
        b = to_backend(normal(rng, (out_channels,)), backend_name) if bias else None
        y1, cache1 = nn.conv2d_forward(x, w, b, case.stride, case.padding, channels_last=False)
        dy = xp.asarray(normal(rng, y1.shape))
        references = {fast: nn.conv2d_backward(dy, cache1, fast=fast) for fast in (True, False)}
        for max_channels in (16, 0):          # by kernel rows where they apply, and by one product
            with kernel_rows_up_to(max_channels):
                y2, cache2 = nn.conv2d_forward(to_channels_last(x), w, b, case.stride, case.padding,
                                               channels_last=True)
                assert cache2[-1] in ("channels_last", "kernel_rows")
                assert_same(y2, y1)
                assert is_channels_last(y2) or out_channels == 1 or y2.shape[2] * y2.shape[3] == 1
                y3, cache3 = nn.conv2d_forward(to_channels_last(x), w, b, case.stride, case.padding,
                                               channels_last=True, for_backward=False)
                assert cache3 is None
                assert_same(y3, y1)
                for fast in (True, False):
                    for dy_stored in (dy, to_channels_last(dy)):
                        for a, r in zip(nn.conv2d_backward(dy_stored, cache2, fast=fast), references[fast]):
                            assert_same(a, r)


@contextmanager
def kernel_rows_up_to(channels):
    """Temporarily sets the channel limit of :func:`~npse.nn.conv2d.uses_kernel_rows`."""
    kept = conv2d.KERNEL_ROWS_MAX_CHANNELS
    conv2d.KERNEL_ROWS_MAX_CHANNELS = channels
    try:
        yield
    finally:
        conv2d.KERNEL_ROWS_MAX_CHANNELS = kept


@given(case=window_cases(max_stride=1), out_channels=st.integers(1, 4), bias=st.booleans())
def test_conv2d_by_kernel_rows_equals_one_product(case, out_channels, bias):
    """NumPy only, as the layer uses it: the KH products over kernel-column patches give the
    patch-row product's y, dx, dW and db, whatever KERNEL_ROWS_MAX_CHANNELS says for dx."""
    rng = np.random.default_rng(case.seed)
    c = case.c + 1
    x = to_channels_last(normal(rng, (case.n, c, case.h, case.w)))
    w = normal(rng, (out_channels, c) + case.kernel)
    b = normal(rng, (out_channels,)) if bias else None
    with kernel_rows_up_to(0):
        reference, cache1 = nn.conv2d_forward(x, w, b, 1, case.padding, channels_last=True)
        dy = normal(rng, reference.shape)
        grads1 = nn.conv2d_backward(dy, cache1)
    workspace = Workspace()
    with kernel_rows_up_to(16):
        for repeat in range(2):            # the second time, the workspace's buffers are reused
            y, cache2 = nn.conv2d_forward(x, w, b, 1, case.padding, workspace=workspace,
                                          channels_last=True)
            assert cache2[-1] == "kernel_rows"
            assert_same(y, reference)
            for a, r in zip(nn.conv2d_backward(dy, cache2), grads1):
                assert_same(a, r)
        patches = conv2d.kernel_row_patches(nhwc(x), case.kernel[1], case.padding)
        assert_same(from_nhwc(conv2d.conv2d_by_kernel_rows(patches, w, reference.shape[2:])),
                    reference - (0 if b is None else b.reshape(1, -1, 1, 1)))


def test_kernel_rows_are_used_only_where_they_measured_faster():
    assert conv2d.uses_kernel_rows(np, 16, (1, 1)) and conv2d.uses_kernel_rows(np, 3, (1, 1))
    assert not conv2d.uses_kernel_rows(np, 32, (1, 1)) and not conv2d.uses_kernel_rows(np, 16, (2, 1))


@given(case=window_cases(), out_channels=st.integers(1, 4), bias=st.booleans())
def test_conv2d_gradients_channels_last(backend_name, case, out_channels, bias):
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        conv = nn.Conv2d(case.c + 1, out_channels, case.kernel, case.stride, case.padding, bias=bias,
                         dtype="float64", rng=rng)
        x = channels_last_input(rng, (case.n, case.c + 1, case.h, case.w), backend_name)
        result = gradcheck(conv, x, seed=case.seed)
        assert result.max_error <= TOL, result.errors


@given(case=window_cases())
def test_im2col_channels_last_holds_the_same_patches(backend_name, case):
    """Row (n, oy, ox), column (ky, kx, c) of the channels-last matrix is column (n, oy, ox),
    row (c, ky, kx) of the contiguous one."""
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        (kh, kw), c = case.kernel, case.c
        rows = im2col_channels_last(nhwc(x), case.kernel, case.stride, case.padding)
        cols = im2col(x, case.kernel, case.stride, case.padding)
        permuted = cols.reshape(c, kh, kw, -1).transpose(3, 1, 2, 0).reshape(rows.shape)
        assert (rows == permuted).all()


@given(case=window_cases())
def test_col2im_channels_last_is_the_adjoint_of_im2col_channels_last(backend_name, case):
    """<im2col(x), r> == <x, col2im(r)> for all x and r."""
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(case.seed)
        x = to_backend(normal(rng, (case.n, case.h, case.w, case.c)), backend_name)
        rows = im2col_channels_last(x, case.kernel, case.stride, case.padding)
        r = xp.asarray(normal(rng, rows.shape))
        back = col2im_channels_last(r, (case.n, case.c, case.h, case.w), case.kernel, case.stride,
                                    case.padding)
        assert back.shape == x.shape
        lhs, rhs = float((rows * r).sum()), float((x * back).sum())
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


# --- batch normalisation --------------------------------------------------------------------------
@given(n=batch, c=wide, h=spatial, w=spatial, seed=seeds, training=st.booleans(),
       dy_channels_last=st.booleans())
def test_batchnorm2d_channels_last_agrees_with_contiguous(backend_name, n, c, h, w, seed, training,
                                                         dy_channels_last):
    # Training needs two values per channel, and with exactly two dx is a rounding residue
    # (xhat = +-1 whatever x is; see test_batchnorm2d_gradients), whose digits depend on the order
    # of the sums: comparing two of them to 1e-12 would test rounding, not the formulas.
    assume(not training or n * h * w >= 3)
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(seed)
        x = to_backend(normal(rng, (n, c, h, w)) * 2 + 1, backend_name)
        dy = xp.asarray(normal(rng, x.shape))
        results = []
        for stored in (x, to_channels_last(x)):
            bn = nn.BatchNorm2d(c, dtype="float64")
            bn.weight.data[...] = xp.asarray(np.linspace(0.5, 2.0, c))
            bn.bias.data[...] = xp.asarray(np.linspace(-1.0, 1.0, c))
            bn.train(training)
            y = bn(stored)
            assert is_channels_last(y) == is_channels_last(stored)
            dx = bn.backward(to_channels_last(dy) if dy_channels_last else dy)
            with nn.no_grad():
                y_no_grad = bn(stored)
            results.append((y, dx, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var,
                            y_no_grad))
        for a, b in zip(*results):
            assert_same(a, b)


@given(n=batch, c=wide, h=spatial, w=spatial, seed=seeds)
def test_channels_last_rows_sum_and_dot_equal_the_plain_sums(n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    a, b = to_channels_last(normal(rng, (n, c, h, w))), to_channels_last(normal(rng, (n, c, h, w)))
    view = channel_view(a)
    assert isinstance(view, ChannelsLastRows) or h * w == 1
    assert np.allclose(view.sum(view.matrix(a)), a.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    assert np.allclose(view.dot(view.matrix(a), view.matrix(b)), (a * b).sum(axis=(0, 2, 3)),
                       rtol=1e-12, atol=1e-12)
    assert (view.array(view.matrix(a)) == a).all()


# --- SE block, pooling, ShortcutA -----------------------------------------------------------------
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


@given(n=batch, c=wide, h=spatial, w=spatial, seed=seeds)
def test_se_block_and_global_pool_channels_last_agree_with_contiguous(backend_name, n, c, h, w, seed):
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(seed)
        x = to_backend(normal(rng, (n, c, h, w)), backend_name)
        dy = xp.asarray(normal(rng, x.shape))
        assert_same(spatial_dot(to_channels_last(x), to_channels_last(dy)), spatial_dot(x, dy))
        outputs = []
        for stored in (x, to_channels_last(x)):
            se = nn.SEBlock(c, 2, dtype="float64", rng=seed % 1000)
            pool = nn.GlobalAvgPool2d(dtype="float64")
            y, z = se(stored), pool(stored)
            dz = xp.asarray(np.linspace(-1, 1, n * c).reshape(n, c))
            outputs.append((y, se.backward(dy), se.fc1.weight.grad, se.fc2.weight.grad, z,
                            pool.backward(dz)))
            assert is_channels_last(outputs[-1][5]) == is_channels_last(stored)
        for a, b in zip(*outputs):
            assert_same(a, b)


@given(n=batch, h=spatial, w=spatial, stride=st.integers(1, 2), seed=seeds)
def test_global_avgpool_gradients_channels_last(backend_name, n, h, w, stride, seed):
    with UseBackend(backend_name):
        rng = np.random.default_rng(seed)
        x = channels_last_input(rng, (n, 3, h, w), backend_name)
        result = gradcheck(nn.GlobalAvgPool2d(dtype="float64"), x, seed=seed)
        assert result.max_error <= TOL, result.errors


# --- whole networks -------------------------------------------------------------------------------
@pytest.mark.parametrize("se,shortcut,block,depth", [
    ("standard", "A", "basic", 8), ("pre", "B", "basic", 8), ("nosqueeze", "A", "basic", 8),
    ("3x3", "A", "bottleneck", 11), (None, "B", "bottleneck", 11)])
def test_model_gives_the_same_numbers_in_both_memory_formats(se, shortcut, block, depth):
    """Logits, input gradient, every parameter gradient and the BN statistics: channels last
    (NumPy's default) equals contiguous to rounding."""
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8))
    dlogits = np.random.default_rng(1).standard_normal((3, 10))
    runs = []
    for channels_last in (True, False):
        model = models.cifar_resnet(depth=depth, block=block, se=se, shortcut=shortcut, seed=1,
                                    widths=(4, 8, 8), se_reduction=2, dtype="float64")
        model.channels_last = channels_last
        logits = model(x)
        dx = model.backward(dlogits)
        runs.append([logits, dx] + [p.grad for _, p in model.named_parameters()]
                    + [b for _, b in model.named_buffers()])
    for a, b in zip(*runs):
        assert relative_error(a, b) <= 1e-12


def test_numpy_models_store_activations_channels_last_by_default():
    model = models.cifar_resnet(depth=8, se="standard", widths=(4, 8, 8), dtype="float64")
    x = np.zeros((2, 3, 8, 8))
    assert model.channels_last is None and model.stores_channels_last(x)
    model(x)
    assert is_channels_last(model.layer1[0].se._cache["x"])
    model.channels_last = False
    model(x)
    assert not is_channels_last(model.layer1[0].se._cache["x"])
