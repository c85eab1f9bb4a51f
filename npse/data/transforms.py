"""Normalisation and the standard CIFAR augmentation (pad 4, random 32x32 crop, random h-flip).

Images are channels-first: (N, C, H, W). All random numbers are drawn on the host from a
``numpy.random.Generator`` and then moved to the device, so NumPy and CuPy runs with the same
seed see the same crops and flips.
"""
from __future__ import annotations

import numpy

from npse import backend

# Per-channel mean and standard deviation of the CIFAR-10 training images, in [0, 1] pixel
# units (what channel_stats gives on the official 50000 training images, rounded).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def channel_stats(x_uint8, chunk: int = 4096):
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units.

    x_uint8: (N, C, H, W) uint8 on any backend.  Returns (mean, std): float64 host arrays (C,).
    Sums are taken over chunks of images in int64, which is exact, so no float copy of the
    whole data set is ever made.
    """
    xp = backend.get_array_module(x_uint8)
    c = x_uint8.shape[1]
    total = numpy.zeros(c, dtype=numpy.float64)
    total_sq = numpy.zeros(c, dtype=numpy.float64)
    for start in range(0, x_uint8.shape[0], chunk):
        part = x_uint8[start:start + chunk].astype(xp.int64)
        total += backend.to_host(part.sum(axis=(0, 2, 3)))
        total_sq += backend.to_host((part * part).sum(axis=(0, 2, 3)))
    count = x_uint8.shape[0] * x_uint8.shape[2] * x_uint8.shape[3]
    mean = total / count
    var = numpy.maximum(total_sq / count - mean * mean, 0.0)
    return mean / 255.0, numpy.sqrt(var) / 255.0


def normalize(x_uint8, mean, std, dtype=None, xp=None):
    """(x / 255 - mean) / std per channel, as a float array on the backend ``xp``.

    x_uint8: (..., C, H, W) uint8 (host or device).  mean, std: length-C sequences.
    dtype: float32 (default: backend.default_dtype()) or float64.  xp: default the active backend.
    The uint8 array is moved first and converted on the device, so only bytes travel.
    """
    xp = backend.module() if xp is None else xp
    dtype = backend.check_float_dtype(backend.default_dtype() if dtype is None else dtype,
                                      "npse.data.normalize")
    x = backend.to_host(x_uint8) if xp is numpy else xp.asarray(x_uint8)
    # Fold the three steps into one multiply-add: x * (1 / (255 std)) - mean / std.
    mean = numpy.asarray(mean, dtype=numpy.float64).reshape(-1, 1, 1)
    std = numpy.asarray(std, dtype=numpy.float64).reshape(-1, 1, 1)
    scale = xp.asarray((1.0 / (255.0 * std)).astype(dtype))
    shift = xp.asarray((mean / std).astype(dtype))
    return x.astype(dtype) * scale - shift


def draw_augmentation(rng: numpy.random.Generator, n: int, pad: int = 4):
    """Random crop offsets and flips for ``n`` images, drawn on the host.

    Returns (offsets_y int64 (n,), offsets_x int64 (n,), flips bool (n,)); offsets in 0..2*pad.
    """
    offsets_y = rng.integers(0, 2 * pad + 1, size=n)
    offsets_x = rng.integers(0, 2 * pad + 1, size=n)
    flips = rng.random(n) < 0.5
    return offsets_y, offsets_x, flips


def random_crop_flip(x, offsets_y, offsets_x, flips, pad: int = 4):
    """Zero-pad by ``pad``, crop H x W at the given offsets, flip horizontally where asked.

    x: (N, C, H, W) float on any backend.  offsets_y, offsets_x: host ints (N,) in 0..2*pad.
    flips: host bools (N,).  Returns a new (N, C, H, W) array on x's backend.

    One gather does the whole batch: output pixel (i, c, r, s) reads padded pixel
    (i, c, oy[i] + r, ox[i] + s), or (i, c, oy[i] + r, ox[i] + W - 1 - s) if image i is flipped.
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    offsets_y = numpy.asarray(offsets_y, dtype=numpy.int64).reshape(-1)
    offsets_x = numpy.asarray(offsets_x, dtype=numpy.int64).reshape(-1)
    flips = numpy.asarray(flips, dtype=bool).reshape(-1)
    for name, a in (("offsets_y", offsets_y), ("offsets_x", offsets_x), ("flips", flips)):
        if a.shape[0] != n:
            raise ValueError(f"random_crop_flip: {name} has {a.shape[0]} entries for {n} images")
    for name, a in (("offsets_y", offsets_y), ("offsets_x", offsets_x)):
        if n and (a.min() < 0 or a.max() > 2 * pad):
            raise ValueError(f"random_crop_flip: {name} must lie in 0..{2 * pad} for pad={pad}")

    # Index arithmetic on the host (tiny arrays), then one move to the device.
    cols = numpy.where(flips[:, None], numpy.arange(w)[::-1], numpy.arange(w))  # (N, W)
    rows = offsets_y[:, None] + numpy.arange(h)                                 # (N, H)
    cols = offsets_x[:, None] + cols                                            # (N, W)
    padded = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    i = xp.asarray(numpy.arange(n)[:, None, None, None])
    ch = xp.asarray(numpy.arange(c)[None, :, None, None])
    r = xp.asarray(rows[:, None, :, None])
    s = xp.asarray(cols[:, None, None, :])
    return padded[i, ch, r, s]
