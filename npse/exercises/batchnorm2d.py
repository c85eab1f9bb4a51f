"""Exercise ``batchnorm2d``: batch normalisation in training mode (docs/08-batchnorm2d.md)."""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from ..nn.batchnorm2d import batchnorm2d_backward
from .cases import rng, seeds
from ..gradcheck import relative_error
from .checker import Exercise
from .layer import Layer, layer_properties
from .reference import batchnorm2d_forward


@dataclass(frozen=True)
class NormCase:
    n: int
    c: int
    h: int
    w: int
    seed: int

    def __str__(self):
        return (f"x shape {(self.n, self.c, self.h, self.w)} (M = {self.n * self.h * self.w} "
                f"values per channel), seed {self.seed}")


def _enough_values(case):
    # With M = 2 values per channel xhat is +-1 whatever x is, dx is rounding noise and a
    # difference quotient measures nothing (chapter 8): the checks use M >= 3, as the tests do.
    return case.n * case.h * case.w >= 3


cases = st.builds(NormCase, st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),
                  st.integers(1, 4), seeds).filter(_enough_values)


def make(case):
    g = rng(case.seed)
    x = 3 + 2 * g.standard_normal((case.n, case.c, case.h, case.w))
    return dict(x=x, gamma=g.standard_normal(case.c), beta=g.standard_normal(case.c)), {}


def hint(name, yours, arrays, options, dy):
    """Recognise the three classic mistakes in dx by the answer they give."""
    if name != "x" or getattr(yours, "shape", None) != dy.shape:
        return None
    x, gamma = arrays["x"], arrays["gamma"][None, :, None, None]
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    inv_std = 1 / (var + 1e-5) ** 0.5
    constant_stats = dy * gamma * inv_std
    no_variance_path = gamma * inv_std * (dy - dy.mean(axis=(0, 2, 3), keepdims=True))
    if relative_error(yours, constant_stats) < 1e-8:
        return ("your dx treats the batch mean and variance as constants; they depend on x too "
                "(the two extra terms of the derivation in chapter 8)")
    if relative_error(yours, no_variance_path) < 1e-8:
        return "your dx has the path through the mean but not the one through the variance"
    xhat = (x - mu) * inv_std
    no_mean_path = gamma * inv_std * (dy - xhat * (dy * xhat).mean(axis=(0, 2, 3), keepdims=True))
    if relative_error(yours, no_mean_path) < 1e-8:
        return ("your dx has the path through the variance but not the one through the mean: "
                "subtract the channel's mean of dy * gamma * inv_std (the -mean(dxhat) term)")
    return None


def _reference(a):
    return batchnorm2d_forward(a["x"], a["gamma"], a["beta"])


LAYER = Layer("batchnorm2d_forward", "batchnorm2d_backward", ("x", "gamma", "beta"), make,
              lambda a, o: _reference(a)[0],
              lambda a, o, dy: batchnorm2d_backward(dy, _reference(a)[1]), hint)

EXERCISE = Exercise(
    "batchnorm2d", "docs/08-batchnorm2d.md",
    "BatchNorm2d in training mode: forward with batch statistics, backward through them",
    ("batchnorm2d_forward", "batchnorm2d_backward"),
    layer_properties(LAYER, cases),
)
