"""What ``npse excitation`` writes and reads: gates.npz, excitation.json and .md, the figures,
the stages study beside the probe, and the weights-only export of a checkpoint."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy

from .. import backend
from ..checkpoint import load_checkpoint, save_checkpoint
from ..rundir import CONFIG, METRICS, read_checkpoint_meta, read_metrics, write_text_atomic
from .stats import (BINS, BOOTSTRAP_SEED, HIGH, LEVEL, LOW, PROBE_SEED, RESAMPLES, GateStats,
                    find_se_blocks, judge_claims, probe, probe_subset, record_gates, stage_of)

GATES_FORMAT = "npse-excitation-gates"


# ----------------------------------------------------------------------------- the weights-only export

def save_weights_only(src, dst) -> dict:
    """Write ``dst``: the checkpoint ``src`` without its optimiser state (``model.*`` only), with
    the same metadata apart from ``data_dir`` (a local path; set to None) and ``weights_only``.
    ``npse evaluate``, ``npse excitation`` and :func:`npse.rundir.load_model_for_inference` read it
    as they read a training checkpoint."""
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


# ----------------------------------------------------------------------------- the stages study

STUDY_ARMS = ("reference", "stages-1-2")   # npse study's arms: SE everywhere / not in stage 3


def study_side_by_side(folder) -> dict:
    """Final test accuracy of the arms ``reference`` and ``stages-1-2`` in a folder of ``npse
    study`` (``<arm>/seed-<s>/metrics.jsonl``), averaged over the seeds whose run finished (as
    many epochs as its config.json asks for). ValueError when an arm has no finished seed."""
    folder = Path(folder)
    out = {"folder": str(folder)}
    for arm in STUDY_ARMS:
        accs, epochs = [], set()
        for metrics in sorted((folder / arm).glob(f"seed-*/{METRICS}")):
            if not metrics.parent.name[5:].isdigit():
                continue            # seed-<s>.replaced-<time>: a run that --rerun replaced
            wanted, records = _run_epochs_and_metrics(folder, metrics)
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


def _run_epochs_and_metrics(folder: Path, metrics: Path) -> tuple:
    """``(epochs config.json asks for, metrics records)`` of one run of a study folder; a
    one-line ValueError naming the file that is not what ``npse train`` writes."""
    config = metrics.parent / CONFIG
    try:
        # config.json as train() writes it: the training options under "config".
        saved = json.loads(config.read_text(encoding="utf-8"))
        wanted = saved["config"]["epochs"]
        if type(wanted) is not int:
            raise TypeError("epochs")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not an npse run configuration"
        raise ValueError(f"--study {folder}: {config}: {why}") from None
    return wanted, read_metrics(metrics)


# ----------------------------------------------------------------------------- outputs

def write_gates(path, stats: dict, classes, info: dict, probe_means=None, hidden=None) -> None:
    """``gates.npz`` (atomic, no pickles): per block ``<SE name>.<class_mean|class_sd|mean|high|
    low|hist>``, with ``probe_means`` ({SE name: (C,)}) ``<SE name>.probe_mean``, and one
    ``count`` (classes,); the metadata lists blocks, classes, the blocks' hidden widths
    (``hidden``, {SE name: h}), the histograms' bins and ``info``.

    ``<name>.hist`` (C, bins) int32: each channel's gates over all images in equal bins on [0, 1]
    (every row sums to the number of images), for the histogram figure.
    """
    arrays = {}
    for name, s in stats.items():
        for key, value in s.arrays().items():
            arrays[f"{name}.{key}"] = value
        if probe_means is not None:
            arrays[f"{name}.probe_mean"] = numpy.asarray(probe_means[name], dtype=numpy.float64)
    arrays["count"] = next(iter(stats.values())).count
    bins = next(iter(stats.values())).hist.shape[1]
    meta = dict(info, format=GATES_FORMAT, version=2, blocks=list(stats), classes=list(classes),
                thresholds={"high": HIGH, "low": LOW}, hidden=dict(hidden or {}),
                hist={"bins": bins, "range": [0.0, 1.0],
                      "counts": "per channel, over all images; a row sums to the images"})
    save_checkpoint(path, arrays, meta)


def read_gates(path) -> tuple[dict, dict]:
    """``({SE name: GateStats}, meta)`` from a ``gates.npz`` (version 1, without histograms, or
    2); ``meta["probe_mean"]`` is ``{SE name: (C,)}`` where the file holds the probe's means.
    ValueError if it is not a gates file."""
    arrays, meta = load_checkpoint(path)
    if meta.get("format") != GATES_FORMAT:
        raise ValueError(f"{path}: not a gates file of npse excitation (no '{GATES_FORMAT}' "
                         f"metadata)")
    stats = {name: GateStats.from_arrays(arrays["count"], arrays[f"{name}.class_mean"],
                                         arrays[f"{name}.class_sd"], arrays[f"{name}.high"],
                                         arrays[f"{name}.low"], arrays.get(f"{name}.hist"))
             for name in meta["blocks"]}
    means = {name: arrays[f"{name}.probe_mean"] for name in meta["blocks"]
             if f"{name}.probe_mean" in arrays}
    if means:
        meta["probe_mean"] = means
    return stats, meta


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _block_rows(report: dict) -> list[str]:
    lines = ["| block | C | h | mean gate | eta^2 median [q25, q75] | > 0.95 | < 0.05 | "
             "within-class sd | between-class sd | PR | s1 share |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in report["blocks"].items():
        lines.append(f"| {name} | {s['channels']} | {s.get('hidden') or '?'} | "
                     f"{s['mean_gate']:.3f} | {s['eta2_median']:.3f} "
                     f"[{s['eta2_q25']:.3f}, {s['eta2_q75']:.3f}] | "
                     f"{100 * s['saturated_high']:.1f}% | {100 * s['saturated_low']:.1f}% | "
                     f"{s['within_class_sd']:.3f} | {s['between_class_sd']:.3f} | "
                     f"{s['participation_ratio']:.2f} | {100 * s['first_share']:.2f}% |")
    return lines + [
        "", "h: the block's hidden width. PR (participation ratio, (sum s_i^2)^2 / sum s_i^4) and "
        "s1 share (s_1^2 / sum s_i^2) of the singular values s_i of the class-mean matrix "
        "(classes x C) minus its mean over classes: the number of independent directions in "
        "which the classes move the block's gates. It is about h at most, so a block's C channels "
        "are not C independent measurements: at PR near 1 they all carry the same class "
        "differences (and the same eta^2)."]


def _probe_rows(report: dict) -> list[str]:
    setup = report.get("probe_setup") or {}
    lines = ["", "| gates fixed in stage | to | test accuracy | change | "
             f"{100 * setup.get('level', LEVEL):.0f}% interval |", "|---|---|---|---|---|"]
    for p in report["probe"]:
        low, high = p["interval_points"]
        to = "class-agnostic mean" if p["replacement"] == "mean" else "1"
        lines.append(f"| {p['stage']} | {to} | {100 * p['accuracy']:.2f}% | "
                     f"{p['change_points']:+.2f} points | [{low:+.2f}, {high:+.2f}] |")
    return lines + [
        "", f"Class-agnostic mean: each gate's mean over {setup.get('images')} training images "
        f"(drawn with seed {setup.get('seed')}), not over the test images scored. 1: every gate "
        "of the stage is 1, so each SE block passes its input unchanged and the residual branch "
        "adds F(x) instead of s * F(x): with trained gates near 1/2 the branch is about twice what "
        "the layers after it were trained on. That measures how much this network leans on its "
        "blocks' learned scale, not what a network trained without SE would lose. Interval: "
        f"paired bootstrap over the test images ({setup.get('resamples')} resamples, seed "
        f"{setup.get('bootstrap_seed')}; both arms scored on the same resampled images)."]


def report_markdown(report: dict) -> str:
    """The tables of ``excitation.json`` as Markdown (what the chapter quotes)."""
    lines = [f"# Excitation of `{report['checkpoint']}`", "",
             f"`{report['command']}`", "",
             f"{report['model']}, epoch {report['epoch']}, {report['images']} test images, "
             f"test accuracy {100 * report['accuracy']:.2f}%.", ""]
    lines += _block_rows(report)
    if report.get("probe"):
        lines += _probe_rows(report)
    study = report.get("study")
    if study:
        r, d = study["reference"], study["stages-1-2"]
        lines += ["", f"Stages study (`{study['folder']}`): SE in all stages {100 * r['accuracy']:.2f}% "
                  f"({_seeds(r['seeds'])}), without the last stage's SE (`stages-1-2`) "
                  f"{100 * d['accuracy']:.2f}% ({_seeds(d['seeds'])}): "
                  f"{100 * study['difference']:+.2f} points."]
    lines += ["", "| the paper's claim | rule | verdict | numbers |", "|---|---|---|---|"]
    for c in report["claims"]:
        numbers = ", ".join(f"{k}: {'; '.join(v) if isinstance(v, list) else v}"
                            for k, v in c["numbers"].items())
        lines.append(f"| {c['claim']} | {c['rule']} | **{c['verdict']}** | {numbers} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots

def figure_blocks(names) -> list[str]:
    """The paper's figure 6 choice: the last block of every stage and every block of the last."""
    last = stage_of(names[-1])
    chosen = [n for i, n in enumerate(names)
              if stage_of(n) == last or i + 1 == len(names) or stage_of(names[i + 1]) != stage_of(n)]
    return chosen


