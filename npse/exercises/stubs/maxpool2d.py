"""Exercise: max pooling (chapter docs/07-pooling.md).

Fill in the two functions, then run

    python -m npse.exercises check maxpool2d maxpool2d.py

The checker compares your passes with npse's, your backward pass with central differences on
inputs without ties (float64, relative error <= 1e-6), and checks PyTorch's two conventions on
their own: a tie sends the whole gradient to the first maximum, and padding never wins. Use
NumPy only; do not import npse.nn.pooling.
"""
import numpy as np


def maxpool2d_forward(x, kernel_size, stride, padding):
    """y[n, c, oy, ox] = max over the window at (oy*SH, ox*SW) of the padded x.

    x: (N, C, H, W). kernel_size (KH, KW), stride (SH, SW), padding (PH, PW): pairs of ints,
    with padding <= kernel // 2. The padding value is -inf (it must never win a window).
    OH = (H + 2*PH - KH) // SH + 1, OW likewise.
    Returns (y, cache): y (N, C, OH, OW), and what your backward pass needs (hint: which
    entry of each window won; on a tie, the first one in row-major order, as np.argmax picks).
    """
    raise NotImplementedError("maxpool2d_forward: write the forward pass")


def maxpool2d_backward(dy, cache):
    """dy (N, C, OH, OW) -> dx (N, C, H, W): each window's dy goes, whole, to its winner.

    A pixel that wins several (overlapping) windows receives the sum of their gradients.
    Do not modify dy in place.
    """
    raise NotImplementedError("maxpool2d_backward: write the backward pass")
