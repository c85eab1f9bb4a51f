"""The statistics of the gates and the probe: what ``npse excitation`` measures (the package's
docstring says what each number is).

Memory stays bounded: images are normalised batch by batch, and per block only per-class sums
(classes, C) and a histogram per channel (C, BINS) are kept, never the gates of all images (the
probe keeps one prediction per image and arm, for its paired bootstrap).
"""
from __future__ import annotations

import math

import re

import numpy

from .. import backend
from ..data import iterate_batches
from ..models import SEBlockNoSqueeze
from ..nn import CrossEntropyLoss, SEBlock, no_grad

HIGH, LOW = 0.95, 0.05          # a gate beyond these counts as saturated (open / shut)
BINS = 200                      # histogram bins on [0, 1], 0.005 wide: gates that move by a few
                                # hundredths still spread over several bins
PROBE_IMAGES, PROBE_SEED = 5000, 0      # the training images whose mean gates the probe applies
RESAMPLES, BOOTSTRAP_SEED, LEVEL = 2000, 0, 0.95    # the probe's paired bootstrap
WEAK_SD = 0.05                  # a between-class sd below this is a weak class difference (a class
                                # moves a gate by a few hundredths of its 0-1 range)
_LAYER_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.se$")


# ----------------------------------------------------------------------------- the SE blocks

def block_name(dotted: str) -> str:
    """``"layer3.0.se"`` -> ``"SE_3_1"`` (stage as numbered, block counted from 1); any other
    dotted name is returned as it is."""
    m = _LAYER_BLOCK.match(dotted)
    return f"SE_{m[1]}_{int(m[2]) + 1}" if m else dotted


def stage_of(name: str) -> str:
    """``"SE_3_1"`` -> ``"3"``; a block outside the layer<k> naming is a stage of its own."""
    m = re.match(r"^SE_(\d+)_\d+$", name)
    return m[1] if m else name


def find_se_blocks(model, what="the model") -> list[tuple[str, object]]:
    """``[(SE_<stage>_<block>, block)]`` in depth order; ValueError if there is none."""
    blocks = [(block_name(n), m) for n, m in model.named_modules()
              if isinstance(m, (SEBlock, SEBlockNoSqueeze))]
    if not blocks:
        raise ValueError(f"{what} has no SE blocks, so there are no excitations to analyse "
                         f"(give an SE network such as se_resnet20)")
    return blocks


def host_gate(block) -> numpy.ndarray:
    """The gates of the last batch as float64 (N, C) on the host; a NoSqueeze block's per-position
    gates (N, C, H, W) are averaged over the positions."""
    g = backend.to_host(block.gate).astype(numpy.float64)
    return g.mean(axis=(2, 3)) if g.ndim == 4 else g


# ----------------------------------------------------------------------------- statistics

def effective_rank(matrix) -> tuple[float, float]:
    """How many directions ``matrix`` (K, C) spreads over: ``(participation ratio, first share)``
    of its singular values s_i, (sum s_i^2)^2 / sum s_i^4 and s_1^2 / sum s_i^2.

    The ratio is 1 for a rank-1 matrix and k for k equal singular values; the share is 1 for rank
    1 and 1/k for k equal ones. Both are NaN for a zero matrix (no direction at all). No centring
    here: :meth:`GateStats.class_rank` passes the class means minus their mean over classes.
    """
    sv2 = numpy.square(numpy.linalg.svd(numpy.asarray(matrix, dtype=numpy.float64),
                                        compute_uv=False))
    total = float(sv2.sum())
    if not total > 0:
        return float("nan"), float("nan")
    return total ** 2 / float(numpy.square(sv2).sum()), float(sv2.max()) / total


def histogram_rows(gates, bins: int = BINS) -> numpy.ndarray:
    """(C, bins) counts of the gates (N, C) of each channel in ``bins`` equal bins on [0, 1]; a
    gate of exactly 1 (ReLU or fixed gates) falls into the last bin, one above 1 or below 0 into
    the nearest, so every row sums to N."""
    n, c = gates.shape
    index = numpy.clip(numpy.floor(gates * bins).astype(numpy.int64), 0, bins - 1)    # (N, C)
    flat = (index + bins * numpy.arange(c)[None, :]).ravel()
    return numpy.bincount(flat, minlength=c * bins).reshape(c, bins)


