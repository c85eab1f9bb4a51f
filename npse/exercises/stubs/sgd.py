"""Exercise: one step of SGD with momentum, Nesterov and weight decay (chapter docs/11-training.md).

Fill in the function, then run

    python -m npse.exercises check sgd sgd.py

The checker runs your step once from no buffer, and several times with the buffer you return fed
back, and compares the parameter and the buffer after every step with the chapter's formulas
(those of torch.optim.SGD with dampening=0; relative error <= 1e-10). Use NumPy only; do not
import npse.optim.
"""
import numpy as np


def sgd_step(param, grad, buffer, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """One update of one parameter; returns (new_param, new_buffer) as new arrays.

    param, grad: arrays of one shape S. buffer: the momentum buffer (shape S) your previous call
    returned, or None before the first step. lr > 0, 0 <= momentum < 1, weight_decay >= 0;
    nesterov=True only with momentum > 0.
        g = grad + weight_decay * param
        b = g                      at the first step (buffer is None)
        b = momentum * buffer + g  afterwards
        g = g + momentum * b       if nesterov, else g = b
        new_param = param - lr * g
    With momentum == 0 there is no buffer: g is used as it is, and new_buffer is None.
    Do not modify param, grad or buffer in place.
    """
    raise NotImplementedError("sgd_step: write it")
