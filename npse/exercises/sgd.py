"""Exercise ``sgd``: one step of SGD with momentum, Nesterov and weight decay (docs/11-training.md).

The student writes the update of one parameter as a function,
``sgd_step(param, grad, buffer, lr, momentum, nesterov, weight_decay) -> (param, buffer)``, with
``buffer`` None before the first step. The checker runs it for one and for several steps, the
buffer fed back, against chapter 11's formulas (:func:`formula_step`, written from them; the
tests check that it agrees with ``npse.optim.SGD``), which are ``torch.optim.SGD``'s with
``dampening=0``:

    g = grad + wd * p
    b = g                  at the first step (PyTorch's convention: no buffer of zeros decayed)
    b = momentum * b + g   afterwards
    g = g + momentum * b   with Nesterov, else g = b
    p = p - lr * g
"""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from ..gradcheck import relative_error
from .cases import rng, seeds
from .checker import Exercise, Failed, Property, as_tuple, expect_close, show, unchanged


@dataclass(frozen=True)
class SGDCase:
    shape: tuple
    steps: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    seed: int

    def options(self):
        return dict(lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay)

    def __str__(self):
        return (f"param shape {self.shape}, {self.steps} step{'s' if self.steps > 1 else ''}, "
                f"lr {self.lr}, momentum {self.momentum}, nesterov {self.nesterov}, "
                f"weight_decay {self.weight_decay}, seed {self.seed}")


def _case(shape, steps, lr, momentum, nesterov, weight_decay, seed):
    return SGDCase(shape, steps, lr, momentum, nesterov and momentum > 0, weight_decay, seed)


def _cases(steps):
    return st.builds(_case, st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple), steps,
                     st.sampled_from([0.1, 0.05, 0.5]), st.sampled_from([0.9, 0.5, 0.0]),
                     st.booleans(), st.sampled_from([0.01, 0.1, 0.0]), seeds)


one_step, several_steps = _cases(st.just(1)), _cases(st.integers(2, 5))


def formula_step(p, grad, b, lr, momentum, nesterov, weight_decay, mistake=None):
    """Chapter 11's update of one parameter -> (new p, new buffer or None). ``mistake`` names a
    known wrong variant, computed so that a student's answer can be recognised by it."""
    g = grad + weight_decay * p if mistake != "decay after momentum" else grad
    if momentum:
        if b is None:
            b = (1 - momentum) * g if mistake in ("first buffer damped", "dampened") else g
        else:
            b = momentum * b + ((1 - momentum) * g if mistake == "dampened" else g)
        g = g + momentum * b if nesterov and mistake != "nesterov as classical" else b
    if mistake == "decay after momentum":
        g = g + weight_decay * p
    return p - lr * g, (b if momentum else None)


MISTAKES = {
    "nesterov as classical": "with nesterov=True the step is g + momentum * b (the look-ahead), "
                             "not b: you wrote classical momentum",
    "decay after momentum": "weight decay is part of the gradient BEFORE the momentum buffer: "
                            "g = grad + wd * p first, then b = momentum * b + g; yours adds wd * p "
                            "after the buffer, so the buffer never sees it",
    "first buffer damped": "at the first step the buffer is g itself (PyTorch's convention), "
                           "not (1 - momentum) * g",
    "dampened": "PyTorch's SGD (dampening=0) adds g whole: b = momentum * b + g, with no "
                "(1 - momentum) factor",
}


def _hint(yours, p, grad, b, options):
    for mistake, text in MISTAKES.items():
        wrong = formula_step(p, grad, b, **options, mistake=mistake)
        right = formula_step(p, grad, b, **options)
        if all(_same(y, w) for y, w in zip(yours, wrong)) \
                and not all(_same(r, w) for r, w in zip(right, wrong)):
            return text
    return None


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return getattr(a, "shape", None) == b.shape and relative_error(a, b) < 1e-12


def student_step(student, p, grad, b, options):
    return as_tuple(student.sgd_step(p.copy(), grad.copy(), None if b is None else b.copy(),
                                     **options), 2, "sgd_step")


def _check_step(k, yours, expected, inputs, options):
    """Compare one step's (param, buffer) with the formulas; a Failed that says which step."""
    (p, grad, b), (new_p, new_b), (want_p, want_b) = inputs, yours, expected
    where = f"step {k + 1} (k = {k})"
    try:
        if want_b is None and new_b is not None:
            raise Failed("momentum is 0: there is no buffer, return None for it")
        expect_close("param", new_p, want_p, what="chapter 11's formulas")
        if want_b is not None:
            if new_b is None:
                raise Failed("momentum > 0: return the momentum buffer (None only before the first step)")
            expect_close("buffer", new_b, want_b, what="chapter 11's formulas")
    except Failed as f:
        hint = _hint(yours, p, grad, b, options)
        first = ("\nat the first step the buffer is b = g = grad + wd * p (PyTorch's convention)"
                 if k == 0 and str(f).startswith("buffer") else "")
        raise Failed(f"{where}: {f}{first}" + (f"\nhint: {hint}" if hint else "")
                     + f"\n{show('param before', p)}\n{show('grad', grad)}"
                     + (f"\n{show('buffer before', b)}" if b is not None else "")) from None


def follows_the_formulas(student, case):
    g = rng(case.seed)
    p, b = g.standard_normal(case.shape), None
    for k in range(case.steps):
        grad = g.standard_normal(case.shape)
        yours = student_step(student, p, grad, b, case.options())
        expected = formula_step(p, grad, b, **case.options())
        _check_step(k, yours, expected, (p, grad, b), case.options())
        p, b = expected          # the next step starts from the right state: one error per report


def leaves_inputs(student, case):
    g = rng(case.seed)
    p, grad = g.standard_normal(case.shape), g.standard_normal(case.shape)
    b = g.standard_normal(case.shape) if case.momentum else None
    copies = [a.copy() for a in (p, grad) + ((b,) if b is not None else ())]
    student.sgd_step(p, grad, b, **case.options())
    for name, before, after in zip(("param", "grad", "buffer"), copies, (p, grad, b)):
        unchanged(name, before, after)


EXERCISE = Exercise(
    "sgd", "docs/11-training.md",
    "one SGD step with momentum, Nesterov and weight decay, as torch.optim.SGD (dampening 0)",
    ("sgd_step",),
    [Property("one step from no buffer matches chapter 11's formulas (the first buffer is g)",
              one_step, follows_the_formulas),
     Property("several steps, the buffer fed back, match chapter 11's formulas", several_steps,
              follows_the_formulas),
     Property("param, grad and buffer are left unchanged", several_steps, leaves_inputs)],
)
