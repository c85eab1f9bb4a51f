"""The numbers of a study's table: mean, sd, pooled sd, the difference from the reference with
its t statistic, two-sided p and intervals, Holm's adjustment over a report's comparisons, and
Welch's test as a check on the pooled one.

Student's t is computed here, without SciPy: the tail probability is an integral over a finite
range (below), done by Simpson's rule, and the quantile is found by bisection on it."""
from __future__ import annotations

import functools
import math

ALPHA = 0.05        # every interval is a 95% one, every verdict a test at 5%
_SIMPSON_STEPS = 2000


def _upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0. With x = sqrt(df) tan(theta) the density of t becomes
    cos(theta)^(df-1) / B(1/2, df/2) on (-pi/2, pi/2); with phi = pi/2 - theta the tail is the
    integral of sin(phi)^(df-1) from 0 to phi0 = atan2(sqrt(df), t), a bounded function over a
    finite range. phi0 is computed directly, not as pi/2 - atan(t / sqrt(df)), which would lose
    the small p-values of a large t to cancellation.

    ``df`` may be fractional (Welch's test). Below 2 the integrand's slope is infinite at 0,
    which Simpson's rule handles badly, so there the integral is taken over s with phi = s^2,
    whose integrand 2 s sin(s^2)^(df-1) behaves like s^(2 df - 1): its slope is bounded."""
    phi0 = math.atan2(math.sqrt(df), t)
    if phi0 <= 0:
        return 0.0
    power = df - 1
    if df >= 2:
        hi = phi0

        def f(phi):
            return math.sin(phi) ** power
    else:
        hi = math.sqrt(phi0)

        def f(s):
            return 2 * s * math.sin(s * s) ** power if s > 0 else 0.0
    n = _SIMPSON_STEPS
    h = hi / n
    total = f(0.0) + f(hi) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
    log_beta = math.lgamma(0.5) + math.lgamma(df / 2) - math.lgamma((df + 1) / 2)
    return total * h / 3 / math.exp(log_beta)


def _check_df(df) -> None:
    if isinstance(df, bool) or not isinstance(df, (int, float)) or not (1 <= df < math.inf):
        raise ValueError(f"Student's t needs df >= 1 (whole, or fractional as Welch's test's), "
                         f"got {df!r}")


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    _check_df(df)
    tail = _upper_tail(abs(t), df)
    return 1 - tail if t >= 0 else tail


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|): the two-sided p-value of a t statistic."""
    _check_df(df)
    return min(1.0, 2 * _upper_tail(abs(t), df))


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)), found
    by bisection on the upper tail to about 1e-9 (relative): enough for an interval."""
    if not (0.5 < p < 1):
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    _check_df(df)
    q = 1 - p
    lo, hi = 0.0, 1.0
    while _upper_tail(hi, df) > q:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _upper_tail(mid, df) > q else (lo, mid)
    return (lo + hi) / 2


def holm(pvalues: list) -> list:
    """Holm's step-down adjustment of a family of p-values, in their order.

    The i-th smallest of m p-values is multiplied by m - i + 1 (i from 1); each adjusted value
    is at least the one before it in that order, and at most 1. A hypothesis is rejected at
    level alpha when its adjusted p is below alpha, which holds the chance of any false
    rejection in the family at alpha. ``None`` (a comparison without a p) stays None but counts
    in m, as a p of 1 would: it can reject nothing, and leaving it out would make every other
    adjustment depend on which arms happen to have data."""
    m = len(pvalues)
    order = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    adjusted, running = [None] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


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


def difference(arm: list, ref: list, s_p, df, family_size: int = 1, family: str = "") -> dict:
    """``d = mean(arm) - mean(ref)``, its t statistic ``d / (s_p sqrt(1/n_arm + 1/n_ref))``
    with ``df`` degrees of freedom and two-sided p, its 95% interval ``d ± t(0.975, df) s_p
    sqrt(1/n_arm + 1/n_ref)`` and its simultaneous one for a family of ``family_size``
    comparisons (Bonferroni: t at 1 - 0.05 / (2 family_size)).

    The verdict is this comparison's alone ("worse"/"better" when p < 0.05, which is when the
    95% interval excludes 0, else "within noise"); :func:`judge` rewrites it for the family.
    ``family`` names the network whose noise ``s_p`` is, for the message when there is none."""
    if not arm or not ref:
        return {"d": None, "low": None, "high": None, "verdict": "not run"}
    d = sum(arm) / len(arm) - sum(ref) / len(ref)
    if s_p is None:
        who = f"the {family} family" if family else "this network"
        return {"d": d, "low": None, "high": None,
                "verdict": f"no noise estimate for {who}: run a second seed"}
    se = s_p * math.sqrt(1 / len(arm) + 1 / len(ref))
    t = d / se if se > 0 else math.copysign(math.inf, d) if d else 0.0
    p = t_two_sided_p(t, df) if math.isfinite(t) else 0.0
    half = t_quantile(1 - ALPHA / 2, df) * se
    half_sim = t_quantile(1 - ALPHA / (2 * family_size), df) * se
    return {"d": d, "low": d - half, "high": d + half, "verdict": _words(d, p),
            "t": t, "df": df, "p": p, "family_size": family_size,
            "low_simultaneous": d - half_sim, "high_simultaneous": d + half_sim}


def welch(arm: list, ref: list) -> dict | None:
    """Welch's test of ``mean(arm) - mean(ref)``: each side's own sample variance instead of a
    pooled one, ``t = d / sqrt(s_arm^2/n_arm + s_ref^2/n_ref)``, with the Welch-Satterthwaite df
    ``(v_arm + v_ref)^2 / (v_arm^2/(n_arm-1) + v_ref^2/(n_ref-1))`` (``v = s^2/n``: fractional,
    between the smaller n - 1 and n_arm + n_ref - 2). None unless both sides have two values.

    It does not assume that the two vary alike, which the pooled test does; it pays for that
    with few degrees of freedom when there are few seeds, so it is a check on the pooled
    verdicts, not a replacement for them."""
    if len(arm) < 2 or len(ref) < 2:
        return None
    a, r = arm_stats(arm), arm_stats(ref)
    d = a["mean"] - r["mean"]
    va, vr = a["sd"] ** 2 / a["n"], r["sd"] ** 2 / r["n"]
    denominator = va ** 2 / (a["n"] - 1) + vr ** 2 / (r["n"] - 1)
    if va + vr == 0 or denominator == 0:
        # Neither side varies: the df formula is 0/0. Any d is then infinitely many standard
        # errors away; the df recorded is the pooled test's, which is as good as any.
        return {"d": d, "t": math.copysign(math.inf, d) if d else 0.0,
                "df": float(a["n"] + r["n"] - 2), "p": 0.0 if d else 1.0}
    t = d / math.sqrt(va + vr)
    df = (va + vr) ** 2 / denominator
    return {"d": d, "t": t, "df": df, "p": t_two_sided_p(t, df)}


def _words(d: float, p: float) -> str:
    return "within noise" if p >= ALPHA else ("better" if d > 0 else "worse")


def judge(comparisons: list) -> list:
    """Holm over a family of :func:`difference` results (every comparison one report makes,
    those without a p included): each gets ``p_holm``, and a verdict from it. Where the
    comparisons carry a ``welch`` result, Holm is applied to those p over the same family too
    (``welch["p_holm"]``; a comparison without one counts as a p of 1)."""
    adjusted = holm([c.get("p") for c in comparisons])
    for c, p_holm in zip(comparisons, adjusted):
        if p_holm is not None:
            c["p_holm"] = p_holm
            c["verdict"] = _words(c["d"], p_holm)
    welch_p = [(c.get("welch") or {}).get("p") for c in comparisons]
    for c, p_holm in zip(comparisons, holm(welch_p)):
        if p_holm is not None:
            c["welch"]["p_holm"] = p_holm
    return comparisons
