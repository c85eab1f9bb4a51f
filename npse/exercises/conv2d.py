"""Exercise ``conv2d``: col2im and the convolution's backward pass (docs/06-conv2d.md).

The forward pass (im2col and one matrix product) is given in the stub; the student writes
``col2im``, the adjoint of im2col, and ``conv2d_backward`` from the cache of that forward pass.
"""
from __future__ import annotations

from ..nn.im2col import col2im as reference_col2im
from ..nn.im2col import conv_output_size, im2col
from .cases import rng, windows
from .checker import REFERENCE_TOLERANCE, Exercise, Failed, Property, expect_array, expect_close, show
from .layer import Layer, layer_properties
from .reference import conv2d_backward, conv2d_forward

cases = windows(conv=True)


def _cols_shape(case):
    (kh, kw), (sh, sw), (ph, pw) = case.kernel, case.stride, case.padding
    oh, ow = conv_output_size(case.h, kh, sh, ph), conv_output_size(case.w, kw, sw, pw)
    return case.c * kh * kw, case.n * oh * ow


def _overlap_hint(case):
    if case.stride[0] < case.kernel[0] or case.stride[1] < case.kernel[1]:
        return ("windows overlap here (stride < kernel): a pixel that lies in several patches must "
                "receive the sum of their entries (+=, not =)")
    if case.padding != (0, 0):
        return "with padding, the border of the padded array collects gradient too; crop it off"
    return None


def col2im_matches(student, case):
    cols = rng(case.seed).standard_normal(_cols_shape(case))
    x_shape = (case.n, case.c, case.h, case.w)
    yours = student.col2im(cols.copy(), x_shape, case.kernel, case.stride, case.padding)
    expected = reference_col2im(cols, x_shape, case.kernel, case.stride, case.padding)
    try:
        expect_close("col2im(cols)", yours, expected, hint=_overlap_hint(case))
    except Failed as f:
        raise Failed(f"{f}\n{show('cols', cols)}") from None


def col2im_is_adjoint(student, case):
    g = rng(case.seed)
    x = g.standard_normal((case.n, case.c, case.h, case.w))
    cols = g.standard_normal(_cols_shape(case))
    back = student.col2im(cols.copy(), x.shape, case.kernel, case.stride, case.padding)
    expect_array("col2im(cols)", back, x)
    left = float((im2col(x, case.kernel, case.stride, case.padding) * cols).sum())
    right = float((x * back).sum())
    scale = max(abs(left), 1.0)
    if not abs(left - right) <= REFERENCE_TOLERANCE * scale:
        hint = _overlap_hint(case)
        raise Failed(f"<im2col(x), cols> = {left:.6g} but <x, col2im(cols)> = {right:.6g}: "
                     f"col2im must be the adjoint (transpose) of im2col"
                     + (f"\nhint: {hint}" if hint else ""))


def make(case):
    g = rng(case.seed)
    kh, kw = case.kernel
    arrays = dict(x=g.standard_normal((case.n, case.c, case.h, case.w)),
                  weight=g.standard_normal((case.out, case.c, kh, kw)),
                  bias=g.standard_normal(case.out) if case.bias else None)
    return arrays, dict(stride=case.stride, padding=case.padding)


def _reference_forward(a, o):
    return conv2d_forward(a["x"], a["weight"], a["bias"], o["stride"], o["padding"])


LAYER = Layer("conv2d_forward", "conv2d_backward", ("x", "weight", "bias"), make,
              lambda a, o: _reference_forward(a, o)[0],
              lambda a, o, dy: conv2d_backward(dy, _reference_forward(a, o)[1]))

EXERCISE = Exercise(
    "conv2d", "docs/06-conv2d.md",
    "col2im (the adjoint of im2col) and the convolution's backward pass",
    ("col2im", "conv2d_forward", "conv2d_backward"),
    [Property("col2im matches npse's col2im", cases, col2im_matches),
     Property("col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>", cases,
              col2im_is_adjoint)]
    + layer_properties(LAYER, cases),
)
