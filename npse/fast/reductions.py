"""Sums over some axes of a (N, C, H, W) array, written as matrix products.

A reduction such as ``a.sum(axis=(0, 2, 3))`` walks the array with strides and, on NumPy, on one
core; the same sum as a matrix-vector product with a vector of ones lets BLAS stream through
memory once (docs/B-speed.md measures the difference). Each function names the plain
expression it equals; tests/test_formulations.py compares them.
"""
from __future__ import annotations

from ..backend import get_array_module
from .layout import is_channels_last, nhwc
from .registry import BATCHNORM, ELEMENTWISE, charge

# BatchNorm's sums, and the squeeze and the SE block's ds
charge(__name__, BATCHNORM, ("channel_sum", "channel_dot"))
charge(__name__, ELEMENTWISE, ("spatial_dot", "spatial_mean"))


def spatial_dot(a, b):
    """sum over H and W of a * b, both (N, C, H, W) -> (N, C), without making the product array:
    one dot product per (n, c) row of the (N*C, H*W) views.  Equals ``(a * b).sum(axis=(2, 3))``.
    If ``a`` is stored channels last, the sums run down the columns of (N, H*W, C) views instead."""
    xp = get_array_module(a, b)
    n, c, h, w = a.shape
    if is_channels_last(a):
        a3, b3 = nhwc(a).reshape(n, h * w, c), nhwc(b).reshape(n, h * w, c)
        return xp.einsum("npc,npc->nc", a3, b3)
    a2, b2 = a.reshape(n * c, h * w), b.reshape(n * c, h * w)
    rows = xp.vecdot(a2, b2) if hasattr(xp, "vecdot") else xp.einsum("ij,ij->i", a2, b2)
    return rows.reshape(n, c)


def channel_sum(a):
    """sum of a contiguous a (N, C, H, W) over N, H and W -> (C,), as (N*C, H*W) @ ones, then a
    sum over N.  Equals ``a.sum(axis=(0, 2, 3))``."""
    xp = get_array_module(a)
    n, c, h, w = a.shape
    ones = xp.ones(h * w, dtype=a.dtype)
    return (a.reshape(n * c, h * w) @ ones).reshape(n, c).sum(axis=0)


def channel_dot(a, b):
    """sum of a * b (both (N, C, H, W)) over N, H and W -> (C,), without the product array.
    Equals ``(a * b).sum(axis=(0, 2, 3))``."""
    return spatial_dot(a, b).sum(axis=0)


def spatial_mean(x):
    """The mean over H and W of x (N, C, H, W) -> (N, C). Stored channels last, it is a product
    with a vector of 1/(H*W), one pass over (N, H*W, C); otherwise ``x.mean(axis=(2, 3))``."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    if is_channels_last(x):
        return xp.full(h * w, 1.0 / (h * w), dtype=x.dtype) @ nhwc(x).reshape(n, h * w, c)
    return x.mean(axis=(2, 3), dtype=x.dtype)
