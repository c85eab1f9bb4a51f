"""Exercise: the fully-connected layer (chapter docs/03-linear.md).

Fill in the two functions, then run

    python -m npse.exercises check linear linear.py

The checker compares your forward pass with npse's, your backward pass with central differences
of your own forward pass (float64, relative error <= 1e-6) and with npse's, and checks that
neither function modifies its inputs. Use NumPy only; do not import npse.nn.linear.
"""
import numpy as np


def linear_forward(x, weight, bias=None):
    """y = x @ weight^T + bias.

    x: (N, I) input.  weight: (O, I), one row per output (PyTorch's layout).
    bias: (O,) or None (no bias).
    Returns (y, cache): y (N, O), and whatever your backward pass needs.
    """
    raise NotImplementedError("linear_forward: write the forward pass")


def linear_backward(dy, cache):
    """The gradients of the loss, given dy = dL/dy (N, O) and the cache of linear_forward.

    Returns (dx, dweight, dbias): dx (N, I), dweight (O, I), dbias (O,) or None when the
    forward pass had no bias. Every gradient has the shape of what it is the gradient of.
    Do not modify dy in place.
    """
    raise NotImplementedError("linear_backward: write the backward pass")
