"""``npse excitation`` (placeholder until the excitation package lands)."""
from __future__ import annotations

from . import options

HELP = "what the SE gates of a trained network do, per class and depth"

DESCRIPTION = ("Run the test set through a trained SE network, record every SE block's gates per "
               "class (OUT/gates.npz), measure class-specificity, saturation and spread, check the "
               "paper's claims, probe each stage by fixing its gates, and draw the paper's figures "
               "6 and 7 (OUT/*.png, needs matplotlib).")


def add_arguments(p) -> None:
    from .. import excitation
    excitation.add_arguments(p, options.positive_int)


def run(args) -> int:
    from .. import excitation
    return excitation.command(args)