FIGURE_WIDTH = 7.5              # inches: a page's width at 150 dpi, so 8-9 pt text stays legible
FONTS = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "legend.fontsize": 8}


def _pyplot():
    import matplotlib                  # ImportError without it: the caller says what to install
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> None:
    """``fig`` as a PNG of 256 colours: line plots and heat maps lose nothing visible, and the
    file is about a third of matplotlib's RGBA (the repository stores these figures)."""
    import io

    from PIL import Image              # matplotlib's own dependency
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256).save(path, format="PNG", optimize=True)


def _zoom(values, floor=1e-4) -> float:
    """A symmetric half-range for deviations ``values``: their largest size plus 15%."""
    top = float(numpy.nanmax(numpy.abs(values))) if numpy.size(values) else 0.0
    return max(1.15 * top, floor)


def _block_label(name, stats, hidden) -> str:
    h = (hidden or {}).get(name)
    return f"{name}\nC={stats[name].sum.shape[1]}" + (f", h={h}" if h else "")


def plot_class_means(stats: dict, classes, path, show, hidden=None) -> Path:
    """Figure 6 redrawn: for :func:`figure_blocks`, left the mean over classes of every channel's
    gate (zoomed to its range), right each class ``show``'s mean minus that (zoomed, symmetric),
    so class differences of a few hundredths are visible and no class curve lies under another."""
    plt = _pyplot()
    names = figure_blocks(list(stats))
    index = {c: i for i, c in enumerate(classes)}
    with plt.rc_context(FONTS):
        fig, axes = plt.subplots(len(names), 2, figsize=(FIGURE_WIDTH, 1.55 * len(names) + 0.9),
                                 squeeze=False, gridspec_kw={"width_ratios": [1, 2]})
        for (left, right), name in zip(axes, names):
            s = stats[name]
            ch = numpy.arange(s.sum.shape[1])
            centre = s.class_mean[s._seen()].mean(axis=0)
            left.plot(ch, centre, color="black", lw=1.2, marker=".", ms=3)
            left.set_ylabel(_block_label(name, stats, hidden))
            deviation = s.class_mean - centre
            right.axhline(0, color="0.6", lw=0.8, zorder=0)
            for c in show:
                right.plot(ch, deviation[index[c]], lw=1.1, marker=".", ms=3, label=c)
            half = _zoom(deviation[[index[c] for c in show]])
            right.set_ylim(-half, half)
            for ax in (left, right):
                ax.set_xlim(-0.5, len(ch) - 0.5)
                ax.grid(alpha=0.25)
        axes[0, 0].set_title("mean over classes")
        axes[0, 1].set_title("class mean minus the mean over classes")
        axes[0, 1].legend(ncol=len(show), loc="lower center", bbox_to_anchor=(0.5, 1.18),
                          frameon=False)
        for ax in axes[-1]:
            ax.set_xlabel("channel")
        fig.suptitle("mean gate per channel (each panel's axis zoomed to its own range)")
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)
    return Path(path)


