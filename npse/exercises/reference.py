"""npse's own functions behind the exercises' interfaces: the solution the checkers accept.

``python -m npse.exercises check NAME npse/exercises/reference.py`` passes for every exercise; the
tests use this file to show that the checkers accept a correct answer. Reading it gives nothing
away that the chapters do not: each function is npse's, or a thin wrapper around it.
"""
import numpy as np

from npse.nn.batchnorm2d import batchnorm2d_backward
from npse.nn.batchnorm2d import batchnorm2d_forward as _batchnorm2d_forward
from npse.nn.conv2d import conv2d_backward as _conv2d_backward
from npse.nn.conv2d import conv2d_forward as _conv2d_forward
from npse.nn.activations import (sigmoid_backward, sigmoid_forward, tanh_backward,  # noqa: F401
                                 tanh_forward)
from npse.nn.im2col import col2im, im2col  # noqa: F401  (the exercises' functions, as they are)
from npse.nn.loss import cross_entropy_backward, cross_entropy_forward  # noqa: F401
from npse.nn.linear import linear_backward, linear_forward  # noqa: F401
from npse.nn.pooling import (avgpool2d_backward, avgpool2d_forward,  # noqa: F401
                             global_avgpool2d_backward, global_avgpool2d_forward,
                             maxpool2d_backward, maxpool2d_forward)
from npse.nn.se_block import se_block_backward, se_block_forward  # noqa: F401
from npse.nn.module import Parameter
from npse.optim.sgd import SGD
from npse.nn.shortcut import shortcut_a_backward, shortcut_a_forward  # noqa: F401


def conv2d_forward(x, weight, bias, stride, padding):
    """npse's convolution, as the stub's conv2d_forward is called (its cache is npse's own)."""
    return _conv2d_forward(x, weight, bias, stride, padding)


def conv2d_backward(dy, cache):
    """npse's backward pass for the cache of :func:`conv2d_forward`."""
    return _conv2d_backward(dy, cache)


def batchnorm2d_forward(x, gamma, beta, eps=1e-5):
    """npse's BatchNorm in training mode; its running statistics are thrown away."""
    c = x.shape[1]
    return _batchnorm2d_forward(x, gamma, beta, np.zeros(c), np.ones(c), True, 0.1, eps)


def sgd_step(param, grad, buffer, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """One step of npse's SGD on a single parameter, its state restored from ``buffer``."""
    p = Parameter(param.copy())
    p.grad[...] = grad
    opt = SGD([("p", p)], lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
              fused=False)
    if buffer is not None:
        opt.load_state_dict({"step": np.array(1), "momentum_buffer.p": buffer})
    opt.step()
    return p.data, opt.state_dict().get("momentum_buffer.p")


__all__ = ["batchnorm2d_backward", "batchnorm2d_forward", "col2im", "conv2d_backward",
           "conv2d_forward", "linear_backward", "linear_forward", "maxpool2d_backward",
           "maxpool2d_forward", "se_block_backward", "se_block_forward", "sgd_step"]
