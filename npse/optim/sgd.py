"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

The update is exactly that of ``torch.optim.SGD`` with ``dampening=0``. For every parameter ``p``
with gradient ``grad`` (both of shape S), at step k = 0, 1, 2, ...::

    g = grad + wd * p                      (wd = 0 where decay_filter says no)
    b = g                  if k == 0       (momentum buffer, shape S; only when momentum > 0)
    b = momentum * b + g   otherwise
    g = g + momentum * b   if nesterov     (look-ahead: the step after this one, folded in)
    g = b                  otherwise
    p = p - lr * g

All arithmetic is done in place in per-parameter work arrays allocated on the first step, so a
step allocates nothing (it matters on a GPU, where allocation is slow and memory is scarce).
"""
from __future__ import annotations

import math

import numpy

from .. import backend
from ..fast.sgd import FusedSGDUpdate
from ..nn.module import Parameter


def skip_bn_and_bias(name: str, p: Parameter) -> bool:
    """A ``decay_filter``: decay only parameters of 2 or more dimensions (conv and linear weights).

    1-D parameters are BatchNorm scales/shifts and biases; decaying them only limits the network's
    freedom to scale its activations and gives no regularisation worth having.
    """
    return p.data.ndim > 1


def _named(params) -> list[tuple[str, Parameter]]:
    """``(name, Parameter)`` pairs from named pairs or bare Parameters (named "0", "1", ...)."""
    items = list(params)
    if not items:
        raise ValueError("SGD: got an empty parameter list")
    named = []
    for i, item in enumerate(items):
        if isinstance(item, Parameter):
            named.append((str(i), item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Parameter):
            named.append((str(item[0]), item[1]))
        else:
            raise TypeError(
                "SGD: expected an iterable of (name, Parameter) pairs (model.named_parameters()) "
                f"or of Parameters, got an item of type {type(item).__name__} at position {i}"
            )
    names = [n for n, _ in named]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"SGD: parameter names must be unique, repeated: {dupes}")
    if len({id(p) for _, p in named}) != len(named):
        # The same array would be stepped twice per step.
        raise ValueError("SGD: the same Parameter appears more than once")
    return named


def _check_nonneg(what: str, value) -> float:
    value = float(value)
    if not value >= 0.0:  # also catches NaN
        raise ValueError(f"SGD: {what} must be >= 0, got {value}")
    if value == math.inf:
        raise ValueError(f"SGD: {what} must be finite, got {value}")
    return value


class SGD:
    """SGD over named parameters.

    Args:
        named_params: iterable of ``(name, Parameter)`` (``model.named_parameters()``) or of
            Parameters. Names key the momentum buffers in :meth:`state_dict`.
        lr: learning rate; a schedule usually overwrites ``opt.lr`` before every step.
        momentum: momentum factor in [0, 1) (0 disables the buffers).
        nesterov: use Nesterov momentum (needs ``momentum > 0``).
        weight_decay: L2 coefficient ``wd`` added to the gradient as ``wd * p``.
        decay_filter: ``decay_filter(name, param) -> bool``, which parameters get weight decay
            (None: all). :func:`skip_bn_and_bias` is the usual choice.
        fused: on CuPy, one fused kernel per parameter instead of six array expressions (the
            same numbers; an execution policy's ``fused``, docs/B-speed.md): the update
            :class:`npse.fast.sgd.FusedSGDUpdate`. NumPy ignores it.
    """

    def __init__(self, named_params, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
                 decay_filter=None, fused=True):
        self.params = _named(named_params)
        self.fused = bool(fused)
        # A faster formulation of the per-parameter update (npse.fast), or None: the plain
        # array expressions of step() everywhere.
        self.formulation = FusedSGDUpdate() if self.fused else None
        self.lr = lr
        self.momentum = _check_nonneg("momentum", momentum)
        if self.momentum >= 1.0:
            # The buffer would never forget a gradient: its size grows without bound.
            raise ValueError(f"SGD: momentum must be < 1, got {self.momentum}")
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0 (as in torch.optim.SGD)")
        # Per-parameter decay coefficient, fixed at construction.
        self._decay = [
            self.weight_decay if decay_filter is None or decay_filter(n, p) else 0.0
            for n, p in self.params
        ]
        self.step_count = 0
        self._buffers: list = [None] * len(self.params)  # momentum buffers, shape of each param
        self._work: list = [None] * len(self.params)     # scratch for g
        self._work2: list = [None] * len(self.params)    # scratch for momentum * b (Nesterov)

    # The schedule writes lr every iteration; validate it there too.
    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = _check_nonneg("lr", value)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to 0 (backward passes *add* into ``.grad``)."""
        for _, p in self.params:
            p.grad[...] = 0

    @staticmethod
    def _scratch(current, like):
        """``current`` if it still fits ``like`` (same backend, shape, dtype), else a fresh array.

        Parameters can be moved between NumPy and CuPy (``Module.to``) after the optimiser is
        built, so the work arrays follow them.
        """
        if (current is None or backend.backend_of(current) != backend.backend_of(like)
                or current.shape != like.shape or current.dtype != like.dtype):
            return backend.get_array_module(like).empty_like(like)
        return current

    def step(self) -> None:
        """Apply one update to every parameter, in place."""
        lr, mom = self.lr, self.momentum
        for i, (name, p) in enumerate(self.params):
            xp = backend.get_array_module(p.data, p.grad)
            if self.formulation is not None and self.formulation.applies(xp, mom):
                self._buffers[i] = self.formulation.update(p.data, p.grad, self._buffers[i], lr, mom,
                                                           self._decay[i], self.nesterov)
                continue
            g = self._work[i] = self._scratch(self._work[i], p.data)
            wd = self._decay[i]
            if wd != 0.0:
                xp.multiply(p.data, wd, out=g)   # g = wd * p
                g += p.grad                      # g = grad + wd * p
            else:
                g[...] = p.grad
            if mom != 0.0:
                b = self._buffers[i]
                if b is None:
                    b = self._buffers[i] = g.copy()  # first step: b = g
                else:
                    if backend.backend_of(b) != backend.backend_of(p.data):
                        b = self._buffers[i] = backend.to_device(b, backend.backend_of(p.data))
                    xp.multiply(b, mom, out=b)   # b = momentum * b
                    b += g                       # b = momentum * b + g
                if self.nesterov:
                    mb = self._work2[i] = self._scratch(self._work2[i], p.data)
                    xp.multiply(b, mom, out=mb)
                    g += mb                      # g = g + momentum * b
                else:
                    g[...] = b                   # g = b
            xp.multiply(g, lr, out=g)
            p.data -= g                          # p = p - lr * g
        self.step_count += 1

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Host NumPy copies: ``{"momentum_buffer.<name>": (shape of param), "step": ()}``.

        Buffers appear only once they exist (momentum > 0 and at least one step taken).
        """
        out = {}
        for (name, _), b in zip(self.params, self._buffers):
            if b is not None:
                out[f"momentum_buffer.{name}"] = numpy.array(backend.to_host(b), copy=True)
        out["step"] = numpy.array(self.step_count, dtype=numpy.int64)
        return out

    def _expected_keys(self, step: int) -> list[str]:
        keys = ["step"]
        if self.momentum != 0.0 and step > 0:
            keys += [f"momentum_buffer.{name}" for name, _ in self.params]
        return keys

    def load_state_dict(self, state) -> None:
        """Restore :meth:`state_dict` output (NumPy or CuPy arrays); buffers move to each
        parameter's backend and dtype. Missing, unexpected or wrongly shaped entries are
        ``ValueError``s that name the key."""
        if "step" not in state:
            raise ValueError("SGD.load_state_dict: missing key 'step'")
        step_arr = backend.to_host(state["step"])
        if step_arr.shape != () or step_arr.dtype.kind not in "iu" or int(step_arr) < 0:
            raise ValueError(
                "SGD.load_state_dict: 'step' must be a non-negative integer scalar, got "
                f"{step_arr!r}"
            )
        step = int(step_arr)
        expected = self._expected_keys(step)
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        if missing or extra:
            raise ValueError(
                f"SGD.load_state_dict: missing keys {missing}, unexpected keys {extra} "
                f"(step={step}, momentum={self.momentum})"
            )
        for name, p in self.params:
            key = f"momentum_buffer.{name}"
            if key in state and tuple(numpy.shape(state[key])) != tuple(p.data.shape):
                raise ValueError(
                    f"SGD.load_state_dict: '{key}' has shape {tuple(numpy.shape(state[key]))}, "
                    f"expected {tuple(p.data.shape)}"
                )
        # All checks passed: only now change anything, so a failed load leaves the optimiser as it was.
        buffers = [None] * len(self.params)
        for i, (name, p) in enumerate(self.params):
            key = f"momentum_buffer.{name}"
            if key in state:
                xp = backend.get_array_module(p.data)
                value = backend.to_device(state[key], backend.backend_of(p.data))
                buffers[i] = xp.array(value, dtype=p.data.dtype, copy=True)  # never alias the dict
        self._buffers = buffers
        self.step_count = step

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay}, params={len(self.params)})")

