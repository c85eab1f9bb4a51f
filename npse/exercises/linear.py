"""Exercise ``linear``: the fully-connected layer's forward and backward (docs/03-linear.md)."""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from ..nn.linear import linear_backward, linear_forward
from .cases import rng, seeds
from .checker import Exercise
from .layer import Layer, layer_properties


@dataclass(frozen=True)
class LinearCase:
    n: int
    i: int
    o: int
    bias: bool
    seed: int

    def __str__(self):
        return (f"x (N={self.n}, I={self.i}), weight (O={self.o}, I={self.i}), "
                f"bias {'(O,)' if self.bias else 'None'}, seed {self.seed}")


cases = st.builds(LinearCase, st.integers(1, 4), st.integers(1, 5), st.integers(1, 5),
                  st.booleans(), seeds)


def make(case):
    g = rng(case.seed)
    arrays = dict(x=g.standard_normal((case.n, case.i)), weight=g.standard_normal((case.o, case.i)),
                  bias=g.standard_normal(case.o) if case.bias else None)
    return arrays, {}


def hint(name, yours, arrays, options, dy):
    if name == "bias" and yours is not None and yours.shape == arrays["bias"].shape:
        if abs(yours - dy.mean(axis=0)).max() < 1e-12 and len(dy) > 1:
            return "the bias is used by every sample: its gradient is a sum over the batch, not a mean"
    return None


LAYER = Layer("linear_forward", "linear_backward", ("x", "weight", "bias"), make,
              lambda a, o: linear_forward(a["x"], a["weight"], a["bias"])[0],
              lambda a, o, dy: linear_backward(dy, linear_forward(a["x"], a["weight"], a["bias"])[1]),
              hint)

EXERCISE = Exercise(
    "linear", "docs/03-linear.md",
    "y = x @ W^T + b and its backward pass: dx, dW, db",
    ("linear_forward", "linear_backward"),
    layer_properties(LAYER, cases),
)
