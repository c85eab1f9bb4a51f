"""Batch normalisation over (N, H, W) for each channel.  Chapter: docs/08-batchnorm2d.md.

Symbols: x (N, C, H, W), M = N*H*W values per channel, gamma = weight (C,), beta = bias (C,).

training:   mu = mean(x),  var = mean((x - mu)^2)          (biased, per channel)
            xhat = (x - mu) / sqrt(var + eps),   y = gamma * xhat + beta
            running_mean += momentum * (mu - running_mean)
            running_var  += momentum * (var * M / (M - 1) - running_var)     (unbiased, as PyTorch)
backward:   dbeta = sum(dy),  dgamma = sum(dy * xhat)
            dx = gamma / sqrt(var + eps) * (dy - dbeta / M - xhat * dgamma / M)
evaluation: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta, an affine map, so
            dx = dy * gamma / sqrt(running_var + eps) (and the same dgamma, dbeta formulas).
"""
from __future__ import annotations

from ..backend import get_array_module, use_fused
from .layout import from_nhwc, is_channels_last, nhwc
from .module import Module, Parameter, check_array, grad_enabled
from .se_block import spatial_dot


def _as_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _per_channel(v):
    return v.reshape(1, -1, 1, 1)


def channel_sum(a):
    """sum of a (N, C, H, W) over N, H and W -> (C,).

    Written as a matrix-vector product with a vector of ones, (N*C, H*W) @ (H*W,), then a sum
    over N: BLAS streams through memory once and was ~4x faster here than the plain
    ``a.sum(axis=(0, 2, 3))``, which gives the same value (the tests compare them).
    """
    xp = get_array_module(a)
    n, c, h, w = a.shape
    ones = xp.ones(h * w, dtype=a.dtype)
    return (a.reshape(n * c, h * w) @ ones).reshape(n, c).sum(axis=0)


def channel_dot(a, b):
    """sum of a * b (both (N, C, H, W)) over N, H and W -> (C,), without the product array.

    A row-by-row dot product over (N*C, H*W) (:func:`~npse.nn.se_block.spatial_dot`), then a sum
    over N; same value as ``(a * b).sum(axis=(0, 2, 3))``.
    """
    return spatial_dot(a, b).sum(axis=0)


class ContiguousChannels:
    """How BatchNorm's per-channel arithmetic reads a contiguous (N, C, H, W) array: as it is,
    with per-channel vectors shaped (1, C, 1, 1) and sums by :func:`channel_sum`, :func:`channel_dot`."""

    def matrix(self, a):
        return a

    def spread(self, v):
        return _per_channel(v)

    def sum(self, a):
        return channel_sum(a)

    def dot(self, a, b):
        return channel_dot(a, b)

    def array(self, a):
        return a


class ChannelsLastRows:
    """How BatchNorm's per-channel arithmetic reads an array stored channels last
    (:mod:`~npse.nn.layout`): as the (N*H, W*C) matrix of its rows of pixels.

    One matrix row holds W pixels of C channels each, so a per-channel vector repeated W times
    (``spread``) lines up with every row, and a sum down the columns gives W partial sums per
    channel. The plainer (N*H*W, C) matrix gives the same numbers, but NumPy's inner loops would
    then run over only C numbers (16 in a CIFAR ResNet's first stage), which measured slower.
    """

    def __init__(self, shape):
        self.n, self.c, self.h, self.w = shape

    def matrix(self, a):
        return nhwc(a).reshape(self.n * self.h, self.w * self.c)

    def spread(self, v):
        return get_array_module(v).tile(v, self.w)

    def sum(self, m):
        ones = get_array_module(m).ones(m.shape[0], dtype=m.dtype)
        return (ones @ m).reshape(self.w, self.c).sum(axis=0)

    def dot(self, m1, m2):
        return get_array_module(m1).einsum("rk,rk->k", m1, m2).reshape(self.w, self.c).sum(axis=0)

    def array(self, m):
        return from_nhwc(m.reshape(self.n, self.h, self.w, self.c))


