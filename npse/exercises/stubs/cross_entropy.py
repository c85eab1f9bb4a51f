"""Exercise: softmax cross-entropy with the log-sum-exp shift (chapter docs/05-loss.md).

Fill in the two functions, then run

    python -m npse.exercises check cross_entropy cross_entropy.py

The checker compares your loss and gradient with npse's, and your gradient with central
differences of your own loss (float64, relative error <= 1e-6). It also adds a constant of
700 to 1000 to every row of logits: the softmax does not change, so neither may the loss, and
np.exp of such logits overflows (exp(t) is inf in float64 once t > 709.78). An overflow, a
division by zero or a NaN fails the check. Use NumPy only; do not import npse.nn.loss.
"""
import numpy as np


def cross_entropy_forward(logits, targets):
    """The mean cross-entropy of softmax(logits) against integer targets.

    logits: (N, K) floats. targets: (N,) integers in [0, K).
    p = softmax(logits) row by row; loss = -(1/N) * sum_n log p[n, targets[n]].
    Returns (loss, cache): loss one float, and what your backward pass needs.
    """
    raise NotImplementedError("cross_entropy_forward: write the forward pass")


def cross_entropy_backward(cache):
    """dloss/dlogits (N, K) = (softmax(logits) - onehot(targets)) / N, from the cache."""
    raise NotImplementedError("cross_entropy_backward: write the backward pass")
