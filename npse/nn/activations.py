"""Element-wise activations: ReLU, Sigmoid, Tanh.  Chapter: docs/04-activations.md.

Each backward returns a new array: ``dy`` is never modified in place, because in a residual network
the same ``dy`` also flows down the shortcut.
"""
from __future__ import annotations

from ..backend import get_array_module
from .module import Module, check_array, float_dtype_of, grad_enabled


def relu_forward(x):
    """y = max(x, 0); the cache is the mask x > 0."""
    xp = get_array_module(x)
    mask = x > 0
    return xp.maximum(x, 0, dtype=x.dtype), mask


def relu_backward(dy, mask):
    """dx = dy where x > 0, else 0 (the derivative at exactly 0 is taken as 0, as PyTorch)."""
    return dy * mask


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), computed as 0.5 * (1 + tanh(x / 2)): no overflow for large |x|.

    The cache is y itself (the derivative needs only y), so y must not be changed in place
    before backward, as with PyTorch's saved outputs."""
    xp = get_array_module(x)
    y = xp.tanh(x * 0.5)
    y += 1
    y *= 0.5
    return y, y


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y)."""
    return dy * (y * (1 - y))


def tanh_forward(x):
    """y = tanh(x)."""
    y = get_array_module(x).tanh(x)
    return y, y


def tanh_backward(dy, y):
    """dx = dy * (1 - y^2)."""
    return dy * (1 - y * y)


class _Elementwise(Module):
    """Any shape, float32 or float64 (the input's dtype, whatever the layer's ``dtype``)."""
    _forward = _backward = None

    def forward(self, x):
        check_array(x, type(self).__name__, x.ndim if hasattr(x, "ndim") else -1, float_dtype_of(x))
        y, cache = type(self)._forward(x)
        self._save(cache)
        return y

    def backward(self, dy):
        check_array(dy, f"{type(self).__name__}.backward", dy.ndim if hasattr(dy, "ndim") else -1,
                    float_dtype_of(dy), what="dy")
        return type(self)._backward(dy, self._take_cache())


class ReLU(_Elementwise):
    """max(x, 0), any shape.

    ``formulation``: a faster pair of the same functions set by a model's execution policy
    (npse.fast), or None: the functions above."""
    _forward, _backward = staticmethod(relu_forward), staticmethod(relu_backward)

    def __init__(self, dtype=None):
        super().__init__(dtype=dtype)
        self.formulation = None

    def forward(self, x):
        route = self.formulation
        if route is None and grad_enabled():
            return super().forward(x)
        check_array(x, "ReLU", x.ndim if hasattr(x, "ndim") else -1, float_dtype_of(x))
        if route is None:
            return get_array_module(x).maximum(x, 0, dtype=x.dtype)   # no mask needed: no backward
        y, mask = route.forward(x, keep=grad_enabled())
        if mask is not None:
            self._save(mask)
        return y

    def backward(self, dy):
        if self.formulation is None:
            return super().backward(dy)
        check_array(dy, "ReLU.backward", dy.ndim if hasattr(dy, "ndim") else -1,
                    float_dtype_of(dy), what="dy")
        return self.formulation.backward(dy, self._take_cache())

    def kink_signature(self):
        """The mask x > 0 of the last forward; a gradcheck step that changes it crossed a kink."""
        return self._cache


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), any shape, stable for large |x|."""
    _forward, _backward = staticmethod(sigmoid_forward), staticmethod(sigmoid_backward)


class Tanh(_Elementwise):
    """tanh(x), any shape."""
    _forward, _backward = staticmethod(tanh_forward), staticmethod(tanh_backward)
