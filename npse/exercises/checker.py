"""The machinery behind ``python -m npse.exercises check NAME FILE``.

An :class:`Exercise` is a list of :class:`Property` objects. Each property draws cases with
hypothesis (shapes, hyper-parameters and a seed for the values), runs the student's functions on
them and raises :class:`Failed` with a message when they misbehave. Hypothesis then shrinks the
case to a small one, and the report shows that shrunk case, so a failure reads like a bug report:
which property, which tensor, how far off, on which (small) input.

The checks are the ones the test suite runs on npse's own layers: float64 central differences
with relative error <= 1e-6, and agreement with npse's reference functions. No PyTorch.
Chapter: docs/02-module.md (section "Exercises with a checker").

The student's code is run in this process, so the checker guards against what it can do to the
process: a NaN answer fails every comparison (they are written ``not error <= tolerance``, which
a NaN cannot satisfy); ``sys.exit()`` is reported as a failure, not obeyed; and each case (and
the import of the file) gets :data:`TIME_LIMIT` seconds, after which the property fails with
"took longer than ..." instead of the checker hanging (on the main thread of a POSIX system,
where a timer signal can interrupt Python code; ``os._exit`` and a hang inside one C call cannot
be caught this way).
"""
from __future__ import annotations

import importlib.util
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy

from ..gradcheck import numerical_gradient, relative_error

#: The gradient test's bound, as in tests/: ||analytic - numeric|| / ||numeric||. A central
#: difference with step h = 1e-5 in float64 has truncation error ~h^2 = 1e-10 (relative, for the
#: smooth layers and the scales drawn here) and rounding error ~eps / h ~ 1e-11 per entry, so a
#: right answer lands near 1e-9 and 1e-6 leaves a thousandfold margin; a wrong formula is off by
#: far more, and an answer off by a relative 1e-4 (a dropped small term) is still caught.
GRADIENT_TOLERANCE = 1e-6
#: Agreement with npse's reference functions. The same formula summed in another order rounds
#: differently: a few ulps per operation, ~1e-14 relative for these small float64 tensors. 1e-10
#: leaves four orders of margin for that and no more: a BatchNorm with eps = 1e-3 instead of 1e-5
#: is off by ~1e-4 and must fail, so this must stay far below 1e-4.
REFERENCE_TOLERANCE = 1e-10
#: Seconds one drawn case (or the import of the student's file) may take before the property
#: fails as a probable infinite loop. A right answer takes milliseconds per case here; a
#: pure-Python-loop answer on a busy machine well under a second; 20 s is ample for both and
#: still ends a hang quickly. ``check --time-limit`` changes it.
TIME_LIMIT = 20.0
#: The student's file is imported as a module whose name starts so (its frames are recognised).
STUDENT_MODULE_PREFIX = "npse_student_"
#: Arrays up to this many entries are printed in a failure report.
PRINT_MAX_ENTRIES = 24


class Failed(AssertionError):
    """A property does not hold; the message says what was expected and what came back.
    The runner sets ``case`` to the (shrunk) case it failed on."""

    case = None


class StudentError(Exception):
    """The student's function raised; keeps the original exception for the report."""

    def __init__(self, case, error):
        super().__init__(f"{type(error).__name__}: {error}")
        self.case, self.error = case, error


class TimeLimitExceeded(BaseException):
    """Raised by the timer inside the student's code when a case runs past the time limit.

    A BaseException, not an Exception: hypothesis lets it through at once (it would otherwise
    shrink the case, re-running the hang dozens of times) and a student's ``except Exception``
    cannot swallow it."""