class GateStats:
    """Running per-class sums of one block's gates: enough for means, sds, eta^2, saturation, the
    class-mean matrix's effective rank, and a histogram of every channel's gates.

    ``add(gates (N, C), labels (N,))``; sums are float64, so the variance E[s^2] - E[s]^2 of gates
    in [0, 1] loses nothing that matters at these counts. ``hist`` (C, BINS) counts each channel's
    gates over all images (every row sums to the number of images), for figures drawn without the
    data.
    """

    def __init__(self, num_classes: int, channels: int, bins: int = BINS):
        self.count = numpy.zeros(num_classes, dtype=numpy.int64)
        self.sum = numpy.zeros((num_classes, channels))
        self.sumsq = numpy.zeros((num_classes, channels))
        self.high = numpy.zeros((num_classes, channels), dtype=numpy.int64)
        self.low = numpy.zeros((num_classes, channels), dtype=numpy.int64)
        self.hist = numpy.zeros((channels, bins), dtype=numpy.int64)

    def add(self, gates, labels) -> None:
        gates = numpy.asarray(gates, dtype=numpy.float64)
        labels = numpy.asarray(labels, dtype=numpy.int64)
        if gates.ndim != 2 or gates.shape != (len(labels), self.sum.shape[1]):
            raise ValueError(f"GateStats.add: gates must have shape ({len(labels)}, "
                             f"{self.sum.shape[1]}), got {gates.shape}")
        onehot = labels[:, None] == numpy.arange(len(self.count))[None, :]    # (N, K)
        self.count += onehot.sum(axis=0)
        self.sum += onehot.T @ gates
        self.sumsq += onehot.T @ (gates * gates)
        self.high += onehot.T.astype(numpy.int64) @ (gates > HIGH)
        self.low += onehot.T.astype(numpy.int64) @ (gates < LOW)
        self.hist += histogram_rows(gates, self.hist.shape[1])

    @classmethod
    def from_arrays(cls, count, class_mean, class_sd, high, low, hist=None) -> "GateStats":
        """Rebuild from the arrays written to ``gates.npz`` (the inverse of :meth:`arrays`); a
        file of version 1 has no ``hist``, which then stays empty (all zeros, BINS bins)."""
        self = cls(*numpy.shape(class_mean), **({} if hist is None else
                                                {"bins": numpy.shape(hist)[1]}))
        n = numpy.asarray(count, dtype=numpy.int64)[:, None]
        self.count[:] = n[:, 0]
        self.sum[:] = class_mean * n
        self.sumsq[:] = (numpy.square(class_sd) + numpy.square(class_mean)) * n
        self.high[:], self.low[:] = high, low
        if hist is not None:
            self.hist[:] = hist
        return self

    def _seen(self):
        return self.count > 0

    @property
    def class_mean(self):
        """(K, C): NaN rows for classes without an image."""
        with numpy.errstate(invalid="ignore", divide="ignore"):
            return self.sum / self.count[:, None]

    @property
    def class_var(self):
        """(K, C) population variance within each class."""
        with numpy.errstate(invalid="ignore", divide="ignore"):
            var = self.sumsq / self.count[:, None] - numpy.square(self.class_mean)
        return numpy.maximum(var, 0.0)

    @property
    def mean(self):
        """(C,) the class-agnostic mean: over all images."""
        return self.sum.sum(axis=0) / max(int(self.count.sum()), 1)

    def class_deviation(self):
        """(K', C) the class means of the K' classes seen, minus their mean over classes (classes
        weigh equally, as in eta^2): what differs between classes, channel by channel."""
        means = self.class_mean[self._seen()]
        return means - means.mean(axis=0)

    def class_rank(self) -> tuple[float, float]:
        """:func:`effective_rank` of :meth:`class_deviation`: in how many directions the classes
        move the block's gates. A block of hidden width h computes its C gates from h numbers, so
        its classes differ in about h directions at most (exactly, were the sigmoid linear): at
        h = 1 every channel carries the same class differences, scaled."""
        return effective_rank(self.class_deviation())

    def eta2(self):
        """(C,) per channel: between-class variance of the class means over (that + mean
        within-class variance); classes weigh equally; NaN where both are 0 (a constant gate)."""
        seen = self._seen()
        between = self.class_mean[seen].var(axis=0)
        within = self.class_var[seen].mean(axis=0)
        total = between + within
        with numpy.errstate(invalid="ignore", divide="ignore"):
            return numpy.where(total > 0, between / numpy.where(total > 0, total, 1), numpy.nan)

    def summary(self) -> dict:
        seen = self._seen()
        n = int(self.count.sum()) * self.sum.shape[1]
        eta2 = self.eta2()
        defined = eta2[~numpy.isnan(eta2)]
        q25, q50, q75 = (numpy.percentile(defined, [25, 50, 75]) if defined.size
                         else (float("nan"),) * 3)
        ratio, first = self.class_rank()
        return {
            "channels": int(self.sum.shape[1]),
            "mean_gate": float(self.sum.sum() / max(n, 1)),
            "eta2_median": float(q50), "eta2_q25": float(q25), "eta2_q75": float(q75),
            "saturated_high": float(self.high.sum() / max(n, 1)),
            "saturated_low": float(self.low.sum() / max(n, 1)),
            "within_class_sd": float(numpy.sqrt(self.class_var[seen].mean())),
            "between_class_sd": float(numpy.sqrt(self.class_mean[seen].var(axis=0).mean())),
            "participation_ratio": ratio, "first_share": first,
        }

    def arrays(self) -> dict:
        return {"class_mean": self.class_mean, "class_sd": numpy.sqrt(self.class_var),
                "mean": self.mean, "high": self.high.astype(numpy.int32),
                "low": self.low.astype(numpy.int32), "hist": self.hist.astype(numpy.int32)}