def plot_within_class(stats: dict, classes, path, pair, hidden=None) -> Path:
    """Figure 7 redrawn: for the classes ``pair``, the class mean minus the mean over classes
    with a band of one within-class sd on either side, on a zoomed axis: whether the two
    classes differ by more than an image moves a gate within one class."""
    plt = _pyplot()
    names = figure_blocks(list(stats))
    index = {c: i for i, c in enumerate(classes)}
    with plt.rc_context(FONTS):
        fig, axes = plt.subplots(len(names), 1, figsize=(FIGURE_WIDTH, 1.45 * len(names) + 0.8),
                                 squeeze=False)
        for ax, name in zip(axes[:, 0], names):
            s = stats[name]
            ch = numpy.arange(s.sum.shape[1])
            centre = s.class_mean[s._seen()].mean(axis=0)
            ax.axhline(0, color="0.6", lw=0.8, zorder=0)
            reach = []
            for c in pair:
                m, sd = s.class_mean[index[c]] - centre, numpy.sqrt(s.class_var[index[c]])
                line, = ax.plot(ch, m, lw=1.1, marker=".", ms=3, label=f"{c} \u00b1 one sd")
                ax.fill_between(ch, m - sd, m + sd, color=line.get_color(), alpha=0.2, lw=0)
                reach.append(numpy.abs(m) + sd)
            half = _zoom(numpy.concatenate(reach))
            ax.set_ylim(-half, half)
            ax.set_xlim(-0.5, len(ch) - 0.5)
            ax.set_ylabel(_block_label(name, stats, hidden))
            ax.grid(alpha=0.25)
        axes[0, 0].legend(ncol=len(pair), loc="lower center", bbox_to_anchor=(0.5, 1.02),
                          frameon=False)
        axes[-1, 0].set_xlabel("channel")
        fig.suptitle("class mean minus the mean over classes, \u00b1 one sd within the class")
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)
    return Path(path)


