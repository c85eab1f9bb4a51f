"""2-D convolution (cross-correlation, as in every deep-learning library) by im2col.

Chapter: docs/03-conv2d.md.  Symbols: x (N, C, H, W), weight W (O, C, KH, KW), bias b (O,),
y (N, O, OH, OW), cols X (C*KH*KW, N*OH*OW).

    forward:   Y2 = W2 @ X + b            with W2 = W.reshape(O, C*KH*KW), Y2 = y as (O, N*OH*OW)
    backward:  dW2 = dY2 @ X^T,   db = sum of dY2 over its columns,   dX = W2^T @ dY2,
               dx = col2im(dX)

A faster route to dx for stride 1 (:func:`conv2d_input_grad_by_convolution`): dx is itself a
convolution of dy, padded by K-1-P, with the kernel flipped in space and with its in/out channels
swapped.  It needs no col2im; tests compare it with the plain route.

Where an image has many output pixels, NumPy runs the same products faster as one product per
image (:func:`~npse.nn.im2col.im2col_per_image`, :func:`uses_per_image`): Y[n] = W2 @ X[n] is
already in the output's (N, O, OH, OW) layout, and dW2 = sum over n of dY[n] @ X[n]^T.

An input stored channels last (:mod:`~npse.nn.layout`) takes the transposed formulation, with one
row per output pixel (:func:`conv2d_forward_channels_last`):

    forward:   Yr = Xr @ Wr^T + b      Xr (N*OH*OW, KH*KW*C), Wr = W as (O, KH*KW*C), Yr (N*OH*OW, O)
    backward:  dWr = dYr^T @ Xr,   db = sum of dYr over its rows,   dXr = dYr @ Wr

The same numbers in another order; Yr is the output stored channels last, so layer after layer
no transpose is needed. With few channels and stride 1 the same products are split by kernel row
over a third of the patches (:func:`conv2d_by_kernel_rows`). The tests compare every formulation
with every other.
"""
from __future__ import annotations

from ..backend import get_array_module
from . import init
from .im2col import (check_window, col2im, col2im_channels_last, im2col, im2col_channels_last,
                     im2col_per_image, pair)
from .layout import from_nhwc, is_channels_last, nhwc
from .module import Module, Parameter, check_array, grad_enabled
from .workspace import Workspace

# Scratch buffers that live only while one layer runs can be shared by all layers: the backward
# passes' buffers, and the forward passes' under no_grad (nothing is kept for a backward then).
# A few shapes per name: one per stage of a ResNet (forward: also the first convolution and each
# stage's strided one, so that an evaluation pass over a CIFAR ResNet reuses all of its buffers).
_backward_workspace = Workspace(shapes_per_name=4)
_no_grad_workspace = Workspace(shapes_per_name=8)
_scratch = Workspace(shapes_per_name=4)      # temporaries inside one function call


#: From this many output pixels per image on, NumPy convolutions use one product per image.
#: Measured with OpenBLAS on 2 cores (docs/12-speed.md): at 32x32 and 16x16 outputs the per-image
#: products were 26-30% faster than one product over the batch, at 8x8 10% slower.
PER_IMAGE_MIN_PIXELS = 256


def uses_per_image(xp, out_size) -> bool:
    """Whether a convolution with ``out_size`` = (OH, OW) on array module ``xp`` computes one
    matrix product per image (:func:`~npse.nn.im2col.im2col_per_image`) rather than one for the
    batch. Only on NumPy: on CuPy the batch-wide product was measured and is kept."""
    return xp.__name__ == "numpy" and out_size[0] * out_size[1] >= PER_IMAGE_MIN_PIXELS


#: Channels-last stride-1 convolutions with at most this many input channels (NumPy only) are
#: computed by kernel rows (:func:`conv2d_by_kernel_rows`). Measured on 2 cores (docs/12-speed.md):
#: 16 channels 14-18 ms vs 22 ms per 3x3 convolution at batch 128 and 32x32; 32 and 64 channels
#: slower than one product.
KERNEL_ROWS_MAX_CHANNELS = 16


