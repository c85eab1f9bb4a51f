"""Faster formulations of :func:`npse.nn.batchnorm2d.batchnorm2d_forward` / ``_backward``.

The same numbers as the reference, computed with fewer passes over the big arrays:

* the per-channel sums as matrix products: ``(N*C, H*W) @ ones`` then a sum over N
  (:func:`channel_sum`), and row-wise dot products for sums of products (:func:`channel_dot`):
  no product array is made, and BLAS streams the data once;
* an input stored channels last is read as the (N*H, W*C) matrix of its pixel rows
  (:class:`ChannelsLastRows`), so nothing is transposed;
* the cache keeps x - mu and 1/sqrt(var + eps), never xhat; backward is
  dx = s*dy - k1*(x - mu) - k0 with per-channel factors s, k1, k0 folded first;
* in evaluation without a backward (``keep=False``) y = x*a + b with a, b folded per channel;
* on CuPy (``policy.fused``) the fused kernels of npse/fast/fused.py, about seven launches each
  way instead of twenty.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..nn import BatchNorm2d
from ..nn.batchnorm2d import per_channel, check_batch
from .layout import from_nhwc, is_channels_last, nhwc
from . import fused
from .reductions import channel_dot, channel_sum
from .registry import register
from .threads import combine, in_slices


class ContiguousChannels:
    """How the per-channel arithmetic reads a contiguous (N, C, H, W) array: as it is, with
    per-channel vectors shaped (1, C, 1, 1) and sums by :func:`channel_sum`, :func:`channel_dot`."""

    def matrix(self, a):
        return a

    def spread(self, v):
        return per_channel(v)

    def sum(self, a):
        return channel_sum(a)

    def dot(self, a, b):
        return channel_dot(a, b)

    def array(self, a):
        return a


class ChannelsLastRows:
    """How the per-channel arithmetic reads an array stored channels last: as the (N*H, W*C)
    matrix of its rows of pixels.

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
    """The view of the arithmetic that suits how ``x`` is stored."""
    return ChannelsLastRows(x.shape) if is_channels_last(x) else ContiguousChannels()


class BatchNorm2dFormulations:
    """BatchNorm under ``policy``: the fused kernels on CuPy for contiguous arrays where the
    policy allows them, the folded array expressions on a :func:`channel_view` otherwise."""

    def __init__(self, policy, shared=None):
        self.policy = policy

    def forward(self, x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
                eps=1e-5, keep=True):
        """:func:`npse.nn.batchnorm2d.batchnorm2d_forward`; ``keep=False``: no backward follows."""
        xp = get_array_module(x, gamma, beta)
        check_batch(x, training)
        n, c, h, w = x.shape
        m = n * h * w
        view = channel_view(x)
        if self.policy.uses_fused(xp) and isinstance(view, ContiguousChannels):
            return fused.batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training,
                                             momentum, eps, keep)
        x = view.matrix(x)
        rows = x.shape[0]                  # threads take slices of rows (npse/fast/threads.py)
        if training:
            mean = combine(in_slices(lambda s: view.sum(x[s]), rows, xp)) / m
            centred = _minus(x, view.spread(mean), rows, xp)
            var = combine(in_slices(lambda s: view.dot(centred[s], centred[s]), rows, xp)) / m
            running_mean += momentum * (mean - running_mean)     # var: the batch's own (biased)
            running_var += momentum * (var * (m / (m - 1)) - running_var)
        else:
            var = running_var
        inv_std = 1.0 / xp.sqrt(var + eps)
        if not training:
            if not keep:
                # no backward follows: y = x * a + b with a = gamma * inv_std and
                # b = beta - running_mean * a, two passes instead of three
                a = gamma * inv_std
                return view.array(_affine(x, view.spread(a), view.spread(beta - running_mean * a),
                                          rows, xp)), None
            centred = _minus(x, view.spread(running_mean), rows, xp)
        y = _affine(centred, view.spread(gamma * inv_std), view.spread(beta), rows, xp)  # gamma*xhat + beta
        return view.array(y), (centred, gamma, inv_std, training, view)

    def backward(self, dy, cache):
        """:func:`npse.nn.batchnorm2d.batchnorm2d_backward` for a cache of :meth:`forward`.

        With xhat = centred * inv_std and scale = gamma * inv_std, the reference's
        dx = scale * (dy - dbeta/M - xhat * dgamma/M) is evaluated as
        dx = scale * dy - (scale * inv_std * dgamma / M) * centred - scale * dbeta / M.
        """
        centred, gamma, inv_std, training, view = cache
        if view is None:
            return fused.batchnorm2d_backward(dy, cache)
        n, c, h, w = dy.shape
        m = n * h * w
        xp = get_array_module(dy)
        dy = view.matrix(dy)                                  # read as the forward pass read x
        rows = dy.shape[0]
        sums = in_slices(lambda s: (view.sum(dy[s]), view.dot(dy[s], centred[s])), rows, xp)
        dbeta = combine([p[0] for p in sums])
        dgamma = combine([p[1] for p in sums]) * inv_std      # = sum(dy * xhat)
        scale = gamma * inv_std                               # (C,)
        s_scale = view.spread(scale)
        if not training:
            return view.array(_affine(dy, s_scale, None, rows, xp)), dgamma, dbeta
        k1, k0 = view.spread(scale * inv_std * dgamma / m), view.spread(scale * dbeta / m)
        dx = xp.empty_like(dy)

        def slice_dx(s):
            xp.multiply(dy[s], s_scale, out=dx[s])
            dx[s] -= centred[s] * k1
            dx[s] -= k0
        in_slices(slice_dx, rows, xp)
        return view.array(dx), dgamma, dbeta


def _minus(a, v, rows, xp):
    """a - v (v: a spread per-channel vector), by slices of rows."""
    out = xp.empty_like(a)
    in_slices(lambda s: xp.subtract(a[s], v, out=out[s]), rows, xp)
    return out


def _affine(a, scale, shift, rows, xp):
    """a * scale + shift (spread per-channel vectors; ``shift`` None: a * scale), by slices of rows."""
    out = xp.empty_like(a)

    def slice_affine(s):
        xp.multiply(a[s], scale, out=out[s])
        if shift is not None:
            out[s] += shift
    in_slices(slice_affine, rows, xp)
    return out


register(BatchNorm2d, "chosen by the policy", BatchNorm2dFormulations, chosen=True)
register(BatchNorm2d, "array expressions on a channel view",
         lambda policy, shared: BatchNorm2dFormulations(policy.replace(fused=False)))
register(BatchNorm2d, "fused CuPy kernels", BatchNorm2dFormulations, backends=("cupy",),
         module=fused.__name__)