def record_gates(model, x, y, mean, std, num_classes, batch_size=250):
    """Run the uint8 images ``x`` (N, 3, H, W) through ``model`` in eval mode and no_grad.

    Returns ``(stats, predictions)``: ``{SE name: GateStats}`` in depth order and the predicted
    class of every image (N,) int64 (the probe's baseline, image by image).
    """
    blocks = find_se_blocks(model)
    stats, predictions = {}, []
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for xb, yb in iterate_batches(x, y, batch_size, mean, std, shuffle=False,
                                          augment=False, dtype=model.dtype):
                logits = model(xb)
                labels = backend.to_host(yb).astype(numpy.int64)
                predictions.append(backend.to_host(logits.argmax(axis=1)).astype(numpy.int64))
                for name, block in blocks:
                    gates = host_gate(block)
                    if name not in stats:
                        stats[name] = GateStats(num_classes, gates.shape[1])
                    stats[name].add(gates, labels)
    finally:
        model.train(was_training)
    return stats, numpy.concatenate(predictions)


def collect_gates(model, x, y, mean, std, num_classes, batch_size=250):
    """:func:`record_gates` with the share of correct predictions instead of the predictions:
    ``(stats, accuracy)``."""
    stats, predictions = record_gates(model, x, y, mean, std, num_classes, batch_size)
    return stats, float((predictions == numpy.asarray(backend.to_host(y))).mean())


# ----------------------------------------------------------------------------- the probe

def probe_subset(n: int, images: int = PROBE_IMAGES, seed: int = PROBE_SEED) -> numpy.ndarray:
    """The indices (sorted) of the ``images`` training images (all ``n`` when there are fewer)
    whose mean gates the probe applies: drawn without replacement by
    ``numpy.random.default_rng(seed)``, so the same for every analysis of the same data."""
    if images >= n:
        return numpy.arange(n)
    return numpy.sort(numpy.random.default_rng(seed).choice(n, images, replace=False))


def predict(model, x, y, mean, std, batch_size=250) -> tuple[numpy.ndarray, float]:
    """``(predicted classes (N,) int64, mean cross-entropy)`` of ``model`` on the uint8 images
    ``x``, in eval mode and no_grad; the loss is summed as :func:`npse.train.evaluate` sums it,
    so both give the same numbers."""
    loss_fn, loss_sum, predictions = CrossEntropyLoss(), 0.0, []
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for xb, yb in iterate_batches(x, y, batch_size, mean, std, shuffle=False,
                                          augment=False, dtype=model.dtype):
                logits = model(xb)
                loss_sum = loss_sum + loss_fn(logits, yb) * len(yb)
                predictions.append(backend.to_host(logits.argmax(axis=1)).astype(numpy.int64))
    finally:
        model.train(was_training)
    return numpy.concatenate(predictions), float(loss_sum) / len(y)


def paired_bootstrap(base, arms, resamples=RESAMPLES, seed=BOOTSTRAP_SEED, level=LEVEL,
                     chunk=50) -> numpy.ndarray:
    """Percentile intervals (A, 2) of the change in accuracy, arm minus base, from ``base`` (N,)
    and ``arms`` (A, N), 1 where an image is classified correctly, else 0.

    Each resample draws N test images with replacement (``numpy.random.default_rng(seed)``), the
    same images for the base and every arm (paired: an image's two outcomes move together), and
    the same resamples for every arm. ``chunk`` resamples are drawn at a time, to bound memory.
    """
    base = numpy.asarray(base, dtype=numpy.float64)
    diff = numpy.atleast_2d(arms).astype(numpy.float64) - base[None, :]          # (A, N)
    n = len(base)
    rng = numpy.random.default_rng(seed)
    changes = []
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        draw = rng.integers(0, n, (r, n)) + n * numpy.arange(r)[:, None]
        counts = numpy.bincount(draw.ravel(), minlength=r * n).reshape(r, n)      # (r, N)
        changes.append(counts @ diff.T / n)                                         # (r, A)
    changes = numpy.concatenate(changes)
    tail = 100 * (1 - level) / 2
    return numpy.percentile(changes, [tail, 100 - tail], axis=0).T


