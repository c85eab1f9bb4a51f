"""``npse study`` (placeholder until the study folder module lands)."""
from __future__ import annotations

HELP = "run one of the paper's ablations (arms x seeds) and tabulate it"

DESCRIPTION = ("Run a study of the paper's ablations: every arm x seed is an ordinary training run "
               "in OUT/<arm>/seed-<s>/; finished runs are skipped, interrupted ones resumed. Writes "
               "OUT/results.{json,md,png}. See docs/12-studies.md.")


def add_arguments(p) -> None:
    from ..study import command
    command.add_arguments(p)


def run(args) -> int:
    from ..study import command
    return command.main_from_args(args)
