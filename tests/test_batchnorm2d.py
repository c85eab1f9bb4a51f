"""BatchNorm2d: gradients in training and evaluation, PyTorch's statistics, properties, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import UseBackend, to_backend
from npse import nn
from npse.gradcheck import gradcheck, relative_error
from npse.fast.layout import to_channels_last
from strategies import batch, channels, normal, seeds

TOL = 1e-6
spatial = st.integers(1, 6)


@given(n=batch, c=channels, h=spatial, w=spatial, seed=seeds, training=st.booleans(),
       channels_last=st.booleans())
def test_batchnorm2d_gradients(backend_name, n, c, h, w, seed, training, channels_last):
    """The reference, on inputs in both memory formats (npse.nn.layout); the faster formulations
    are compared with it in tests/test_formulations.py."""
    if training and n * h * w < 3:
        # One value per channel is an error in training. With two, xhat = +-1 whatever x is, so
        # dL/dx is O(eps) and a difference quotient measures rounding, not the derivative: that
        # case is checked on its own below.
        n = 3
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(seed)
        bn = nn.BatchNorm2d(c, dtype="float64")
        bn.weight.data[...] = xp.asarray(normal(rng, (c,)))
        bn.bias.data[...] = xp.asarray(normal(rng, (c,)))
        bn.running_mean[...] = xp.asarray(normal(rng, (c,)))
        bn.running_var[...] = xp.asarray(rng.uniform(0.5, 2.0, c))
        bn.train(training)
        x = to_backend(normal(rng, (n, c, h, w)) * 2 + 1, backend_name)
        x = to_channels_last(x) if channels_last else x
        before = [b.copy() for _, b in bn.named_buffers()]
        result = gradcheck(bn, x, seed=seed)
        assert result.max_error <= TOL, result.errors
        for b0, (_, b1) in zip(before, bn.named_buffers()):   # gradcheck left the statistics alone
            assert (b0 == b1).all()


def test_batchnorm2d_two_values_per_channel_give_a_vanishing_input_gradient():
    bn = nn.BatchNorm2d(2, dtype="float64")
    bn(np.array([[[[1.0]], [[-3.0]]], [[[4.0]], [[5.0]]]]))
    dx = bn.backward(np.array([[[[1.0]], [[2.0]]], [[[-7.0]], [[0.5]]]]))
    # By hand, with d = x1 - x2: y1 = -y2 = d/2 / sqrt(d^2/4 + eps), so
    # dL/dx1 = -dL/dx2 = (dy1 - dy2) * (eps/2) / (d^2/4 + eps)^(3/2): tiny, but exact.
    d = np.array([1.0 - 4.0, -3.0 - 5.0])
    ddy = np.array([1.0 + 7.0, 2.0 - 0.5])
    expected = ddy * (1e-5 / 2) / (d**2 / 4 + 1e-5) ** 1.5
    np.testing.assert_allclose(dx[0, :, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(dx[1, :, 0, 0], -expected, rtol=1e-6)


@given(n=batch, c=channels, h=spatial, w=spatial, seed=seeds)
def test_batchnorm2d_training_output_statistics(n, c, h, w, seed):
    """Per channel: mean(y) = bias and var(y) = weight^2 * var / (var + eps)."""
    if n * h * w < 2:
        n = 2
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm2d(c, eps=1e-3, dtype="float64")
    bn.weight.data[...] = normal(rng, (c,))
    bn.bias.data[...] = normal(rng, (c,))
    x = normal(rng, (n, c, h, w)) * 3 - 1
    y = bn(x)
    var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), bn.bias.data, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), bn.weight.data**2 * var / (var + 1e-3),
                               rtol=1e-9, atol=1e-12)


def test_batchnorm2d_running_statistics_follow_pytorch():
    """Normalise with the biased variance, store the unbiased one; momentum 0.1."""
    rng = np.random.default_rng(0)
    x = normal(rng, (4, 3, 5, 2)) * 2 + 3
    bn = nn.BatchNorm2d(3, dtype="float64")
    bn(x)
    m = 4 * 5 * 2
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * m / (m - 1))
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    y = bn(x)                                    # evaluation: running estimates, no update
    np.testing.assert_allclose(y, (x - bn.running_mean.reshape(1, 3, 1, 1))
                               / np.sqrt(bn.running_var.reshape(1, 3, 1, 1) + 1e-5))
    assert int(bn.num_batches_tracked) == 1


def test_batchnorm2d_eval_backward_is_affine():
    bn = nn.BatchNorm2d(2, dtype="float64").eval()
    bn.running_var[...] = [4.0, 0.25]
    bn.weight.data[...] = [3.0, -1.0]
    bn(np.ones((1, 2, 1, 1)))
    dx = bn.backward(np.ones((1, 2, 1, 1)))
    np.testing.assert_allclose(dx.ravel(), [3 / np.sqrt(4 + 1e-5), -1 / np.sqrt(0.25 + 1e-5)])


def test_batchnorm2d_float32_agrees_with_float64():
    x = normal(np.random.default_rng(3), (4, 3, 6, 6)) * 5
    y64 = nn.BatchNorm2d(3, dtype="float64")(x)
    y32 = nn.BatchNorm2d(3)(x.astype(np.float32))
    assert y32.dtype == np.float32 and relative_error(y32, y64) <= 1e-5


def test_batchnorm2d_errors():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected more than 1 value per channel when training, got input of shape \(1, 3, 1, 1\)"):
        bn(np.zeros((1, 3, 1, 1), np.float32))
    bn.eval()
    assert bn(np.zeros((1, 3, 1, 1), np.float32)).shape == (1, 3, 1, 1)   # fine in evaluation
    with pytest.raises(ValueError, match=r"BatchNorm2d: input has 4 channels .* expected 3"):
        bn(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d: num_features must be a positive int"):
        nn.BatchNorm2d(0)


def test_batchnorm2d_eval_without_grad_equals_eval_with_grad():
    """Under no_grad (nothing kept for a backward) the output is the same."""
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm2d(3, dtype="float64")
    bn.running_mean[...] = normal(rng, (3,))
    bn.running_var[...] = rng.uniform(0.5, 2, 3)
    bn.weight.data[...] = normal(rng, (3,))
    bn.eval()
    x = normal(rng, (2, 3, 4, 5))
    y = bn(x)
    with nn.no_grad():
        np.testing.assert_allclose(bn(x), y, rtol=1e-12, atol=1e-12)
    relu = nn.ReLU(dtype="float64")
    with nn.no_grad():
        np.testing.assert_array_equal(relu(x), np.maximum(x, 0))


@given(c=channels, seed=seeds, momentum=st.sampled_from([0.0, 0.01, 0.1, 0.5, 0.9, 1.0]),
       steps=st.integers(1, 4))
def test_running_statistics_are_a_momentum_weighted_average(c, seed, momentum, steps):
    """PyTorch's convention, over several batches and momenta: momentum weighs the NEW batch,
    running = (1 - momentum) * running + momentum * batch statistic (unbiased variance). A second
    guard beside the fixed-momentum test above: momentum 0.5 alone cannot tell the two apart."""
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm2d(c, momentum=momentum, dtype="float64")
    mean, var = np.zeros(c), np.ones(c)
    for _ in range(steps):
        x = normal(rng, (3, c, 2, 3)) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)
        bn(x)
        m = 3 * 2 * 3
        mean = (1 - momentum) * mean + momentum * x.mean(axis=(0, 2, 3))
        var = (1 - momentum) * var + momentum * x.var(axis=(0, 2, 3)) * m / (m - 1)
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-12, atol=1e-14)
    assert int(bn.num_batches_tracked) == steps
