"""Draw the book's PNG figures: ``python docs/figures/make_figures.py`` (needs matplotlib).

Writes, next to this script (or into ``--out DIR``):

* ``learning-curves-10ep.png``: test accuracy per epoch of the two 10-epoch runs of chapter 11
  (SE-ResNet-20 and ResNet-20, ``npse train --model ... --epochs 10``), with the quick default's
  three epochs. The numbers are those quoted in docs/11-training.md, section "Measured results";
  the script checks that the chapter still quotes them, so the figure cannot drift from the text.
  ``--metrics RUN_DIR ...`` draws the test accuracy of real runs from their ``metrics.jsonl``
  instead (into ``learning-curves.png``), for anyone who has trained their own.
* ``im2col.png`` (chapter 6): two images of two channels, a 2x2 kernel: which patch becomes which
  column of ``im2col``'s matrix, which pixel each row holds, and how often ``col2im`` adds a
  value back onto each pixel. The matrix is npse's own ``im2col`` of labelled pixels.
* ``conv-dx-flipped.png`` (chapter 6): a convolution's ``dx`` as a correlation of the zero-padded
  ``dy`` with the kernel flipped in space; the script checks the numbers against
  ``conv2d_backward`` before drawing them.
* ``se-block-graph.png`` (chapter 9): the SE block's forward graph and its backward graph, both
  paths by which the gradient reaches ``x``, with every shape.
* ``se-resnet20.png`` (chapter 10): SE-ResNet-20 stage by stage, with the output shape and the
  parameter count of each stage, counted on ``models.se_resnet20()``.

The output is deterministic: fixed sizes, no timestamps in the PNG (``metadata``), no randomness;
the same matplotlib draws the same bytes. Other figures of the book are text (Mermaid or a text
block) inside the chapters.
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
OUTPUTS = ("learning-curves-10ep.png", "im2col.png", "conv-dx-flipped.png", "se-block-graph.png",
           "se-resnet20.png")

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
    print(f"wrote {path}")


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


def quoted_runs(plt, out=HERE):
    check_against_chapter()
    ten = range(1, 11)
    series = [("SE-ResNet-20, 10 epochs: test", list(ten), TEN_EPOCHS["SE-ResNet-20"], "o-"),
              ("ResNet-20, 10 epochs: test", list(ten), TEN_EPOCHS["ResNet-20"], "s--"),
              ("SE-ResNet-20, quick default (3 epochs): test", [1, 2, 3], QUICK_DEFAULT["test"], "^-"),
              ("SE-ResNet-20, quick default (3 epochs): train", [1, 2, 3], QUICK_DEFAULT["train"], "v:")]
    learning_curves(plt, series, "npse train on a JPEG re-encoding of CIFAR-10 (docs/11)",
                    out / OUTPUTS[0])


def metrics_runs(plt, run_dirs):
    series = []
    for run in run_dirs:
        records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()
                   if line.strip()]
        epochs = [r["epoch"] for r in records]
        series.append((f"{Path(run).name}: test", epochs, [100 * r["test_acc"] for r in records], "o-"))
        series.append((f"{Path(run).name}: train", epochs, [100 * r["train_acc"] for r in records], "v:"))
    learning_curves(plt, series, "npse train: accuracy per epoch", HERE / "learning-curves.png")

# ---------------------------------------------------------------------------------- diagrams
IMAGE_COLOURS = ("#4c72b0", "#dd8452")                    # image 0, image 1
FORWARD, BACKWARD = "#222222", "#c44e52"


def box(ax, x, y, text, w=1.6, h=0.6, face="#f2f2f2", edge="#444444", size=9, **kw):
    """A rounded box centred at (x, y) with its text."""
    from matplotlib.patches import FancyBboxPatch
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=face, edgecolor=edge, linewidth=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, **kw)


def arrow(ax, start, end, colour=FORWARD, text=None, style="-|>", rad=0.0, size=8, offset=(0, 0.12)):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=colour, lw=1.4,
                                                        shrinkA=2, shrinkB=2,
                                                        connectionstyle=f"arc3,rad={rad}"))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                ha="center", va="bottom", fontsize=size, color=colour)


def blank(ax, xlim, ylim):
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")


def im2col_figure(plt, out):
    """Two images, two channels, 3x3 pixels, a 2x2 kernel, stride 1: im2col's 8 x 8 matrix."""
    import numpy as np
    from npse.nn.im2col import col2im, im2col
    n, c, size, k = 2, 2, 3, 2
    label = np.arange(n * c * size * size, dtype=float).reshape(n, c, size, size)   # pixel ids
    cols = im2col(label, (k, k))                                    # (C*K*K, N*OH*OW) = (8, 8)
    counts = col2im(np.ones_like(cols), label.shape, (k, k))       # how often col2im adds back
    names = {int(v): f"{'ab'[ci]}{'pq'[ni]}{int(v) % 9}" for ni in range(n) for ci in range(c)
             for v in label[ni, ci].ravel()}                       # a: channel 0, b: channel 1; p, q: image
    fig = plt.figure(figsize=(12, 5.6))
    left, right = fig.add_axes([0.01, 0.02, 0.33, 0.9]), fig.add_axes([0.37, 0.02, 0.62, 0.9])
    blank(left, (-0.5, 8.2), (-8.6, 1.2))
    left.set_title("x: N=2 images, C=2 channels, 3x3 pixels\n(kernel 2x2, stride 1, no padding)", fontsize=10)
    highlight = (1, 0, 1)                                          # image 1, output row 0, column 1
    for ni in range(n):
        for ci in range(c):
            ox, oy = ci * 4.2, -ni * 4.6
            left.text(ox + 1.5, oy + 0.35, f"image {ni}, channel {ci}", ha="center", fontsize=9,
                      color=IMAGE_COLOURS[ni])
            for i in range(size):
                for j in range(size):
                    inside = ni == highlight[0] and highlight[1] <= i < highlight[1] + k \
                        and highlight[2] <= j < highlight[2] + k
                    left.add_patch(plt.Rectangle((ox + j, oy - i - 1), 1, 1, facecolor="#ffe08a" if inside
                                                 else "white", edgecolor=IMAGE_COLOURS[ni]))
                    left.text(ox + j + 0.5, oy - i - 0.5, names[int(label[ni, ci, i, j])], ha="center",
                              va="center", fontsize=8)
    left.text(3.8, -8.4, "yellow: the patch of image 1 at output (oy, ox) = (0, 1),\n"
              "both channels; it becomes one column of the matrix", ha="center", fontsize=8.5)
    rows, ncols = cols.shape
    blank(right, (-3.2, ncols + 0.2), (-rows - 3.2, 2.2))
    right.set_title("im2col(x): (C*KH*KW, N*OH*OW) = (8, 8); a column is a patch, a row a kernel tap",
                    fontsize=10)
    column = highlight[0] * 4 + highlight[1] * 2 + highlight[2]
    for r in range(rows):
        ci, ky, kx = r // (k * k), (r // k) % k, r % k
        right.text(-0.15, -r - 0.5, f"(c={ci}, ky={ky}, kx={kx})", ha="right", va="center", fontsize=8)
        for j in range(ncols):
            ni = j // 4
            right.add_patch(plt.Rectangle((j, -r - 1), 1, 1, edgecolor=IMAGE_COLOURS[ni],
                                          facecolor="#ffe08a" if j == column else "white"))
            right.text(j + 0.5, -r - 0.5, names[int(cols[r, j])], ha="center", va="center", fontsize=8)
    for j in range(ncols):
        ni, oy, ox = j // 4, (j // 2) % 2, j % 2
        right.text(j + 0.5, 0.15, f"n={ni}\noy={oy}\nox={ox}", ha="center", va="bottom", fontsize=7.5,
                   color=IMAGE_COLOURS[ni])
    flat = ", ".join(f"{names[int(label[0, 0, i, j])]}:{int(counts[0, 0, i, j])}" for i in range(size)
                     for j in range(size))
    right.text(ncols / 2 - 1.5, -rows - 1.0, "col2im adds every entry back onto its pixel; how often each pixel "
               f"is hit (the same in every image and channel):\n{flat}", ha="center", va="top", fontsize=8.5)
    right.text(ncols / 2 - 1.5, -rows - 2.4, "names: a/b = channel 0/1, p/q = image 0/1, then the pixel "
               "0-8 in row-major order", ha="center", va="top", fontsize=8.5)
    save(fig, out / "im2col.png")
    plt.close(fig)