def channel_view(x):
    """The view of BatchNorm's arithmetic that suits how ``x`` is stored."""
    return ChannelsLastRows(x.shape) if is_channels_last(x) else ContiguousChannels()


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
                        eps=1e-5):
    """x (N, C, H, W) -> y (N, C, H, W), cache.

    In training the running estimates (C,) are updated in place; in evaluation they are used.
    The cache keeps the centred input x - mu and 1/sqrt(var + eps): xhat is their product, and
    backward needs only sums involving it, so xhat itself is never stored. The arithmetic runs on
    ``view.matrix(x)`` (:func:`channel_view`: x itself, or its pixel rows if x is stored channels
    last), and y is stored as x is.
    """
    xp = get_array_module(x, gamma, beta)
    n, c, h, w = x.shape
    m = n * h * w
    if training and m < 2:
        raise ValueError(f"BatchNorm2d: expected more than 1 value per channel when training, "
                         f"got input of shape {tuple(x.shape)}")
    view = channel_view(x)
    if use_fused(xp) and isinstance(view, ContiguousChannels):
        return batchnorm2d_forward_fused(x, gamma, beta, running_mean, running_var, training,
                                         momentum, eps)
    x = view.matrix(x)
    if training:
        mean = view.sum(x) / m
        centred = x - view.spread(mean)
        var = view.dot(centred, centred) / m                 # biased: the batch's own variance
        running_mean += momentum * (mean - running_mean)
        running_var += momentum * (var * (m / (m - 1)) - running_var)
    else:
        var = running_var
    inv_std = 1.0 / xp.sqrt(var + eps)
    if not training:
        if not grad_enabled():
            # Evaluation without backward: y = x * a + b with the per-channel numbers folded
            # (a = gamma * inv_std, b = beta - running_mean * a): two passes instead of three.
            a = gamma * inv_std
            y = x * view.spread(a)
            y += view.spread(beta - running_mean * a)
            return view.array(y), None
        centred = x - view.spread(running_mean)
    y = centred * view.spread(gamma * inv_std)                # = gamma * xhat
    y += view.spread(beta)
    return view.array(y), (centred, gamma, inv_std, training, view)


def batchnorm2d_backward(dy, cache):
    """dy (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,).

    With xhat = centred * inv_std and scale = gamma * inv_std, the formula of the module docstring,
    dx = scale * (dy - dbeta/M - xhat * dgamma/M), is evaluated as
    dx = scale * dy - (scale * inv_std * dgamma / M) * centred - scale * dbeta / M:
    the same numbers, with the per-channel factors folded so the big arrays are passed over less.
    """
    centred, gamma, inv_std, training, view = cache
    if use_fused(get_array_module(dy)) and isinstance(view, ContiguousChannels):
        return batchnorm2d_backward_fused(dy, cache)
    n, c, h, w = dy.shape
    m = n * h * w
    dy = view.matrix(dy)                                      # read as the forward pass read x
    dbeta = view.sum(dy)
    dgamma = view.dot(dy, centred) * inv_std                  # = sum(dy * xhat)
    scale = gamma * inv_std                                   # (C,)
    dx = dy * view.spread(scale)
    if training:
        dx -= centred * view.spread(scale * inv_std * dgamma / m)
        dx -= view.spread(scale * dbeta / m)
    return view.array(dx), dgamma, dbeta


# ----------------------------------------------------------------------------- fused (GPU)
# On the GPU a training step is launch-bound (docs/12-speed.md): written as array expressions,
# one BatchNorm layer launches about twenty small kernels forward and as many backward. The two
# functions below compute the same numbers in six or seven launches each way, with CuPy kernels
# whose bodies are the formulas of the module docstring. They run only on CuPy (``backend.use_fused``)
# and on contiguous arrays; the plain functions above are their reference, and tests/test_gpu.py
# compares the two.

_KERNELS: dict = {}


def _kernel(name):
    if not _KERNELS:
        import cupy as cp
        _KERNELS.update(
            # Sums along the last (contiguous) axis: one GPU block per row. (Reducing over N, H
            # and W in one kernel gives only C blocks, which measured slower than the plain code.)
            row_sum=cp.ReductionKernel("T x", "T out", "x", "a + b", "out = a", "0", "npse_row_sum"),
            row_product_sum=cp.ReductionKernel("T u, T v", "T out", "u * v", "a + b", "out = a", "0",
                                               "npse_row_product_sum"),
            # per channel (C,): batch statistics, running estimates (updated in place), factors
            statistics=cp.ElementwiseKernel(
                "T s, T ss, T gamma, T inv_m, T bessel, T momentum, T eps",
                "T mean, T inv_std, T scale, T running_mean, T running_var",
                "mean = s * inv_m; T var = ss * inv_m; inv_std = 1 / sqrt(var + eps);"
                "scale = gamma * inv_std;"
                "running_mean += momentum * (mean - running_mean);"
                "running_var += momentum * (var * bessel - running_var);",
                "npse_bn_statistics"),
            # (N, C, H, W) with per-channel (1, C, 1, 1) factors
            centre=cp.ElementwiseKernel("T x, T s, T inv_m", "T centred", "centred = x - s * inv_m",
                                        "npse_bn_centre"),
            scale_shift=cp.ElementwiseKernel("T centred, T scale, T beta", "T y",
                                             "y = centred * scale + beta", "npse_bn_scale_shift"),
            evaluate=cp.ElementwiseKernel(
                "T x, T running_mean, T running_var, T gamma, T beta, T eps", "T y",
                "y = (x - running_mean) * (gamma / sqrt(running_var + eps)) + beta",
                "npse_bn_evaluate"),
            backward_factors=cp.ElementwiseKernel(
                "T sum_dy, T sum_dy_c, T gamma, T inv_std, T inv_m, T train",
                "T dgamma, T scale, T k1, T k0",
                "dgamma = sum_dy_c * inv_std; scale = gamma * inv_std;"
                "k1 = train * scale * inv_std * dgamma * inv_m; k0 = train * scale * sum_dy * inv_m;",
                "npse_bn_backward_factors"),
            input_grad=cp.ElementwiseKernel(
                "T dy, T centred, T scale, T k1, T k0", "T dx",
                "dx = dy * scale - centred * k1 - k0", "npse_bn_input_grad"),
        )
    return _KERNELS[name]


