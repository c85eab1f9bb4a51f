"""Exercise: col2im and the convolution's backward pass (chapter docs/06-conv2d.md).

The forward pass is written for you: im2col lays every patch out as a column, and the
convolution is one matrix product. Write col2im (the adjoint of im2col) and conv2d_backward,
then run

    python -m npse.exercises check conv2d conv2d.py

The checker tests col2im against npse's and against the identity <im2col(x), c> == <x, col2im(c)>,
then your backward pass against central differences (float64, relative error <= 1e-6) and
against npse's. Use NumPy and the given im2col; do not import npse's col2im or conv2d_backward.
"""
import numpy as np

from npse.nn.im2col import im2col


def conv2d_forward(x, weight, bias, stride, padding):
    """Given. x (N, C, H, W), weight (O, C, KH, KW), bias (O,) or None, stride and padding pairs
    (SH, SW), (PH, PW) -> y (N, O, OH, OW), cache."""
    n, _, h, w = x.shape
    o, c, kh, kw = weight.shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    cols = im2col(x, (kh, kw), stride, padding)             # (C*KH*KW, N*OH*OW)
    y2 = weight.reshape(o, -1) @ cols                       # (O, N*OH*OW)
    if bias is not None:
        y2 = y2 + bias[:, None]
    y = np.ascontiguousarray(y2.reshape(o, n, oh, ow).transpose(1, 0, 2, 3))
    return y, (x.shape, cols, weight, bias is not None, stride, padding)


def col2im(cols, x_shape, kernel, stride, padding):
    """The adjoint of im2col: cols (C*KH*KW, N*OH*OW) -> (N, C, H, W).

    Row index of cols is (c, ky, kx), column index (n, oy, ox), both in C order; entry
    [(c, ky, kx), (n, oy, ox)] was copied from padded pixel [n, c, oy*SH + ky, ox*SW + kx].
    Add every entry back onto that pixel (a pixel in several patches receives the sum), then
    drop the padding. x_shape is (N, C, H, W); kernel, stride, padding are pairs.
    """
    raise NotImplementedError("col2im: write it")


def conv2d_backward(dy, cache):
    """dy (N, O, OH, OW) and the cache of conv2d_forward -> (dx, dweight, dbias):
    dx (N, C, H, W), dweight (O, C, KH, KW), dbias (O,) or None when there is no bias."""
    raise NotImplementedError("conv2d_backward: write it (with your col2im)")