def uses_kernel_rows(xp, channels, stride) -> bool:
    """Whether a channels-last convolution over ``channels`` input channels with ``stride`` is
    computed by :func:`conv2d_by_kernel_rows`."""
    return xp.__name__ == "numpy" and stride == (1, 1) and channels <= KERNEL_ROWS_MAX_CHANNELS


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, workspace=None, per_image=None,
                   channels_last=None, for_backward=True):
    """y = conv2d(x, weight) + bias.

    x (N, C, H, W), weight (O, C, KH, KW), bias (O,) or None -> y (N, O, OH, OW), cache.
    ``workspace`` (optional) keeps the big im2col matrix between calls; y is always a new array.
    ``channels_last``: the row-per-pixel formulation, whose y is stored channels last (True), or
    the column one, whose y is contiguous (False); None takes the one that matches how x is
    stored (:func:`~npse.nn.layout.is_channels_last`).
    ``per_image`` (column formulation only): one product per image (True) or one for the batch
    (False); None chooses by :func:`uses_per_image`. All give the same numbers; the tests compare them.
    ``for_backward=False``: no backward pass will follow (see :func:`conv2d_forward_channels_last`).
    """
    xp = get_array_module(x, weight, bias)
    stride, padding = pair(stride, "stride", "conv2d"), pair(padding, "padding", "conv2d")
    n = x.shape[0]
    o, c, kh, kw = weight.shape
    oh, ow = check_window("Conv2d", x.shape, (kh, kw), stride, padding)
    if channels_last is None:
        channels_last = is_channels_last(x)
    if channels_last:
        return conv2d_forward_channels_last(x, weight, bias, stride, padding, workspace, for_backward)
    if per_image is None:
        per_image = uses_per_image(xp, (oh, ow))
    if per_image:
        cols = im2col_per_image(x, (kh, kw), stride, padding, workspace)   # (N, C*KH*KW, OH*OW)
        y = xp.matmul(weight.reshape(o, -1), cols)                        # (N, O, OH*OW)
        if bias is not None:
            y += bias.reshape(1, o, 1)
        return y.reshape(n, o, oh, ow), (x.shape, cols, weight, bias is not None, stride, padding,
                                         "per_image")
    cols = im2col(x, (kh, kw), stride, padding, workspace)           # (C*KH*KW, N*OH*OW)
    if workspace is None:
        y2 = weight.reshape(o, -1) @ cols                             # (O, N*OH*OW)
    else:                                                             # same product, kept buffer
        y2 = xp.matmul(weight.reshape(o, -1), cols,
                       out=workspace.get("conv.y2", (o, cols.shape[1]), x.dtype, x))
    y = xp.empty((n, o, oh, ow), dtype=x.dtype)
    y4 = y2.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)
    if bias is None:
        y[...] = y4
    else:
        xp.add(y4, bias.reshape(1, o, 1, 1), out=y)
    cache = (x.shape, cols, weight, bias is not None, stride, padding, "batch")
    return y, cache