def _channel_reduce(name, *arrays):
    """sum over N, H, W with the row kernel ``name``: per (n, c) row of H*W, then over N -> (C,)."""
    n, c, h, w = arrays[0].shape
    rows = _kernel(name)(*(a.reshape(n, c, h * w) for a in arrays), axis=2)   # (N, C)
    return rows.sum(axis=0)


def batchnorm2d_forward_fused(x, gamma, beta, running_mean, running_var, training=True,
                              momentum=0.1, eps=1e-5):
    """:func:`batchnorm2d_forward` in fused CuPy kernels (same arguments, results and cache)."""
    import cupy as cp
    n, c, h, w = x.shape
    m = n * h * w
    t = x.dtype.type
    if training:
        s = _channel_reduce("row_sum", x)
        centred = _kernel("centre")(x, _per_channel(s), t(1.0 / m))
        ss = _channel_reduce("row_product_sum", centred, centred)
        mean, inv_std, scale = (cp.empty(c, dtype=x.dtype) for _ in range(3))
        _kernel("statistics")(s, ss, gamma, t(1.0 / m), t(m / (m - 1)), t(momentum), t(eps),
                              mean, inv_std, scale, running_mean, running_var)
    else:
        if not grad_enabled():
            y = _kernel("evaluate")(x, _per_channel(running_mean), _per_channel(running_var),
                                    _per_channel(gamma), _per_channel(beta), t(eps))
            return y, None
        centred = x - _per_channel(running_mean)
        inv_std = 1.0 / cp.sqrt(running_var + eps)
        scale = gamma * inv_std
    y = _kernel("scale_shift")(centred, _per_channel(scale), _per_channel(beta))
    return y, (centred, gamma, inv_std, training, ContiguousChannels())


def batchnorm2d_backward_fused(dy, cache):
    """:func:`batchnorm2d_backward` in fused CuPy kernels (same arguments and results)."""
    centred, gamma, inv_std, training, _ = cache
    n, c, h, w = dy.shape
    t = dy.dtype.type
    dbeta = _channel_reduce("row_sum", dy)
    sum_dy_c = _channel_reduce("row_product_sum", dy, centred)
    # dx = scale * dy - k1 * (x - mu) - k0, the factors of chapter 12 (zero in evaluation mode)
    dgamma, scale, k1, k0 = _kernel("backward_factors")(
        dbeta, sum_dy_c, gamma, inv_std, t(1.0 / (n * h * w)), t(1.0 if training else 0.0))
    dx = _kernel("input_grad")(dy, centred, _per_channel(scale), _per_channel(k1),
                               _per_channel(k0))
    return dx, dgamma, dbeta


class BatchNorm2d(Module):
    """``torch.nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1)``: (N, C, H, W) -> same.

    Parameters ``weight`` (gamma, ones) and ``bias`` (beta, zeros); buffers ``running_mean``
    (zeros), ``running_var`` (ones) and ``num_batches_tracked`` (as PyTorch, for exchange).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=None):
        super().__init__(dtype=dtype)
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"BatchNorm2d: num_features must be a positive int, got {num_features!r}")
        if momentum is None or not 0 <= float(momentum) <= 1:
            raise ValueError(f"BatchNorm2d: momentum must be a number in [0, 1] (a cumulative "
                             f"average, PyTorch's momentum=None, is not supported), got {momentum!r}")
        if isinstance(eps, (bool, str)) or not 0 < _as_float(eps) < float("inf"):
            raise ValueError(f"BatchNorm2d: eps must be a finite number > 0 (it keeps "
                             f"1/sqrt(var + eps) finite), got {eps!r}")
        xp = get_array_module()
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        self.weight = Parameter(xp.ones(num_features, dtype=self.dtype))
        self.bias = Parameter(xp.zeros(num_features, dtype=self.dtype))
        self.register_buffer("running_mean", xp.zeros(num_features, dtype=self.dtype))
        self.register_buffer("running_var", xp.ones(num_features, dtype=self.dtype))
        self.register_buffer("num_batches_tracked", xp.zeros((), dtype="int64"))

    def forward(self, x):
        self._check_input(x, 4, self.num_features)
        y, cache = batchnorm2d_forward(x, self.weight.data, self.bias.data, self.running_mean,
                                       self.running_var, self.training, self.momentum, self.eps)
        if self.training:
            self.num_batches_tracked += 1
        self._save(cache)
        return y

    def backward(self, dy):
        check_array(dy, "BatchNorm2d.backward", 4, self.dtype, self.num_features, what="dy")
        dx, dgamma, dbeta = batchnorm2d_backward(dy, self._take_cache())
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
