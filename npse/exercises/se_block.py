"""Exercise ``se_block``: the Squeeze-and-Excitation block, both backward paths (docs/09-se-block.md).

The standard block: average squeeze, ReLU between the two linear layers, sigmoid gate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy
from hypothesis import strategies as st

from ..gradcheck import relative_error
from ..nn.se_block import se_block_backward, se_block_forward
from .cases import rng, seeds
from .checker import Exercise
from .layer import Layer, layer_properties

#: Drawn blocks whose hidden pre-activations all lie this far from the ReLU's kink at 0: a
#: central difference with step 1e-5 cannot cross it, so it measures the derivative.
KINK_GAP = 1e-3


@dataclass(frozen=True)
class SECase:
    n: int
    c: int
    h: int
    w: int
    reduction: int
    seed: int

    @property
    def hidden(self):
        return max(1, self.c // self.reduction)

    def __str__(self):
        return (f"x shape {(self.n, self.c, self.h, self.w)}, reduction {self.reduction} "
                f"(hidden width {self.hidden}), seed {self.seed}")


def make(case):
    g = rng(case.seed)
    c, h = case.c, case.hidden
    # Weights as nn.Linear draws them, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in the test suite:
    # unit-scale weights saturate the sigmoid, and gradients 1e-4 the size of the loss sink into
    # the central difference's rounding error.
    k1, k2 = 1 / c ** 0.5, 1 / h ** 0.5
    arrays = dict(x=g.standard_normal((case.n, c, case.h, case.w)) + 0.5,
                  w1=g.uniform(-k1, k1, (h, c)), b1=g.uniform(-k1, k1, h),
                  w2=g.uniform(-k2, k2, (c, h)), b2=g.uniform(-k2, k2, c))
    return arrays, {}


def _away_from_kink(case):
    a = make(case)[0]
    hidden = a["x"].mean(axis=(2, 3)) @ a["w1"].T + a["b1"]
    return bool(numpy.abs(hidden).min() >= KINK_GAP)


cases = st.builds(SECase, st.integers(1, 3), st.integers(1, 8), st.integers(1, 4),
                  st.integers(1, 4), st.sampled_from([1, 2, 4]), seeds).filter(_away_from_kink)


def hint(name, yours, arrays, options, dy):
    if name != "x" or getattr(yours, "shape", None) != dy.shape:
        return None
    _, cache = se_block_forward(**arrays)
    gate_path = dy * cache["gate"][:, :, None, None]
    if relative_error(yours, gate_path) < 1e-8:
        return ("your dx is dy * s only: x also reaches y through the squeeze, and the gradient "
                "along that path (dz / (H*W) on every pixel) must be added")
    pixels = dy.shape[2] * dy.shape[3]
    squeeze_path = se_block_backward(dy, cache)[0] - gate_path
    if pixels > 1 and relative_error(yours, gate_path + pixels * squeeze_path) < 1e-8:
        return ("your squeeze path gives every pixel dz itself; z is the MEAN of H*W pixels, so "
                "each receives dz / (H*W)")
    return None


def _reference(a):
    return se_block_forward(a["x"], a["w1"], a["b1"], a["w2"], a["b2"])


LAYER = Layer("se_block_forward", "se_block_backward", ("x", "w1", "b1", "w2", "b2"), make,
              lambda a, o: _reference(a)[0],
              lambda a, o, dy: se_block_backward(dy, _reference(a)[1]), hint)

EXERCISE = Exercise(
    "se_block", "docs/09-se-block.md",
    "the SE block (average squeeze, sigmoid gate): forward and both backward paths",
    ("se_block_forward", "se_block_backward"),
    layer_properties(LAYER, cases),
)