def conv_dx_figure(plt, out):
    """dx of a 1-channel 4x4 input, 2x2 kernel: the padded dy correlated with the flipped kernel."""
    import numpy as np
    from npse.nn.conv2d import conv2d_backward, conv2d_forward
    x = np.zeros((1, 1, 4, 4))
    w = np.array([[1., 2.], [3., 4.]]).reshape(1, 1, 2, 2)
    dy = np.array([[1., 0., 2.], [0., 1., 0.], [3., 0., 1.]]).reshape(1, 1, 3, 3)
    _, cache = conv2d_forward(x, w)
    dx = conv2d_backward(dy, cache)[0][0, 0]
    padded, flipped = np.pad(dy[0, 0], 1), w[0, 0, ::-1, ::-1]
    by_hand = np.array([[(padded[i:i + 2, j:j + 2] * flipped).sum() for j in range(4)] for i in range(4)])
    assert np.array_equal(dx, by_hand), "conv2d_backward is not the flipped-kernel correlation"
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.9), gridspec_kw={"width_ratios": [2.6, 2.6, 5.6, 4.6]})
    i0, j0 = 1, 2                                                   # the dx entry traced
    panels = [(w[0, 0], "kernel W (2x2)", None), (flipped, "W flipped in both axes", None),
              (padded, "dy (3x3), padded by K-1 = 1 with zeros", (i0, j0)),
              (dx, "dx (4x4) = conv2d_backward", (i0, j0, 1))]
    for ax, (grid, title, mark) in zip(axes, panels):
        h, wd = grid.shape
        blank(ax, (-0.3, wd + 0.3), (-5.3, 0.9))
        ax.set_title(title, fontsize=9.5)
        for i in range(h):
            for j in range(wd):
                window = mark is not None and len(mark) == 2 and mark[0] <= i < mark[0] + 2 and mark[1] <= j < mark[1] + 2
                target = mark is not None and len(mark) == 3 and (i, j) == mark[:2]
                pad = title.startswith("dy") and not (0 < i < h - 1 and 0 < j < wd - 1)
                ax.add_patch(plt.Rectangle((j, -i - 1), 1, 1, edgecolor="#444444",
                                           facecolor="#ffe08a" if window or target else ("#eeeeee" if pad else "white")))
                ax.text(j + 0.5, -i - 0.5, f"{grid[i, j]:g}", ha="center", va="center", fontsize=10)
    window = padded[i0:i0 + 2, j0:j0 + 2]
    terms = " + ".join(f"{a:g}*{b:g}" for a, b in zip(window.ravel(), flipped.ravel()))
    fig.text(0.5, 0.03, f"dx[{i0},{j0}] = sum(yellow window of padded dy * flipped W) = {terms} = {dx[i0, j0]:g}"
             "   (stride 1: a correlation with the flipped kernel, i.e. a true convolution of dy with W)",
             ha="center", fontsize=9.5)
    save(fig, out / "conv-dx-flipped.png")
    plt.close(fig)


