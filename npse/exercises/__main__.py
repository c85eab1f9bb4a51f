"""``python -m npse.exercises list | start NAME [DIR] | check NAME FILE``.

Exit status: 0 every property holds (or list/start succeeded), 1 a property fails, 2 a usage
error (unknown exercise, missing file, file without the exercise's functions, no hypothesis).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PROG = "python -m npse.exercises"


def _fail(message):
    """A usage error: one line on stderr, exit status 2."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _exercises():
    try:
        from . import exercises
        return exercises()
    except ImportError as e:
        if "hypothesis" in str(e):
            _fail("the checkers need hypothesis: pip install 'npse[test]'")
        raise


def _exercise(name):
    table = _exercises()
    if name not in table:
        _fail(f"no exercise {name!r}; the exercises are {', '.join(table)}")
    return table[name]


def list_exercises(args):
    for ex in _exercises().values():
        print(f"{ex.name:12} {ex.chapter:26} {ex.summary}")
    return 0


def start(args):
    ex = _exercise(args.name)
    directory = Path(args.dir)
    target = directory / ex.stub.name
    if target.exists():
        _fail(f"{target} exists already; not overwriting your work")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ex.stub, target)
    print(f"wrote {target}; fill it in, then: {PROG} check {ex.name} {target}")
    return 0


def check(args):
    from .checker import load_student, run
    ex = _exercise(args.name)
    try:
        student = load_student(args.file, ex)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    print(f"exercise {ex.name} ({ex.chapter}): {ex.summary}")
    print(f"checking {args.file} on up to {args.examples} drawn cases per property")
    results = run(ex, student, args.examples, args.random)
    failed = [r for r in results if not r.passed]
    if failed:
        print(f"{len(failed)} of {len(results)} properties fail.")
        return 1
    print(f"all {len(results)} properties hold.")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Exercises with checkers: write a layer's forward and backward passes in a\n"
                    "stub, and let the test suite's property checks judge them.",
        epilog=f"example:\n  {PROG} start linear my_answers\n"
               f"  {PROG} check linear my_answers/linear.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the exercises and their chapters").set_defaults(run=list_exercises)
    p = sub.add_parser("start", help="copy an exercise's stub into DIR")
    p.add_argument("name")
    p.add_argument("dir", nargs="?", default=".")
    p.set_defaults(run=start)
    p = sub.add_parser("check", help="run an exercise's properties on your file")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--examples", type=_positive, default=25,
                   help="cases drawn per property (default 25)")
    p.add_argument("--random", action="store_true",
                   help="draw fresh cases each run (default: the same cases every run)")
    p.set_defaults(run=check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