def _histogram_range(stats: dict, tail=5e-4, pad=0.02) -> tuple[float, float, int]:
    """``(low, high, outside)``: one x-axis for every block's histogram, so that their spreads
    compare: from each block's ``tail`` quantile to its ``1 - tail`` quantile (a few stray gates
    would otherwise stretch it to [0, 1]), padded by ``pad`` and rounded out to 0.05; ``outside``
    counts the gates of all blocks that fall outside it (the figure says how many)."""
    low, high = 1.0, 0.0
    for s in stats.values():
        pooled = s.hist.sum(axis=0)
        cumulative = numpy.cumsum(pooled) / max(int(pooled.sum()), 1)
        bins = len(pooled)
        low = min(low, numpy.searchsorted(cumulative, tail, side="right") / bins)
        high = max(high, (numpy.searchsorted(cumulative, 1 - tail) + 1) / bins)
    if low > high:
        return 0.0, 1.0, 0
    low = max(0.0, numpy.floor((low - pad) * 20) / 20)
    high = min(1.0, numpy.ceil((high + pad) * 20) / 20)
    outside = 0
    for s in stats.values():
        edges = numpy.arange(s.hist.shape[1] + 1) / s.hist.shape[1]
        inside = (edges[:-1] >= low - 1e-12) & (edges[1:] <= high + 1e-12)
        outside += int(s.hist[:, ~inside].sum())
    return float(low), float(high), outside


