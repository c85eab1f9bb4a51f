"""The cost model of ``npse bench``: which matrix products a convolution runs.

A convolution's time is mostly its matrix products; which products those are depends on the
formulation in force (npse/fast/conv2d.py) and on how the input is stored.
:func:`conv_products` lists them, so that ``npse bench`` can time each on its own
(:func:`npse.bench.conv_gemm_floor`): their sum is the least a step built on them can take.
It lives here, not on the layer, because it describes the formulations, not what the layer
computes.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..nn.im2col import conv_output_size
from .conv2d import ROWS


def conv_products(layer, x_shape, channels_last=False, input_grad=True):
    """[(shape of A, shape of B, how many times)]: the matrix products A @ B that one forward and
    backward pass of the Conv2d ``layer`` on an input of ``x_shape`` (N, C, H, W) runs, by the
    formulation in force (``layer.formulation``; None: the reference's three im2col products).
    ``channels_last``: how the input is stored; ``input_grad=False`` leaves out the input
    gradient's product (a network's first layer)."""
    if layer.formulation is not None:
        xp = get_array_module(layer.weight.data)
        return _formulation_products(layer.formulation, xp, x_shape, channels_last,
                                     layer.weight.shape, layer.stride, layer.padding, input_grad)
    n, c, h, w = x_shape
    o, (kh, kw), (sh, sw), (ph, pw) = layer.out_channels, layer.kernel_size, layer.stride, layer.padding
    k = c * kh * kw
    pixels = n * ((h + 2 * ph - kh) // sh + 1) * ((w + 2 * pw - kw) // sw + 1)
    found = [((o, k), (k, pixels), 1), ((o, pixels), (pixels, k), 1)]
    return found + ([((k, o), (o, pixels), 1)] if input_grad else [])


def _formulation_products(formulation, xp, x_shape, channels_last, weight_shape, stride, padding,
                          input_grad):
    """:func:`conv_products` of a :class:`~npse.fast.conv2d.Conv2dFormulations`, by the routes
    its ``forward`` and ``backward`` take for this input."""
    n, c, h, w = x_shape
    o, _, kh, kw = weight_shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    layout = formulation.forward_layout(xp, channels_last, c, stride, (oh, ow))
    found = _PRODUCTS[layout](n, c, o, (kh, kw), (oh, ow))
    if not input_grad:
        return found
    if formulation.input_grad_by_convolution(stride, padding, (kh, kw)):
        route = formulation.input_grad_layout(xp, layout, o, (h, w))
        dx = _PRODUCTS[route](n, o, c, (kh, kw), (h, w))[0]                   # its forward product
    elif layout in ROWS:
        dx = ((n * oh * ow, o), (o, c * kh * kw), 1)
    else:
        dx = ((c * kh * kw, o), (o, n * oh * ow), 1)
    return found + [dx]


# --- the forward and weight-gradient products of each route (npse/fast/conv2d.py) ----------------
def _products_batch(n, c, o, kernel, out_size):
    k, pixels = c * kernel[0] * kernel[1], out_size[0] * out_size[1]
    return [((o, k), (k, n * pixels), 1), ((o, n * pixels), (n * pixels, k), 1)]


def _products_per_image(n, c, o, kernel, out_size):
    k, pixels = c * kernel[0] * kernel[1], out_size[0] * out_size[1]
    return [((o, k), (n, k, pixels), 1), ((n, o, pixels), (n, pixels, k), 1)]


def _products_patch_rows(n, c, o, kernel, out_size):
    k, pixels = c * kernel[0] * kernel[1], out_size[0] * out_size[1]
    return [((n * pixels, k), (k, o), 1), ((o, n * pixels), (n * pixels, k), 1)]


def _products_kernel_rows(n, c, o, kernel, out_size):
    (kh, kw), pixels = kernel, out_size[0] * out_size[1]
    return [((n, pixels, kw * c), (kw * c, o), kh), ((n, o, pixels), (n, pixels, kw * c), kh)]


_PRODUCTS = dict(batch=_products_batch, per_image=_products_per_image,
                 patch_rows=_products_patch_rows, kernel_rows=_products_kernel_rows)
