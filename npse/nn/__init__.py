"""npse.nn: layers with hand-written forward and backward passes, shaped like torch.nn.

Each layer ``name`` has ``name_forward`` / ``name_backward`` functions side by side and a module
class that wraps them; see docs/README.md for the map from a layer to its file, test and chapter.
"""
from .activations import ReLU, Sigmoid, Tanh, relu_backward, relu_forward, sigmoid_backward, \
    sigmoid_forward, tanh_backward, tanh_forward
from .batchnorm2d import BatchNorm2d, batchnorm2d_backward, batchnorm2d_forward
from .conv2d import Conv2d, conv2d_backward, conv2d_forward
from .im2col import col2im, im2col
from .linear import Linear, linear_backward, linear_forward
from .loss import CrossEntropyLoss, cross_entropy_backward, cross_entropy_forward
from .module import Flatten, Module, Parameter, Sequential, grad_enabled, no_grad
from .pooling import (AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, MaxPool2d, avgpool2d_backward,
                      avgpool2d_forward, global_avgpool2d_backward, global_avgpool2d_forward,
                      global_maxpool2d_backward, global_maxpool2d_forward, maxpool2d_backward,
                      maxpool2d_forward)
from .se_block import GATES, SQUEEZES, SEBlock, se_block_backward, se_block_forward
from .se_no_squeeze import SEBlockNoSqueeze, se_no_squeeze_backward, se_no_squeeze_forward
from .shortcut import ShortcutA, shortcut_a_backward, shortcut_a_forward
from . import init

__all__ = [n for n in dir() if not n.startswith("_")]
