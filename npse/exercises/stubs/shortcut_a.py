"""Exercise: shortcut A, the parameter-free CIFAR shortcut (chapter docs/10-se-resnet.md).

Fill in the two functions, then run

    python -m npse.exercises check shortcut_a shortcut_a.py

The checker compares your passes with npse's, your backward pass with central differences of
your own forward pass (float64, relative error <= 1e-6), and checks that the backward pass is
the adjoint of the forward: <A x, d> == <x, A^T d>. Use NumPy only; do not import npse.nn.shortcut.
"""
import numpy as np


def shortcut_a_forward(x, out_channels, stride):
    """Keep every stride-th pixel and pad the channels with zeros.

    x: (N, C, H, W), out_channels >= C, stride >= 1.
    y[:, B:B+C] = x[:, :, ::stride, ::stride] with B = (out_channels - C) // 2, and every other
    channel of y is zero (B zero channels before x's, the rest after).
    Returns (y, cache): y (N, out_channels, ceil(H/stride), ceil(W/stride)).
    """
    raise NotImplementedError("shortcut_a_forward: write the forward pass")


def shortcut_a_backward(dy, cache):
    """dy (N, out_channels, OH, OW) -> dx (N, C, H, W). Do not modify dy in place."""
    raise NotImplementedError("shortcut_a_backward: write the backward pass")