def probe(model, x, y, mean, std, means, batch_size=250, base=None, resamples=RESAMPLES,
          seed=BOOTSTRAP_SEED) -> list[dict]:
    """Accuracy with the gates of one stage at a time (then of all stages) fixed at test time.

    ``"mean"``: each block's gate is ``means[name]`` (C,), the same for every image: its
    class-agnostic mean, which :func:`npse.excitation.analyse` takes from training images, not
    from the test images ``x`` scored here. ``"one"``: the gate is 1, so the block passes its
    input unchanged: the residual branch adds F(x), not s * F(x), with the trained weights.
    ``base``: the unprobed network's predictions on ``x`` (N,), computed when None.

    Each row: stage, blocks, replacement, accuracy, loss, ``change_points`` (accuracy minus the
    base's, in points) and ``interval_points``, its paired bootstrap interval
    (:func:`paired_bootstrap`). Every gate is released afterwards, also on error.
    """
    blocks = find_se_blocks(model)
    groups = {}
    for name, block in blocks:
        groups.setdefault(stage_of(name), []).append((name, block))
    if len(groups) > 1:
        groups["all"] = blocks
    labels = numpy.asarray(backend.to_host(y), dtype=numpy.int64)
    if base is None:
        base = predict(model, x, y, mean, std, batch_size)[0]
    results, correct = [], []
    try:
        for stage, members in groups.items():
            for replacement in ("mean", "one"):
                for name, block in members:
                    block.fix_gate(means[name] if replacement == "mean" else 1.0)
                predictions, loss = predict(model, x, y, mean, std, batch_size)
                for _, block in members:
                    block.fix_gate(None)
                correct.append(predictions == labels)
                results.append({"stage": stage, "blocks": [n for n, _ in members],
                                "replacement": replacement,
                                "accuracy": float(correct[-1].mean()), "loss": loss})
    finally:
        for _, block in blocks:
            block.fix_gate(None)
    base_correct = base == labels
    intervals = paired_bootstrap(base_correct, numpy.array(correct), resamples, seed)
    for row, ok, (low, high) in zip(results, correct, intervals):
        row["change_points"] = 100 * float(ok.mean() - base_correct.mean())
        row["interval_points"] = [100 * float(low), 100 * float(high)]
    return results


# ----------------------------------------------------------------------------- the paper's claims

def depth_trend(values: dict) -> dict:
    """How ``values`` ({SE name: number}, depth order) change with depth.

    ``stages``: each stage's mean over its blocks (blocks weigh equally, whatever their width:
    the channels of a block are not independent, see :meth:`GateStats.class_rank`); ``rising``:
    the stage means rise stage by stage; ``rise``: the last stage's mean minus the first's;
    ``spread``: how much the blocks of one stage differ (the root of the mean over stages of the
    variance over their blocks), the yardstick a trend must exceed; ``below``: ``[(block,
    [earlier blocks])]``, each block lower than blocks of an earlier stage (none: monotone).
    """
    stages = {}
    for name, v in values.items():
        stages.setdefault(stage_of(name), []).append(v)
    means = {k: float(numpy.mean(v)) for k, v in stages.items()}
    order = list(means)
    below = []
    for name, v in values.items():
        earlier = [n for n, w in values.items()
                   if order.index(stage_of(n)) < order.index(stage_of(name)) and w > v]
        if earlier:
            below.append((name, earlier))
    return {"stages": means,
            "rising": all(a < b for a, b in zip(list(means.values()), list(means.values())[1:])),
            "rise": means[order[-1]] - means[order[0]],
            "spread": float(numpy.sqrt(numpy.mean([numpy.var(v) for v in stages.values()]))),
            "below": below}


TREND_RULE = ("holds: the last stage's mean exceeds the first's by more than the spread between "
              "blocks of a stage; 'not monotone' added when a block is below a block of an "
              "earlier stage; no clear trend: the two differ by less than that spread; does not "
              "hold: the last is lower by more than it")


