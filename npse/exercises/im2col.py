"""Exercise ``im2col``: im2col and col2im themselves (docs/06-conv2d.md).

im2col copies every patch of the padded input into a column; col2im adds columns back onto the
pixels they came from. col2im is im2col's adjoint (its transpose), not its inverse:
``<im2col(x), c> == <x, col2im(c)>`` for every x and c. The ``conv2d`` exercise reuses the col2im
properties below, with npse's im2col on the other side of the identity.
"""
from __future__ import annotations

import numpy

from ..gradcheck import relative_error
from ..nn.im2col import col2im as reference_col2im
from ..nn.im2col import conv_output_size
from ..nn.im2col import im2col as reference_im2col
from .cases import rng, windows
from .checker import (REFERENCE_TOLERANCE, Exercise, Failed, Property, expect_array, expect_close,
                      show, unchanged)

cases = windows()


def cols_shape(case):
    """(C*KH*KW, N*OH*OW) for a drawn geometry."""
    (kh, kw), (sh, sw), (ph, pw) = case.kernel, case.stride, case.padding
    oh, ow = conv_output_size(case.h, kh, sh, ph), conv_output_size(case.w, kw, sw, pw)
    return case.c * kh * kw, case.n * oh * ow


def overlap_hint(case):
    """The likely cause of a wrong col2im on this geometry."""
    if case.stride[0] < case.kernel[0] or case.stride[1] < case.kernel[1]:
        return ("windows overlap here (stride < kernel): a pixel that lies in several patches must "
                "receive the sum of their entries (+=, not =)")
    if case.padding != (0, 0):
        return "with padding, the border of the padded array collects gradient too; crop it off"
    return None


def _order_hint(yours, x, case):
    """Recognise im2col's columns with a wrong row or column order by the answer they give."""
    if getattr(yours, "shape", None) != cols_shape(case):
        return None
    (kh, kw), (n, c) = case.kernel, (case.n, case.c)
    cols = reference_im2col(x, case.kernel, case.stride, case.padding)
    six = cols.reshape(c, kh, kw, n, -1)
    if relative_error(yours, six.transpose(1, 2, 0, 3, 4).reshape(cols.shape)) < 1e-12:
        return ("your rows are ordered (ky, kx, c); they must be (c, ky, kx), the order of "
                "weight.reshape(O, C*KH*KW), or the convolution multiplies mismatched entries")
    if relative_error(yours, six.reshape(c * kh * kw, n, -1).transpose(0, 2, 1).reshape(cols.shape)) < 1e-12:
        return "your columns are ordered (oy, ox, n); they must be (n, oy, ox)"
    return None


def im2col_matches(student, case):
    x = rng(case.seed).standard_normal((case.n, case.c, case.h, case.w))
    yours = student.im2col(x.copy(), case.kernel, case.stride, case.padding)
    expected = reference_im2col(x, case.kernel, case.stride, case.padding)
    try:
        expect_close("im2col(x)", yours, expected, hint=_order_hint(yours, x, case))
    except Failed as f:
        raise Failed(f"{f}\n{show('x', x)}") from None


def col2im_matches(student, case):
    cols = rng(case.seed).standard_normal(cols_shape(case))
    x_shape = (case.n, case.c, case.h, case.w)
    yours = student.col2im(cols.copy(), x_shape, case.kernel, case.stride, case.padding)
    expected = reference_col2im(cols, x_shape, case.kernel, case.stride, case.padding)
    try:
        expect_close("col2im(cols)", yours, expected, hint=overlap_hint(case))
    except Failed as f:
        raise Failed(f"{f}\n{show('cols', cols)}") from None


def adjoint_identity(im2col):
    """The check that col2im is the adjoint of ``im2col(student, x, kernel, stride, padding)``."""

    def check(student, case):
        g = rng(case.seed)
        x = g.standard_normal((case.n, case.c, case.h, case.w))
        cols = g.standard_normal(cols_shape(case))
        back = student.col2im(cols.copy(), x.shape, case.kernel, case.stride, case.padding)
        expect_array("col2im(cols)", back, x)
        patches = im2col(student, x.copy(), case.kernel, case.stride, case.padding)
        expect_array("im2col(x)", patches, cols)
        left, right = float((patches * cols).sum()), float((x * back).sum())
        # Both sides sum the same products in another order: a few ulps of the largest term.
        scale = max(abs(left), 1.0)
        if not abs(left - right) <= REFERENCE_TOLERANCE * scale:
            right_col2im = reference_col2im(cols, x.shape, case.kernel, case.stride, case.padding)
            hint = ("your col2im agrees with npse's here, so the pair's mismatch lies in your im2col"
                    if relative_error(back, right_col2im) <= REFERENCE_TOLERANCE else overlap_hint(case))
            raise Failed(f"<im2col(x), cols> = {left:.6g} but <x, col2im(cols)> = {right:.6g}: "
                         f"col2im must be the adjoint (transpose) of im2col"
                         + (f"\nhint: {hint}" if hint else ""))

    return check


def leaves_inputs(student, case):
    g = rng(case.seed)
    x, cols = g.standard_normal((case.n, case.c, case.h, case.w)), g.standard_normal(cols_shape(case))
    x_before, cols_before = x.copy(), cols.copy()
    student.im2col(x, case.kernel, case.stride, case.padding)
    student.col2im(cols, x.shape, case.kernel, case.stride, case.padding)
    unchanged("x", x_before, x)
    unchanged("cols", cols_before, cols)


COL2IM_MATCHES = "col2im matches npse's col2im"
ADJOINT = "col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>"

EXERCISE = Exercise(
    "im2col", "docs/06-conv2d.md",
    "im2col (patches as columns) and col2im, its adjoint",
    ("im2col", "col2im"),
    [Property("im2col matches npse's im2col", cases, im2col_matches),
     Property(COL2IM_MATCHES, cases, col2im_matches),
     Property(f"{ADJOINT}, with your im2col and your col2im", cases,
              adjoint_identity(lambda student, *args: student.im2col(*args))),
     Property("x and cols are left unchanged", cases, leaves_inputs)],
)
