"""Softmax cross-entropy.  Chapter: docs/05-loss.md.

Symbols: logits z (N, K), integer targets t (N,), p = softmax(z).

    loss = -(1/N) sum_n log p[n, t_n]         (log-softmax with the row maximum subtracted, so
                                              large logits do not overflow)
    dz   = (p - onehot(t)) / N                (each row sums to zero)
"""
from __future__ import annotations

import numpy

from ..backend import get_array_module
from .module import check_array


def cross_entropy_forward(logits, targets):
    """logits (N, K), targets (N,) integers in [0, K) -> (mean loss, cache).

    The loss is a 0-d value on the logits' backend (a NumPy scalar on the CPU, a 0-d CuPy array
    on the GPU): ``float(loss)`` reads it. On the GPU that read waits for the device to finish,
    so a training loop should read it only now and then, not after every step.
    """
    xp = get_array_module(logits, targets)
    n, k = logits.shape
    rows = xp.arange(n)
    top = logits.argmax(axis=1)
    shifted = logits - logits[rows, top][:, None]                     # the largest entry is 0
    others = xp.exp(shifted)
    others[rows, top] = 0
    # log(sum_j exp(shifted_j)) = log(1 + others); log1p keeps its precision when others << 1,
    # where log(1 + others) would round to 0 and lose a confident prediction's small loss.
    log_sum = xp.log1p(others.sum(axis=1, keepdims=True))
    log_p = shifted - log_sum                                          # log-softmax, (N, K)
    loss = -log_p[rows, targets].mean()
    return loss, (log_p, targets)


def cross_entropy_backward(cache):
    """-> dlogits (N, K) = (softmax(logits) - onehot(targets)) / N."""
    xp = get_array_module(cache[0])
    log_p, targets = cache
    n = log_p.shape[0]
    rows = xp.arange(n)
    dlogits = xp.exp(log_p)
    # p_t - 1 as expm1(log p_t): exact even when p_t is within 1e-12 of 1.
    dlogits[rows, targets] = xp.expm1(log_p[rows, targets])
    dlogits /= n
    return dlogits


class CrossEntropyLoss:
    """``loss = loss_fn(logits, targets)``; ``dlogits = loss_fn.backward()``.

    logits (N, K) float, targets (N,) integer class indices. The loss is the mean over the batch,
    a 0-d value on the logits' backend (see :func:`cross_entropy_forward`).

    ``check_targets`` (default True): check that every target lies in [0, K). Host (NumPy)
    targets are always checked; device (CuPy) targets only when this is True, because the check
    reads two numbers back to the host, which stalls the GPU. A training loop that checked its
    labels once when it loaded them passes ``check_targets=False``.
    """

    def __init__(self, check_targets: bool = True):
        self.check_targets = bool(check_targets)
        self._cache = None

    def __call__(self, logits, targets):
        return self.forward(logits, targets)

    def forward(self, logits, targets):
        check_array(logits, "CrossEntropyLoss", 2, what="logits (N, classes)")
        if not hasattr(targets, "dtype") or numpy.dtype(targets.dtype).kind not in "iu":
            raise TypeError(f"CrossEntropyLoss: targets must be an integer array of class indices, "
                            f"got {getattr(targets, 'dtype', type(targets).__name__)}")
        if targets.shape != (logits.shape[0],):
            raise ValueError(f"CrossEntropyLoss: targets must have shape ({logits.shape[0]},), "
                             f"got {tuple(targets.shape)}")
        if logits.shape[0] == 0 or logits.shape[1] == 0:
            raise ValueError(f"CrossEntropyLoss: logits of shape {tuple(logits.shape)} hold no "
                             "sample or no class; the mean loss over them is undefined")
        k = logits.shape[1]
        on_host = isinstance(targets, numpy.ndarray)
        if (on_host or self.check_targets) and targets.size and (
                int(targets.min()) < 0 or int(targets.max()) >= k):
            raise ValueError(f"CrossEntropyLoss: targets must lie in [0, {k}), got values in "
                             f"[{int(targets.min())}, {int(targets.max())}]")
        loss, self._cache = cross_entropy_forward(logits, targets)
        return loss

    def backward(self):
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before a forward pass")
        cache, self._cache = self._cache, None
        return cross_entropy_backward(cache)
