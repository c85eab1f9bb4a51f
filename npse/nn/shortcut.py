"""He et al.'s parameter-free CIFAR shortcut ("option A").  Chapter: docs/10-se-resnet.md.

Where a residual block changes the shape, the shortcut subsamples by the stride and pads the
channel axis with zeros, split evenly before and after:

    forward:   y[:, B:B+C] = x[:, :, ::s, ::s],  every other channel of y is 0   (B = (C_out - C) // 2)
    backward:  dx[:, :, ::s, ::s] = dy[:, B:B+C],  dx = 0 at every other pixel
"""
from __future__ import annotations

from ..backend import get_array_module
from .module import Module, check_array, float_dtype_of


def shortcut_a_forward(x, out_channels, stride):
    """x (N, C, H, W) -> y (N, out_channels, ceil(H/stride), ceil(W/stride)), cache."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    before = (out_channels - c) // 2
    sub = x[:, :, ::stride, ::stride]
    y = xp.zeros_like(x, shape=(n, out_channels) + sub.shape[2:])    # zeros_like: stored as x is
    y[:, before:before + c] = sub
    return y, (x.shape, before, stride)


def shortcut_a_backward(dy, cache):
    """dy (N, out_channels, OH, OW) -> dx (N, C, H, W)."""
    x_shape, before, stride = cache
    dx = get_array_module(dy).zeros_like(dy, shape=x_shape)
    dx[:, :, ::stride, ::stride] = dy[:, before:before + x_shape[1]]
    return dx


class ShortcutA(Module):
    """(N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride); no parameters, so any
    float32 or float64 input is taken as it is."""

    def __init__(self, in_channels, out_channels, stride, dtype=None):
        super().__init__(dtype=dtype)
        for label, v in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ShortcutA: {label} must be a positive int, got {v!r}")
        if out_channels < in_channels:
            raise ValueError(f"ShortcutA: out_channels ({out_channels}) must be at least "
                             f"in_channels ({in_channels}): it only adds zero channels")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        check_array(x, "ShortcutA", 4, float_dtype_of(x), self.in_channels)
        y, cache = shortcut_a_forward(x, self.out_channels, self.stride)
        self._save(cache)
        return y

    def backward(self, dy):
        check_array(dy, "ShortcutA.backward", 4, float_dtype_of(dy), self.out_channels, what="dy")
        return shortcut_a_backward(dy, self._take_cache())

    def extra_repr(self):
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}"