def conv2d_forward_channels_last(x, weight, bias, stride, padding, workspace=None,
                                 for_backward=True):
    """:func:`conv2d_forward` with one patch *row* per output pixel; y is stored channels last.

    x may be stored either way (a contiguous x is copied into channels last first). Where
    :func:`uses_kernel_rows` says so, the patches and products are those of
    :func:`conv2d_by_kernel_rows`. With ``for_backward=False`` nothing is kept (the cache is None).
    """
    xp = get_array_module(x, weight, bias)
    n = x.shape[0]
    o, c, kh, kw = weight.shape
    oh, ow = check_window("Conv2d", x.shape, (kh, kw), stride, padding)
    if uses_kernel_rows(xp, c, stride):
        patches = kernel_row_patches(nhwc(x), kw, padding, workspace)          # (N, HP*OW, KW*C)
        y = conv2d_by_kernel_rows(patches, weight, (oh, ow))                   # (N, OH, OW, O)
        layout = "kernel_rows"
    else:
        patches = im2col_channels_last(nhwc(x), (kh, kw), stride, padding, workspace)
        y = patches @ weight.transpose(0, 2, 3, 1).reshape(o, -1).T            # (N*OH*OW, O)
        y = y.reshape(n, oh, ow, o)
        layout = "channels_last"
    if bias is not None:
        y += bias
    cache = (x.shape, patches, weight, bias is not None, stride, padding, layout) if for_backward else None
    return from_nhwc(y), cache


def conv2d_backward(dy, cache, fast=True, input_grad=True):
    """dy (N, O, OH, OW) -> dx (N, C, H, W), dweight (O, C, KH, KW), dbias (O,) or None.

    ``fast=True`` takes :func:`conv2d_input_grad_by_convolution` where it applies (stride 1);
    ``fast=False`` always takes the plain col2im route. ``input_grad=False`` skips dx (returned
    as None): a network's first layer, whose input is the data, needs only its weight gradient.
    """
    x_shape, cols, weight, has_bias, stride, padding, layout = cache
    if layout in ("channels_last", "kernel_rows"):
        return conv2d_backward_channels_last(dy, cache, fast, input_grad)
    xp = get_array_module(dy)
    n, o, oh, ow = dy.shape
    kh, kw = weight.shape[2:]
    dy2 = None
    if layout == "per_image":              # the forward pass made one patch matrix per image
        dy3 = dy.reshape(n, o, oh * ow)
        products = _backward_workspace.get("conv.dweight_per_image", (n, o, cols.shape[1]),
                                           dy.dtype, dy)
        dweight = xp.matmul(dy3, cols.transpose(0, 2, 1), out=products).sum(axis=0)
        dweight = dweight.reshape(weight.shape)                       # sum over n of dY[n] @ X[n]^T
        dbias = dy3.sum(axis=(0, 2)) if has_bias else None
    else:
        dy2 = _batch_columns(dy)                                      # (O, N*OH*OW)
        dweight = (dy2 @ cols.T).reshape(weight.shape)
        dbias = dy2.sum(axis=1) if has_bias else None
    if not input_grad:
        dx = None
    elif fast and stride == (1, 1) and padding[0] < kh and padding[1] < kw:
        dx = conv2d_input_grad_by_convolution(dy, weight, x_shape, padding, layout == "per_image")
    else:
        dy2 = _batch_columns(dy) if dy2 is None else dy2
        dcols = weight.reshape(o, -1).T @ dy2                         # (C*KH*KW, N*OH*OW)
        dx = col2im(dcols, x_shape, (kh, kw), stride, padding)
    return dx, dweight, dbias


def kernel_row_patches(x_nhwc, kw, padding, workspace=None):
    """The patches of :func:`conv2d_by_kernel_rows`: x_nhwc (N, H, W, C) -> E (N, HP*OW, KW*C).

    E[n, r*OW + ox, (kx, c)] = x_padded[n, r, ox + kx, c] for every padded row r (HP = H + 2*PH):
    im2col with a 1 x KW kernel, KW copies of the input where im2col makes KH*KW.
    """
    n, c = x_nhwc.shape[0], x_nhwc.shape[3]
    rows = im2col_channels_last(x_nhwc, (1, kw), (1, 1), padding, workspace)  # (N*HP*OW, KW*C)
    return rows.reshape(n, -1, kw * c)


