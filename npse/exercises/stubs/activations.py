"""Exercise: sigmoid and tanh that survive large inputs (chapter docs/04-activations.md).

Fill in the four functions, then run

    python -m npse.exercises check activations activations.py

The checker compares your passes with npse's and your backward passes with central differences
of your own forward passes (float64, relative error <= 1e-6), on inputs of moderate size and on
inputs with entries up to |x| = 1000. In float64 exp(t) overflows to inf once t > 709.78, so the
textbook 1 / (1 + np.exp(-x)) overflows for x < -709.78: the checker treats an overflow, a
division by zero or a NaN as a failure, even where the final answer happens to be right. Use
np.exp (and np.abs, np.where, np.sign ...); not np.tanh, scipy or npse.nn.activations.
"""
import numpy as np


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), entry by entry, without overflow for any float64 x.

    x: any shape. Returns (y, cache): y the shape of x, entries in [0, 1], and what your backward
    pass needs (the derivative can be written with y alone).
    """
    raise NotImplementedError("sigmoid_forward: write the forward pass")


def sigmoid_backward(dy, cache):
    """dy (the shape of x) -> dx = dy * sigmoid'(x), the shape of x. Do not modify dy in place."""
    raise NotImplementedError("sigmoid_backward: write the backward pass")


def tanh_forward(x):
    """y = tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x)), without overflow for any float64 x.

    x: any shape. Returns (y, cache): y the shape of x, entries in [-1, 1].
    """
    raise NotImplementedError("tanh_forward: write the forward pass")


def tanh_backward(dy, cache):
    """dy (the shape of x) -> dx = dy * tanh'(x), the shape of x. Do not modify dy in place."""
    raise NotImplementedError("tanh_backward: write the backward pass")
