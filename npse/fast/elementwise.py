"""Element-wise work by slices of the batch across the threads of npse/fast/threads.py: a
formulation of :func:`npse.nn.activations.relu_forward` / ``relu_backward``, and the residual
sum of a ResNet block (:func:`add`). The same numbers, written into arrays stored as the input
is; with one thread, the reference's arithmetic."""
from __future__ import annotations

from ..backend import get_array_module
from ..nn import ReLU
from ..nn.activations import relu_backward, relu_forward
from .registry import ELEMENTWISE, charge, register
from .threads import in_slices


class ReLUFormulation:
    """ReLU by slices of the first axis; ``keep=False`` (no backward follows) makes no mask."""

    def __init__(self, policy=None, shared=None):
        pass

    def forward(self, x, keep=True):
        xp = get_array_module(x)
        if x.ndim == 0:
            y, mask = relu_forward(x)
            return y, (mask if keep else None)
        y = xp.empty_like(x)
        mask = xp.empty_like(x, dtype=bool) if keep else None

        def slice_relu(s):
            if keep:
                xp.greater(x[s], 0, out=mask[s])
            xp.maximum(x[s], 0, out=y[s])
        in_slices(slice_relu, x.shape[0], xp)
        return y, mask

    def backward(self, dy, mask):
        xp = get_array_module(dy)
        if dy.ndim == 0:
            return relu_backward(dy, mask)
        dx = xp.empty_like(dy)
        in_slices(lambda s: xp.multiply(dy[s], mask[s], out=dx[s]), dy.shape[0], xp)
        return dx


def add(a, b):
    """a + b of two arrays of one shape (a ResNet block's F(x) + S(x), and the sum of its two
    input gradients), by slices of the first axis, stored as ``a`` is."""
    xp = get_array_module(a, b)
    if a.shape != b.shape or a.ndim == 0:
        return a + b
    out = xp.empty_like(a, dtype=xp.result_type(a, b))
    in_slices(lambda s: xp.add(a[s], b[s], out=out[s]), a.shape[0], xp)
    return out


charge(__name__, ELEMENTWISE)
register(ReLU, "by slices of the batch", ReLUFormulation, chosen=True)
