"""Exercise: batch normalisation in training mode (chapter docs/08-batchnorm2d.md).

Fill in the two functions, then run

    python -m npse.exercises check batchnorm2d batchnorm2d.py

The checker compares your passes with npse's, and your backward pass with central differences
of your own forward pass (float64, relative error <= 1e-6). Running statistics are left out:
this is the training-mode layer only. Use NumPy only; do not import npse.nn.batchnorm2d.
"""
import numpy as np


def batchnorm2d_forward(x, gamma, beta, eps=1e-5):
    """Normalise each channel over the batch and both spatial axes (M = N*H*W values).

    x: (N, C, H, W). gamma, beta: (C,).
    mu = mean(x), var = mean((x - mu)^2)  (biased: divide by M), per channel;
    xhat = (x - mu) / sqrt(var + eps);  y = gamma * xhat + beta.
    Returns (y, cache): y (N, C, H, W), and what your backward pass needs.
    """
    raise NotImplementedError("batchnorm2d_forward: write the forward pass")


def batchnorm2d_backward(dy, cache):
    """dy (N, C, H, W) -> (dx (N, C, H, W), dgamma (C,), dbeta (C,)).

    mu and var depend on every x of the channel: the gradient flows through them too.
    Do not modify dy in place.
    """
    raise NotImplementedError("batchnorm2d_backward: write the backward pass")
