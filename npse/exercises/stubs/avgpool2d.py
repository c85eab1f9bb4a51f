"""Exercise: average pooling and global average pooling (chapter docs/07-pooling.md).

Fill in the four functions, then run

    python -m npse.exercises check avgpool2d avgpool2d.py

The checker compares your passes with npse's, and your backward passes with central differences
of your own forward passes (float64, relative error <= 1e-6), on drawn shapes, kernels, strides
and paddings. Use NumPy only; do not import npse.nn.pooling.
"""
import numpy as np


def avgpool2d_forward(x, kernel_size, stride, padding):
    """y[n, c, oy, ox] = the mean of the window at (oy*SH, ox*SW) of the zero-padded x.

    x: (N, C, H, W). kernel_size (KH, KW), stride (SH, SW), padding (PH, PW): pairs of ints,
    with padding <= kernel // 2. The divisor is always KH*KW, padded zeros included (PyTorch's
    default, count_include_pad=True). OH = (H + 2*PH - KH) // SH + 1, OW likewise.
    Returns (y, cache): y (N, C, OH, OW), and what your backward pass needs.
    """
    raise NotImplementedError("avgpool2d_forward: write the forward pass")


def avgpool2d_backward(dy, cache):
    """dy (N, C, OH, OW) -> dx (N, C, H, W): every pixel of a window receives dy / (KH*KW);
    a pixel in several (overlapping) windows receives the sum. Do not modify dy in place."""
    raise NotImplementedError("avgpool2d_backward: write the backward pass")


def global_avgpool2d_forward(x):
    """x (N, C, H, W) -> (z, cache): z (N, C), the mean of each channel over H and W."""
    raise NotImplementedError("global_avgpool2d_forward: write the forward pass")


def global_avgpool2d_backward(dz, cache):
    """dz (N, C) -> dx (N, C, H, W). Do not modify dz in place."""
    raise NotImplementedError("global_avgpool2d_backward: write the backward pass")
