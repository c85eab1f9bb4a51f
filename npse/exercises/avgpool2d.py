"""Exercise ``avgpool2d``: average pooling and global average pooling (docs/07-pooling.md).

Average pooling follows PyTorch's default ``count_include_pad=True``: the divisor is always
KH*KW, padded zeros included. Global average pooling is the SE block's squeeze: the mean over
H and W, whose backward pass spreads dz / (H*W) over every pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy
from hypothesis import strategies as st

from ..gradcheck import relative_error
from ..nn.pooling import (avgpool2d_backward, avgpool2d_forward, global_avgpool2d_backward,
                          global_avgpool2d_forward)
from .cases import rng, seeds, windows
from .checker import Exercise
from .layer import Layer, labelled, layer_properties

cases = windows(half_kernel_padding=True)     # PyTorch's rule: padding <= kernel // 2


@dataclass(frozen=True)
class MapCase:
    n: int
    c: int
    h: int
    w: int
    seed: int

    def __str__(self):
        return f"x shape {(self.n, self.c, self.h, self.w)}, seed {self.seed}"


global_cases = st.builds(MapCase, st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),
                         st.integers(1, 4), seeds)


def make(case):
    x = rng(case.seed).standard_normal((case.n, case.c, case.h, case.w))
    return dict(x=x), dict(kernel_size=case.kernel, stride=case.stride, padding=case.padding)


def make_global(case):
    return dict(x=rng(case.seed).standard_normal((case.n, case.c, case.h, case.w))), {}


def _pixels_per_window(x_shape, options):
    """How many real (not padded) pixels each output window covers: (1, 1, OH, OW)."""
    ones = numpy.ones((1, 1) + tuple(x_shape[2:]))
    y = avgpool2d_forward(ones, **options)[0]
    return y * options["kernel_size"][0] * options["kernel_size"][1]


def hint(name, yours, arrays, options, dy):
    """Recognise the divisor of count_include_pad=False (real pixels only) in y or dx."""
    if options["padding"] == (0, 0) or name not in ("y", "x"):
        return None
    x = arrays["x"]
    area = options["kernel_size"][0] * options["kernel_size"][1]
    y, cache = avgpool2d_forward(x, **options)
    count = _pixels_per_window(x.shape, options)
    wrong = y * area / count if name == "y" else avgpool2d_backward(dy * area / count, cache)
    if getattr(yours, "shape", None) == wrong.shape and relative_error(yours, wrong) < 1e-8:
        return ("you divide by the number of real pixels in each window; PyTorch's default "
                "(count_include_pad=True) counts the padded zeros too: the divisor is always KH*KW")
    return None


def global_hint(name, yours, arrays, options, dy):
    x = arrays["x"]
    if name != "x" or getattr(yours, "shape", None) != x.shape or x.shape[2] * x.shape[3] == 1:
        return None
    if relative_error(yours, numpy.broadcast_to(dy[:, :, None, None], x.shape)) < 1e-12:
        return ("your dx copies dz to every pixel; z is a MEAN of H*W pixels, so each pixel "
                "receives dz / (H*W)")
    return None


LAYER = Layer("avgpool2d_forward", "avgpool2d_backward", ("x",), make,
              lambda a, o: avgpool2d_forward(a["x"], **o)[0],
              lambda a, o, dy: (avgpool2d_backward(dy, avgpool2d_forward(a["x"], **o)[1]),), hint)
GLOBAL = Layer("global_avgpool2d_forward", "global_avgpool2d_backward", ("x",), make_global,
               lambda a, o: global_avgpool2d_forward(a["x"])[0],
               lambda a, o, dy: (global_avgpool2d_backward(dy, a["x"].shape),), global_hint)


EXERCISE = Exercise(
    "avgpool2d", "docs/07-pooling.md",
    "average pooling (padding counted in the divisor) and global average pooling, both passes",
    ("avgpool2d_forward", "avgpool2d_backward", "global_avgpool2d_forward", "global_avgpool2d_backward"),
    labelled(layer_properties(LAYER, cases), "avgpool2d")
    + labelled(layer_properties(GLOBAL, global_cases), "global_avgpool2d"),
)