def trend_verdict(trend: dict, weak: bool = False) -> str:
    """The verdict on "grows with depth" from :func:`depth_trend`, in words that carry no more than
    the numbers: see :data:`TREND_RULE`; ``weak``: "weakly" instead of "holds" (the differences,
    though rising, are small)."""
    if trend["rise"] < -trend["spread"]:
        return "does not hold"
    if trend["rise"] <= trend["spread"]:
        return "no clear trend"
    words = ["weakly" if weak else "holds"] + (["not monotone"] if trend["below"] else [])
    return ", ".join(words)


def _rounded(values: dict, digits=4) -> dict:
    return {k: round(v, digits) for k, v in values.items()}


def _below_text(trend: dict, values: dict) -> list[str]:
    """``["SE_2_3 (0.189) < SE_1_2 (0.213), SE_1_3 (0.258)"]``: the blocks out of depth order."""
    return [f"{n} ({values[n]:.3g}) < " + ", ".join(f"{e} ({values[e]:.3g})" for e in earlier)
            for n, earlier in trend["below"]]


def judge_claims(summaries: dict) -> list[dict]:
    """The paper's statements about the gates (TPAMI section 7.2) checked against ``summaries``
    ({SE name: GateStats.summary()}, depth order). Each entry: claim, rule, verdict, numbers.
    The verdicts are computed from the numbers, with their qualifiers ("weakly", "not monotone",
    "no clear trend"), so that the words say no more than the numbers carry."""
    measured = ("eta2_median", "within_class_sd", "between_class_sd", "saturated_high")
    unmeasured = [f"{n} {k}" for n, s in summaries.items() for k in measured
                  if not math.isfinite(s.get(k, float("nan")))]
    if unmeasured:
        # No claim is judged on NaN (too few images or classes to measure a spread).
        return [dict(claim="every claim", rule="needs every block's statistics",
                     verdict="not measurable", numbers={"not finite": unmeasured[:4]})]
    names = list(summaries)
    eta = {n: summaries[n]["eta2_median"] for n in names}
    between = {n: summaries[n]["between_class_sd"] for n in names}
    strongest = max(between, key=between.get)
    eta_trend = depth_trend(eta)
    stage_eta = eta_trend["stages"]
    first, last = list(stage_eta)[0], list(stage_eta)[-1]
    out = [dict(
        claim="early blocks are shared across classes; deeper ones are class-specific",
        rule=(f"on the blocks' median eta^2 by stage, {TREND_RULE}; 'weakly' instead of holds when "
              f"no block's between-class sd reaches {WEAK_SD}"),
        verdict=trend_verdict(eta_trend, weak=between[strongest] < WEAK_SD),
        numbers={**{f"stage {k}": round(v, 4) for k, v in stage_eta.items()},
                 "spread between blocks of a stage": round(eta_trend["spread"], 4),
                 "below an earlier stage's block": _below_text(eta_trend, eta) or "none",
                 f"largest between-class sd ({strongest})": round(between[strongest], 4)})]

    last_eta = eta[names[-1]]
    others = [eta[n] for n in names if stage_of(n) == last][:-1]
    if last_eta <= stage_eta[first]:
        verdict = "holds"
    elif others and last_eta < max(others):
        verdict = "partly"
    else:
        verdict = "does not hold"
    out.append(dict(
        claim="the very last block is nearly class-agnostic",
        rule=("holds: its eta^2 is at most the first stage's; partly: only below the most "
              "class-specific block of its stage; else does not hold"),
        verdict=verdict,
        numbers={"last block": round(last_eta, 4), f"stage {first}": round(stage_eta[first], 4),
                 "max in its stage before it": round(max(others), 4) if others else None}))

    within = {n: summaries[n]["within_class_sd"] for n in names}
    sd_trend = depth_trend(within)
    out.append(dict(
        claim="the spread within a class grows with depth",
        rule=f"on the blocks' within-class sd by stage, {TREND_RULE}",
        verdict=trend_verdict(sd_trend),
        numbers={**{f"stage {k}": round(v, 4) for k, v in sd_trend["stages"].items()},
                 "spread between blocks of a stage": round(sd_trend["spread"], 4)}))

    high = {n: summaries[n]["saturated_high"] for n in names if stage_of(n) == last}
    out.append(dict(
        claim="a block of the last stage saturates: most of its gates are close to 1",
        rule=f"some block of the last stage has more than half of its gates above {HIGH}",
        verdict="holds" if max(high.values()) > 0.5 else "does not hold",
        numbers=_rounded(high)))
    return out
