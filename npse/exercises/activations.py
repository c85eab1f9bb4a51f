"""Exercise ``activations``: sigmoid and tanh, written to survive large |x| (docs/04-activations.md).

Besides the four shared properties for each function (on inputs of moderate size), one property
per function feeds it entries far out in the tails, |x| from 20 up to 1000, where ``exp(|x|)`` is
``inf`` in float64 (it overflows past x = 709.78). There NumPy's floating-point errors are raised
(:func:`strict_floats`): a naive ``1 / (1 + np.exp(-x))`` fails on its overflow even though
``1 / (1 + inf)`` happens to be the right 0, and ``inf / inf`` (NaN) fails at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy
from hypothesis import strategies as st

from ..nn.activations import sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward
from .cases import rng, seeds
from .checker import (GRADIENT_TOLERANCE, Exercise, Failed, Property, central_differences,
                      expect_close, numerical_trouble, show, strict_floats)
from .layer import Layer, labelled, layer_properties, upstream

#: exp(x) is inf in float64 from x = 709.79 on; the tail cases hold entries beyond it, both signs.
OVERFLOW = 709.79


@dataclass(frozen=True)
class ElementwiseCase:
    shape: tuple
    scale: float
    seed: int

    def __str__(self):
        return f"x shape {self.shape}, x = {self.scale:g} * standard normal, seed {self.seed}"


@dataclass(frozen=True)
class TailCase:
    size: int
    seed: int

    def __str__(self):
        return (f"x of {self.size} entries: moderate ones, and tails with |x| in [20, 1000] "
                f"(x[1] < -{OVERFLOW:g} < {OVERFLOW:g} < x[2]), seed {self.seed}")


cases = st.builds(ElementwiseCase, st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
                  st.sampled_from([0.5, 1.0, 3.0]), seeds)
tail_cases = st.builds(TailCase, st.integers(3, 10), seeds)


def tail_input(case):
    """Moderate entries (they carry the norms the relative errors are measured by) between
    entries far out in both tails; x[1] and x[2] lie beyond exp's overflow point."""
    g = rng(case.seed)
    x = g.standard_normal(case.size)
    far = numpy.exp(g.uniform(numpy.log(20), numpy.log(1000), case.size))
    x[1::2] = (far * g.choice([-1.0, 1.0], case.size))[1::2]
    x[1], x[2] = -g.uniform(OVERFLOW + 0.01, 1000), g.uniform(OVERFLOW + 0.01, 1000)
    return x


def make(case):
    return dict(x=case.scale * rng(case.seed).standard_normal(case.shape)), {}


SIGMOID_ADVICE = ("exp(t) overflows to inf in float64 once t > 709.78. Compute sigmoid from "
                  "e = exp(-|x|), which lies in (0, 1]: 1 / (1 + e) where x >= 0, e / (1 + e) where "
                  "x < 0 (np.where computes BOTH of its branches on every entry, so a branch holding "
                  "exp(-x) still overflows), and its derivative from the output: y * (1 - y)")
TANH_ADVICE = ("exp(t) overflows to inf in float64 once t > 709.78. Compute tanh from e = exp(-2|x|), "
               "which lies in (0, 1]: sign(x) * (1 - e) / (1 + e), and its derivative from the "
               "output: 1 - y**2")


def tails_property(layer, advice):
    """The function and its derivative on the tails: no floating-point error, finite values
    equal to npse's, and a backward pass equal to central differences of the forward."""

    def check(student, case):
        x = tail_input(case)
        dy = upstream(case.seed, x.shape)
        try:
            with strict_floats(f"x with entries up to |x| = {numpy.abs(x).max():.4g}"):
                y, cache = layer.run_forward(student, {"x": x.copy()}, {})
                dx = layer.run_backward(student, dy.copy(), cache)[0]
                expect_close("y", y, layer.reference_forward({"x": x}, {}))
                expect_close("dx", dx, layer.reference_backward({"x": x}, {}, dy)[0])
                arrays = {"x": x.copy()}
                numeric = central_differences(
                    lambda: float((layer.run_forward(student, arrays, {})[0] * dy).sum()),
                    arrays, ["x"])["x"]
                expect_close("dx", dx, numeric, GRADIENT_TOLERANCE, "central differences")
        except Failed as f:
            hint = f"\nhint: {advice}" if numerical_trouble(f) else ""
            raise Failed(f"{f}\n{show('x', x)}{hint}") from None

    return Property(f"{layer.forward}/{layer.backward} on large |x| (up to 1000, beyond exp's "
                    f"overflow at {OVERFLOW:g}): no overflow, no NaN, right values", tail_cases, check)


SIGMOID = Layer("sigmoid_forward", "sigmoid_backward", ("x",), make,
                lambda a, o: sigmoid_forward(a["x"])[0],
                lambda a, o, dy: (sigmoid_backward(dy, sigmoid_forward(a["x"])[1]),))
TANH = Layer("tanh_forward", "tanh_backward", ("x",), make,
             lambda a, o: tanh_forward(a["x"])[0],
             lambda a, o, dy: (tanh_backward(dy, tanh_forward(a["x"])[1]),))

EXERCISE = Exercise(
    "activations", "docs/04-activations.md",
    "sigmoid and tanh, forward and backward, stable for large |x| (no overflow, no NaN)",
    ("sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward"),
    labelled(layer_properties(SIGMOID, cases), "sigmoid")
    + [tails_property(SIGMOID, SIGMOID_ADVICE)]
    + labelled(layer_properties(TANH, cases), "tanh")
    + [tails_property(TANH, TANH_ADVICE)],
)
