"""``npse plot``: the learning curves of a run (npse/plot.py)."""
from __future__ import annotations

HELP = "draw the learning curves of a run"

DESCRIPTION = ("Draw loss and accuracy (train and test) and the learning rate per epoch from "
               "OUT/metrics.jsonl into OUT/curves.png. Needs matplotlib: pip install 'npse[plot]'.")


def add_arguments(p) -> None:
    p.add_argument("out", metavar="OUT", help="a run directory of npse train")
    p.add_argument("--output", metavar="PNG", help="where to write (default: OUT/curves.png)")


def run(args) -> int:
    from ..plot import plot_run

    path = plot_run(args.out, args.output)
    print(f"wrote {path}")
    return 0
