"""Draw the book's PNG figures: ``python docs/figures/make_figures.py`` (needs matplotlib).

Writes, next to this script:

* ``learning-curves-10ep.png``: test accuracy per epoch of the two 10-epoch runs of chapter 11
  (SE-ResNet-20 and ResNet-20, ``npse train --model ... --epochs 10``), with the quick default's
  three epochs. The numbers are those quoted in docs/11-training.md, section "Measured results";
  the script checks that the chapter still quotes them, so the figure cannot drift from the text.
  ``--metrics RUN_DIR ...`` draws the test accuracy of real runs from their ``metrics.jsonl``
  instead (into ``learning-curves.png``), for anyone who has trained their own.

The output is deterministic: fixed sizes, no timestamps in the PNG (``metadata``), no randomness.
Every other figure of the book is text (Mermaid or a text block) inside the chapters.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHAPTER = HERE.parent / "11-training.md"
#: Every PNG this script writes by default; tests/test_figures.py checks that no other PNG is here.
OUTPUTS = ("learning-curves-10ep.png",)

# Test accuracy (%) per epoch as docs/11-training.md quotes it (measured on a JPEG re-encoding
# of CIFAR-10; see that chapter for the machine and the commands).
TEN_EPOCHS = {
    "SE-ResNet-20": [43.3, 60.0, 61.9, 69.2, 69.0, 76.9, 75.1, 81.0, 82.4, 82.9],
    "ResNet-20": [51.4, 59.4, 61.1, 68.0, 69.0, 74.6, 78.2, 81.6, 82.7, 83.4],
}
QUICK_DEFAULT = {"test": [43.33, 59.92, 73.44], "train": [38.5, 60.6, 70.4]}


def check_against_chapter():
    """Each list above must appear, in order, in chapter 11's text (else the chapter changed)."""
    text = " ".join(CHAPTER.read_text(encoding="utf-8").split())
    for label, values in [*TEN_EPOCHS.items(), ("quick default, test", QUICK_DEFAULT["test"]),
                          ("quick default, train", QUICK_DEFAULT["train"])]:
        quoted = r"%?,\s*".join(re.escape(f"{v:.2f}" if label.startswith("quick default, test")
                                          else f"{v:.1f}") for v in values)
        if not re.search(quoted, text):
            raise SystemExit(f"make_figures.py: {CHAPTER.name} no longer quotes the {label} "
                             f"accuracies {values}; update TEN_EPOCHS / QUICK_DEFAULT from it")


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("make_figures.py needs matplotlib: pip install 'npse[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    fig.savefig(path, dpi=100, metadata={"Software": None})   # no version string: reproducible
    print(f"wrote {path.relative_to(HERE.parent.parent)}")


def learning_curves(plt, series, title, path):
    """series: [(label, epochs, accuracies %, style)] -> one panel of test accuracy per epoch."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, epochs, acc, style in series:
        ax.plot(epochs, acc, style, label=label)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title)
    ax.set_xticks(range(1, max(max(e) for _, e, _, _ in series) + 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def quoted_runs(plt):
    check_against_chapter()
    ten = range(1, 11)
    series = [("SE-ResNet-20, 10 epochs: test", list(ten), TEN_EPOCHS["SE-ResNet-20"], "o-"),
              ("ResNet-20, 10 epochs: test", list(ten), TEN_EPOCHS["ResNet-20"], "s--"),
              ("SE-ResNet-20, quick default (3 epochs): test", [1, 2, 3], QUICK_DEFAULT["test"], "^-"),
              ("SE-ResNet-20, quick default (3 epochs): train", [1, 2, 3], QUICK_DEFAULT["train"], "v:")]
    learning_curves(plt, series, "npse train on a JPEG re-encoding of CIFAR-10 (docs/11)",
                    HERE / OUTPUTS[0])


def metrics_runs(plt, run_dirs):
    series = []
    for run in run_dirs:
        records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()
                   if line.strip()]
        epochs = [r["epoch"] for r in records]
        series.append((f"{Path(run).name}: test", epochs, [100 * r["test_acc"] for r in records], "o-"))
        series.append((f"{Path(run).name}: train", epochs, [100 * r["train_acc"] for r in records], "v:"))
    learning_curves(plt, series, "npse train: accuracy per epoch", HERE / "learning-curves.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", nargs="+", metavar="RUN_DIR",
                        help="draw these runs' metrics.jsonl instead of chapter 11's numbers")
    args = parser.parse_args(argv)
    plt = pyplot()
    if args.metrics:
        metrics_runs(plt, args.metrics)
    else:
        quoted_runs(plt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