def se_block_figure(plt, out):
    """The SE block's forward graph (black, left to right) and backward graph (red, right to left)."""
    fig, ax = plt.subplots(figsize=(14, 5.6))
    blank(ax, (-0.3, 19.6), (-5.6, 2.2))
    ax.set_title("The SE block: forward (black, top) and backward (red, bottom), with shapes; "
                 "h = max(1, C // reduction)", fontsize=11)
    xs = [1.3 + 2.8 * i for i in range(7)]
    top = [("x\n(N, C, H, W)", None), ("squeeze: z = mean_HW(x)\n(N, C)", None),
           ("fc1: a = z W1ᵀ + b1\n(N, h)", None), ("ReLU: r = max(a, 0)\n(N, h)", None),
           ("fc2: u = r W2ᵀ + b2\n(N, C)", None), ("gate: s = sigmoid(u)\n(N, C)", None),
           ("scale: y = x · s\n(N, C, H, W)", None)]
    for x, (text, _) in zip(xs, top):
        box(ax, x, 0.6, text, w=2.5, h=0.9, size=7.8)
    for a, b in zip(xs[:-1], xs[1:]):
        arrow(ax, (a + 1.25, 0.6), (b - 1.25, 0.6))
    arrow(ax, (xs[0], 1.05), (xs[-1], 1.05), rad=-0.12, text="x itself: the factor being scaled", offset=(0, 0.55))
    bottom = [("dx = dy · s + dz / (H·W)\n(N, C, H, W)", "#fbe3e4"), ("dz = da W1\n(N, C)", None),
              ("da = dr · [a > 0]\n(N, h);  dW1 = daᵀ z", None), ("dr = du W2\n(N, h)", None),
              ("du = ds · s(1 − s)\n(N, C);  dW2 = duᵀ r", None), ("ds = sum_HW(dy · x)\n(N, C)", None),
              ("dy\n(N, C, H, W)", None)]
    for x, (text, face) in zip(xs, bottom):
        box(ax, x, -2.6, text, w=2.5, h=0.9, size=7.8, face=face or "#fdf1f1", edge=BACKWARD)
    for a, b in zip(xs[::-1][:-1], xs[::-1][1:]):
        arrow(ax, (a - 1.25, -2.6), (b + 1.25, -2.6), colour=BACKWARD)
    arrow(ax, (xs[-1], -3.05), (xs[0], -3.05), colour=BACKWARD, rad=-0.12,
          text="path 1, through the scale: dy · s   (N, C, H, W)", offset=(0, -1.45))
    ax.text(xs[3], -1.85, "path 2, through the squeeze: ds → du → dr → da → dz → dz / (H·W), broadcast",
            ha="center", fontsize=9, color=BACKWARD)
    ax.text(xs[3], -5.3, "dx adds both paths; forgetting path 2 (dx = dy · s) is the classic SE bug. "
            "Other gates: s(1 − s) becomes 1 − s² (tanh) or [u > 0] (ReLU).",
            ha="center", fontsize=9)
    for x in xs:
        ax.plot([x, x], [0.12, -2.12], ls=":", lw=0.8, color="#bbbbbb")
    save(fig, out / "se-block-graph.png")
    plt.close(fig)