def plot_histograms(stats: dict, path, hidden=None) -> Path:
    """Every block's gates as a histogram per channel (``GateStats.hist``; rows: channels sorted
    by their mean gate, colour: the share of the images in each bin), on one zoomed x-axis shared
    by all blocks (:func:`_histogram_range`). Drawn from gates.npz alone."""
    plt = _pyplot()
    import matplotlib
    from matplotlib.colors import PowerNorm
    # Empty bins (masked) white: where no image put a gate.
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="white")
    names = list(stats)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    lo, hi, outside = _histogram_range(stats)
    with plt.rc_context(FONTS):
        fig, axes = plt.subplots(rows, cols, figsize=(FIGURE_WIDTH, 1.9 * rows + 1.1),
                                 squeeze=False, sharex=True)
        for ax, name in zip(axes.ravel(), names):
            s = stats[name]
            share = s.hist / numpy.maximum(s.hist.sum(axis=1, keepdims=True), 1)
            order = numpy.argsort(s.mean)
            image = ax.imshow(numpy.ma.masked_equal(share[order], 0), aspect="auto",
                              origin="lower", cmap=cmap,
                              norm=PowerNorm(0.4, vmin=0, vmax=1), interpolation="nearest",
                              extent=(0, 1, -0.5, len(order) - 0.5))
            for edge in (LOW, HIGH):
                if lo < edge < hi:
                    ax.axvline(edge, color="0.5", lw=0.8, ls="--")
            h = (hidden or {}).get(name)
            ax.set_title(f"{name} (C={len(order)}" + (f", h={h})" if h else ")"))
            ax.set_xlim(lo, hi)
            ax.set_yticks([])
        for ax in axes.ravel()[len(names):]:
            ax.axis("off")
        for ax in axes[:, 0]:
            ax.set_ylabel("channels, by mean")
        for ax in axes[-1]:
            ax.set_xlabel("gate")
        first = next(iter(stats.values()))
        total, bins = int(first.count.sum()), first.hist.shape[1]
        gates = sum(int(s.hist.sum()) for s in stats.values())
        fig.suptitle(f"each channel's gates over {total} images ({bins} bins on [0, 1]); colour: "
                     f"the share of the images\n{outside:,} of {gates:,} gates lie outside "
                     f"[{lo:.2f}, {hi:.2f}]")
        fig.tight_layout(rect=(0, 0, 0.92, 1))
        bar = fig.add_axes((0.93, 0.15, 0.015, 0.7))
        fig.colorbar(image, cax=bar)
        _save(fig, path)
        plt.close(fig)
    return Path(path)


def plot_gates(stats: dict, classes, out_dir, show=None, pair=None, hidden=None) -> list[Path]:
    """``fig6_class_means.png`` (:func:`plot_class_means`, classes ``show``),
    ``fig7_within_class.png`` (:func:`plot_within_class`, the two classes ``pair``) and
    ``gate_histograms.png`` (:func:`plot_histograms`) into ``out_dir``. Needs matplotlib;
    everything comes from ``stats`` (what gates.npz holds), nothing from the data."""
    show = list(show or classes[:4])
    pair = list(pair or show[:2])
    index = {c: i for i, c in enumerate(classes)}
    for c in show + pair:
        if c not in index:
            raise ValueError(f"npse excitation: unknown class {c!r}; the classes are {list(classes)}")
    out_dir = Path(out_dir)
    return [plot_class_means(stats, classes, out_dir / "fig6_class_means.png", show, hidden),
            plot_within_class(stats, classes, out_dir / "fig7_within_class.png", pair, hidden),
            plot_histograms(stats, out_dir / "gate_histograms.png", hidden)]


def draw_figures(gates, out_dir=None, show=None, pair=None) -> list[Path]:
    """The figures of :func:`plot_gates` from a ``gates.npz`` alone (into its folder unless
    ``out_dir``): no network, no data."""
    stats, meta = read_gates(gates)
    if not any(s.hist.any() for s in stats.values()):
        raise ValueError(f"{gates}: a gates file of version {meta.get('version')} has no "
                         f"histograms; run npse excitation again to write them")
    out_dir = Path(gates).parent if out_dir is None else out_dir
    return plot_gates(stats, meta["classes"], out_dir, show, pair, meta.get("hidden"))


