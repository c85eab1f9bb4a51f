"""Mean, sd, pooled sd and the interval of a difference: the numbers of a study's table."""
from __future__ import annotations

import math


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)).

    Found by bisection on the CDF, itself Simpson's rule over the density, to about 1e-9:
    enough for an interval, and no SciPy needed."""
    if not (0.5 < p < 1) or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x):
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf(t, n=4000):
        h = t / n
        s = density(0) + density(t) + sum((4 if i % 2 else 2) * density(i * h)
                                          for i in range(1, n))
        return 0.5 + s * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def arm_stats(accs: list) -> dict:
    """n, mean and sample sd (None, never 0, for one seed) of a list of accuracies."""
    n = len(accs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None}
    mean = sum(accs) / n
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd}


def pooled_sd(groups: list) -> tuple:
    """``(s_p, df)``: the sd pooled over the groups of at least two values (equal variances
    assumed); ``(None, 0)`` when there is none."""
    ss, df = 0.0, 0
    for accs in groups:
        if len(accs) >= 2:
            m = sum(accs) / len(accs)
            ss += sum((a - m) ** 2 for a in accs)
            df += len(accs) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def difference(arm: list, ref: list, s_p, df) -> dict:
    """``d = mean(arm) - mean(ref)`` with its 95% interval ``d ± t(0.975, df) s_p
    sqrt(1/n_arm + 1/n_ref)``, and the verdict: "within noise" when the interval holds 0."""
    if not arm or not ref:
        return {"d": None, "low": None, "high": None, "verdict": "not run"}
    d = sum(arm) / len(arm) - sum(ref) / len(ref)
    if s_p is None:
        return {"d": d, "low": None, "high": None, "verdict": "no interval (no arm has 2 seeds)"}
    half = t_quantile(0.975, df) * s_p * math.sqrt(1 / len(arm) + 1 / len(ref))
    low, high = d - half, d + half
    verdict = "within noise" if low <= 0 <= high else ("better" if low > 0 else "worse")
    return {"d": d, "low": low, "high": high, "verdict": verdict}