def se_resnet20_figure(plt, out):
    """SE-ResNet-20 stage by stage, shapes and parameters counted on the model itself."""
    from npse import models
    from npse.models.summary import summary_rows
    net = models.se_resnet20()
    rows = summary_rows(net)
    params = {}
    for name, _, _, count, _ in rows:
        part = name.split(".")[0]
        params[part] = params.get(part, 0) + count
    shapes = {name: shape for name, _, shape, _, _ in rows}
    total = sum(params.values())

    def fmt(shape):
        return "(N, " + ", ".join(str(s) for s in shape) + ")"

    fig, ax = plt.subplots(figsize=(14, 5.8))
    blank(ax, (-0.2, 19.6), (-5.8, 2.2))
    ax.set_title(f"SE-ResNet-20 for CIFAR-10: {total:,} parameters "
                 "(counted on models.se_resnet20())", fontsize=11)
    stem = params["conv1"] + params["bn1"]
    stages = [("input image", "(N, 3, 32, 32)", "", "#ffffff"),
              ("stem: conv 3x3, 16\n+ BN + ReLU", fmt(shapes["relu"]), f"{stem:,} params", "#eeeeee"),
              ("stage 1: 3 SE blocks\n16 channels\nstride 1", fmt(shapes["layer1.2.relu_out"]),
               f"{params['layer1']:,} params", "#dbe6f4"),
              ("stage 2: 3 SE blocks\n32 channels\nfirst block stride 2", fmt(shapes["layer2.2.relu_out"]),
               f"{params['layer2']:,} params", "#c7d7ee"),
              ("stage 3: 3 SE blocks\n64 channels\nfirst block stride 2", fmt(shapes["layer3.2.relu_out"]),
               f"{params['layer3']:,} params", "#aec5e6"),
              ("global average pool", fmt(shapes["pool"]), "0 params", "#eeeeee"),
              ("fc: 64 → 10", fmt(shapes["fc"]) + " logits", f"{params['fc']:,} params", "#eeeeee")]
    xs = [1.3 + 2.8 * i for i in range(len(stages))]
    for x, (text, shape, count, face) in zip(xs, stages):
        box(ax, x, 1.25, text, w=2.6, h=1.05, face=face, size=8.2)
        ax.text(x, 0.5, shape, ha="center", fontsize=8.5)
        ax.text(x, 0.2, count, ha="center", fontsize=8, color="#555555")
    for a, b in zip(xs[:-1], xs[1:]):
        arrow(ax, (a + 1.3, 1.2), (b - 1.3, 1.2))
    # one residual block, expanded
    ax.text(9.7, -0.55, "every SE block: relu(SE(F(x)) + shortcut(x)); the first block of stages 2 and 3 "
            "halves H, W (stride-2 conv) and doubles C (shortcut A: subsample, pad channels with zeros, "
            "no parameters)", ha="center", fontsize=8.5)
    chain = ["conv 3x3\n(stride 1 or 2)", "BN", "ReLU", "conv 3x3", "BN", "SE block\n(chapter 9)", "+", "ReLU"]
    cx = [2.0 + 2.3 * i for i in range(len(chain))]
    for x, text in zip(cx, chain):
        box(ax, x, -2.6, text, w=1.5 if text != "+" else 0.6, h=0.8, size=8.5,
            face="#fdf3d8" if text.startswith("SE") else "#f2f2f2")
    for a, b, text in zip(cx[:-1], cx[1:], chain[1:]):
        half_a = 0.3 if chain[cx.index(a)] == "+" else 0.75
        half_b = 0.3 if text == "+" else 0.75
        arrow(ax, (a + half_a, -2.6), (b - half_b, -2.6))
    box(ax, -0.1 + 0.35, -2.6, "x", w=0.5, h=0.6, size=9)
    arrow(ax, (0.5, -2.6), (cx[0] - 0.75, -2.6))
    arrow(ax, (0.25, -2.95), (cx[6], -2.95), rad=0.25, text="shortcut: identity, or A where the shape changes",
          offset=(0, -1.45))
    ax.text(cx[0] - 0.75, -1.75, "branch F(x), then SE", fontsize=8.5, ha="left")
    se = [sum(int(p.data.size) for name, m in net.se_blocks() if name.startswith(f"layer{i}.")
              for p in m.parameters()) for i in (1, 2, 3)]
    ax.text(9.7, -5.45, "SE parameters per stage (3 blocks each, chapter 10): "
            f"{se[0]:,}, {se[1]:,}, {se[2]:,} of {total:,}; stage 3 holds {100 * se[2] / sum(se):.0f}% of them",
            ha="center", fontsize=8.5)
    save(fig, out / "se-resnet20.png")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", nargs="+", metavar="RUN_DIR",
                        help="draw these runs' metrics.jsonl instead of chapter 11's numbers")
    parser.add_argument("--out", type=Path, default=HERE, metavar="DIR",
                        help="where to write the figures (default: next to this script)")
    args = parser.parse_args(argv)
    plt = pyplot()
    if args.metrics:
        metrics_runs(plt, args.metrics)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    quoted_runs(plt, args.out)
    for draw in (im2col_figure, conv_dx_figure, se_block_figure, se_resnet20_figure):
        draw(plt, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