@contextmanager
def time_limit(seconds):
    """Raise :class:`TimeLimitExceeded` in the body once it has run ``seconds`` (None or 0: no
    limit). A SIGALRM timer: only on the main thread where ``signal.setitimer`` exists; elsewhere
    the body runs without a limit.

    A student's loop may swallow the exception (``except:`` inside ``while True``), so the
    timer repeats every second after the first expiry, and from the second on it also traces
    the student's frames and raises again at each line they run: an exception raised in an
    ``except`` block is not caught by that block, so the loop ends there."""
    usable = (seconds and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    expiries = []
    previous_trace = sys.gettrace()

    def student_frame(frame):
        return frame.f_globals.get("__name__", "").startswith(STUDENT_MODULE_PREFIX)

    def stop_here(frame, event, arg):
        if event == "line":
            raise TimeLimitExceeded(seconds)
        return stop_here

    def trace_students(frame, event, arg):
        return stop_here if student_frame(frame) else None

    def expired(signum, frame):
        expiries.append(frame)
        if len(expiries) > 1:             # the first one was swallowed: trace the student's code
            sys.settrace(trace_students)
            while frame is not None:
                if student_frame(frame):
                    frame.f_trace = stop_here
                frame = frame.f_back
        raise TimeLimitExceeded(seconds)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds, min(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if len(expiries) > 1:
            sys.settrace(previous_trace)


@dataclass
class Property:
    """One checked claim: ``check(student, case)`` raises :class:`Failed` when it does not hold."""
    name: str
    cases: object                       # a hypothesis strategy drawing the cases
    check: Callable


@dataclass
class Exercise:
    name: str
    chapter: str                        # e.g. "docs/03-linear.md"
    summary: str
    functions: tuple                    # the names the student's file must define
    properties: list = field(default_factory=list)

    @property
    def stub(self) -> Path:
        return Path(__file__).parent / "stubs" / f"{self.name}.py"


@dataclass
class Result:
    name: str
    passed: bool
    message: str = ""
    case: str = None                    # the shrunk case, as its __str__ describes it


# ----------------------------------------------------------------------------- loading a file

def load_student(path, exercise: Exercise, time_limit_s=TIME_LIMIT):
    """Import ``path`` as a fresh module; a clear one-line error (ValueError, FileNotFoundError)
    if it cannot serve ``exercise``: it does not exist, does not import, calls ``sys.exit`` or
    runs longer than ``time_limit_s`` seconds at its top level, or lacks a function."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exercise {exercise.name}: no such file: {path}")
    name = f"{STUDENT_MODULE_PREFIX}{exercise.name}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        with time_limit(time_limit_s):
            spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"exercise {exercise.name}: {path} line {e.lineno}: {e.msg}") from None
    except SystemExit as e:                   # sys.exit() at the top level: not a verdict
        raise ValueError(f"exercise {exercise.name}: importing {path} called sys.exit({e.code!r}); "
                         f"remove it: the checker, not your file, decides the exit status") from None
    except TimeLimitExceeded:
        raise ValueError(f"exercise {exercise.name}: importing {path} took longer than "
                         f"{time_limit_s:g} s (an infinite loop at the top level?)") from None
    except BaseException as e:                # an error at the file's top level, whatever its
        # kind: a real Ctrl-C never arrives here (the command line ends the process itself),
        # so a KeyboardInterrupt or a bare BaseException is the file's own doing.
        raise ValueError(f"exercise {exercise.name}: importing {path} raised "
                         f"{type(e).__name__}: {' '.join(str(e).split())}") from None
    missing = [f for f in exercise.functions if not callable(getattr(module, f, None))]
    if missing:
        raise ValueError(f"exercise {exercise.name}: {path} must define {', '.join(exercise.functions)}; "
                         f"missing: {', '.join(missing)}")
    return module


# ----------------------------------------------------------------------------- running

def run_property(prop: Property, student, examples: int, randomize: bool = False,
                 time_limit_s=TIME_LIMIT) -> Result:
    """Run one property on up to ``examples`` drawn cases; on failure, the shrunk case's report.
    A case that runs past ``time_limit_s`` seconds fails the property at once (not shrunk)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import HypothesisException

    unwritten, slow = [], []

    @settings(max_examples=examples, derandomize=not randomize, database=None, deadline=None,
              report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.generate, Phase.shrink))   # no "explain": slow, unused
    @given(case=prop.cases)
    def holds(case):
        try:
            with time_limit(time_limit_s):
                prop.check(student, case)
        except Failed as failure:
            failure.case = case               # hypothesis re-raises the shrunk case's failure
            raise
        except HypothesisException:
            raise
        except NotImplementedError as error:  # a stub: nothing to shrink, say so at once
            unwritten.append(error)
        except TimeLimitExceeded:
            slow.append(case)                 # passes through hypothesis: no shrinking
            raise
        except (Exception, SystemExit) as error:   # the student's code crashed (or exited)
            raise StudentError(case, error) from error

    from hypothesis.reporting import with_reporter
    try:
        # Silenced: on a stopped (timed-out) case hypothesis prints a "@seed(...)" line meant
        # for pytest users, which means nothing to a student.
        with with_reporter(lambda text: None):
            holds()
        if unwritten:
            return Result(prop.name, False, f"not written yet: NotImplementedError: {unwritten[0]}"
                          f"{student_line(unwritten[0])}")
    except Failed as failure:
        return Result(prop.name, False, str(failure), str(failure.case))
    except StudentError as failure:
        where = student_line(failure.error)
        if isinstance(failure.error, SystemExit):
            return Result(prop.name, False, f"your code called sys.exit({failure.error.code!r}){where}"
                          f": a layer function must return its result, not end the program",
                          str(failure.case))
        return Result(prop.name, False, f"your code raised {failure}{where}", str(failure.case))
    except TimeLimitExceeded:
        return Result(prop.name, False, f"your code took longer than {time_limit_s:g} s on one "
                      f"case and was stopped (an infinite loop?)",
                      str(slow[-1]) if slow else None)
    return Result(prop.name, True)


def student_line(error):
    """' (file.py, line 12)' for the innermost frame of the student's traceback, if any."""
    tb, last = error.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith(STUDENT_MODULE_PREFIX):
            last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    return f" ({Path(last.tb_frame.f_code.co_filename).name}, line {last.tb_lineno})"


def run(exercise: Exercise, student, examples: int = 25, randomize: bool = False,
        out=print, time_limit_s=TIME_LIMIT) -> list:
    """Check every property of ``exercise`` on the module ``student``; print one line per property.
    ``time_limit_s``: seconds allowed per drawn case (None: no limit)."""
    results = []
    for prop in exercise.properties:
        result = run_property(prop, student, examples, randomize, time_limit_s)
        results.append(result)
        out(f"  {'PASS' if result.passed else 'FAIL'}  {result.name}")
        if not result.passed:
            for line in result.message.splitlines():
                out(f"        {line}")
            if result.case is not None:
                out(f"        shrunk example: {result.case}")
    return results


# ----------------------------------------------------------------------------- building blocks for properties

def show(name, a):
    """``name = [...]`` if ``a`` is small enough to read, else its shape."""
    a = numpy.asarray(a)
    if a.size <= PRINT_MAX_ENTRIES:
        body = numpy.array2string(a, precision=4, suppress_small=True, separator=", ")
        return f"{name} = " + body.replace("\n", "\n" + " " * (len(name) + 3))
    return f"{name}: shape {a.shape} (too large to print)"


def expect_array(name, yours, like):
    """``yours`` is an ndarray with the shape and dtype of ``like``, else :class:`Failed`."""
    if not isinstance(yours, numpy.ndarray):
        raise Failed(f"{name} should be a NumPy array of shape {like.shape}, "
                     f"got {type(yours).__name__}")
    if yours.shape != like.shape:
        raise Failed(f"{name} has shape {yours.shape}, expected {like.shape}")
    if yours.dtype != like.dtype:
        raise Failed(f"{name} has dtype {yours.dtype}, expected {like.dtype} (keep the input's dtype)")


def expect_close(name, yours, expected, tolerance=REFERENCE_TOLERANCE, what="npse's reference",
                 hint=None):
    """``yours`` equals ``expected`` to ``tolerance`` (relative error), else :class:`Failed`."""
    expect_array(name, yours, expected)
    error = relative_error(yours, expected)
    # Written so that NaN fails: NaN <= tolerance is False, and so is NaN > tolerance, so the
    # comparison must be the one that has to hold (a NaN answer would pass ``if error > tol``).
    if not error <= tolerance:
        bad = int(numpy.size(yours) - numpy.isfinite(yours).sum())
        lines = [f"{name} holds {bad} NaN or infinite {'entry' if bad == 1 else 'entries'} "
                 f"(of {numpy.size(yours)})"] if bad else []
        lines += [f"{name}: relative error {error:.1e} against {what} (allowed {tolerance:.0e})",
                  show(f"yours   ", yours), show(f"expected", expected)]
        if hint:
            lines.append(f"hint: {hint}")
        raise Failed("\n".join(lines))


def central_differences(loss, arrays: dict, names):
    """{name: d loss / d arrays[name]} by central differences (h = 1e-5), entry by entry.

    ``loss()`` must read the arrays in ``arrays``; each is perturbed in place and restored.
    """
    return {name: numerical_gradient(loss, arrays[name]) for name in names}


def unchanged(name, before, after):
    if not numpy.array_equal(before, after):
        raise Failed(f"your functions modified {name} in place; a layer must leave its inputs "
                     f"(and dy) as it found them (chapter 2, rule 3)")


def inputs_text(arrays: dict):
    """The (small) arrays of a case, one per line, for a failure report."""
    return "\n".join(show(name, a) for name, a in arrays.items() if a is not None)


@contextmanager
def strict_floats(what):
    """Run the body with NumPy's floating-point errors raised: an overflow (``exp(800)`` is inf),
    a division by zero or an invalid operation (``inf / inf`` is NaN) in the student's code fails
    the property with :class:`Failed`, naming the operation and the line, even where the final
    answer happens to come out right (``1 / (1 + inf)`` is 0). Underflow (``exp(-800)`` is 0) is
    exact enough and allowed. ``what`` names the input, e.g. "x with entries up to |x| = 1000"."""
    try:
        with numpy.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            yield
    except FloatingPointError as error:
        raise Failed(f"your code hit a floating-point error on {what}: {error}"
                     f"{student_line(error)}") from None


def numerical_trouble(failure: Failed) -> bool:
    """Whether ``failure`` is a floating-point error (:func:`strict_floats`) or a NaN or infinite
    entry (:func:`expect_close`), the symptoms of an overflow, rather than a wrong formula."""
    return str(failure).startswith("your code hit a floating-point error") or \
        "NaN or infinite" in str(failure).split("\n")[0]


def as_tuple(value, count, what):
    if not isinstance(value, tuple) or len(value) != count:
        got = f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__
        raise Failed(f"{what} should return a tuple of {count} values, got {got}")
    return value

