"""Hypothesis strategies shared by every layer test.

Shapes and hyper-parameters are drawn by hypothesis; array *values* come from a NumPy generator
seeded by a drawn integer (fast, and still reproducible from hypothesis's report).  Values are
drawn away from ReLU kinks and max-pool ties on purpose: a central difference across such a
point does not estimate the derivative.
"""
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)
batch = st.integers(1, 3)
channels = st.integers(1, 4)


@dataclass
class WindowCase:
    """A pooling/convolution geometry: input (N, C, H, W), kernel, stride, padding."""
    n: int
    c: int
    h: int
    w: int
    kernel: tuple
    stride: tuple
    padding: tuple
    seed: int


@st.composite
def window_cases(draw, max_kernel=5, max_stride=3, max_pad=None, half_kernel_padding=False,
                 max_extra=5):
    """Geometry whose padded input is at least the kernel: odd and even, non-square sizes,
    kernel 1..max_kernel, stride 1..max_stride, valid padding."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    if half_kernel_padding:                     # pooling: PyTorch allows padding <= kernel // 2
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    else:
        limit = 2 if max_pad is None else max_pad
        ph, pw = draw(st.integers(0, limit)), draw(st.integers(0, limit))
    h = draw(st.integers(max(1, kh - 2 * ph), max(1, kh - 2 * ph) + max_extra))
    w = draw(st.integers(max(1, kw - 2 * pw), max(1, kw - 2 * pw) + max_extra))
    return WindowCase(draw(batch), draw(channels), h, w, (kh, kw), (sh, sw), (ph, pw), draw(seeds))


def normal(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def away_from_zero(rng, shape, gap=0.05, dtype=np.float64):
    """Random values with |v| >= gap: no ReLU kink within reach of a finite-difference step."""
    v = rng.standard_normal(shape)
    return (np.sign(v) * (gap + np.abs(v))).astype(dtype)


def distinct(rng, shape, dtype=np.float64):
    """All values different, at least 1/size apart (scaled to [-2, 2]): no max-pool ties."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) / max(size, 1)) * 4 - 2).reshape(shape).astype(dtype)
