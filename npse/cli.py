"""The ``npse`` command: one table of commands, each a module of :mod:`npse.commands`.

Every error a user can cause (a bad option, missing data, a corrupt checkpoint, an unusable
backend) ends as one line ``npse: error: ...`` on stderr and a non-zero exit status, never as a
traceback. Set ``NPSE_TRACEBACK=1`` to see the traceback anyway (for debugging npse itself).

Exit status: 0 success, 1 error, 2 bad command line, 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import sys

from .commands import bench, evaluate, excitation, options, plot, study, train

PROG = "npse"

#: name -> command module (HELP, DESCRIPTION, add_arguments(parser), run(args) -> int), in the
#: order ``npse --help`` lists them.
COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "plot": plot,
    "excitation": excitation,
    "bench": bench,
    "study": study,
}


def build_parser() -> argparse.ArgumentParser:
    parser = options.Parser(prog=PROG, description="Squeeze-and-Excitation ResNets in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=options.Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION,
                           epilog=getattr(command, "EPILOG", None))
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv=None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        # A path that is not UTF-8 (a folder name from elsewhere) is printed escaped, never
        # left to fail the command after its work is done.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args, status = options.parse(build_parser(), argv)
    if args is None:
        return status
    if args.command is None:
        return options.fail(PROG, f"a command is required: {', '.join(COMMANDS)} "
                                  f"(see 'npse --help')")
    return options.guarded(args.run, args, PROG)