def conv2d_by_kernel_rows(patches, weight, out_size):
    """A stride-1 convolution as KH products: E (N, HP*OW, KW*C) -> y (N, OH, OW, O), a new array.

    Output row oy reads input rows oy + ky, ky = 0..KH-1, so with E of :func:`kernel_row_patches`,
    Y[n] = sum over ky of E[n, ky*OW : ky*OW + OH*OW] @ Wky,   Wky[(kx, c), o] = W[o, c, ky, kx].
    Each slice of E is a plain matrix (no copy): the rows of one image follow each other in memory.
    Less copying than im2col and smaller products: faster where C is small
    (:func:`uses_kernel_rows`); the tests compare it with the one-product formulation.
    """
    xp = get_array_module(patches)
    n = patches.shape[0]
    o, c, kh, kw = weight.shape
    oh, ow = out_size
    y = xp.empty((n, oh * ow, o), dtype=patches.dtype)
    part = _scratch.get("conv.kernel_row_product", y.shape, y.dtype, y) if kh > 1 else None
    for ky in range(kh):
        w_ky = weight[:, :, ky].transpose(2, 1, 0).reshape(kw * c, o)       # rows (kx, c)
        xp.matmul(patches[:, ky * ow:ky * ow + oh * ow], w_ky, out=part if ky else y)
        if ky:
            y += part
    return y.reshape(n, oh, ow, o)


def weight_grad_by_kernel_rows(dy_nhwc, patches, weight_shape):
    """dW of :func:`conv2d_by_kernel_rows`: dWky = sum over n of dY[n]^T @ E[n, ky*OW : ky*OW + OH*OW].

    dy_nhwc (N, OH, OW, O), E (N, HP*OW, KW*C) -> dW (O, C, KH, KW).
    """
    xp = get_array_module(dy_nhwc)
    n, oh, ow, o = dy_nhwc.shape
    _, c, kh, kw = weight_shape
    dy_t = dy_nhwc.reshape(n, oh * ow, o).transpose(0, 2, 1)                 # (N, O, OH*OW)
    products = _scratch.get("conv.kernel_row_dweight", (n, o, kw * c), dy_nhwc.dtype, dy_nhwc)
    dweight = xp.empty((o, kh, kw, c), dtype=dy_nhwc.dtype)
    for ky in range(kh):
        xp.matmul(dy_t, patches[:, ky * ow:ky * ow + oh * ow], out=products)
        dweight[:, ky] = products.sum(axis=0).reshape(o, kw, c)
    return xp.ascontiguousarray(dweight.transpose(0, 3, 1, 2))


def conv2d_backward_channels_last(dy, cache, fast=True, input_grad=True):
    """:func:`conv2d_backward` for a cache of :func:`conv2d_forward_channels_last`: dx is stored
    channels last; dy may be stored either way."""
    x_shape, patches, weight, has_bias, stride, padding, layout = cache
    o, c, kh, kw = weight.shape
    dy_nhwc = nhwc(dy)                      # a view if dy is stored channels last, else one copy
    dy, dy_rows = from_nhwc(dy_nhwc), dy_nhwc.reshape(-1, o)          # dy_rows (N*OH*OW, O)
    if layout == "kernel_rows":
        dweight = weight_grad_by_kernel_rows(dy_nhwc, patches, weight.shape)
    else:
        dweight = (dy_rows.T @ patches).reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
        dweight = get_array_module(dy).ascontiguousarray(dweight)     # (O, C, KH, KW), as W
    dbias = dy_rows.sum(axis=0) if has_bias else None
    if not input_grad:
        dx = None
    elif fast and stride == (1, 1) and padding[0] < kh and padding[1] < kw:
        dx = conv2d_input_grad_by_convolution(dy, weight, x_shape, padding, channels_last=True)
    else:
        drows = dy_rows @ weight.transpose(0, 2, 3, 1).reshape(o, -1)  # (N*OH*OW, KH*KW*C)
        dx = from_nhwc(col2im_channels_last(drows, x_shape, (kh, kw), stride, padding))
    return dx, dweight, dbias


