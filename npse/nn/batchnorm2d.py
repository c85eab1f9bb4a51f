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

This is the reference, the formulas as written. Faster formulations of the same numbers (pixel
rows of a channels-last input, sums as matrix products, folded factors, fused CuPy kernels) live
in npse/fast/batchnorm2d.py; a model's execution policy sets ``BatchNorm2d.formulation``
(docs/B-speed.md), and tests/test_formulations.py checks each against the functions here.
"""
from __future__ import annotations

from ..backend import get_array_module
from .module import Module, Parameter, check_array, grad_enabled

AXES = (0, 2, 3)          # every axis but the channels'


def _as_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def per_channel(v):
    """(C,) -> (1, C, 1, 1), to broadcast against (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


def check_batch(x, training):
    """Training needs at least two values per channel to have a variance."""
    n, c, h, w = x.shape
    if training and n * h * w < 2:
        raise ValueError(f"BatchNorm2d: expected more than 1 value per channel when training, "
                         f"got input of shape {tuple(x.shape)}")


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
                        eps=1e-5):
    """x (N, C, H, W) -> y (N, C, H, W), cache.

    In training the running estimates (C,) are updated in place; in evaluation they are used.
    """
    xp = get_array_module(x, gamma, beta)
    check_batch(x, training)
    if training:
        m = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(axis=AXES)
        var = x.var(axis=AXES)                               # biased: the batch's own variance
        running_mean += momentum * (mean - running_mean)
        running_var += momentum * (var * (m / (m - 1)) - running_var)
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / xp.sqrt(var + eps)                       # (C,)
    xhat = (x - per_channel(mean)) * per_channel(inv_std)
    y = per_channel(gamma) * xhat + per_channel(beta)
    return y, (xhat, gamma, inv_std, training)


def batchnorm2d_backward(dy, cache):
    """dy (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    xhat, gamma, inv_std, training = cache
    m = dy.shape[0] * dy.shape[2] * dy.shape[3]
    dbeta = dy.sum(axis=AXES)
    dgamma = (dy * xhat).sum(axis=AXES)
    if training:      # mu and var depend on x too: the two terms that subtract their share
        dx = per_channel(gamma * inv_std) * (dy - per_channel(dbeta / m) - xhat * per_channel(dgamma / m))
    else:             # evaluation: an affine map of x
        dx = dy * per_channel(gamma * inv_std)
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
        # A faster formulation of the same pair of functions, set by a model's execution
        # policy (npse.fast); None runs the reference functions above.
        self.formulation = None

    def forward(self, x):
        self._check_input(x, 4, self.num_features)
        args = (x, self.weight.data, self.bias.data, self.running_mean, self.running_var,
                self.training, self.momentum, self.eps)
        route = self.formulation
        if route is None:
            y, cache = batchnorm2d_forward(*args)
        else:
            y, cache = route.forward(*args, keep=grad_enabled())
        if self.training:
            self.num_batches_tracked += 1
        self._save((route, cache))
        return y

    def backward(self, dy):
        check_array(dy, "BatchNorm2d.backward", 4, self.dtype, self.num_features, what="dy")
        route, cache = self._take_cache()
        backward = batchnorm2d_backward if route is None else route.backward
        dx, dgamma, dbeta = backward(dy, cache)
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
