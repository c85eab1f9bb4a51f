"""Learning curves of a run: ``npse plot OUT`` draws ``OUT/metrics.jsonl`` into ``OUT/curves.png``.

Three panels against the epoch: loss (train and test), accuracy (train and test) and the
learning rate at the end of each epoch. matplotlib is an optional dependency
(``pip install 'npse[plot]'``); nothing else in npse needs it.
"""
from __future__ import annotations

import os
from pathlib import Path

from .rundir import CURVES, METRICS, read_metrics


def printable(name: str) -> str:
    """``name`` with the bytes that are not UTF-8 (a file name from elsewhere) shown as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("npse plot needs matplotlib: pip install 'npse[plot]'") from None
    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt
    return plt


#: What matplotlib can write, by file suffix.
FORMATS = (".png", ".svg", ".pdf")


def output_path(out: Path, output) -> Path:
    """Where ``npse plot`` writes: OUT/curves.png; inside ``output`` when it names a folder (an
    existing one, or one written with a trailing slash), else ``output`` itself, which must end
    in one of :data:`FORMATS` (matplotlib would otherwise add ``.png`` and the path printed
    would not be the file written)."""
    if output is None:
        return out / CURVES
    text = str(output)
    path = Path(output)
    if path.is_dir() or text.endswith(("/", os.sep)):
        if not path.is_dir():
            raise FileNotFoundError(f"--output {text}: no such folder")
        return path / CURVES
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"--output {text}: give a file name ending in "
                         f"{', '.join(FORMATS)}, or a folder")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--output {text}: the folder {path.parent} does not exist")
    return path


def plot_run(out, output=None) -> Path:
    """Draw the curves of the run in directory ``out`` to ``output`` (default OUT/curves.png;
    see :func:`output_path`); return the path written."""
    out = Path(out)
    records = read_metrics(out / METRICS)
    if not records:
        raise ValueError(f"{out / METRICS} holds no epochs yet")
    output = output_path(out, output)
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.8))
    try:
        ax_loss.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
        ax_loss.plot(epochs, [r["test_loss"] for r in records], "s-", label="test")
        ax_loss.set(title="cross-entropy loss", xlabel="epoch")
        ax_acc.plot(epochs, [100 * r["train_acc"] for r in records], "o-", label="train")
        ax_acc.plot(epochs, [100 * r["test_acc"] for r in records], "s-", label="test")
        ax_acc.set(title="accuracy (%)", xlabel="epoch")
        ax_lr.plot(epochs, [r["lr"] for r in records], "o-", color="gray")
        ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch")
        for ax in (ax_loss, ax_acc):
            ax.legend()
        for ax in (ax_loss, ax_acc, ax_lr):
            ax.grid(alpha=0.3)
        best = max(records, key=lambda r: r["test_acc"])
        fig.suptitle(f"{printable(out.name)}: final test accuracy {100 * records[-1]['test_acc']:.2f}%, "
                     f"best {100 * best['test_acc']:.2f}% (epoch {best['epoch']})")
        fig.tight_layout()
        fig.savefig(output, dpi=100)
    finally:
        plt.close(fig)
    return output
