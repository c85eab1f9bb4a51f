"""Numerical gradients by central differences, to check hand-written backward passes.

Chapter: docs/02-module.md (section "Checking a gradient").

For a module f and a random upstream gradient dy, the scalar L(theta) = sum(f(x; theta) * dy) has
dL/dx = f.backward(dy) and dL/dparam = param.grad.  Each is compared with
(L(theta + h e) - L(theta - h e)) / (2h): for every entry e of small tensors, and along random unit
directions v of large ones (comparing <grad, v>).  The error reported is ||a - b|| / ||b||.

Two traps are handled: BatchNorm in training mode updates its running statistics on every forward
(they are restored after each one, so the check leaves them as it found them), and a step that
crosses a ReLU kink or changes a max-pool winner makes the difference quotient meaningless (each
module that has such points exposes ``kink_signature()``; a step that changes any is reported).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from . import backend


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| (just ||a - b|| when b is zero)."""
    a, b = backend.to_host(a).astype(numpy.float64), backend.to_host(b).astype(numpy.float64)
    diff = float(numpy.linalg.norm((a - b).ravel()))
    scale = float(numpy.linalg.norm(b.ravel()))
    return diff / scale if scale > 0 else diff


@dataclass
class GradcheckResult:
    """``errors[name]`` is the relative error of that gradient ("input" or a parameter name)."""
    errors: dict = field(default_factory=dict)
    kinks: list = field(default_factory=list)   # (tensor name, entry or direction) that crossed one

    @property
    def max_error(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    @property
    def crossed_kink(self) -> bool:
        return bool(self.kinks)


def _signatures(module):
    sigs = []
    for _, m in module.named_modules():
        fn = getattr(m, "kink_signature", None)
        if fn is not None:
            s = fn()
            sigs.extend(s if isinstance(s, list) else [s])
    return [backend.to_host(s).copy() for s in sigs if s is not None]


def _same(sigs_a, sigs_b):
    return len(sigs_a) == len(sigs_b) and all(numpy.array_equal(a, b) for a, b in zip(sigs_a, sigs_b))


def _perturbations(t, rng, max_entries, num_directions):
    """Yield (label, direction) pairs: unit vectors for small tensors, random ones otherwise."""
    xp = backend.get_array_module(t)
    if t.size <= max_entries:
        for i in range(t.size):
            v = numpy.zeros(t.size)
            v[i] = 1.0
            yield i, xp.asarray(v.reshape(t.shape), dtype=t.dtype)
    else:
        for k in range(num_directions):
            v = rng.standard_normal(t.shape)
            yield f"direction {k}", xp.asarray(v / numpy.linalg.norm(v), dtype=t.dtype)


def gradcheck(module, x, dy=None, *, h=1e-5, seed=0, max_entries=1500, num_directions=12,
              check_input=True) -> GradcheckResult:
    """Compare ``module.backward`` with central differences; ``module`` and ``x`` in float64.

    Returns a :class:`GradcheckResult`. Parameter gradients are left as the analytic ones;
    buffers (BatchNorm running statistics) are left as they were found.
    """
    if module.dtype != numpy.float64 or x.dtype != numpy.float64:
        raise TypeError(f"gradcheck needs float64 (module {module.dtype}, input {x.dtype}); "
                        f"build the module with dtype='float64'")
    rng = numpy.random.default_rng(seed)
    xp = backend.get_array_module(x)
    buffers = {name: backend.to_host(b).copy() for name, b in module.named_buffers()}

    def restore():
        for name, b in module.named_buffers():
            b[...] = xp.asarray(buffers[name])

    y = module(x)
    if dy is None:
        dy = xp.asarray(rng.standard_normal(y.shape))
    module.zero_grad()
    dx = module.backward(dy)
    restore()
    module(x)
    base_sigs = _signatures(module)
    restore()

    targets = [("input", x, dx)] if check_input else []
    targets += [(name, p.data, p.grad.copy()) for name, p in module.named_parameters()]
    result = GradcheckResult()
    for name, t, grad in targets:
        numeric, analytic = [], []
        original = t.copy()
        for label, v in _perturbations(t, rng, max_entries, num_directions):
            values = []
            for sign in (1.0, -1.0):
                t += sign * h * v
                out = module(x)
                values.append(float((out * dy).sum()))
                if not _same(_signatures(module), base_sigs):
                    result.kinks.append((name, label))
                t[...] = original            # exactly as it was (t - h*v + h*v may round)
                restore()
            numeric.append((values[0] - values[1]) / (2 * h))
            analytic.append(float((grad * v).sum()))
        result.errors[name] = relative_error(numpy.array(analytic), numpy.array(numeric))
    module._cache = None
    for _, m in module.named_modules():
        m._cache = None
    return result


def numerical_gradient(f, t, h=1e-5):
    """Central-difference gradient of a scalar function ``f()`` with respect to array ``t``,
    which ``f`` reads; every entry of ``t`` is perturbed in place and restored."""
    grad = numpy.zeros(t.shape)
    flat_index = numpy.ndindex(*t.shape)
    for idx in flat_index:
        orig = t[idx].copy()
        t[idx] = orig + h
        plus = float(f())
        t[idx] = orig - h
        minus = float(f())
        t[idx] = orig
        grad[idx] = (plus - minus) / (2 * h)
    return grad
