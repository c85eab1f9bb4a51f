"""Exercise ``cross_entropy``: softmax cross-entropy with the log-sum-exp shift (docs/05-loss.md).

The loss has no ``dy``: its backward pass returns dL/dlogits for L the mean loss itself. Besides
agreement with npse and with central differences, one property adds a large constant to each row
of logits (|offset| up to 1000, beyond exp's overflow at 709.78): the softmax does not change,
so neither may the loss, and computing ``exp`` of the raw logits overflows. NumPy's
floating-point errors are raised there (:func:`strict_floats`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy
from hypothesis import strategies as st

from ..gradcheck import relative_error
from ..nn.loss import cross_entropy_backward, cross_entropy_forward
from .cases import rng, seeds
from .checker import (GRADIENT_TOLERANCE, Exercise, Failed, Property, as_tuple, central_differences,
                      expect_close, inputs_text, numerical_trouble, strict_floats, unchanged)


@dataclass(frozen=True)
class LogitsCase:
    n: int
    k: int
    offset: bool            # add a large constant to each row
    seed: int

    def __str__(self):
        shift = ", each row shifted by a constant of size 700 to 1000" if self.offset else ""
        return f"logits (N={self.n}, K={self.k}){shift}, targets (N,), seed {self.seed}"


def _cases(offset):
    return st.builds(LogitsCase, st.integers(1, 4), st.integers(2, 5), st.just(offset), seeds)


cases, shifted_cases = _cases(False), _cases(True)


def make(case):
    """Standard-normal logits (losses of moderate size: no confident prediction whose loss of
    1e-15 would sit below log(1 + t)'s rounding), random targets, optional row offsets."""
    g = rng(case.seed)
    logits = g.standard_normal((case.n, case.k))
    targets = g.integers(0, case.k, case.n)
    if case.offset:
        logits += (g.uniform(700, 1000, case.n) * g.choice([-1.0, 1.0], case.n))[:, None]
    return logits, targets


def run_student(student, logits, targets):
    """(loss as a 0-d float array, dlogits) from the student's two functions."""
    loss, cache = as_tuple(student.cross_entropy_forward(logits, targets), 2, "cross_entropy_forward")
    loss = numpy.asarray(loss)
    if loss.shape != () or loss.dtype.kind != "f":
        raise Failed(f"the loss should be one float (a Python float or a 0-d array), got "
                     f"{type(loss).__name__} of shape {loss.shape} and dtype {loss.dtype}")
    return loss.astype(numpy.float64), student.cross_entropy_backward(cache)


def reference(logits, targets):
    loss, cache = cross_entropy_forward(logits, targets)
    return numpy.asarray(loss, dtype=numpy.float64), cross_entropy_backward(cache)


def mean_hint(yours, expected, n):
    """Recognise a sum over the batch where the loss is its mean."""
    if n > 1 and yours is not None and expected is not None \
            and numpy.shape(yours) == numpy.shape(expected) \
            and relative_error(yours, n * expected) < 1e-8:
        return "the loss is the MEAN over the batch: divide the sum (and the gradient) by N"
    return None


def _report(failure, logits, targets, hint=None):
    extra = f"\nhint: {hint}" if hint and "hint:" not in str(failure) else ""
    return Failed(f"{failure}{extra}\n{inputs_text(dict(logits=logits, targets=targets))}")


def forward_matches(student, case):
    logits, targets = make(case)
    loss = run_student(student, logits.copy(), targets.copy())[0]
    expected = reference(logits, targets)[0]
    try:
        expect_close("loss", loss, expected, hint=mean_hint(loss, expected, case.n))
    except Failed as f:
        raise _report(f, logits, targets) from None


def gradients_match(student, case):
    logits, targets = make(case)
    dlogits = run_student(student, logits.copy(), targets.copy())[1]
    arrays = {"logits": logits.copy()}
    numeric = central_differences(lambda: run_student(student, arrays["logits"], targets)[0],
                                  arrays, ["logits"])["logits"]
    try:
        expect_close("dlogits", dlogits, numeric, GRADIENT_TOLERANCE, "central differences",
                     mean_hint(dlogits, numeric, case.n))
    except Failed as f:
        raise _report(f, logits, targets) from None


def backward_matches(student, case):
    logits, targets = make(case)
    dlogits = run_student(student, logits.copy(), targets.copy())[1]
    expected = reference(logits, targets)[1]
    try:
        expect_close("dlogits", dlogits, expected, hint=mean_hint(dlogits, expected, case.n))
    except Failed as f:
        raise _report(f, logits, targets) from None


SHIFT_ADVICE = ("softmax(z) = softmax(z - max(z)) for each row: subtract the row's maximum before "
                "exp (the log-sum-exp shift). Then every exp lies in (0, 1], the largest is 1, and "
                "log(sum exp(z)) = max(z) + log(sum exp(z - max(z))) cannot overflow")


def large_logits(student, case):
    logits, targets = make(case)
    yours = expected = (None, None)
    try:
        with strict_floats(f"logits with entries up to |z| = {numpy.abs(logits).max():.4g}"):
            yours = run_student(student, logits.copy(), targets.copy())
            expected = reference(logits, targets)
            expect_close("loss", yours[0], expected[0])
            expect_close("dlogits", yours[1], expected[1])
    except Failed as f:
        hint = SHIFT_ADVICE if numerical_trouble(f) else (
            mean_hint(yours[0], expected[0], case.n) or mean_hint(yours[1], expected[1], case.n))
        raise _report(f, logits, targets, hint) from None


def leaves_inputs(student, case):
    logits, targets = make(case)
    before, targets_before = logits.copy(), targets.copy()
    run_student(student, logits, targets)
    unchanged("logits", before, logits)
    unchanged("targets", targets_before, targets)


EXERCISE = Exercise(
    "cross_entropy", "docs/05-loss.md",
    "softmax cross-entropy (mean over the batch) with the log-sum-exp shift, and its gradient",
    ("cross_entropy_forward", "cross_entropy_backward"),
    [Property("cross_entropy_forward matches npse's reference", cases, forward_matches),
     Property(f"cross_entropy_backward: gradient matches central differences (float64, relative "
              f"error <= {GRADIENT_TOLERANCE:.0e})", cases, gradients_match),
     Property("cross_entropy_backward matches npse's reference", cases, backward_matches),
     Property("large logits (each row shifted by 700 to 1000): no overflow, the same loss and "
              "gradient", shifted_cases, large_logits),
     Property("logits and targets are left unchanged", cases, leaves_inputs)],
)
