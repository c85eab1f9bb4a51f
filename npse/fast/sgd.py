"""A faster formulation of the SGD update: one fused CuPy kernel per parameter (GPU only).

The plain update of :class:`npse.optim.SGD` is six array expressions per parameter, six kernel
launches on a GPU, where a training step is launch-bound (docs/B-speed.md). Here the same
formula is one ``ElementwiseKernel``: for a parameter p with gradient grad, buffer b (all of
shape S)::

    g = grad + wd * p;   b = momentum * b + g;   p -= lr * (g + momentum * b)  (Nesterov)
                                                  p -= lr * b                   (otherwise)

A buffer that starts at zero gives b = g on the first step, the plain rule's first step. It is
registered against SGD (:func:`~npse.fast.registry.register_update`), so
tests/test_formulations.py holds it to the plain update on a GPU; ``SGD(..., fused=True)``
(the default, and an execution policy's ``fused``) runs it on CuPy when momentum > 0.
"""
from __future__ import annotations

from .. import backend
from .registry import register_update

_KERNELS: dict = {}


def sgd_kernel(nesterov: bool):
    """The CuPy ElementwiseKernel of one momentum-SGD update (built once, on first use):
    inputs grad, lr, mom, wd; p and b updated in place."""
    if nesterov not in _KERNELS:
        import cupy
        last = "p -= lr * (g + mom * b);" if nesterov else "p -= lr * b;"
        _KERNELS[nesterov] = cupy.ElementwiseKernel(
            "T grad, T lr, T mom, T wd", "T p, T b",
            "T g = grad + wd * p; b = mom * b + g; " + last,
            "npse_sgd_nesterov" if nesterov else "npse_sgd_momentum")
    return _KERNELS[nesterov]


class FusedSGDUpdate:
    """SGD's update of one parameter in one CuPy kernel launch."""

    def applies(self, xp, momentum) -> bool:
        """On CuPy, with momentum (without, the plain update is already one expression per step)."""
        return momentum != 0.0 and xp.__name__ == "cupy"

    def update(self, p, grad, buffer, lr, momentum, weight_decay, nesterov):
        """p, grad (S) on CuPy, buffer (S) or None before the first step -> the momentum buffer
        (S, on CuPy); p is updated in place. A buffer on the host (a loaded state) moves over."""
        xp = backend.get_array_module(p, grad)
        if buffer is None or backend.backend_of(buffer) != "cupy":
            buffer = xp.zeros_like(p) if buffer is None else xp.asarray(buffer, dtype=p.dtype)
        t = p.dtype.type
        sgd_kernel(nesterov)(grad, t(lr), t(momentum), t(weight_decay), p, buffer)
        return buffer


register_update("SGD", "fused CuPy kernel", FusedSGDUpdate, backends=("cupy",))
