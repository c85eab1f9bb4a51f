"""What a trained SE block does: ``npse excitation CHECKPOINT``.  Chapter: docs/13-role-of-excitation.md.

Hu et al. (TPAMI, section 7.2) look at the gates s (N, C) of a trained SE-ResNet per class and per
depth. This module measures what they describe by eye:

* per SE block ``SE_<stage>_<block>`` (``layer3.0.se`` is ``SE_3_1``) and per class k, the mean and
  standard deviation of every channel's gate over the test images of that class;
* class-specificity of a channel: eta^2 = between-class variance of the class means /
  (that + the mean within-class variance), 0 when every class has the same mean gate, 1 when
  the gate is constant within each class; a block is summarised by the median over its channels;
* saturation: the share of gates above 0.95 or below 0.05;
* the spread within a class: the root of the mean within-class variance.

Beyond the paper, a causal probe (:func:`probe`): for one stage at a time, every gate is replaced by
its class-agnostic mean (which removes only the input-dependent part of the excitation), or by 1
(which also removes the learned average scale), and the test accuracy is measured again.

Memory stays bounded: images are normalised batch by batch, and only per-class sums (classes, C)
are kept per block, never the gates of all images.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy

from . import backend
from .checkpoint import save_checkpoint
from .data import iterate_batches
from .fast import FAST
from .models import SEBlockNoSqueeze
from .nn import SEBlock, no_grad

HIGH, LOW = 0.95, 0.05          # a gate beyond these counts as saturated (open / shut)
GATES_FORMAT = "npse-excitation-gates"
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


# ----------------------------------------------------------------------------- loading

def save_weights_only(src, dst) -> dict:
    """Write ``dst``: the checkpoint ``src`` without its optimiser state (``model.*`` only), with
    the same metadata apart from ``data_dir`` (a local path; set to None) and ``weights_only``.
    ``npse evaluate``, ``npse excitation`` and :func:`npse.train.load_model_for_inference` read it
    as they read a training checkpoint."""
    from .train import read_checkpoint_meta

    arrays, meta = read_checkpoint_meta(src)
    weights = {k: v for k, v in arrays.items() if k.startswith("model.")}
    meta = dict(meta, data_dir=None, weights_only=True)
    save_checkpoint(dst, weights, meta)
    return meta


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    from .train import evaluate

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


# ----------------------------------------------------------------------------- the stages study

STUDY_ARMS = ("reference", "stages-1-2")   # npse study's arms: SE everywhere / not in stage 3


def study_side_by_side(folder) -> dict:
    """Final test accuracy of the arms ``reference`` and ``stages-1-2`` in a folder of ``npse
    study`` (``<arm>/seed-<s>/metrics.jsonl``), averaged over the seeds whose run finished (as
    many epochs as its config.json asks for). ValueError when an arm has no finished seed."""
    from .plot import read_metrics

    folder = Path(folder)
    out = {"folder": str(folder)}
    for arm in STUDY_ARMS:
        accs, epochs = [], set()
        for metrics in sorted((folder / arm).glob("seed-*/metrics.jsonl")):
            # config.json as train() writes it: the training options under "config".
            saved = json.loads((metrics.parent / "config.json").read_text(encoding="utf-8"))
            wanted = (saved.get("config") or {}).get("epochs") if isinstance(saved, dict) else None
            records = read_metrics(metrics)
            if records and records[-1]["epoch"] == wanted:
                accs.append(records[-1]["test_acc"])
                epochs.add(wanted)
        if not accs:
            raise ValueError(f"--study {folder}: no finished run of the arm '{arm}' "
                             f"(looked for {folder / arm}/seed-*/metrics.jsonl)")
        out[arm] = {"accuracy": float(numpy.mean(accs)), "seeds": len(accs),
                    "epochs": sorted(epochs)}
    out["difference"] = out["stages-1-2"]["accuracy"] - out["reference"]["accuracy"]
    return out


# ----------------------------------------------------------------------------- outputs

def write_gates(path, stats: dict, classes, info: dict) -> None:
    """``gates.npz`` (atomic, no pickles): per block ``<SE name>.<class_mean|class_sd|mean|high|
    low>`` and one ``count`` (classes,); the metadata lists blocks, classes and ``info``."""
    arrays = {}
    for name, s in stats.items():
        for key, value in s.arrays().items():
            arrays[f"{name}.{key}"] = value
    arrays["count"] = next(iter(stats.values())).count
    meta = dict(info, format=GATES_FORMAT, version=1, blocks=list(stats), classes=list(classes),
                thresholds={"high": HIGH, "low": LOW})
    save_checkpoint(path, arrays, meta)


def read_gates(path) -> tuple[dict, dict]:
    """``({SE name: GateStats}, meta)`` from a ``gates.npz``; ValueError if it is not one."""
    from .checkpoint import load_checkpoint

    arrays, meta = load_checkpoint(path)
    if meta.get("format") != GATES_FORMAT:
        raise ValueError(f"{path}: not a gates file of npse excitation (no '{GATES_FORMAT}' "
                         f"metadata)")
    stats = {name: GateStats.from_arrays(arrays["count"], arrays[f"{name}.class_mean"],
                                         arrays[f"{name}.class_sd"], arrays[f"{name}.high"],
                                         arrays[f"{name}.low"])
             for name in meta["blocks"]}
    return stats, meta


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def report_markdown(report: dict) -> str:
    """The tables of ``excitation.json`` as Markdown (what the chapter quotes)."""
    lines = [f"# Excitation of `{report['checkpoint']}`", "",
             f"`{report['command']}`", "",
             f"{report['model']}, epoch {report['epoch']}, {report['images']} test images, "
             f"test accuracy {100 * report['accuracy']:.2f}%.", "",
             "| block | C | mean gate | eta^2 median [q25, q75] | > 0.95 | < 0.05 | "
             "within-class sd | between-class sd |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in report["blocks"].items():
        lines.append(f"| {name} | {s['channels']} | {s['mean_gate']:.3f} | {s['eta2_median']:.3f} "
                     f"[{s['eta2_q25']:.3f}, {s['eta2_q75']:.3f}] | "
                     f"{100 * s['saturated_high']:.1f}% | {100 * s['saturated_low']:.1f}% | "
                     f"{s['within_class_sd']:.3f} | {s['between_class_sd']:.3f} |")
    if report.get("probe"):
        lines += ["", "| gates fixed in stage | to | test accuracy | change |", "|---|---|---|---|"]
        for p in report["probe"]:
            change = 100 * (p["accuracy"] - report["accuracy"])
            lines.append(f"| {p['stage']} | {'class-agnostic mean' if p['replacement'] == 'mean' else '1'} "
                         f"| {100 * p['accuracy']:.2f}% | {change:+.2f} points |")
    study = report.get("study")
    if study:
        r, d = study["reference"], study["stages-1-2"]
        lines += ["", f"Stages study (`{study['folder']}`): SE in all stages {100 * r['accuracy']:.2f}% "
                  f"({_seeds(r['seeds'])}), without the last stage's SE (`stages-1-2`) "
                  f"{100 * d['accuracy']:.2f}% ({_seeds(d['seeds'])}): "
                  f"{100 * study['difference']:+.2f} points."]
    lines += ["", "| the paper's claim | rule | verdict | numbers |", "|---|---|---|---|"]
    for c in report["claims"]:
        numbers = ", ".join(f"{k}: {v}" for k, v in c["numbers"].items())
        lines.append(f"| {c['claim']} | {c['rule']} | **{c['verdict']}** | {numbers} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots

def figure_blocks(names) -> list[str]:
    """The paper's figure 6 choice: the last block of every stage and every block of the last."""
    last = stage_of(names[-1])
    chosen = [n for i, n in enumerate(names)
              if stage_of(n) == last or i + 1 == len(names) or stage_of(names[i + 1]) != stage_of(n)]
    return chosen


