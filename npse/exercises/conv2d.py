"""Exercise ``conv2d``: col2im and the convolution's backward pass (docs/06-conv2d.md).

The forward pass (im2col and one matrix product) is given in the stub; the student writes
``col2im``, the adjoint of im2col, and ``conv2d_backward`` from the cache of that forward pass.
"""
from __future__ import annotations

from ..gradcheck import relative_error
from ..nn.im2col import im2col
from .cases import rng, windows
from .checker import Exercise, Property
from .im2col import ADJOINT, COL2IM_MATCHES, adjoint_identity, col2im_matches
from .layer import Layer, layer_properties
from .reference import conv2d_backward, conv2d_forward

cases = windows(conv=True)


def make(case):
    g = rng(case.seed)
    kh, kw = case.kernel
    arrays = dict(x=g.standard_normal((case.n, case.c, case.h, case.w)),
                  weight=g.standard_normal((case.out, case.c, kh, kw)),
                  bias=g.standard_normal(case.out) if case.bias else None)
    return arrays, dict(stride=case.stride, padding=case.padding)


def _reference_forward(a, o):
    return conv2d_forward(a["x"], a["weight"], a["bias"], o["stride"], o["padding"])


FLIPPED = {
    "y": "your forward pass flips the kernel (a true convolution, as in signal processing); a "
         "CNN's conv2d is a cross-correlation: y[n, o, oy, ox] = sum over c, ky, kx of "
         "W[o, c, ky, kx] * x[n, c, oy*SH + ky, ox*SW + kx], with no flip",
    "x": "your dx is what the kernel rotated by 180 degrees gives: the gradient uses the flip the "
         "other way round. With im2col, dx = col2im(W^T @ dy) needs no flip at all",
    "weight": "your dweight is rotated by 180 degrees (kernel flipped): dW[o, c, ky, kx] pairs dy "
              "with the input pixel x[n, c, oy*SH + ky, ox*SW + kx], in the forward pass's order",
}


def hint(name, yours, arrays, options, dy):
    """Recognise a kernel flipped somewhere by comparing the answer with the flipped variant."""
    if name not in FLIPPED or arrays["weight"].shape[2:] == (1, 1):
        return None
    flipped = dict(arrays, weight=arrays["weight"][:, :, ::-1, ::-1].copy())
    if name == "y":
        wrong = _reference_forward(flipped, options)[0]
    elif name == "x":
        wrong = conv2d_backward(dy, _reference_forward(flipped, options)[1])[0]
    else:
        wrong = conv2d_backward(dy, _reference_forward(arrays, options)[1])[1][:, :, ::-1, ::-1]
    if getattr(yours, "shape", None) == wrong.shape and relative_error(yours, wrong) < 1e-8:
        return FLIPPED[name]
    return None


LAYER = Layer("conv2d_forward", "conv2d_backward", ("x", "weight", "bias"), make,
              lambda a, o: _reference_forward(a, o)[0],
              lambda a, o, dy: conv2d_backward(dy, _reference_forward(a, o)[1]), hint)

EXERCISE = Exercise(
    "conv2d", "docs/06-conv2d.md",
    "col2im (the adjoint of im2col) and the convolution's backward pass",
    ("col2im", "conv2d_forward", "conv2d_backward"),
    [Property(COL2IM_MATCHES, cases, col2im_matches),
     Property(ADJOINT, cases, adjoint_identity(lambda student, *args: im2col(*args)))]
    + layer_properties(LAYER, cases),
)
