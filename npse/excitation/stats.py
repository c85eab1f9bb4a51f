"""The statistics of the gates and the probe: what ``npse excitation`` measures (the package's
docstring says what each number is).

Memory stays bounded: images are normalised batch by batch, and only per-class sums (classes, C)
are kept per block, never the gates of all images.
"""
from __future__ import annotations

import math

import re

import numpy

from .. import backend
from ..data import iterate_batches
from ..models import SEBlockNoSqueeze
from ..nn import SEBlock, no_grad

HIGH, LOW = 0.95, 0.05          # a gate beyond these counts as saturated (open / shut)
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

class GateStats:
    """Running per-class sums of one block's gates: enough for means, sds, eta^2, saturation.

    ``add(gates (N, C), labels (N,))``; sums are float64, so the variance E[s^2] - E[s]^2 of gates
    in [0, 1] loses nothing that matters at these counts.
    """

    def __init__(self, num_classes: int, channels: int):
        self.count = numpy.zeros(num_classes, dtype=numpy.int64)
        self.sum = numpy.zeros((num_classes, channels))
        self.sumsq = numpy.zeros((num_classes, channels))
        self.high = numpy.zeros((num_classes, channels), dtype=numpy.int64)
        self.low = numpy.zeros((num_classes, channels), dtype=numpy.int64)

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

    @classmethod
    def from_arrays(cls, count, class_mean, class_sd, high, low) -> "GateStats":
        """Rebuild from the arrays written to ``gates.npz`` (the inverse of :meth:`arrays`)."""
        self = cls(*numpy.shape(class_mean))
        n = numpy.asarray(count, dtype=numpy.int64)[:, None]
        self.count[:] = n[:, 0]
        self.sum[:] = class_mean * n
        self.sumsq[:] = (numpy.square(class_sd) + numpy.square(class_mean)) * n
        self.high[:], self.low[:] = high, low
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
        return {
            "channels": int(self.sum.shape[1]),
            "mean_gate": float(self.sum.sum() / max(n, 1)),
            "eta2_median": float(q50), "eta2_q25": float(q25), "eta2_q75": float(q75),
            "saturated_high": float(self.high.sum() / max(n, 1)),
            "saturated_low": float(self.low.sum() / max(n, 1)),
            "within_class_sd": float(numpy.sqrt(self.class_var[seen].mean())),
            "between_class_sd": float(numpy.sqrt(self.class_mean[seen].var(axis=0).mean())),
        }

    def arrays(self) -> dict:
        return {"class_mean": self.class_mean, "class_sd": numpy.sqrt(self.class_var),
                "mean": self.mean, "high": self.high.astype(numpy.int32),
                "low": self.low.astype(numpy.int32)}


def collect_gates(model, x, y, mean, std, num_classes, batch_size=250):
    """Run the uint8 images ``x`` (N, 3, H, W) through ``model`` in eval mode and no_grad.

    Returns ``(stats, accuracy)``: ``{SE name: GateStats}`` in depth order and the share of
    correct predictions (the baseline of the probe).
    """
    blocks = find_se_blocks(model)
    stats, correct = {}, 0
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for xb, yb in iterate_batches(x, y, batch_size, mean, std, shuffle=False,
                                          augment=False, dtype=model.dtype):
                logits = model(xb)
                labels = backend.to_host(yb).astype(numpy.int64)
                correct += int((backend.to_host(logits.argmax(axis=1)) == labels).sum())
                for name, block in blocks:
                    gates = host_gate(block)
                    if name not in stats:
                        stats[name] = GateStats(num_classes, gates.shape[1])
                    stats[name].add(gates, labels)
    finally:
        model.train(was_training)
    return stats, correct / len(y)


# ----------------------------------------------------------------------------- the probe

def probe(model, x, y, mean, std, stats, batch_size=250) -> list[dict]:
    """Accuracy with the gates of one stage at a time (then of all stages) fixed at test time.

    ``"mean"``: each block's gate is its class-agnostic mean ``stats[name].mean`` (C,), the same
    for every image; ``"one"``: the gate is 1, as if the stage had no SE blocks but kept their
    trained neighbours. Every gate is released afterwards, also on error.
    """
    from ..train import evaluate

    blocks = find_se_blocks(model)
    groups = {}
    for name, block in blocks:
        groups.setdefault(stage_of(name), []).append((name, block))
    if len(groups) > 1:
        groups["all"] = blocks
    results = []
    try:
        for stage, members in groups.items():
            for replacement in ("mean", "one"):
                for name, block in members:
                    block.fix_gate(stats[name].mean if replacement == "mean" else 1.0)
                loss, acc, _ = evaluate(model, x, y, mean, std, batch_size)
                for _, block in members:
                    block.fix_gate(None)
                results.append({"stage": stage, "blocks": [n for n, _ in members],
                                "replacement": replacement, "accuracy": acc, "loss": loss})
    finally:
        for _, block in blocks:
            block.fix_gate(None)
    return results


# ----------------------------------------------------------------------------- the paper's claims

def judge_claims(summaries: dict) -> list[dict]:
    """The paper's statements about the gates (TPAMI section 7.2) checked against ``summaries``
    ({SE name: GateStats.summary()}, depth order). Each entry: claim, rule, verdict, numbers."""
    measured = ("eta2_median", "within_class_sd", "saturated_high")
    unmeasured = [f"{n} {k}" for n, s in summaries.items() for k in measured
                  if not math.isfinite(s[k])]
    if unmeasured:
        # No claim is judged on NaN (too few images or classes to measure a spread).
        return [dict(claim="every claim", rule="needs every block's statistics",
                     verdict="not measurable", numbers={"not finite": unmeasured[:4]})]
    stages = {}
    for name, s in summaries.items():
        stages.setdefault(stage_of(name), []).append(s)
    stage_eta = {k: float(numpy.mean([s["eta2_median"] for s in v])) for k, v in stages.items()}
    stage_sd = {k: float(numpy.mean([s["within_class_sd"] for s in v])) for k, v in stages.items()}
    names = list(summaries)
    keys = list(stages)
    first, last = keys[0], keys[-1]
    out = []

    early = min(stage_eta, key=stage_eta.get) == first
    out.append(dict(
        claim="early blocks are shared across classes; deeper ones are class-specific",
        rule="the first stage has the lowest mean of the blocks' median eta^2",
        verdict="holds" if early else "does not hold",
        numbers={f"stage {k}": round(v, 4) for k, v in stage_eta.items()}))

    last_eta = summaries[names[-1]]["eta2_median"]
    others = [summaries[n]["eta2_median"] for n in names if stage_of(n) == last][:-1]
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

    sds = [stage_sd[k] for k in keys]
    rising = all(a < b for a, b in zip(sds, sds[1:]))
    out.append(dict(
        claim="the spread within a class grows with depth",
        rule=("holds: the stages' mean within-class sd rises stage by stage; partly: the last "
              "stage's exceeds the first's"),
        verdict="holds" if rising else "partly" if sds[-1] > sds[0] else "does not hold",
        numbers={f"stage {k}": round(v, 4) for k, v in stage_sd.items()}))

    high = {n: summaries[n]["saturated_high"] for n in names if stage_of(n) == last}
    out.append(dict(
        claim="a block of the last stage saturates: most of its gates are close to 1",
        rule=f"some block of the last stage has more than half of its gates above {HIGH}",
        verdict="holds" if max(high.values()) > 0.5 else "does not hold",
        numbers={n: round(v, 4) for n, v in high.items()}))
    return out
