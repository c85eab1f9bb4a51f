"""2-D convolution (cross-correlation, as in every deep-learning library) by im2col.

Chapter: docs/06-conv2d.md.  Symbols: x (N, C, H, W), weight W (O, C, KH, KW), bias b (O,),
y (N, O, OH, OW), cols X (C*KH*KW, N*OH*OW).

    forward:   Y2 = W2 @ X + b            with W2 = W.reshape(O, C*KH*KW), Y2 = y as (O, N*OH*OW)
    backward:  dW2 = dY2 @ X^T,   db = sum of dY2 over its columns,   dX = W2^T @ dY2,
               dx = col2im(dX)

This is the reference: the formulas as they are, one product over the whole batch. Faster
formulations of the same numbers (one product per image, patch rows of a channels-last input,
kernel rows, dx as a convolution, kept buffers) live in npse/fast/conv2d.py; a model's execution
policy sets ``Conv2d.formulation`` to one of them (docs/B-speed.md), and
tests/test_formulations.py checks every one against the functions here.
"""
from __future__ import annotations

from ..backend import get_array_module
from . import init
from .im2col import check_window, col2im, im2col, pair
from .module import Module, Parameter, check_array, grad_enabled


def conv2d_forward(x, weight, bias=None, stride=1, padding=0):
    """y = conv2d(x, weight) + bias.

    x (N, C, H, W), weight (O, C, KH, KW), bias (O,) or None -> y (N, O, OH, OW), cache.
    """
    xp = get_array_module(x, weight, bias)
    stride, padding = pair(stride, "stride", "conv2d"), pair(padding, "padding", "conv2d")
    n = x.shape[0]
    o, c, kh, kw = weight.shape
    oh, ow = check_window("Conv2d", x.shape, (kh, kw), stride, padding)
    cols = im2col(x, (kh, kw), stride, padding)                       # (C*KH*KW, N*OH*OW)
    y2 = weight.reshape(o, -1) @ cols                                 # (O, N*OH*OW)
    if bias is not None:
        y2 += bias.reshape(o, 1)
    y = xp.ascontiguousarray(y2.reshape(o, n, oh, ow).transpose(1, 0, 2, 3))
    return y, (x.shape, cols, weight, bias is not None, stride, padding)


def conv2d_backward(dy, cache, input_grad=True):
    """dy (N, O, OH, OW) -> dx (N, C, H, W), dweight (O, C, KH, KW), dbias (O,) or None.

    ``input_grad=False`` skips dx (returned as None): a network's first layer, whose input is
    the data, needs only its weight gradient.
    """
    x_shape, cols, weight, has_bias, stride, padding = cache
    o = weight.shape[0]
    dy2 = dy.transpose(1, 0, 2, 3).reshape(o, -1)                     # (O, N*OH*OW)
    dweight = (dy2 @ cols.T).reshape(weight.shape)
    dbias = dy2.sum(axis=1) if has_bias else None
    dx = None
    if input_grad:
        dcols = weight.reshape(o, -1).T @ dy2                         # (C*KH*KW, N*OH*OW)
        dx = col2im(dcols, x_shape, weight.shape[2:], stride, padding)
    return dx, dweight, dbias


class Conv2d(Module):
    """A 2-D convolution layer, ``torch.nn.Conv2d``'s interface and weight layout.

    weight: (out_channels, in_channels, KH, KW); bias: (out_channels,).
    Input (N, in_channels, H, W) -> output (N, out_channels, OH, OW) with
    OH = floor((H + 2*PH - KH) / SH) + 1 (likewise OW).
    Initialised as PyTorch does (uniform with bound 1/sqrt(fan_in)); ``rng`` is a seed or a
    ``numpy.random.Generator``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 dtype=None, rng=None):
        super().__init__(dtype=dtype)
        name = "Conv2d"
        for label, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: {label} must be a positive int, got {v!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.padding = pair(padding, "padding", name)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"{name}: kernel_size and stride must be >= 1 and padding >= 0, got kernel_size="
                f"{self.kernel_size}, stride={self.stride}, padding={self.padding}"
            )
        rng = init.as_rng(rng)
        shape = (out_channels, in_channels) + self.kernel_size
        self.weight = Parameter(init.pytorch_default_weight(shape, rng, self.dtype))
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.bias = Parameter(init.pytorch_default_bias(out_channels, fan_in, rng, self.dtype)) if bias else None
        # A faster formulation of the same pair of functions, set by a model's execution
        # policy (npse.fast); None runs the reference functions above.
        self.formulation = None

    def forward(self, x):
        self._check_input(x, 4, self.in_channels)
        weight, bias = self.weight.data, (self.bias.data if self.bias else None)
        route = self.formulation
        if route is None:
            y, cache = conv2d_forward(x, weight, bias, self.stride, self.padding)
        else:
            y, cache = route.forward(x, weight, bias, self.stride, self.padding, keep=grad_enabled())
        self._save((route, cache))
        return y

    def backward(self, dy, input_grad=True):
        """dy -> dx, accumulating the parameter gradients; ``input_grad=False`` returns None
        instead of dx (for a first layer, whose input needs no gradient)."""
        check_array(dy, "Conv2d.backward", 4, self.dtype, self.out_channels, what="dy")
        route, cache = self._take_cache()
        backward = conv2d_backward if route is None else route.backward
        dx, dweight, dbias = backward(dy, cache, input_grad=input_grad)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")
