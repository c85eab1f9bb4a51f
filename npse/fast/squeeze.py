"""Faster formulations of the global average pooling and of the SE block's squeeze and scale.

Same numbers as npse/nn/pooling.py and npse/nn/se_block.py; what changes:

* the mean over H and W of an input stored channels last is a product with a vector of 1/(H*W),
  one pass over (N, H*W, C) (:func:`~npse.fast.reductions.spatial_mean`), and its gradient is
  stored channels last as well, so the layers below keep reading that layout;
* the SE block's ds = sum over H, W of dy * x is one dot product per (n, c) row, without the
  product array (:func:`~npse.fast.reductions.spatial_dot`).
"""
from __future__ import annotations

from ..backend import get_array_module
from ..nn import GlobalAvgPool2d, SEBlock
from .layout import from_nhwc, is_channels_last
from ..nn.pooling import check_has_pixels
from ..nn.se_block import SQUEEZES, channel_scale_forward
from .reductions import spatial_dot, spatial_mean
from .registry import register


class GlobalAvgPool2dFormulation:
    """:func:`npse.nn.pooling.global_avgpool2d_forward` / ``_backward``, either memory format."""

    def __init__(self, policy=None, shared=None):
        pass

    def forward(self, x, keep=True):
        check_has_pixels("GlobalAvgPool2d", x)
        return spatial_mean(x), (x.shape, is_channels_last(x))

    def backward(self, dz, cache):
        xp = get_array_module(dz)
        (n, c, h, w), channels_last = cache
        if channels_last:
            return from_nhwc(xp.broadcast_to((dz / (h * w))[:, None, None, :], (n, h, w, c)).copy())
        return xp.broadcast_to((dz / (h * w))[:, :, None, None], (n, c, h, w)).copy()


class SEBlockFormulation:
    """The SE block's squeeze and scale functions, as :class:`npse.nn.SEBlock` asks for them."""

    def __init__(self, policy=None, shared=None):
        pool = GlobalAvgPool2dFormulation()
        self._squeezes = dict(SQUEEZES, avg=(pool.forward, pool.backward))

    def squeeze(self, kind):
        """(forward, backward) of the squeeze ``kind`` ("avg" or "max")."""
        return self._squeezes[kind]

    scale_forward = staticmethod(channel_scale_forward)

    @staticmethod
    def scale_backward(dy, cache):
        """:func:`npse.nn.se_block.channel_scale_backward` with ds as row-wise dot products."""
        x, s = cache
        return dy * s[:, :, None, None], spatial_dot(dy, x)


register(GlobalAvgPool2d, "mean as a product", GlobalAvgPool2dFormulation, chosen=True)
register(SEBlock, "squeeze and ds as products", SEBlockFormulation, chosen=True)
