"""The four properties every forward/backward exercise shares.

A layer exercise names the student's two functions and says how to build a drawn case's arrays,
how npse computes the same layer (the reference), and which inputs the backward pass returns
gradients for. :func:`layer_properties` turns that into properties:

1. the forward pass equals npse's (relative error <= 1e-10);
2. the backward pass equals central differences of the student's own forward pass
   (float64, step 1e-5, relative error <= 1e-6), for every gradient it returns;
3. the backward pass equals npse's (relative error <= 1e-10);
4. neither pass modifies its inputs or ``dy`` in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy

from .checker import (GRADIENT_TOLERANCE, Failed, Property, as_tuple, central_differences,
                      expect_array, expect_close, inputs_text, unchanged)


@dataclass
class Layer:
    forward: str                 # the student's forward function: forward(**arrays, **options) -> (y, cache)
    backward: str                # backward(dy, cache) -> one gradient per name in ``grads``
    grads: tuple                 # e.g. ("x", "weight", "bias"): what backward returns, in order
    make: Callable               # make(case) -> (arrays, options): float64 inputs (or None), other arguments
    reference_forward: Callable  # (arrays, options) -> y
    reference_backward: Callable  # (arrays, options, dy) -> tuple in the order of ``grads``
    # hint(name, yours, arrays, options, dy) -> str or None, for a wrong gradient ("x", "weight",
    # ...) or a wrong forward output (name "y", dy None): names a mistake recognised by its answer.
    hint: Optional[Callable] = None

    def run_forward(self, student, arrays, options):
        out = as_tuple(getattr(student, self.forward)(**arrays, **options), 2, self.forward)
        return out

    def run_backward(self, student, dy, cache):
        grads = getattr(student, self.backward)(dy, cache)
        if len(self.grads) == 1 and not isinstance(grads, tuple):
            grads = (grads,)
        return as_tuple(grads, len(self.grads), self.backward)


def upstream(seed, shape):
    """The upstream gradient dy for a case's seed: its own random stream, independent of the
    inputs' (a dy drawn like x can hide a BatchNorm bug, chapter 8)."""
    return numpy.random.default_rng([seed, 7]).standard_normal(shape)


def layer_properties(layer: Layer, cases) -> list:
    """The four shared properties of ``layer`` on cases drawn by ``cases``."""

    def forward_matches(student, case):
        arrays, options = layer.make(case)
        y, _ = layer.run_forward(student, arrays, options)
        expected = layer.reference_forward(arrays, options)
        hint = layer.hint("y", y, arrays, options, None) if layer.hint else None
        try:
            expect_close("y", y, expected, hint=hint)
        except Failed as f:
            raise Failed(f"{f}\n{inputs_text(arrays)}") from None

    def gradients_match(student, case):
        arrays, options = layer.make(case)
        y, cache = layer.run_forward(student, arrays, options)
        expect_array("y", y, layer.reference_forward(arrays, options))
        dy = upstream(case.seed, y.shape)
        grads = layer.run_backward(student, dy.copy(), cache)
        names = [n for n in layer.grads if arrays[n] is not None]
        for name, grad in zip(layer.grads, grads):
            if arrays[name] is None and grad is not None:
                raise Failed(f"d{name} should be None when {name} is None")

        def loss():
            return float((layer.run_forward(student, arrays, options)[0] * dy).sum())

        numeric = central_differences(loss, arrays, names)
        for name, grad in zip(layer.grads, grads):
            if arrays[name] is None:
                continue
            hint = layer.hint(name, grad, arrays, options, dy) if layer.hint else None
            try:
                expect_close(f"d{name}", grad, numeric[name], GRADIENT_TOLERANCE,
                             "central differences", hint)
            except Failed as f:
                raise Failed(f"{f}\n{inputs_text(dict(arrays, dy=dy))}") from None

    def backward_matches(student, case):
        arrays, options = layer.make(case)
        y, cache = layer.run_forward(student, arrays, options)
        dy = upstream(case.seed, numpy.shape(y))
        grads = layer.run_backward(student, dy.copy(), cache)
        expected = layer.reference_backward(arrays, options, dy)
        for name, grad, want in zip(layer.grads, grads, expected):
            if want is None:
                if grad is not None:
                    raise Failed(f"d{name} should be None when {name} is None")
                continue
            hint = layer.hint(name, grad, arrays, options, dy) if layer.hint else None
            try:
                expect_close(f"d{name}", grad, want, hint=hint)
            except Failed as f:
                raise Failed(f"{f}\n{inputs_text(dict(arrays, dy=dy))}") from None

    def leaves_inputs(student, case):
        arrays, options = layer.make(case)
        before = {n: a.copy() for n, a in arrays.items() if a is not None}
        y, cache = layer.run_forward(student, arrays, options)
        dy = upstream(case.seed, numpy.shape(y))
        dy_before = dy.copy()
        layer.run_backward(student, dy, cache)
        for name, a in before.items():
            unchanged(name, a, arrays[name])
        unchanged("dy", dy_before, dy)

    return [
        Property(f"{layer.forward} matches npse's reference", cases, forward_matches),
        Property(f"{layer.backward}: gradients match central differences (float64, relative "
                 f"error <= {GRADIENT_TOLERANCE:.0e})", cases, gradients_match),
        Property(f"{layer.backward} matches npse's reference", cases, backward_matches),
        Property("inputs and dy are left unchanged", cases, leaves_inputs),
    ]


def labelled(properties, label):
    """``properties`` with the shared "inputs and dy are left unchanged" named after ``label``, so
    that two layers in one exercise give properties of different names."""
    for p in properties:
        if p.name.startswith("inputs"):
            p.name = f"{label}: {p.name}"
    return properties