#: Every file ``npse excitation`` writes into its --out folder (the plots with matplotlib only).
OUTPUT_FILES = ("gates.npz", "excitation.json", "excitation.md", "fig6_class_means.png",
                "fig7_within_class.png", "gate_histograms.png", "comparison.md")


# ----------------------------------------------------------------------------- the whole analysis

def check_enough_images(y, num_classes: int) -> None:
    """Refuse test labels ``y`` from which the statistics cannot be computed: between- and
    within-class spread need two classes with two images each (else they are 0/0, NaN, and the
    claims would be judged on NaN)."""
    counts = numpy.bincount(numpy.asarray(backend.to_host(y), dtype=numpy.int64),
                            minlength=num_classes)
    if int((counts >= 2).sum()) < 2:
        raise ValueError(f"npse excitation: the test set has {len(y)} image(s) in "
                         f"{int((counts > 0).sum())} class(es); the gate statistics need at least "
                         f"two classes with two images each")


def probe_with_training_means(model, meta, data, base, batch_size=250) -> tuple[list, dict, dict]:
    """The probe of ``model`` on the test images, its class-agnostic means taken from
    :func:`probe_subset` of the training images (never from the test images it is scored on).

    Returns ``(rows, setup, means)``: :func:`probe`'s rows, what ``excitation.json`` records of
    how they were measured, and ``{SE name: (C,)}`` the means applied.
    """
    chosen = probe_subset(len(data.y_train))
    train, _ = record_gates(model, data.x_train[chosen], data.y_train[chosen], meta["mean"],
                            meta["std"], len(meta["classes"]), batch_size)
    means = {name: s.mean for name, s in train.items()}
    rows = probe(model, data.x_test, data.y_test, meta["mean"], meta["std"], means, batch_size,
                 base)
    setup = {"mean_from": "training images", "images": int(len(chosen)),
             "of": int(len(data.y_train)), "seed": PROBE_SEED, "resamples": RESAMPLES,
             "bootstrap_seed": BOOTSTRAP_SEED, "level": LEVEL}
    return rows, setup, means


def analyse(model, meta, data, out, checkpoint, batch_size=250, do_probe=True,
            command="npse excitation", study=None) -> dict:
    """Gates, numbers, claims and (``do_probe``) the probe of ``model`` on ``data.x_test``;
    writes OUT/gates.npz, OUT/excitation.json and OUT/excitation.md and returns the report."""
    classes = list(meta["classes"])
    check_enough_images(data.y_test, len(classes))
    stats, base = record_gates(model, data.x_test, data.y_test, meta["mean"], meta["std"],
                               len(classes), batch_size)
    acc = float((base == numpy.asarray(backend.to_host(data.y_test))).mean())
    hidden = {name: getattr(block, "hidden", None) for name, block in find_se_blocks(model)}
    summaries = {name: {"channels": s.sum.shape[1], "hidden": hidden[name], **s.summary()}
                 for name, s in stats.items()}
    rows, setup, means = (probe_with_training_means(model, meta, data, base, batch_size)
                          if do_probe else ([], None, None))
    if means:
        # How far the training images' mean is from the test images' (which the probe avoids).
        setup["largest_difference_to_the_test_mean"] = {
            name: float(numpy.abs(means[name] - s.mean).max()) for name, s in stats.items()}
    report = {
        "checkpoint": str(checkpoint), "sha256": sha256_of(checkpoint), "command": command,
        "model": meta["config"].get("model"), "epoch": meta["epoch"],
        "images": int(len(data.y_test)), "accuracy": acc, "classes": classes,
        "thresholds": {"high": HIGH, "low": LOW}, "histogram_bins": BINS,
        "blocks": summaries, "claims": judge_claims(summaries),
        "probe": rows, "probe_setup": setup, "study": study,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_gates(out / "gates.npz", stats, classes,
                {"checkpoint": str(checkpoint), "sha256": report["sha256"], "accuracy": acc},
                means, hidden)
    write_text_atomic(out / "excitation.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "excitation.md", report_markdown(report))
    report["stats"] = stats
    return report