def plot_gates(stats: dict, classes, out_dir, show=None, pair=None) -> list[Path]:
    """``fig6_class_means.png`` (mean gate per channel for the classes ``show`` and all classes)
    and ``fig7_within_class.png`` (mean +- sd for the two classes ``pair``). Needs matplotlib."""
    import matplotlib                  # ImportError without it: the caller says what to install
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = figure_blocks(list(stats))
    show = list(show or classes[:4])
    pair = list(pair or show[:2])
    index = {c: i for i, c in enumerate(classes)}
    for c in show + pair:
        if c not in index:
            raise ValueError(f"npse excitation: unknown class {c!r}; the classes are {list(classes)}")
    out_dir = Path(out_dir)
    paths = []
    for kind in ("fig6_class_means", "fig7_within_class"):
        fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.9 * len(names)), squeeze=False)
        for ax, name in zip(axes[:, 0], names):
            s = stats[name]
            ch = numpy.arange(s.sum.shape[1])
            if kind == "fig6_class_means":
                for c in show:
                    ax.plot(ch, s.class_mean[index[c]], lw=1, label=c)
                ax.plot(ch, s.mean, color="black", lw=1.6, label="all")
            else:
                for c in pair:
                    m, sd = s.class_mean[index[c]], numpy.sqrt(s.class_var[index[c]])
                    line, = ax.plot(ch, m, lw=1, label=c)
                    ax.fill_between(ch, m - sd, m + sd, color=line.get_color(), alpha=0.25, lw=0)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(0, len(ch) - 1)
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0, 0].legend(fontsize=7, ncol=len(show) + 1, loc="lower left")
        axes[-1, 0].set_xlabel("channel", fontsize=8)
        title = ("mean gate per channel, by class" if kind == "fig6_class_means"
                 else "mean gate \u00b1 one sd within a class")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{kind}.png"
        fig.savefig(path, dpi=72)
        plt.close(fig)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- the whole analysis

