"""The machinery behind ``python -m npse.exercises check NAME FILE``.

An :class:`Exercise` is a list of :class:`Property` objects. Each property draws cases with
hypothesis (shapes, hyper-parameters and a seed for the values), runs the student's functions on
them and raises :class:`Failed` with a message when they misbehave. Hypothesis then shrinks the
case to a small one, and the report shows that shrunk case, so a failure reads like a bug report:
which property, which tensor, how far off, on which (small) input.

The checks are the ones the test suite runs on npse's own layers: float64 central differences
with relative error <= 1e-6, and agreement with npse's reference functions. No PyTorch.
Chapter: docs/02-module.md (section "Exercises with a checker").
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy

from ..gradcheck import numerical_gradient, relative_error

#: The gradient test's bound, as in tests/: ||analytic - numeric|| / ||numeric||.
GRADIENT_TOLERANCE = 1e-6
#: Agreement with npse's reference functions: the same formula in another order rounds differently.
REFERENCE_TOLERANCE = 1e-10
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

def load_student(path, exercise: Exercise):
    """Import ``path`` as a fresh module; a clear one-line error if it cannot serve ``exercise``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exercise {exercise.name}: no such file: {path}")
    name = f"npse_student_{exercise.name}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"exercise {exercise.name}: {path} line {e.lineno}: {e.msg}") from None
    except Exception as e:                    # an error at the file's top level
        raise ValueError(f"exercise {exercise.name}: importing {path} raised "
                         f"{type(e).__name__}: {e}") from None
    missing = [f for f in exercise.functions if not callable(getattr(module, f, None))]
    if missing:
        raise ValueError(f"exercise {exercise.name}: {path} must define {', '.join(exercise.functions)}; "
                         f"missing: {', '.join(missing)}")
    return module


# ----------------------------------------------------------------------------- running

def run_property(prop: Property, student, examples: int, randomize: bool = False) -> Result:
    """Run one property on up to ``examples`` drawn cases; on failure, the shrunk case's report."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import HypothesisException

    unwritten = []

    @settings(max_examples=examples, derandomize=not randomize, database=None, deadline=None,
              report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.generate, Phase.shrink))   # no "explain": slow, unused
    @given(case=prop.cases)
    def holds(case):
        try:
            prop.check(student, case)
        except Failed as failure:
            failure.case = case               # hypothesis re-raises the shrunk case's failure
            raise
        except HypothesisException:
            raise
        except NotImplementedError as error:  # a stub: nothing to shrink, say so at once
            unwritten.append(error)
        except Exception as error:            # the student's code crashed on this case
            raise StudentError(case, error) from error

    try:
        holds()
        if unwritten:
            return Result(prop.name, False, f"not written yet: NotImplementedError: {unwritten[0]}"
                          f"{_where(unwritten[0])}")
    except Failed as failure:
        return Result(prop.name, False, str(failure), str(failure.case))
    except StudentError as failure:
        where = _where(failure.error)
        return Result(prop.name, False, f"your code raised {failure}{where}", str(failure.case))
    return Result(prop.name, True)


def _where(error):
    """' (file.py, line 12)' for the innermost frame of the student's traceback, if any."""
    tb, last = error.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("npse_student_"):
            last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    return f" ({Path(last.tb_frame.f_code.co_filename).name}, line {last.tb_lineno})"


def run(exercise: Exercise, student, examples: int = 25, randomize: bool = False,
        out=print) -> list:
    """Check every property of ``exercise`` on the module ``student``; print one line per property."""
    results = []
    for prop in exercise.properties:
        result = run_property(prop, student, examples, randomize)
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
    if not error <= tolerance:
        lines = [f"{name}: relative error {error:.1e} against {what} (allowed {tolerance:.0e})",
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


def as_tuple(value, count, what):
    if not isinstance(value, tuple) or len(value) != count:
        got = f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__
        raise Failed(f"{what} should return a tuple of {count} values, got {got}")
    return value

