"""Hypothesis strategies for the exercises' cases: small shapes, a seed for the values.

As in tests/strategies.py, hypothesis draws the shapes and hyper-parameters, and the array values
come from a NumPy generator seeded by a drawn integer: fast, and a shrunk case is reproducible
from what the report prints. Shapes are kept small because the gradient check perturbs every
entry of every input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class Window:
    """A convolution or pooling geometry on an (N, C, H, W) input; a convolution's case also
    has ``out`` channels O and says whether it has a ``bias``."""
    n: int
    c: int
    h: int
    w: int
    kernel: tuple
    stride: tuple
    padding: tuple
    seed: int
    out: int = None
    bias: bool = None

    def __str__(self):
        conv = "" if self.out is None else f", out channels {self.out}, bias {self.bias}"
        return (f"x shape {(self.n, self.c, self.h, self.w)}, kernel {self.kernel}, stride "
                f"{self.stride}, padding {self.padding}{conv}, seed {self.seed}")


@st.composite
def windows(draw, max_kernel=3, max_stride=3, half_kernel_padding=False, conv=False):
    """Geometries whose padded input holds at least one window: odd, even, non-square sizes."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    top_h, top_w = (kh // 2, kw // 2) if half_kernel_padding else (2, 2)
    ph, pw = draw(st.integers(0, top_h)), draw(st.integers(0, top_w))
    h = draw(st.integers(max(1, kh - 2 * ph), max(1, kh - 2 * ph) + 4))
    w = draw(st.integers(max(1, kw - 2 * pw), max(1, kw - 2 * pw) + 4))
    n, c, seed = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(seeds)
    if conv:
        return Window(n, c, h, w, (kh, kw), (sh, sw), (ph, pw), seed, draw(st.integers(1, 3)),
                      draw(st.booleans()))
    return Window(n, c, h, w, (kh, kw), (sh, sw), (ph, pw), seed)


def rng(seed, stream=0):
    return numpy.random.default_rng([seed, stream])


def distinct(generator, shape):
    """All values different, at least 4/size apart, in [-2, 2): no max-pool ties."""
    size = int(numpy.prod(shape))
    return (generator.permutation(size) / max(size, 1) * 4 - 2).reshape(shape)