def analyse(model, meta, data, out, checkpoint, batch_size=250, do_probe=True,
            command="npse excitation", study=None) -> dict:
    """Gates, numbers, claims and (``do_probe``) the probe of ``model`` on ``data.x_test``;
    writes OUT/gates.npz, OUT/excitation.json and OUT/excitation.md and returns the report."""
    classes = list(meta["classes"])
    stats, acc = collect_gates(model, data.x_test, data.y_test, meta["mean"], meta["std"],
                               len(classes), batch_size)
    summaries = {name: s.summary() for name, s in stats.items()}
    report = {
        "checkpoint": str(checkpoint), "sha256": sha256_of(checkpoint), "command": command,
        "model": meta["config"].get("model"), "epoch": meta["epoch"],
        "images": int(len(data.y_test)), "accuracy": acc, "classes": classes,
        "thresholds": {"high": HIGH, "low": LOW},
        "blocks": summaries, "claims": judge_claims(summaries),
        "probe": probe(model, data.x_test, data.y_test, meta["mean"], meta["std"], stats,
                       batch_size) if do_probe else [],
        "study": study,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_gates(out / "gates.npz", stats, classes,
                {"checkpoint": str(checkpoint), "sha256": report["sha256"], "accuracy": acc})
    _write_text(out / "excitation.json", json.dumps(report, indent=1) + "\n")
    _write_text(out / "excitation.md", report_markdown(report))
    report["stats"] = stats
    return report


def _write_text(path, text):
    from .rundir import write_text_atomic
    write_text_atomic(Path(path), text)


def _class_list(text):
    return [c.strip() for c in text.split(",") if c.strip()]


def add_arguments(p, positive_int) -> None:
    """The options of ``npse excitation`` (registered by npse.cli)."""
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint.npz of npse train, a weights-only export of one, or a run "
                        "directory")
    p.add_argument("--out", metavar="DIR",
                   help="where gates.npz, excitation.json/.md and the plots go (default: "
                        "excitation/ next to the checkpoint)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where the CIFAR files are (default: $NPSE_DATA or ~/.cache/npse)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="fail if the data are missing instead of downloading them")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array backend (default: numpy)")
    p.add_argument("--batch-size", type=positive_int, default=250, help="default: 250")
    p.add_argument("--classes", type=_class_list, metavar="A,B,...",
                   help="classes drawn in the figure-6 plot (default: the first four); the first "
                        "two are drawn in the figure-7 plot")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip the probe (each stage's gates fixed at test time; 2 test-set passes "
                        "per stage)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="write no PNG files")
    p.add_argument("--study", metavar="DIR",
                   help="a folder of 'npse study stages': set its arms reference and stages-1-2 "
                        "(the last stage's SE dropped and the network retrained) beside the probe")


def command(args) -> int:
    """``npse excitation``: load, check, analyse, plot; prints where everything went."""
    import sys

    from .train import CHECKPOINT, TrainConfig, load_dataset, load_model_for_inference

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    model, meta = load_model_for_inference(path, args.backend)
    model.use_policy(FAST)                   # the fast formulations, as npse train evaluated
    find_se_blocks(model, f"{path} (model {meta['config'].get('model')})")
    classes = list(meta["classes"])
    shown = args.classes or classes[:4]
    unknown = [c for c in shown if c not in classes]
    if unknown:
        raise ValueError(f"--classes: unknown {unknown}; the checkpoint's classes are {classes}")
    study = study_side_by_side(args.study) if args.study else None
    out = Path(args.out) if args.out else path.parent / "excitation"
    config = TrainConfig.from_dict(meta["config"])
    config.data_dir, config.download = args.data_dir, args.download
    data = load_dataset(config)
    given = [f"npse excitation {args.checkpoint}"] + (["--data-dir DIR"] if args.data_dir else [])
    given += [f"--out {args.out}"] if args.out else []
    given += [f"--classes {','.join(args.classes)}"] if args.classes else []
    given += [] if args.probe else ["--no-probe"]
    given += [f"--study {args.study}"] if args.study else []
    previous = backend.get_backend()
    backend.set_backend(args.backend)
    try:
        report = analyse(model, meta, data, out, path, args.batch_size, args.probe,
                         " ".join(given), study)
    finally:
        backend.set_backend(previous)
    print(report_markdown(report), end="")
    print(f"wrote {out / 'gates.npz'}, {out / 'excitation.json'}, {out / 'excitation.md'}")
    if args.plots:
        try:
            paths = plot_gates(report["stats"], classes, out, shown, shown[:2])
        except ImportError:
            print("npse: note: no plots, matplotlib is not installed (pip install 'npse[plot]')",
                  file=sys.stderr)
        else:
            print("wrote " + ", ".join(str(q) for q in paths))
    return 0
