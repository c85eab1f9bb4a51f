"""Fully-connected layer.  Chapter: docs/03-linear.md.

Symbols: x (N, I), weight W (O, I) (PyTorch's layout), bias b (O,), y (N, O).

    forward:   y = x @ W^T + b
    backward:  dx = dy @ W,   dW = dy^T @ x,   db = sum over the batch of dy
"""
from __future__ import annotations

from ..backend import get_array_module
from . import init
from .module import Module, Parameter, check_array


def linear_forward(x, weight, bias=None):
    """x (N, I), weight (O, I), bias (O,) or None -> y (N, O), cache."""
    get_array_module(x, weight, bias)  # refuses mixed NumPy / CuPy arrays
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


def linear_backward(dy, cache):
    """dy (N, O) -> dx (N, I), dweight (O, I), dbias (O,) or None."""
    x, weight, has_bias = cache
    dx = dy @ weight
    dweight = dy.T @ x
    dbias = dy.sum(axis=0) if has_bias else None
    return dx, dweight, dbias


class Linear(Module):
    """``torch.nn.Linear(in_features, out_features, bias=True)``: (N, in) -> (N, out)."""

    def __init__(self, in_features, out_features, bias=True, dtype=None, rng=None):
        super().__init__(dtype=dtype)
        for label, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Linear: {label} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        rng = init.as_rng(rng)
        self.weight = Parameter(init.pytorch_default_weight((out_features, in_features), rng, self.dtype))
        self.bias = Parameter(init.pytorch_default_bias(out_features, in_features, rng, self.dtype)) if bias else None

    def forward(self, x):
        self._check_input(x, 2, self.in_features, what="input (N, in_features)")
        y, cache = linear_forward(x, self.weight.data, self.bias.data if self.bias else None)
        self._save(cache)
        return y

    def backward(self, dy):
        check_array(dy, "Linear.backward", 2, self.dtype, self.out_features, what="dy")
        dx, dweight, dbias = linear_backward(dy, self._take_cache())
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
