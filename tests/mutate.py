"""Mutation testing by hand: plant realistic bugs one at a time and see whether the tests notice.

    nice python tests/mutate.py                 # every mutant (several minutes)
    nice python tests/mutate.py --only optim    # the mutants whose name or file holds "optim"
    python tests/mutate.py --list

Each mutant is a text replacement in one file of npse and the tests that ought to catch it. The
script copies npse/, tests/, docs/ and pyproject.toml into a temporary directory once, runs the tests
there unmutated (they must pass, or every mutant would look "killed"), then for each mutant
writes the replacement into the copy, runs its tests (``-x -q -p no:cacheprovider``, with a
timeout) with the copy first on PYTHONPATH, and puts the file back (checked). The real files are
never edited. A mutant is killed when its tests fail (or time out: a hang is caught too).

Mutants marked ``min_failing`` are bugs that once had a single test guarding them: their tests
run without ``-x`` and must fail at least that many tests.

Not collected by pytest (the name does not start with ``test_``) and not part of the default
run. Exit status 0 when at least 95% are killed and every mutant that must be killed is.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SCORE = 0.95


@dataclass
class Mutant:
    name: str
    file: str                 # relative to the repository root
    old: str                  # must occur in the file; the first occurrence is replaced
    new: str
    tests: tuple              # pytest arguments: files, -k expressions
    must_kill: bool = False   # a bug an audit once saw survive: it must never survive again
    min_failing: int = 1      # > 1: run without -x and count the failing tests
    timeout: float = None     # seconds; None: the command line's --timeout (a hang is a kill)


TRAIN_SCHEDULE = ("tests/test_train.py", "-k", "recipe", "tests/test_optim.py")
EX = "tests/test_exercises.py"

MUTANTS = [
    # ---- the audit's survivors (the fused GPU BatchNorm one needs a GPU: tests/test_gpu.py)
    Mutant("evaluation with mean and std swapped", "npse/train.py",
           "run.y_test, run.mean,\n                                                  run.std,",
           "run.y_test, run.std,\n                                                  run.mean,",
           ("tests/test_train.py", "-k", "recorded"), must_kill=True),
    Mutant("warm-up epochs used as steps", "npse/config.py",
           "round(config.warmup_epochs * steps_per_epoch)", "round(config.warmup_epochs)",
           TRAIN_SCHEDULE, must_kill=True),
    Mutant("checker comparison not NaN-safe", "npse/exercises/checker.py",
           "if not error <= tolerance:", "if error > tolerance:", (EX,), must_kill=True),
    Mutant("'inputs unchanged' compares each array with itself", "npse/exercises/layer.py",
           "unchanged(name, a, arrays[name])", "unchanged(name, arrays[name], arrays[name])",
           (EX,), must_kill=True),
    Mutant("checker reference tolerance 1e-3", "npse/exercises/checker.py",
           "REFERENCE_TOLERANCE = 1e-10", "REFERENCE_TOLERANCE = 1e-3", (EX,), must_kill=True),
    # ---- the audit's single-guard bugs: each must fail at least two tests
    Mutant("max-pool ties go to the last maximum", "npse/nn/pooling.py",
           "argmax = flat.argmax(axis=2)                                             # first",
           "argmax = flat.shape[2] - 1 - flat[:, :, ::-1].argmax(axis=2)  # first",
           ("tests/test_pooling.py",), must_kill=True, min_failing=2),
    Mutant("BN momentum weighs the old running mean", "npse/nn/batchnorm2d.py",
           "running_mean += momentum * (mean - running_mean)",
           "running_mean += (1 - momentum) * (mean - running_mean)",
           ("tests/test_batchnorm2d.py",), must_kill=True, min_failing=2),
    Mutant("decay filter also decays 1-D parameters", "npse/optim/sgd.py",
           "return p.data.ndim > 1", "return p.data.ndim >= 1",
           ("tests/test_optim.py",), must_kill=True, min_failing=2),
    Mutant("crop offsets never reach 2*pad", "npse/data/transforms.py",
           "offsets_y = rng.integers(0, 2 * pad + 1, size=n)",
           "offsets_y = rng.integers(0, 2 * pad, size=n)",
           ("tests/test_data.py",), must_kill=True, min_failing=2),
    # ---- the training loop and its configuration
    Mutant("lr of the previous step", "npse/train.py",
           "lr = optimizer.lr = schedule(iteration)",
           "lr = optimizer.lr = schedule(max(iteration - 1, 0))", TRAIN_SCHEDULE),
    Mutant("decay filter switch inverted", "npse/train.py",
           "decay_filter=None if config.decay_bn_bias else skip_bn_and_bias",
           "decay_filter=skip_bn_and_bias if config.decay_bn_bias else None",
           ("tests/test_train.py", "-k", "decay")),
    Mutant("test accuracy recorded as training accuracy", "npse/train.py",
           '"train_acc": train_acc,', '"train_acc": test_acc,',
           ("tests/test_train.py", "-k", "recipe")),
    # ---- optimiser and schedules
    Mutant("warm-up starts at lr * t / W (a zero step)", "npse/optim/schedules.py",
           "return self.base_lr * (t + 1) / w", "return self.base_lr * t / w",
           ("tests/test_optim.py",)),
    Mutant("cosine phase off by one", "npse/optim/schedules.py",
           "math.cos(math.pi * (t - w) / (self.total_steps - w))",
           "math.cos(math.pi * (t - w + 1) / (self.total_steps - w))", ("tests/test_optim.py",)),
    Mutant("multistep second milestone at 2/3", "npse/optim/schedules.py",
           "(3 * total) // 4", "(2 * total) // 3", ("tests/test_optim.py",)),
    Mutant("multistep milestone not yet applied at its step", "npse/optim/schedules.py",
           "bisect.bisect_right(self.milestones, t)", "bisect.bisect_left(self.milestones, t)",
           ("tests/test_optim.py",)),
    Mutant("Nesterov look-ahead dropped", "npse/optim/sgd.py",
           "g += mb                      # g = g + momentum * b", "pass",
           ("tests/test_optim.py",)),
    Mutant("weight decay added with the wrong sign", "npse/optim/sgd.py",
           "g += p.grad                      # g = grad + wd * p",
           "g -= p.grad                      # g = grad + wd * p", ("tests/test_optim.py",)),
    Mutant("momentum buffer not decayed", "npse/optim/sgd.py",
           "xp.multiply(b, mom, out=b)   # b = momentum * b", "pass", ("tests/test_optim.py",)),
    # ---- layers (the reference formulas)
    Mutant("linear dx off by a relative 1e-4", "npse/nn/linear.py",
           "dx = dy @ weight\n", "dx = dy @ weight * (1 + 1e-4)\n", ("tests/test_linear.py",)),
    Mutant("ReLU passes the gradient at 0", "npse/nn/activations.py",
           "mask = x > 0", "mask = x >= 0", ("tests/test_activations.py",)),
    Mutant("sigmoid derivative loses (1 - y)", "npse/nn/activations.py",
           "return dy * (y * (1 - y))", "return dy * y", ("tests/test_activations.py",)),
    Mutant("cross-entropy gradient not averaged", "npse/nn/loss.py",
           "dlogits /= n", "pass", ("tests/test_loss.py",)),
    Mutant("col2im assigns instead of adding", "npse/nn/im2col.py",
           "kx:kx + sw * ow:sw] += cols", "kx:kx + sw * ow:sw] = cols", ("tests/test_conv2d.py",)),
    Mutant("BN running variance biased", "npse/nn/batchnorm2d.py",
           "running_var += momentum * (var * (m / (m - 1)) - running_var)",
           "running_var += momentum * (var - running_var)", ("tests/test_batchnorm2d.py",)),
    Mutant("BN eps outside the square root", "npse/nn/batchnorm2d.py",
           "inv_std = 1.0 / xp.sqrt(var + eps)", "inv_std = 1.0 / (xp.sqrt(var) + eps)",
           ("tests/test_batchnorm2d.py",)),
    Mutant("SE block forgets the squeeze path", "npse/nn/se_block.py",
           'dx += squeeze_bwd(dz, cache["squeeze_cache"])', "pass", ("tests/test_se_block.py",)),
    # ---- the CPU fast paths (checked against the reference in tests/test_formulations.py)
    Mutant("fast BN momentum weighs the old running mean", "npse/fast/batchnorm2d.py",
           "running_mean += momentum * (mean - running_mean)",
           "running_mean += (1 - momentum) * (mean - running_mean)",
           ("tests/test_formulations.py",)),
    Mutant("fast patch_rows adjoint assigns", "npse/fast/patches.py",
           "kx:kx + sw * ow:sw] += rows[:, :, :, ky, kx]",
           "kx:kx + sw * ow:sw] = rows[:, :, :, ky, kx]", ("tests/test_formulations.py",)),
    # ---- study statistics
    Mutant("sample sd with n instead of n - 1", "npse/study/stats.py",
           "/ (n - 1)) if n > 1 else None", "/ n) if n > 1 else None", ("tests/test_study.py",)),
    Mutant("95% interval uses the 0.95 quantile", "npse/study/stats.py",
           "half = t_quantile(1 - ALPHA / 2, df) * se", "half = t_quantile(1 - ALPHA, df) * se",
           ("tests/test_study.py",)),
    Mutant("pooled sd counts n, not n - 1, degrees of freedom", "npse/study/stats.py",
           "df += len(accs) - 1", "df += len(accs)", ("tests/test_study.py",)),
    # ---- the exercise checkers
    Mutant("checker gradient tolerance 1e-2", "npse/exercises/checker.py",
           "GRADIENT_TOLERANCE = 1e-6", "GRADIENT_TOLERANCE = 1e-2", (EX,)),
    Mutant("checker obeys sys.exit", "npse/exercises/checker.py",
           "except (Exception, SystemExit) as error:", "except Exception as error:", (EX,)),
    Mutant("checker timer fires once", "npse/exercises/checker.py",
           "signal.setitimer(signal.ITIMER_REAL, seconds, min(1.0, seconds))",
           "signal.setitimer(signal.ITIMER_REAL, seconds)", (EX, "-k", "hang"), timeout=60),
    Mutant("checker stops tracing the student's frames", "npse/exercises/checker.py",
           "frame.f_trace = stop_here", "pass", (EX, "-k", "hang"), timeout=60),
    Mutant("checker's upstream gradient is all ones", "npse/exercises/layer.py",
           "return numpy.random.default_rng([seed, 7]).standard_normal(shape)",
           "return numpy.ones(shape)", (EX,)),
    Mutant("checker lets an overflow through", "npse/exercises/checker.py",
           'over="raise"', 'over="ignore"', (EX, "-k", "activations or cross_entropy")),
    Mutant("--examples unbounded", "npse/exercises/__main__.py",
           "not 1 <= int(text) <= MAX_EXAMPLES", "not 1 <= int(text)",
           (EX, "-k", "one_line_errors"), timeout=60),     # the unbounded check never ends
]


def copy_repo(to: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in ("npse", "tests", "docs"):      # docs: the exercise tests read the chapters
        shutil.copytree(REPO / name, to / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, to / name)


def run_tests(root: Path, tests, stop_first: bool, timeout: float):
    """(returncode or "timeout", number of failing tests, seconds)."""
    env = dict(os.environ, PYTHONPATH=str(root), HYPOTHESIS_PROFILE="default")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header",
            "-o", "addopts=-m 'not slow'", *(["-x"] if stop_first else []), *tests]
    started = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", None, time.perf_counter() - started
    found = re.search(r"(\d+) failed", done.stdout)
    return done.returncode, int(found.group(1)) if found else 0, time.perf_counter() - started


def judge(root: Path, mutant: Mutant, timeout: float) -> dict:
    path = root / mutant.file
    original = path.read_text()
    if mutant.old not in original:
        return dict(verdict="stale", detail="the text to replace is not in the file any more")
    try:
        path.write_text(original.replace(mutant.old, mutant.new, 1))
        code, failing, seconds = run_tests(root, mutant.tests, mutant.min_failing <= 1,
                                           mutant.timeout or timeout)
    finally:
        path.write_text(original)
    if path.read_text() != original:
        raise SystemExit(f"mutate.py: could not restore {path}; stopping")
    if code == "timeout":
        return dict(verdict="killed", detail=f"timed out after {mutant.timeout or timeout:g} s",
                    seconds=seconds)
    if code in (0,):
        return dict(verdict="survived", detail="all its tests pass", seconds=seconds)
    if code != 1:               # 2 interrupted/usage, 4 usage, 5 no tests collected
        return dict(verdict="error", detail=f"pytest exit status {code}", seconds=seconds)
    if failing < mutant.min_failing:
        return dict(verdict="survived", seconds=seconds,
                    detail=f"only {failing} failing test(s), {mutant.min_failing} wanted")
    return dict(verdict="killed", detail=f"{failing} failing test(s)", seconds=seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the mutants whose name or file contains this text")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant (300)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or args.only in m.name or args.only in m.file]
    if args.list:
        for m in chosen:
            print(f"{m.file:32} {m.name}{'  [must kill]' if m.must_kill else ''}")
        return 0
    with tempfile.TemporaryDirectory(prefix="npse-mutate-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        selections = sorted({t for m in chosen for t in m.tests if t.startswith("tests/")})
        print(f"baseline: {len(selections)} test files, unmutated ...", flush=True)
        code, failing, seconds = run_tests(root, selections, False, args.timeout * 4)
        if code != 0:
            print(f"the unmutated tests do not pass (status {code}, {failing} failing): fix that first")
            return 2
        print(f"baseline passes ({seconds:.0f} s)", flush=True)
        results = []
        for i, m in enumerate(chosen, 1):
            r = judge(root, m, args.timeout)
            results.append((m, r))
            took = f" [{r['seconds']:.0f} s]" if "seconds" in r else ""
            print(f"[{i:2}/{len(chosen)}] {r['verdict']:8} {m.name} ({m.file}): {r['detail']}{took}",
                  flush=True)
    judged = [(m, r) for m, r in results if r["verdict"] in ("killed", "survived")]
    killed = [m for m, r in judged if r["verdict"] == "killed"]
    survivors = [m for m, r in judged if r["verdict"] == "survived"]
    other = [(m, r) for m, r in results if r["verdict"] not in ("killed", "survived")]
    score = len(killed) / len(judged) if judged else 0.0
    print(f"\nscore: {len(killed)}/{len(judged)} killed ({100 * score:.1f}%)")
    for m in survivors:
        print(f"  SURVIVED{' (must be killed!)' if m.must_kill else ''}: {m.name} ({m.file})")
    for m, r in other:
        print(f"  {r['verdict'].upper()}: {m.name} ({m.file}): {r['detail']}")
    ok = score >= TARGET_SCORE and not any(m.must_kill for m in survivors) and not other
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
