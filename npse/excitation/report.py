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
from .stats import HIGH, LOW, GateStats, collect_gates, judge_claims, probe, stage_of

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


#: Every file ``npse excitation`` writes into its --out folder (the plots with matplotlib only).
OUTPUT_FILES = ("gates.npz", "excitation.json", "excitation.md", "fig6_class_means.png",
                "fig7_within_class.png")


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


def analyse(model, meta, data, out, checkpoint, batch_size=250, do_probe=True,
            command="npse excitation", study=None) -> dict:
    """Gates, numbers, claims and (``do_probe``) the probe of ``model`` on ``data.x_test``;
    writes OUT/gates.npz, OUT/excitation.json and OUT/excitation.md and returns the report."""
    classes = list(meta["classes"])
    check_enough_images(data.y_test, len(classes))
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
    write_text_atomic(out / "excitation.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "excitation.md", report_markdown(report))
    report["stats"] = stats
    return report
