"""Pooling: MaxPool2d, AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d.

Chapter: docs/07-pooling.md.  Symbols: x (N, C, H, W), kernel KH x KW, stride SH, SW, padding PH, PW,
y (N, C, OH, OW).  Windows are read through a strided view (no copy); gradients are added back
with one strided slice per kernel offset, as in col2im, so no scatter-add is needed.

Conventions follow PyTorch: max-pooling pads with -inf and a tie sends the whole gradient to the
first maximum in row-major window order; average-pooling counts the zero padding in the divisor
(``count_include_pad=True``); padding may be at most half the kernel.
"""
from __future__ import annotations

from ..backend import get_array_module
from .im2col import check_window, pad2d, pair, windows
from .module import Module, check_array, float_dtype_of, grad_enabled


def _pool_args(layer, kernel_size, stride, padding):
    kernel = pair(kernel_size, "kernel_size", layer)
    stride = kernel if stride is None else pair(stride, "stride", layer)
    padding = pair(padding, "padding", layer)
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{layer}: kernel_size and stride must be >= 1 and padding >= 0, got "
                         f"kernel_size={kernel}, stride={stride}, padding={padding}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{layer}: padding {padding} must be at most half the kernel {kernel}")
    return kernel, stride, padding


def _crop(dx_padded, x_shape, padding):
    xp = get_array_module(dx_padded)
    ph, pw = padding
    h, w = x_shape[2], x_shape[3]
    return xp.ascontiguousarray(dx_padded[:, :, ph:ph + h, pw:pw + w]) if ph or pw else dx_padded


# --- max pooling -----------------------------------------------------------------------------------
def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """x (N, C, H, W) -> y (N, C, OH, OW), cache.  Pads with -inf; ties go to the first maximum."""
    xp = get_array_module(x)
    kernel, stride, padding = _pool_args("MaxPool2d", kernel_size, stride, padding)
    out_size = check_window("MaxPool2d", x.shape, kernel, stride, padding)
    view = windows(pad2d(x, padding, -xp.inf), kernel, stride, out_size)   # (N, C, KH, KW, OH, OW)
    n, c = x.shape[:2]
    flat = view.reshape(n, c, kernel[0] * kernel[1], *out_size)              # copies the windows
    argmax = flat.argmax(axis=2)                                             # first maximum wins
    y = xp.take_along_axis(flat, argmax[:, :, None], axis=2)[:, :, 0]
    return y, (x.shape, argmax, kernel, stride, padding)


def maxpool2d_backward(dy, cache):
    """dy (N, C, OH, OW) -> dx (N, C, H, W): each window's gradient goes to its (first) maximum."""
    xp = get_array_module(dy)
    x_shape, argmax, kernel, stride, padding = cache
    n, c, h, w = x_shape
    kh, kw = kernel
    dx_padded = xp.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype=dy.dtype)
    zero = xp.zeros((), dtype=dy.dtype)
    (sh, sw), (oh, ow) = stride, dy.shape[2:]
    for k in range(kh * kw):
        ky, kx = divmod(k, kw)
        dx_padded[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] += xp.where(argmax == k, dy, zero)
    return _crop(dx_padded, x_shape, padding)


# --- average pooling -------------------------------------------------------------------------------
def avgpool2d_forward(x, kernel_size, stride=None, padding=0):
    """x (N, C, H, W) -> y (N, C, OH, OW), cache.  The divisor is KH*KW, padding included."""
    kernel, stride, padding = _pool_args("AvgPool2d", kernel_size, stride, padding)
    out_size = check_window("AvgPool2d", x.shape, kernel, stride, padding)
    view = windows(pad2d(x, padding), kernel, stride, out_size)
    y = view.mean(axis=(2, 3), dtype=x.dtype)
    return y, (x.shape, kernel, stride, padding)


def avgpool2d_backward(dy, cache):
    """dy (N, C, OH, OW) -> dx: every pixel of a window receives dy / (KH*KW)."""
    xp = get_array_module(dy)
    x_shape, kernel, stride, padding = cache
    n, c, h, w = x_shape
    dx_padded = xp.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype=dy.dtype)
    share = dy / (kernel[0] * kernel[1])
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            dx_padded[:, :, ky:ky + stride[0] * dy.shape[2]:stride[0],
                      kx:kx + stride[1] * dy.shape[3]:stride[1]] += share
    return _crop(dx_padded, x_shape, padding)


# --- global pooling --------------------------------------------------------------------------------
def check_has_pixels(layer, x):
    """A mean or maximum over no pixels is undefined: refuse it rather than return NaN."""
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"{layer}: the input has no pixels (shape {tuple(x.shape)}); "
                         "global pooling needs H, W >= 1")


