"""Exercise ``shortcut_a``: the CIFAR ResNet's parameter-free shortcut, option A (docs/10-se-resnet.md).

Where a block changes the shape, the shortcut keeps every s-th pixel (from pixel 0 on) and pads
the channel axis with zeros, split (C_out - C) // 2 before and the rest after. It is linear, so
besides the shared properties its backward pass must be its adjoint: <A x, d> == <x, A^T d>.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy
from hypothesis import strategies as st

from ..gradcheck import relative_error
from ..nn.shortcut import shortcut_a_backward, shortcut_a_forward
from .cases import rng, seeds
from .checker import REFERENCE_TOLERANCE, Exercise, Failed, Property, expect_array
from .layer import Layer, layer_properties, upstream


@dataclass(frozen=True)
class ShortcutCase:
    n: int
    c: int
    h: int
    w: int
    extra: int              # zero channels added: out_channels = c + extra
    stride: int
    seed: int

    def __str__(self):
        return (f"x shape {(self.n, self.c, self.h, self.w)}, out_channels {self.c + self.extra}, "
                f"stride {self.stride}, seed {self.seed}")


cases = st.builds(ShortcutCase, st.integers(1, 2), st.integers(1, 3), st.integers(1, 5),
                  st.integers(1, 5), st.integers(0, 4), st.integers(1, 3), seeds)


def make(case):
    x = rng(case.seed).standard_normal((case.n, case.c, case.h, case.w))
    return dict(x=x), dict(out_channels=case.c + case.extra, stride=case.stride)


def _placed(x, out_channels, stride, before, start=0):
    """x subsampled from pixel ``start`` on, with ``before`` zero channels in front."""
    sub = x[:, :, start::stride, start::stride]
    y = numpy.zeros((x.shape[0], out_channels) + sub.shape[2:])
    y[:, before:before + x.shape[1]] = sub
    return y


def _taken(dy, x_shape, stride, before, start=0):
    """The backward pass of :func:`_placed`: dy's channels from ``before`` on, back at the pixels."""
    dx = numpy.zeros(x_shape)
    target = dx[:, :, start::stride, start::stride]
    target[...] = dy[:, before:before + x_shape[1], :target.shape[2], :target.shape[3]]
    return dx


def hint(name, yours, arrays, options, dy):
    """Recognise the zero channels put on the wrong side, or the subsampling started at s - 1,
    in y or in dx."""
    x, out, s = arrays["x"], options["out_channels"], options["stride"]
    extra = out - x.shape[1]
    if name not in ("x", "y") or getattr(yours, "shape", None) is None:
        return None
    for before, start, text in [
            (0, 0, "all the zero channels come after x's; they are split: (C_out - C) // 2 before "
                   "x's channels, the rest after"),
            (extra, 0, "all the zero channels come before x's; they are split: (C_out - C) // 2 "
                       "before x's channels, the rest after"),
            ((extra + 1) // 2, 0, "with an odd number of zero channels the extra one goes AFTER "
                                  "x's channels: (C_out - C) // 2 before, rounded down"),
            (extra // 2, s - 1, f"the kept pixels are 0, s, 2s, ... (x[:, :, ::s, ::s]); yours "
                                f"start at pixel s - 1")]:
        if before == extra // 2 and start == 0:
            continue
        if 0 <= before <= extra and start < min(x.shape[2:]):
            wrong = (_placed(x, out, s, before, start) if name == "y"
                     else _taken(dy, x.shape, s, before, start))
            if wrong.shape == yours.shape and relative_error(yours, wrong) < 1e-12:
                return text
    return None


def is_adjoint(student, case):
    """<A x, d> == <x, A^T d> on independent x and d: the backward pass is the transpose."""
    arrays, options = make(case)
    y, cache = LAYER.run_forward(student, arrays, options)
    d = upstream(case.seed, y.shape)
    back = LAYER.run_backward(student, d.copy(), cache)[0]
    expect_array("dx", back, arrays["x"])
    left, right = float((y * d).sum()), float((arrays["x"] * back).sum())
    # The same products summed in another order: a few ulps of the largest term.
    if not abs(left - right) <= REFERENCE_TOLERANCE * max(abs(left), 1.0):
        raise Failed(f"<A x, d> = {left:.6g} but <x, A^T d> = {right:.6g}: the backward pass must "
                     f"send each entry of d back to the pixel of x it was copied from, and drop "
                     f"the entries of the zero channels and of the skipped pixels")


LAYER = Layer("shortcut_a_forward", "shortcut_a_backward", ("x",), make,
              lambda a, o: shortcut_a_forward(a["x"], **o)[0],
              lambda a, o, dy: (shortcut_a_backward(dy, shortcut_a_forward(a["x"], **o)[1]),), hint)

EXERCISE = Exercise(
    "shortcut_a", "docs/10-se-resnet.md",
    "shortcut A: stride-s subsampling and zero channels split before/after, both passes",
    ("shortcut_a_forward", "shortcut_a_backward"),
    layer_properties(LAYER, cases)
    + [Property("the backward pass is the adjoint of the forward: <A x, d> == <x, A^T d>", cases,
                is_adjoint)],
)
