"""Weight initialisation, drawn on the host from a seeded generator and then moved to the backend.

Drawing on the host means one seed gives the same network on NumPy and on CuPy.
Chapter: docs/02-module.md.
"""
from __future__ import annotations

import math

import numpy

from .. import backend


def fan_in_and_fan_out(shape):
    """(fan_in, fan_out) of a Linear (out, in) or Conv2d (out, in, kh, kw) weight, as PyTorch."""
    receptive = int(numpy.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def uniform(shape, bound, rng, dtype):
    """U(-bound, bound) on the active backend."""
    return backend.to_device(rng.uniform(-bound, bound, size=shape).astype(dtype))


def pytorch_default_weight(shape, rng, dtype):
    """PyTorch's default for Linear and Conv2d weights: kaiming_uniform(a=sqrt(5)),
    which is U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in, _ = fan_in_and_fan_out(shape)
    return uniform(shape, 1.0 / math.sqrt(fan_in), rng, dtype)


def pytorch_default_bias(n, fan_in, rng, dtype):
    """PyTorch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform((n,), 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, rng, dtype)


def kaiming_normal(shape, rng, dtype, mode="fan_out", gain=math.sqrt(2.0)):
    """He et al. 2015: N(0, gain^2 / fan), fan = fan_in or fan_out (torchvision's ResNets use
    fan_out with the ReLU gain sqrt(2))."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming_normal: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_fan_out(shape)
    std = gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    return backend.to_device(rng.normal(0.0, std, size=shape).astype(dtype))


def as_rng(seed_or_rng):
    """A numpy Generator from a seed, an existing Generator, or None (fresh entropy)."""
    if isinstance(seed_or_rng, numpy.random.Generator):
        return seed_or_rng
    return backend.rng(seed_or_rng)
