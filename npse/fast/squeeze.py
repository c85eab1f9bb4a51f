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
from ..nn.se_block import SQUEEZES
from .reductions import spatial_dot, spatial_mean
from .registry import register
from .threads import in_slices


class GlobalAvgPool2dFormulation:
    """:func:`npse.nn.pooling.global_avgpool2d_forward` / ``_backward``, either memory format."""

    def __init__(self, policy=None, shared=None):
        pass

    def forward(self, x, keep=True):
        check_has_pixels("GlobalAvgPool2d", x)
        xp = get_array_module(x)
        return _joined(in_slices(lambda s: spatial_mean(x[s]), x.shape[0], xp), xp), \
            (x.shape, is_channels_last(x))

    def backward(self, dz, cache):
        xp = get_array_module(dz)
        (n, c, h, w), channels_last = cache
        dz = dz / (h * w)                   # every pixel gets its channel's share
        shape, spread = ((n, h, w, c), dz[:, None, None, :]) if channels_last else \
            ((n, c, h, w), dz[:, :, None, None])
        dx = xp.empty(shape, dtype=dz.dtype)

        def images(s):
            dx[s] = spread[s]
        in_slices(images, n, xp)
        return from_nhwc(dx) if channels_last else dx


class SEBlockFormulation:
    """The SE block's squeeze and scale functions, as :class:`npse.nn.SEBlock` asks for them."""

    def __init__(self, policy=None, shared=None):
        pool = GlobalAvgPool2dFormulation()
        self._squeezes = dict(SQUEEZES, avg=(pool.forward, pool.backward))

    def squeeze(self, kind):
        """(forward, backward) of the squeeze ``kind`` ("avg" or "max")."""
        return self._squeezes[kind]

    @staticmethod
    def scale_forward(x, s):
        """:func:`npse.nn.se_block.channel_scale_forward`, by slices of the batch."""
        xp = get_array_module(x)
        y = xp.empty_like(x)
        in_slices(lambda b: xp.multiply(x[b], s[b, :, None, None], out=y[b]), x.shape[0], xp)
        return y, (x, s)

    @staticmethod
    def scale_backward(dy, cache):
        """:func:`npse.nn.se_block.channel_scale_backward` with ds as row-wise dot products, by
        slices of the batch."""
        x, s = cache
        xp = get_array_module(dy)
        dx = xp.empty_like(dy)

        def images(b):
            xp.multiply(dy[b], s[b, :, None, None], out=dx[b])
            return spatial_dot(dy[b], x[b])
        return dx, _joined(in_slices(images, dy.shape[0], xp), xp)


def _joined(parts, xp):
    """The per-slice results (each (k, ...)) as one array, in slice order."""
    return parts[0] if len(parts) == 1 else xp.concatenate(parts)


register(GlobalAvgPool2d, "mean as a product", GlobalAvgPool2dFormulation, chosen=True)
register(SEBlock, "squeeze and ds as products", SEBlockFormulation, chosen=True)