def _batch_columns(dy):
    """dy (N, O, OH, OW) as the (O, N*OH*OW) matrix dY2 of the batch-wide products (a kept buffer)."""
    n, o, oh, ow = dy.shape
    dy2 = _backward_workspace.get("conv.dy2", (o, n, oh, ow), dy.dtype, dy)
    dy2[...] = dy.transpose(1, 0, 2, 3)
    return dy2.reshape(o, -1)


def conv2d_input_grad_by_convolution(dy, weight, x_shape, padding, per_image=None,
                                     channels_last=False):
    """dx for a stride-1 convolution, computed as a convolution of dy (no col2im).

    dx[n, c, i, j] = sum over o, ky, kx of dy[n, o, i + P - ky, j + P - kx] * W[o, c, ky, kx]
                   = conv2d(dy padded by K-1-P, W'),  W'[c, o, ky, kx] = W[o, c, K-1-ky, K-1-kx].
    Needs P <= K-1 (true for every 'same' or 'valid' convolution). ``per_image`` and
    ``channels_last`` (dx stored channels last, by patch rows) as in :func:`conv2d_forward`.
    """
    xp = get_array_module(dy)
    o, c, kh, kw = weight.shape
    n, _, h, w = x_shape
    pad = (kh - 1 - padding[0], kw - 1 - padding[1])
    flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)         # W' (C, O, KH, KW)
    if channels_last and uses_kernel_rows(xp, o, (1, 1)):
        patches = kernel_row_patches(nhwc(dy), kw, pad, _backward_workspace)
        return from_nhwc(conv2d_by_kernel_rows(patches, flipped, (h, w)))
    if channels_last:
        dy_rows = im2col_channels_last(nhwc(dy), (kh, kw), (1, 1), pad, _backward_workspace)
        dx_rows = dy_rows @ flipped.transpose(0, 2, 3, 1).reshape(c, -1).T   # (N*H*W, C)
        return from_nhwc(dx_rows.reshape(n, h, w, c))
    flipped = xp.ascontiguousarray(flipped).reshape(c, -1)
    if per_image is None:
        per_image = uses_per_image(xp, (h, w))
    if per_image:
        dy_cols = im2col_per_image(dy, (kh, kw), (1, 1), pad, _backward_workspace)  # (N, O*KH*KW, H*W)
        return xp.matmul(flipped, dy_cols).reshape(n, c, h, w)
    dy_cols = im2col(dy, (kh, kw), (1, 1), pad, _backward_workspace)  # (O*KH*KW, N*H*W)
    dx2 = xp.matmul(flipped, dy_cols,                                 # (C, N*H*W)
                    out=_backward_workspace.get("conv.dx2", (c, dy_cols.shape[1]), dy.dtype, dy))
    dx = xp.empty((n, c, h, w), dtype=dy.dtype)
    dx[...] = dx2.reshape(c, n, h, w).transpose(1, 0, 2, 3)
    return dx


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
        self.workspace = Workspace()     # this layer's im2col matrix, kept for its backward
        self.per_image = None            # None: chosen by size (uses_per_image); tests force it

    def forward(self, x):
        self._check_input(x, 4, self.in_channels)
        workspace = self.workspace if grad_enabled() else _no_grad_workspace
        y, cache = conv2d_forward(x, self.weight.data, self.bias.data if self.bias else None,
                                  self.stride, self.padding, workspace, self.per_image,
                                  for_backward=grad_enabled())
        self._save(cache)
        return y

    def backward(self, dy, input_grad=True):
        """dy -> dx, accumulating the parameter gradients; ``input_grad=False`` returns None
        instead of dx (for a first layer, whose input needs no gradient)."""
        check_array(dy, "Conv2d.backward", 4, self.dtype, self.out_channels, what="dy")
        dx, dweight, dbias = conv2d_backward(dy, self._take_cache(), input_grad=input_grad)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def to(self, name):
        self.workspace.clear()
        return super().to(name)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")
