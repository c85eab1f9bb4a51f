"""Learning-rate schedules, stepped once per iteration.

Each schedule is a pure function of the iteration index ``t`` (0-based): ``lr = schedule(t)``.
Nothing is stored between calls, so resuming a run at iteration ``t`` needs only ``t``. Typical use::

    for t in range(start, total):
        opt.lr = schedule(t)
        ...; opt.step()
"""
from __future__ import annotations

import bisect
import math


def _check_lr(name: str, base_lr) -> float:
    base_lr = float(base_lr)
    if not base_lr >= 0.0:  # also catches NaN
        raise ValueError(f"{name}: base_lr must be >= 0, got {base_lr}")
    return base_lr


def _check_t(name: str, t) -> int:
    if int(t) != t or t < 0:
        raise ValueError(f"{name}: the iteration index must be an integer >= 0, got {t}")
    return int(t)


class Constant:
    """``lr(t) = base_lr`` for every t."""

    def __init__(self, base_lr):
        self.base_lr = _check_lr("Constant", base_lr)

    def __call__(self, t) -> float:
        _check_t("Constant", t)
        return self.base_lr

    def describe(self) -> str:
        return f"Constant(base_lr={self.base_lr}): lr = {self.base_lr} throughout"

    __repr__ = describe


class WarmupCosine:
    """Linear warm-up, then a half cosine down to 0 (Loshchilov & Hutter's SGDR without restarts).

    For W = warmup_steps, T = total_steps and t = 0 .. T-1::

        lr(t) = base_lr * (t + 1) / W                                  t < W
        lr(t) = 0.5 * base_lr * (1 + cos(pi * (t - W) / (T - W)))      t >= W

    Warm-up reaches base_lr at t = W - 1 (never a step with lr = 0); the cosine starts at base_lr
    and its last value, at t = T - 1, is small but positive.
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0):
        self.base_lr = _check_lr("WarmupCosine", base_lr)
        if int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"WarmupCosine: total_steps must be an integer >= 1, got {total_steps}")
        if int(warmup_steps) != warmup_steps or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"WarmupCosine: warmup_steps must be an integer in [0, total_steps={total_steps}], "
                f"got {warmup_steps}"
            )
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, t) -> float:
        t = _check_t("WarmupCosine", t)
        if t >= self.total_steps:
            # Past the end the formula would climb back up the cosine: refuse rather than guess.
            raise ValueError(
                f"WarmupCosine: iteration {t} is past the schedule (total_steps={self.total_steps})"
            )
        w = self.warmup_steps
        if t < w:
            return self.base_lr * (t + 1) / w
        return 0.5 * self.base_lr * (1.0 + math.cos(math.pi * (t - w) / (self.total_steps - w)))

    def describe(self) -> str:
        return (f"WarmupCosine(base_lr={self.base_lr}, total_steps={self.total_steps}, "
                f"warmup_steps={self.warmup_steps}): linear warm-up over {self.warmup_steps} "
                f"steps, then cosine decay from {self.base_lr} to 0")

    __repr__ = describe


class MultiStep:
    """Step decay: ``lr(t) = base_lr * gamma ** (number of milestones <= t)``.

    Milestones are iteration indices, strictly increasing; at iteration ``m`` the rate is already
    multiplied by gamma.
    """

    def __init__(self, base_lr, milestones, gamma=0.1):
        self.base_lr = _check_lr("MultiStep", base_lr)
        milestones = list(milestones)
        if any(int(m) != m or m < 0 for m in milestones):
            raise ValueError(f"MultiStep: milestones must be integers >= 0, got {milestones}")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"MultiStep: milestones must be strictly increasing, got {milestones}")
        gamma = float(gamma)
        if not gamma > 0.0:
            raise ValueError(f"MultiStep: gamma must be > 0, got {gamma}")
        self.milestones = [int(m) for m in milestones]
        self.gamma = gamma

    def __call__(self, t) -> float:
        t = _check_t("MultiStep", t)
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)

    def describe(self) -> str:
        return (f"MultiStep(base_lr={self.base_lr}, milestones={self.milestones}, "
                f"gamma={self.gamma}): lr multiplied by {self.gamma} at each milestone iteration")

    __repr__ = describe


def he_multistep(base_lr, steps_per_epoch, epochs, gamma=0.1) -> MultiStep:
    """He et al. (2016)'s CIFAR schedule: divide lr by 10 at 50% and 75% of training.

    They trained 64k iterations with milestones at 32k and 48k; here the milestones are
    ``total // 2`` and ``3 * total // 4`` for ``total = steps_per_epoch * epochs``.
    """
    for what, v in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
        if int(v) != v or v < 1:
            raise ValueError(f"he_multistep: {what} must be an integer >= 1, got {v}")
    total = int(steps_per_epoch) * int(epochs)
    if total < 4:
        raise ValueError(f"he_multistep: needs at least 4 iterations in all, got {total}")
    return MultiStep(base_lr, [total // 2, (3 * total) // 4], gamma)
