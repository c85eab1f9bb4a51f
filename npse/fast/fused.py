"""Fused CuPy kernels for BatchNorm (GPU only).

On the GPU a training step is launch-bound (docs/B-speed.md): written as array expressions, one
BatchNorm layer launches about twenty small kernels forward and as many backward. The functions
below compute the same numbers in six or seven launches each way, with CuPy kernels whose bodies
are the formulas of npse/nn/batchnorm2d.py. They run only on CuPy and on contiguous arrays,
where the execution policy allows them (``policy.fused``); tests/test_formulations.py compares
them with the reference on a GPU.
"""
from __future__ import annotations

from ..nn.batchnorm2d import per_channel

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


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
                        eps=1e-5, keep=True):
    """BatchNorm's forward pass in fused CuPy kernels (x contiguous); the cache is that of
    :class:`~npse.fast.batchnorm2d.BatchNorm2dFormulations` with no view."""
    import cupy as cp
    n, c, h, w = x.shape
    m = n * h * w
    t = x.dtype.type
    if training:
        s = _channel_reduce("row_sum", x)
        centred = _kernel("centre")(x, per_channel(s), t(1.0 / m))
        ss = _channel_reduce("row_product_sum", centred, centred)
        mean, inv_std, scale = (cp.empty(c, dtype=x.dtype) for _ in range(3))
        _kernel("statistics")(s, ss, gamma, t(1.0 / m), t(m / (m - 1)), t(momentum), t(eps),
                              mean, inv_std, scale, running_mean, running_var)
    else:
        if not keep:
            y = _kernel("evaluate")(x, per_channel(running_mean), per_channel(running_var),
                                    per_channel(gamma), per_channel(beta), t(eps))
            return y, None
        centred = x - per_channel(running_mean)
        inv_std = 1.0 / cp.sqrt(running_var + eps)
        scale = gamma * inv_std
    y = _kernel("scale_shift")(centred, per_channel(scale), per_channel(beta))
    return y, (centred, gamma, inv_std, training, None)


def batchnorm2d_backward(dy, cache):
    """BatchNorm's backward pass in fused CuPy kernels, for a cache of :func:`batchnorm2d_forward`."""
    centred, gamma, inv_std, training, _ = cache
    n, c, h, w = dy.shape
    t = dy.dtype.type
    dbeta = _channel_reduce("row_sum", dy)
    sum_dy_c = _channel_reduce("row_product_sum", dy, centred)
    # dx = scale * dy - k1 * (x - mu) - k0, the factors of appendix B (zero in evaluation mode)
    dgamma, scale, k1, k0 = _kernel("backward_factors")(
        dbeta, sum_dy_c, gamma, inv_std, t(1.0 / (n * h * w)), t(1.0 if training else 0.0))
    dx = _kernel("input_grad")(dy, centred, per_channel(scale), per_channel(k1),
                               per_channel(k0))
    return dx, dgamma, dbeta