def global_avgpool2d_forward(x):
    """x (N, C, H, W) -> z (N, C), the mean over H and W; the cache is the input's shape."""
    check_has_pixels("GlobalAvgPool2d", x)
    return x.mean(axis=(2, 3), dtype=x.dtype), x.shape


def global_avgpool2d_backward(dz, x_shape):
    """dz (N, C) -> dx (N, C, H, W) = dz / (H*W) broadcast over every pixel."""
    xp = get_array_module(dz)
    n, c, h, w = x_shape
    return xp.broadcast_to((dz / (h * w))[:, :, None, None], x_shape).copy()


def global_maxpool2d_forward(x):
    """x (N, C, H, W) -> z (N, C), the maximum over H and W; ties go to the first maximum."""
    check_has_pixels("GlobalMaxPool2d", x)
    xp = get_array_module(x)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    argmax = flat.argmax(axis=2)
    return xp.take_along_axis(flat, argmax[:, :, None], axis=2)[:, :, 0], (x.shape, argmax)


def global_maxpool2d_backward(dz, cache):
    """dz (N, C) -> dx (N, C, H, W), non-zero only at each channel's (first) maximum."""
    xp = get_array_module(dz)
    x_shape, argmax = cache
    n, c, h, w = x_shape
    positions = xp.arange(h * w).reshape(1, 1, -1)
    dx = xp.where(positions == argmax[:, :, None], dz[:, :, None], xp.zeros((), dtype=dz.dtype))
    return dx.reshape(x_shape)


# --- modules ---------------------------------------------------------------------------------------
class MaxPool2d(Module):
    """Max pooling, ``torch.nn.MaxPool2d(kernel_size, stride=None, padding=0)``.

    (N, C, H, W) -> (N, C, OH, OW); stride defaults to the kernel size.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dtype=None):
        super().__init__(dtype=dtype)
        self.kernel_size, self.stride, self.padding = _pool_args("MaxPool2d", kernel_size, stride, padding)

    def forward(self, x):
        check_array(x, "MaxPool2d", 4, float_dtype_of(x))
        y, cache = maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self._save(cache)
        return y

    def backward(self, dy):
        check_array(dy, "MaxPool2d.backward", 4, float_dtype_of(dy), what="dy")
        return maxpool2d_backward(dy, self._take_cache())

    def kink_signature(self):
        """Which input won each window in the last forward (a change means a gradcheck step
        crossed a non-differentiable point)."""
        return None if self._cache is None else self._cache[1]

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Average pooling, ``torch.nn.AvgPool2d(kernel_size, stride=None, padding=0)`` with
    ``count_include_pad=True`` (PyTorch's default). (N, C, H, W) -> (N, C, OH, OW)."""

    def __init__(self, kernel_size, stride=None, padding=0, dtype=None):
        super().__init__(dtype=dtype)
        self.kernel_size, self.stride, self.padding = _pool_args("AvgPool2d", kernel_size, stride, padding)

    def forward(self, x):
        check_array(x, "AvgPool2d", 4, float_dtype_of(x))
        y, cache = avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self._save(cache)
        return y

    def backward(self, dy):
        check_array(dy, "AvgPool2d.backward", 4, float_dtype_of(dy), what="dy")
        return avgpool2d_backward(dy, self._take_cache())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class GlobalAvgPool2d(Module):
    """Mean over the spatial axes: (N, C, H, W) -> (N, C). The SE block's standard squeeze.

    ``formulation``: a faster pair set by a model's execution policy (npse.fast), or None.
    """

    def __init__(self, dtype=None):
        super().__init__(dtype=dtype)
        self.formulation = None

    def forward(self, x):
        check_array(x, "GlobalAvgPool2d", 4, float_dtype_of(x))
        route = self.formulation
        if route is None:
            z, cache = global_avgpool2d_forward(x)
        else:
            z, cache = route.forward(x, keep=grad_enabled())
        self._save((route, cache))
        return z

    def backward(self, dz):
        check_array(dz, "GlobalAvgPool2d.backward", 2, float_dtype_of(dz), what="dz")
        route, cache = self._take_cache()
        return (global_avgpool2d_backward if route is None else route.backward)(dz, cache)


class GlobalMaxPool2d(Module):
    """Maximum over the spatial axes: (N, C, H, W) -> (N, C); ties go to the first maximum."""

    def forward(self, x):
        check_array(x, "GlobalMaxPool2d", 4, float_dtype_of(x))
        z, cache = global_maxpool2d_forward(x)
        self._save(cache)
        return z

    def backward(self, dz):
        check_array(dz, "GlobalMaxPool2d.backward", 2, float_dtype_of(dz), what="dz")
        return global_maxpool2d_backward(dz, self._take_cache())

    def kink_signature(self):
        return None if self._cache is None else self._cache[1]
