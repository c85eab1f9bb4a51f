"""Exercise: im2col and col2im (chapter docs/06-conv2d.md).

Fill in the two functions, then run

    python -m npse.exercises check im2col im2col.py

The checker compares both with npse's, on drawn shapes, kernels, strides and paddings (odd,
even, non-square), and checks that your col2im is the adjoint of your im2col:
<im2col(x), c> == <x, col2im(c)> for every x and c. Use NumPy only; do not import
npse.nn.im2col. (The conv2d exercise then builds the backward pass on col2im.)
"""
import numpy as np


def im2col(x, kernel, stride, padding):
    """Every patch of the zero-padded x as a column.

    x: (N, C, H, W). kernel (KH, KW), stride (SH, SW), padding (PH, PW): pairs of ints.
    OH = (H + 2*PH - KH) // SH + 1, OW likewise.
    Returns cols (C*KH*KW, N*OH*OW): the row index is (c, ky, kx) and the column index
    (n, oy, ox), both in C order, and cols[(c, ky, kx), (n, oy, ox)] is the padded pixel
    [n, c, oy*SH + ky, ox*SW + kx].
    """
    raise NotImplementedError("im2col: write it")


def col2im(cols, x_shape, kernel, stride, padding):
    """The adjoint of im2col: cols (C*KH*KW, N*OH*OW) -> (N, C, H, W).

    Add every entry of cols back onto the padded pixel im2col copied it from (a pixel in several
    patches receives the sum), then drop the padding. x_shape is (N, C, H, W).
    """
    raise NotImplementedError("col2im: write it")
