"""Exercise: the Squeeze-and-Excitation block (chapter docs/09-se-block.md).

Fill in the two functions, then run

    python -m npse.exercises check se_block se_block.py

The checker compares your passes with npse's, and your backward pass with central differences
of your own forward pass (float64, relative error <= 1e-6). You may reuse your own Linear from
the linear exercise; do not import npse.nn.se_block.
"""
import numpy as np


def se_block_forward(x, w1, b1, w2, b2):
    """The standard SE block: average squeeze, ReLU, sigmoid gate.

    x: (N, C, H, W). w1: (h, C), b1: (h,), w2: (C, h), b2: (C,) with h the hidden width.
    squeeze:    z = mean of x over H and W                 (N, C)
    excitation: a = z @ w1^T + b1,  r = relu(a)            (N, h)
                u = r @ w2^T + b2,  s = sigmoid(u)         (N, C)
    scale:      y = x * s[:, :, None, None]                (N, C, H, W)
    Returns (y, cache).
    """
    raise NotImplementedError("se_block_forward: write the forward pass")


def se_block_backward(dy, cache):
    """dy (N, C, H, W) -> (dx, dw1, db1, dw2, db2), each the shape of what it is the gradient of.

    x reaches y twice: as the factor that is scaled, and through the squeeze. dx is the sum of
    both paths. Do not modify dy in place.
    """
    raise NotImplementedError("se_block_backward: write the backward pass")
