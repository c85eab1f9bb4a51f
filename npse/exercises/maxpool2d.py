"""Exercise ``maxpool2d``: max pooling's forward and backward, ties and padding (docs/07-pooling.md)."""
from __future__ import annotations

import numpy

from ..nn.pooling import maxpool2d_backward, maxpool2d_forward
from .cases import distinct, rng, windows
from .checker import Exercise, Failed, Property, expect_close, show
from .layer import Layer, layer_properties, upstream

cases = windows(half_kernel_padding=True)     # PyTorch's rule: padding <= kernel // 2


def make(case):
    x = distinct(rng(case.seed), (case.n, case.c, case.h, case.w))   # no ties: a gradient exists
    return dict(x=x), dict(kernel_size=case.kernel, stride=case.stride, padding=case.padding)


def _reference(x, options):
    return maxpool2d_forward(x, options["kernel_size"], options["stride"], options["padding"])


def _with_reference(check_name, student, x, options, seed):
    """Compare the student's y and dx with npse's on input ``x``."""
    y, cache = student.maxpool2d_forward(x.copy(), **options)
    y_ref, cache_ref = _reference(x, options)
    try:
        expect_close("y", y, y_ref)
        dy = upstream(seed, y_ref.shape)
        expect_close("dx", student.maxpool2d_backward(dy.copy(), cache),
                     maxpool2d_backward(dy, cache_ref),
                     hint="ties: the whole gradient goes to the FIRST maximum of the window in "
                          "row-major order, as numpy's argmax picks it" if check_name == "ties" else None)
    except Failed as f:
        raise Failed(f"{f}\n{show('x', x)}") from None


def ties_go_to_first_maximum(student, case):
    """Inputs from {0, 1, 2}: most windows hold ties, which PyTorch and npse resolve alike."""
    x = rng(case.seed).integers(0, 3, (case.n, case.c, case.h, case.w)).astype(numpy.float64)
    options = dict(kernel_size=case.kernel, stride=case.stride, padding=case.padding)
    _with_reference("ties", student, x, options, case.seed)


def padding_never_wins(student, case):
    """An all-negative input: zero padding would win the border windows, -inf padding never does."""
    x = -1 - rng(case.seed).random((case.n, case.c, case.h, case.w))
    options = dict(kernel_size=case.kernel, stride=case.stride, padding=case.padding)
    _with_reference("padding", student, x, options, case.seed)


LAYER = Layer("maxpool2d_forward", "maxpool2d_backward", ("x",), make,
              lambda a, o: _reference(a["x"], o)[0],
              lambda a, o, dy: (maxpool2d_backward(dy, _reference(a["x"], o)[1]),))

EXERCISE = Exercise(
    "maxpool2d", "docs/07-pooling.md",
    "max pooling: forward, backward, the tie rule and -inf padding",
    ("maxpool2d_forward", "maxpool2d_backward"),
    layer_properties(LAYER, cases)
    + [Property("ties: the whole gradient goes to the first maximum", cases, ties_go_to_first_maximum),
       Property("padding is -inf: it never wins a window", cases, padding_never_wins)],
)
