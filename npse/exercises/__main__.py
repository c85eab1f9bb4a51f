"""``python -m npse.exercises list | start NAME [DIR] | check NAME FILE``.

Exit status: 0 every property holds (or list/start succeeded), 1 a property fails, 2 a usage
error (unknown exercise, missing file, a file that does not import, calls sys.exit or hangs at its
top level, or lacks the exercise's functions; a target that cannot be written; no hypothesis),
130 interrupted (Ctrl-C). Every error is one line on stderr.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

PROG = "python -m npse.exercises"


def _fail(message):
    """A usage error: one line on stderr, exit status 2."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


#: The most cases --examples may ask for per property: 10000 already takes minutes per property;
#: without a bound a typo such as 99999999999999999999 would just never finish.
MAX_EXAMPLES = 10_000


def _examples(text):
    if not text.isdigit() or not 1 <= int(text) <= MAX_EXAMPLES:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_EXAMPLES}, "
                                         f"got {text[:30]!r}")
    return int(text)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:       # NaN fails this too
        raise argparse.ArgumentTypeError(f"expected a number of seconds in (0, 3600], got {text[:30]!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage first)."""

    def error(self, message):
        _fail(f"{message} (see {self.prog} --help)")


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
    table = _exercises()
    width = max(map(len, table))
    for ex in table.values():
        print(f"{ex.name:{width}}  {ex.chapter:24}  {ex.summary}")
    return 0


def start(args):
    ex = _exercise(args.name)
    directory = Path(args.dir)
    target = directory / ex.stub.name
    if directory.exists() and not directory.is_dir():
        _fail(f"{directory} is a file, not a directory: give the directory to copy the stub into")
    if target.exists():
        _fail(f"{target} exists already; not overwriting your work")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(ex.stub, "rb") as source, open(target, "xb") as copy:   # x: never overwrite
            shutil.copyfileobj(source, copy)
    except OSError as e:
        _fail(f"cannot write {target}: {e.strerror or e}")
    print(f"wrote {target}; fill it in, then: {PROG} check {ex.name} {target}")
    return 0


def check(args):
    from .checker import load_student, run
    ex = _exercise(args.name)
    try:
        student = load_student(args.file, ex, args.time_limit)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    print(f"exercise {ex.name} ({ex.chapter}): {ex.summary}")
    print(f"checking {args.file} on up to {args.examples} drawn cases per property "
          f"({args.time_limit:g} s allowed per case)")
    results = run(ex, student, args.examples, args.random, time_limit_s=args.time_limit)
    failed = [r for r in results if not r.passed]
    if failed:
        print(f"{len(failed)} of {len(results)} properties fail.")
        return 1
    print(f"all {len(results)} properties hold.")
    return 0


def main(argv=None):
    """The command line; returns the exit status. Ctrl-C ends it with one line (status 130)."""
    previous = _on_ctrl_c_say_one_line()
    try:
        return _main(argv)
    except KeyboardInterrupt:        # where the handler could not be installed (not main thread)
        pass
    except Exception as error:
        if not _caused_by_ctrl_c(error):
            raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    print(f"{PROG}: interrupted", file=sys.stderr)
    return 130


def _on_ctrl_c_say_one_line():
    """Make Ctrl-C print one line and end the process (status 130); return the old handler.

    A KeyboardInterrupt cannot be relied on here: it is raised wherever the student's code or
    hypothesis happens to be, and hypothesis, interrupted early, can replace it with an error of
    its own or carry on to the next property. Nothing needs cleaning up, so the handler ends the
    process directly, writing with os.write (a print could re-enter a print it interrupted)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupted(signum, frame):
        try:
            sys.stdout.flush()
        except Exception:
            pass
        os.write(2, f"{PROG}: interrupted\n".encode())
        os._exit(130)

    return signal.signal(signal.SIGINT, interrupted)


def _caused_by_ctrl_c(error):
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _main(argv):
    from .checker import TIME_LIMIT
    parser = _Parser(
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
    p.add_argument("--examples", type=_examples, default=25,
                   help=f"cases drawn per property (default 25, at most {MAX_EXAMPLES})")
    p.add_argument("--time-limit", type=_seconds, default=TIME_LIMIT, metavar="SECONDS",
                   help=f"seconds one case may take before the property fails as a probable "
                        f"infinite loop (default {TIME_LIMIT:g})")
    p.add_argument("--random", action="store_true",
                   help="draw fresh cases each run (default: the same cases every run)")
    p.set_defaults(run=check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
