"""The exercise checkers: they fail on the stubs and on planted bugs, and pass on correct code.

Each planted bug is a mistake the chapters warn about; the test asserts that the property meant
to catch it fails (with the hint that names the mistake) and that it is reported on a case.
"""
import subprocess
import sys
import textwrap

import pytest

from npse.exercises import exercises
from npse.exercises.__main__ import main as cli_main
from npse.exercises.checker import load_student, run

EXAMPLES = 10          # per property; the reference passes the CLI's default 25 too (see below)
EXERCISES = exercises()
REFERENCE = "npse/exercises/reference.py"


def check(name, path, examples=EXAMPLES):
    ex = EXERCISES[name]
    return {r.name: r for r in run(ex, load_student(path, ex), examples, out=lambda line: None)}


def write(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def repo_root(request):
    return request.config.rootpath


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_passes_every_property(name, repo_root):
    results = check(name, repo_root / REFERENCE)
    assert [r.message for r in results.values() if not r.passed] == []
    assert len(results) >= 3


@pytest.mark.parametrize("name", list(EXERCISES))
def test_stub_fails_and_says_it_is_not_written(name):
    ex = EXERCISES[name]
    results = check(name, ex.stub)
    failed = [r for r in results.values() if not r.passed]
    given = [r for r in results.values() if r.passed]
    # Only the conv2d stub's given forward pass may pass; everything the student writes fails.
    assert [r.name for r in given] == (["conv2d_forward matches npse's reference"] if name == "conv2d" else [])
    assert failed and all(r.message.startswith("not written yet: NotImplementedError") for r in failed)


def failing(results):
    return {name: r for name, r in results.items() if not r.passed}


GRADIENTS = "{}: gradients match central differences (float64, relative error <= 1e-06)"

# Student solutions written from the chapters, each with a placeholder for one line: filled in
# right, every property holds; filled in with the mistake the chapter warns about, the property
# meant to catch it fails. They use NumPy only, so they test the checkers, not npse's caches.
LINEAR = """
    def linear_forward(x, weight, bias=None):
        y = x @ weight.T
        return (y if bias is None else y + bias), (x, weight, bias is not None)

    def linear_backward(dy, cache):
        x, weight, has_bias = cache
        return dy @ weight, dy.T @ x, (DBIAS) if has_bias else None
"""


def test_linear_student_solution_passes_and_a_mean_bias_gradient_is_caught(tmp_path):
    right = check("linear", write(tmp_path, "linear", LINEAR.replace("DBIAS", "dy.sum(axis=0)")))
    assert failing(right) == {}
    bad = failing(check("linear", write(tmp_path, "linear", LINEAR.replace("DBIAS", "dy.mean(axis=0)"))))
    assert set(bad) == {GRADIENTS.format("linear_backward"), "linear_backward matches npse's reference"}
    for r in bad.values():
        assert r.message.startswith("dbias: relative error")
        assert "a sum over the batch, not a mean" in r.message
        assert "bias (O,)" in r.case and "N=1" not in r.case   # shrunk: a bias, and N >= 2


# col2im and conv2d_backward on the stub's cache; OP is "+=" (right) or "=" (the bug).
CONV = """
    import numpy as np
    from npse.exercises.stubs.conv2d import conv2d_forward

    def col2im(cols, x_shape, kernel, stride, padding):
        n, c, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = cols.reshape(c, kh, kw, n, oh, ow)
        dx = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
        for ky in range(kh):
            for kx in range(kw):
                dx[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] OP cols[:, ky, kx].transpose(1, 0, 2, 3)
        return dx[:, :, ph:ph + h, pw:pw + w]

    def conv2d_backward(dy, cache):
        x_shape, cols, weight, has_bias, stride, padding = cache
        o = weight.shape[0]
        dy2 = dy.transpose(1, 0, 2, 3).reshape(o, -1)
        dweight = (dy2 @ cols.T).reshape(weight.shape)
        dx = col2im(weight.reshape(o, -1).T @ dy2, x_shape, weight.shape[2:], stride, padding)
        return dx, dweight, dy2.sum(axis=1) if has_bias else None
"""


def test_conv2d_student_solution_on_the_stub_passes(tmp_path):
    results = check("conv2d", write(tmp_path, "conv2d", CONV.replace(" OP ", " += ")))
    assert failing(results) == {}


def test_conv2d_col2im_that_assigns_instead_of_adding_is_caught(tmp_path):
    bad = failing(check("conv2d", write(tmp_path, "conv2d", CONV.replace(" OP ", " = "))))
    assert "col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>" in bad
    assert "col2im matches npse's col2im" in bad
    assert GRADIENTS.format("conv2d_backward") in bad
    assert "+=, not =" in bad["col2im matches npse's col2im"].message
    assert "conv2d_forward matches npse's reference" not in bad


# WINNER picks the window entry that receives the gradient: the first maximum (right) or the last.
MAXPOOL = """
    import numpy as np

    def maxpool2d_forward(x, kernel_size, stride, padding):
        (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
        n, c, hp, wp = xp.shape
        oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
        y, where = np.empty((n, c, oh, ow)), np.empty((n, c, oh, ow, 2), dtype=int)
        for i in range(oh):
            for j in range(ow):
                window = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(n, c, -1)
                k = WINNER
                y[:, :, i, j] = window.max(axis=2)
                where[:, :, i, j, 0], where[:, :, i, j, 1] = i * sh + k // kw, j * sw + k % kw
        return y, (x.shape, padding, where)

    def maxpool2d_backward(dy, cache):
        (n, c, h, w), (ph, pw), where = cache
        dx = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
        for index in np.ndindex(*dy.shape):
            r, q = where[index]
            dx[index[0], index[1], r, q] += dy[index]
        return dx[:, :, ph:ph + h, pw:pw + w]
"""


def test_maxpool2d_student_solution_passes_and_ties_to_the_last_maximum_are_caught(tmp_path):
    right = check("maxpool2d", write(tmp_path, "maxpool2d", MAXPOOL.replace("WINNER", "window.argmax(axis=2)")))
    assert failing(right) == {}
    last = "window.shape[2] - 1 - window[:, :, ::-1].argmax(axis=2)"
    bad = failing(check("maxpool2d", write(tmp_path, "maxpool2d", MAXPOOL.replace("WINNER", last))))
    # Without ties the last maximum is the first: only the tie property can see the bug.
    assert list(bad) == ["ties: the whole gradient goes to the first maximum"]
    assert "FIRST maximum" in bad["ties: the whole gradient goes to the first maximum"].message


BATCHNORM = """
    import numpy as np

    def batchnorm2d_forward(x, gamma, beta, eps=1e-5):
        mu = x.mean(axis=(0, 2, 3), keepdims=True)
        t = 1 / np.sqrt(((x - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True) + eps)
        xhat = (x - mu) * t
        return gamma[:, None, None] * xhat + beta[:, None, None], (xhat, gamma[:, None, None] * t)

    def batchnorm2d_backward(dy, cache):
        xhat, scale = cache
        m = dy.size // dy.shape[1]
        dbeta, dgamma = dy.sum(axis=(0, 2, 3)), (dy * xhat).sum(axis=(0, 2, 3))
        dx = DX
        return dx, dgamma, dbeta
"""
BATCHNORM_DX = "scale * (dy - dbeta[:, None, None] / m - xhat * dgamma[:, None, None] / m)"


def test_batchnorm2d_student_solution_passes_and_constant_statistics_are_caught(tmp_path):
    right = check("batchnorm2d", write(tmp_path, "batchnorm2d", BATCHNORM.replace("DX", BATCHNORM_DX)))
    assert failing(right) == {}
    bad = failing(check("batchnorm2d", write(tmp_path, "batchnorm2d", BATCHNORM.replace("DX", "scale * dy"))))
    assert "batchnorm2d_forward matches npse's reference" not in bad
    r = bad[GRADIENTS.format("batchnorm2d_backward")]
    assert r.message.startswith("dx: relative error")
    assert "treats the batch mean and variance as constants" in r.message


SE_BLOCK = """
    import numpy as np

    def se_block_forward(x, w1, b1, w2, b2):
        z = x.mean(axis=(2, 3))
        a = z @ w1.T + b1
        r = np.maximum(a, 0)
        s = 1 / (1 + np.exp(-(r @ w2.T + b2)))
        return x * s[:, :, None, None], (x, z, a, r, s, w1, w2)

    def se_block_backward(dy, cache):
        x, z, a, r, s, w1, w2 = cache
        du = (dy * x).sum(axis=(2, 3)) * s * (1 - s)
        da = (du @ w2) * (a > 0)
        dz = da @ w1
        squeeze_path = np.broadcast_to(dz[:, :, None, None] / (x.shape[2] * x.shape[3]), x.shape)
        dx = dy * s[:, :, None, None] + SQUEEZE
        return dx, da.T @ z, da.sum(axis=0), du.T @ r, du.sum(axis=0)
"""


def test_se_block_student_solution_passes_and_a_missing_squeeze_path_is_caught(tmp_path):
    right = check("se_block", write(tmp_path, "se_block", SE_BLOCK.replace("SQUEEZE", "squeeze_path")))
    assert failing(right) == {}
    bad = failing(check("se_block", write(tmp_path, "se_block", SE_BLOCK.replace("SQUEEZE", "0"))))
    r = bad[GRADIENTS.format("se_block_backward")]
    assert r.message.startswith("dx: relative error")
    assert "through the squeeze" in r.message
    assert "se_block_backward matches npse's reference" in bad


def test_a_crash_is_reported_with_the_line_and_a_shrunk_case(tmp_path):
    path = write(tmp_path, "linear", LINEAR.replace("dy.T @ x", "x @ dy.T").replace("DBIAS", "None"))
    r = check("linear", path)["linear_backward matches npse's reference"]
    assert not r.passed
    assert "dweight has shape" in r.message or "raised ValueError" in r.message
    assert r.case is not None and "seed" in r.case


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "npse.exercises", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_command_line_start_then_check(tmp_path):
    started = run_cli("start", "linear", tmp_path / "work")
    assert started.returncode == 0, started.stderr
    stub = tmp_path / "work" / "linear.py"
    assert stub.read_text() == EXERCISES["linear"].stub.read_text()
    on_stub = run_cli("check", "linear", stub, "--examples", "3")
    assert on_stub.returncode == 1
    assert "FAIL  linear_forward matches npse's reference" in on_stub.stdout
    assert "4 of 4 properties fail." in on_stub.stdout


def exit_status(argv, capsys):
    try:
        status = cli_main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_every_layer_chapter_has_an_exercise():
    chapters = {ex.chapter for ex in EXERCISES.values()}
    assert len(EXERCISES) >= 10
    assert {f"docs/{c}.md" for c in ("03-linear", "04-activations", "05-loss", "06-conv2d", "07-pooling",
                                      "08-batchnorm2d", "09-se-block", "10-se-resnet", "11-training")} <= chapters
    for ex in EXERCISES.values():
        assert ex.stub.is_file()
        prose = " ".join((ex.stub.parents[3] / ex.chapter).read_text().split())
        assert f"python -m npse.exercises start {ex.name} DIR" in prose, ex.name


def test_command_line_in_process(tmp_path, repo_root, capsys):
    status, out, _ = exit_status(["check", "se_block", repo_root / REFERENCE], capsys)  # 25 cases
    assert status == 0 and "all 4 properties hold." in out
    status, out, _ = exit_status(["list"], capsys)
    assert status == 0 and [line.split()[0] for line in out.splitlines()] == list(EXERCISES)

    stub = EXERCISES["linear"].stub
    (tmp_path / "linear.py").write_text("")
    for argv, message in [(["start", "linear", tmp_path], "exists already"),
                          (["check", "softmax", stub], "no exercise 'softmax'"),
                          (["check", "linear", tmp_path / "missing.py"], "no such file"),
                          (["check", "conv2d", stub], "missing: col2im, conv2d_forward, conv2d_backward"),
                          (["check", "linear", stub, "--examples", "0"], "expected an integer from 1 to")]:
        status, _, err = exit_status(argv, capsys)
        assert status == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1 or "usage" in err


# ----------------------------------------------------------------------------- planted students
# Each student below is wrong in a way the checker must not let through; the test names the
# property that must fail and what its message must say. Several of them passed every property
# before (a mutation audit: tests/mutate.py), which is why each exists.

CHECKER_SRC = "npse/exercises/checker.py"


def linear_student(tmp_path, forward="x @ weight.T", dx="dy @ weight", dweight="dy.T @ x",
                   extra=""):
    """A linear student with one piece replaced; ``extra`` runs first in the backward pass."""
    source = f"""
        import numpy as np

        def linear_forward(x, weight, bias=None):
            y = {forward}
            return (y if bias is None else y + bias), (x, weight, bias)

        def linear_backward(dy, cache):
            x, weight, bias = cache
            {extra}
            return {dx}, {dweight}, (dy.sum(axis=0) if bias is not None else None)
    """
    return write(tmp_path, "linear", source)


def test_the_linear_student_template_is_right(tmp_path):
    assert failing(check("linear", linear_student(tmp_path))) == {}


def test_a_nan_gradient_fails_and_says_nan(tmp_path):
    bad = failing(check("linear", linear_student(tmp_path, dweight="dy.T @ x * np.nan")))
    assert set(bad) == {GRADIENTS.format("linear_backward"), "linear_backward matches npse's reference"}
    for r in bad.values():
        assert r.message.startswith("dweight holds") and "NaN or infinite" in r.message


def test_an_infinite_output_fails_the_forward_property(tmp_path):
    bad = failing(check("linear", linear_student(tmp_path, forward="np.full_like(x @ weight.T, np.inf)")))
    assert bad["linear_forward matches npse's reference"].message.startswith("y holds")


@pytest.mark.parametrize("extra, name", [
    ("if bias is not None: bias += 0.5", "bias"),     # through the cache: the caller's bias
    ("dy *= 2", "dy"),                                 # the upstream gradient, in place
    ("x[...] = 0", "x"),
])
def test_a_student_that_changes_its_inputs_in_place_fails(tmp_path, extra, name):
    bad = failing(check("linear", linear_student(tmp_path, extra=extra)))
    r = bad["inputs and dy are left unchanged"]
    assert f"modified {name} in place" in r.message


def test_a_batchnorm_with_another_eps_fails_the_forward_property(tmp_path):
    """eps = 1e-3 instead of 1e-5 changes y by ~1e-4 relative: far above REFERENCE_TOLERANCE."""
    source = BATCHNORM.replace("DX", BATCHNORM_DX).replace("eps=1e-5", "eps=1e-3")
    bad = failing(check("batchnorm2d", write(tmp_path, "batchnorm2d", source)))
    r = bad["batchnorm2d_forward matches npse's reference"]
    assert r.message.startswith("y: relative error") and "allowed 1e-10" in r.message
    # Forward and backward agree with each other: the gradient check cannot see it.
    assert GRADIENTS.format("batchnorm2d_backward") not in bad


def test_a_gradient_off_by_a_relative_1e_4_fails(tmp_path):
    """A dropped term worth 1e-4 of the gradient: both gradient properties must see it."""
    bad = failing(check("linear", linear_student(tmp_path, dweight="dy.T @ x - 1e-4 * (dy.T @ x)")))
    assert set(bad) == {GRADIENTS.format("linear_backward"), "linear_backward matches npse's reference"}
    for r in bad.values():
        assert r.message.startswith("dweight: relative error")


def test_a_square_weight_used_untransposed_fails(tmp_path):
    """x @ W instead of x @ W^T: only square weights get past the shapes, and the values differ."""
    path = linear_student(tmp_path, forward="x @ (weight if weight.shape[0] == weight.shape[1] else weight.T)",
                          dx="dy @ (weight.T if weight.shape[0] == weight.shape[1] else weight)",
                          dweight="(x.T @ dy) if weight.shape[0] == weight.shape[1] else dy.T @ x")
    bad = failing(check("linear", path, examples=50))   # 4 in 25 draws are square and larger than 1x1
    r = bad["linear_forward matches npse's reference"]
    assert r.message.startswith("y: relative error")
    assert "O=1" not in r.case      # a 1x1 weight is its own transpose: the shrunk case is larger


EXITS = """
    import sys

    def linear_forward(x, weight, bias=None):
        sys.exit(0)

    def linear_backward(dy, cache):
        sys.exit(0)
"""


def test_sys_exit_in_a_function_is_a_failure_not_an_exit(tmp_path):
    results = check("linear", write(tmp_path, "linear", EXITS), examples=2)
    assert len(results) == 4
    for r in results.values():
        assert not r.passed and r.message.startswith("your code called sys.exit(0) (linear.py, line")


def test_sys_exit_at_the_top_level_is_refused_with_one_line(tmp_path):
    path = write(tmp_path, "linear", "import sys\nsys.exit(0)\n")
    with pytest.raises(ValueError, match=r"importing .* called sys.exit\(0\)"):
        load_student(path, EXERCISES["linear"])


def test_command_line_sys_exit_does_not_end_the_check_with_status_0(tmp_path):
    in_function = run_cli("check", "linear", write(tmp_path, "linear", EXITS), "--examples", "2")
    assert in_function.returncode == 1
    assert "called sys.exit(0)" in in_function.stdout and "4 of 4 properties fail." in in_function.stdout
    (tmp_path / "top.py").write_text("import sys\nsys.exit(0)\n")
    at_top = run_cli("check", "linear", tmp_path / "top.py")
    assert at_top.returncode == 2
    assert at_top.stdout == "" and len(at_top.stderr.splitlines()) == 1
    assert "called sys.exit(0)" in at_top.stderr


HANGS = """
    def linear_forward(x, weight, bias=None):
        while True:
            try:
                while True:
                    pass
            except BaseException:      # swallows every interruption: the checker still stops it
                pass

    def linear_backward(dy, cache):
        while True:
            pass
"""


def test_a_student_that_hangs_fails_after_the_time_limit(tmp_path):
    ex = EXERCISES["linear"]
    student = load_student(write(tmp_path, "linear", HANGS), ex)
    results = run(ex, student, 5, out=lambda line: None, time_limit_s=0.2)
    assert len(results) == 4
    for r in results:
        assert not r.passed and "took longer than 0.2 s" in r.message and r.case is not None


def test_a_file_that_hangs_at_its_top_level_is_refused(tmp_path):
    path = write(tmp_path, "linear", "while True:\n    pass\n")
    with pytest.raises(ValueError, match="took longer than 0.2 s"):
        load_student(path, EXERCISES["linear"], time_limit_s=0.2)


def test_ctrl_c_ends_the_check_with_one_line(tmp_path):
    import signal
    path = write(tmp_path, "linear", HANGS.replace("except BaseException", "except ValueError"))
    process = subprocess.Popen([sys.executable, "-m", "npse.exercises", "check", "linear", str(path),
                                "--time-limit", "600"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(2):               # the two header lines: the check has begun
            process.stdout.readline()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, (out, err)
    assert err == "python -m npse.exercises: interrupted\n"


def test_command_line_one_line_errors(tmp_path, capsys):
    stub = EXERCISES["linear"].stub
    (tmp_path / "a_file").write_text("")
    for argv, message in [
            (["check", "linear", stub, "--examples", "99999999999999999999"], "from 1 to 10000"),
            (["check", "linear", stub, "--time-limit", "nan"], "seconds"),
            (["check", "linear"], "required"),
            (["start", "linear", tmp_path / "a_file"], "is a file, not a directory"),
            (["start", "linear", "/proc/nope"], "cannot write /proc/nope/linear.py")]:
        status, out, err = exit_status(argv, capsys)
        assert status == 2 and message in err, (argv, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_every_tolerance_of_the_checker_says_why(repo_root):
    """Each tolerance constant of the checker comes with a comment giving the reason for its size."""
    import npse.exercises.checker as checker
    assert checker.REFERENCE_TOLERANCE <= 1e-10 and checker.GRADIENT_TOLERANCE <= 1e-6
    source = (repo_root / CHECKER_SRC).read_text()
    for name in ("GRADIENT_TOLERANCE = ", "REFERENCE_TOLERANCE = ", "TIME_LIMIT = "):
        before = source[:source.index(name)].rstrip().splitlines()[-1]
        assert before.startswith("#:"), name


# ----------------------------------------------------------------------------- the exercises of issue 23
# For each: a student written from the chapter passes; planted mistakes fail the property meant to
# catch them, with a message (or hint) that names the mistake.

ACTIVATIONS = """
    import numpy as np

    def sigmoid_forward(x):
        SIGMOID
        return y, y

    def sigmoid_backward(dy, y):
        SIGMOID_GRAD

    def tanh_forward(x):
        TANH
        return y, y

    def tanh_backward(dy, y):
        return dy * (1 - y * y)
"""
STABLE = {"SIGMOID": "e = np.exp(-np.abs(x)); y = np.where(x >= 0, 1, e) / (1 + e)",
          "SIGMOID_GRAD": "return dy * y * (1 - y)",
          "TANH": "e = np.exp(-2 * np.abs(x)); y = np.sign(x) * (1 - e) / (1 + e)"}
TAILS = "{0}_forward/{0}_backward on large |x| (up to 1000, beyond exp's overflow at 709.79): no overflow, no NaN, right values"


def activations_student(tmp_path, **replace):
    source = ACTIVATIONS
    for key in ("SIGMOID_GRAD", "SIGMOID", "TANH"):
        source = source.replace(key, replace.get(key, STABLE[key]))
    return write(tmp_path, "activations", source)


def test_activations_stable_student_passes(tmp_path):
    assert failing(check("activations", activations_student(tmp_path))) == {}


def test_activations_naive_sigmoid_overflows_and_is_caught(tmp_path):
    """1 / (1 + exp(-x)) returns the right 0 for x = -800, but only through exp(800) = inf."""
    bad = failing(check("activations", activations_student(tmp_path, SIGMOID="y = 1 / (1 + np.exp(-x))")))
    assert list(bad) == [TAILS.format("sigmoid")]
    message = bad[TAILS.format("sigmoid")].message
    assert "floating-point error" in message and "overflow encountered in exp" in message
    assert "activations.py, line" in message and "hint: exp(t) overflows" in message


def test_activations_nan_gradient_and_naive_tanh_are_caught(tmp_path):
    nan_grad = "return dy * np.exp(-np.log(y / (1 - y))) / (1 + np.exp(-np.log(y / (1 - y)))) ** 2"
    naive_tanh = "y = (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))"
    bad = failing(check("activations", activations_student(tmp_path, SIGMOID_GRAD=nan_grad, TANH=naive_tanh)))
    assert set(bad) == {TAILS.format("sigmoid"), TAILS.format("tanh")}
    for r in bad.values():
        assert "floating-point error" in r.message and "hint:" in r.message


CROSS_ENTROPY = """
    import numpy as np

    def cross_entropy_forward(logits, targets):
        z = SHIFT
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(targets)), targets].mean(), (log_p, targets)

    def cross_entropy_backward(cache):
        log_p, targets = cache
        d = np.exp(log_p)
        d[np.arange(len(targets)), targets] -= 1
        return d / DIVISOR
"""


def cross_entropy_student(tmp_path, shift="logits - logits.max(axis=1, keepdims=True)", divisor="len(targets)"):
    return write(tmp_path, "cross_entropy", CROSS_ENTROPY.replace("SHIFT", shift).replace("DIVISOR", divisor))


def test_cross_entropy_student_passes_and_a_missing_max_shift_is_caught(tmp_path):
    assert failing(check("cross_entropy", cross_entropy_student(tmp_path))) == {}
    bad = failing(check("cross_entropy", cross_entropy_student(tmp_path, shift="logits")))
    large = "large logits (each row shifted by 700 to 1000): no overflow, the same loss and gradient"
    assert list(bad) == [large]
    assert "floating-point error" in bad[large].message
    assert "subtract the row's maximum before exp" in bad[large].message


def test_cross_entropy_gradient_without_the_mean_is_caught(tmp_path):
    bad = failing(check("cross_entropy", cross_entropy_student(tmp_path, divisor="1")))
    r = bad["cross_entropy_backward: gradient matches central differences (float64, relative error <= 1e-06)"]
    assert r.message.startswith("dlogits: relative error") and "the loss is the MEAN" in r.message
    assert "N=1" not in r.case             # with one sample the sum is the mean


IM2COL = """
    import numpy as np

    def im2col(x, kernel, stride, padding):
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = np.empty((c, kh, kw, n, oh, ow))
        for ky in range(kh):
            for kx in range(kw):
                cols[:, ky, kx] = xp[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw].transpose(1, 0, 2, 3)
        return ORDER.reshape(c * kh * kw, -1)
""" + CONV.split("from npse.exercises.stubs.conv2d import conv2d_forward")[1].split("def conv2d_backward")[0]


def im2col_student(tmp_path, order="cols", op="+="):
    return write(tmp_path, "im2col", IM2COL.replace("ORDER", order).replace(" OP ", f" {op} "))


def test_im2col_student_passes_and_col2im_with_assignment_is_caught(tmp_path):
    assert failing(check("im2col", im2col_student(tmp_path))) == {}
    bad = failing(check("im2col", im2col_student(tmp_path, op="=")))
    assert "im2col matches npse's im2col" not in bad
    assert "+=, not =" in bad["col2im matches npse's col2im"].message
    assert any(name.startswith("col2im is the adjoint of im2col") for name in bad)


def test_im2col_with_rows_in_the_wrong_order_is_caught(tmp_path):
    bad = failing(check("im2col", im2col_student(tmp_path, order="cols.transpose(1, 2, 0, 3, 4, 5)")))
    assert "rows are ordered (ky, kx, c)" in bad["im2col matches npse's im2col"].message
    adjoint = [r for name, r in bad.items() if name.startswith("col2im is the adjoint")]
    assert adjoint and "lies in your im2col" in adjoint[0].message


AVGPOOL = """
    import numpy as np

    def avgpool2d_forward(x, kernel_size, stride, padding):
        (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
        n, c, h, w = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        real = np.pad(np.ones((h, w)), ((ph, ph), (pw, pw)))
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        y, count = np.zeros((n, c, oh, ow)), np.zeros((oh, ow))
        for ky in range(kh):
            for kx in range(kw):
                y += xp[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw]
                count += real[ky:ky + sh * oh:sh, kx:kx + sw * ow:sw]
        divisor = DIVISOR
        return y / divisor, (x.shape, kernel_size, stride, padding, divisor)

    def avgpool2d_backward(dy, cache):
        (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), divisor = cache
        oh, ow = dy.shape[2:]
        dx = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
        for ky in range(kh):
            for kx in range(kw):
                dx[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] += dy / divisor
        return dx[:, :, ph:ph + h, pw:pw + w]

    def global_avgpool2d_forward(x):
        return x.mean(axis=(2, 3)), x.shape

    def global_avgpool2d_backward(dz, shape):
        return np.broadcast_to(dz[:, :, None, None] / (GLOBAL), shape).copy()
"""


def avgpool_student(tmp_path, divisor="kh * kw", global_divisor="shape[2] * shape[3]"):
    return write(tmp_path, "avgpool2d", AVGPOOL.replace("DIVISOR", divisor).replace("GLOBAL", global_divisor))


def test_avgpool2d_student_passes_and_the_real_pixel_divisor_is_caught(tmp_path):
    assert failing(check("avgpool2d", avgpool_student(tmp_path))) == {}
    bad = failing(check("avgpool2d", avgpool_student(tmp_path, divisor="count")))
    # Forward and backward agree with each other: only the comparisons with npse can see it.
    assert set(bad) == {"avgpool2d_forward matches npse's reference", "avgpool2d_backward matches npse's reference"}
    for r in bad.values():
        assert "count_include_pad=True" in r.message and "padding (0, 0)" not in r.case


def test_global_avgpool_backward_without_the_mean_is_caught(tmp_path):
    bad = failing(check("avgpool2d", avgpool_student(tmp_path, global_divisor="1")))
    r = bad[GRADIENTS.format("global_avgpool2d_backward")]
    assert r.message.startswith("dx: relative error") and "dz / (H*W)" in r.message
    assert all(name.startswith("global") for name in bad)


SHORTCUT = """
    import numpy as np

    def shortcut_a_forward(x, out_channels, stride):
        n, c = x.shape[:2]
        before = BEFORE
        sub = x[:, :, ::stride, ::stride]
        y = np.zeros((n, out_channels) + sub.shape[2:])
        y[:, before:before + c] = sub
        return y, (x.shape, before, stride)

    def shortcut_a_backward(dy, cache):
        shape, before, stride = cache
        dx = np.zeros(shape)
        dx[PIXELS] = dy[:, before:before + shape[1]]
        return dx
"""


def shortcut_student(tmp_path, before="(out_channels - c) // 2", pixels=":, :, ::stride, ::stride"):
    return write(tmp_path, "shortcut_a", SHORTCUT.replace("BEFORE", before).replace("PIXELS", pixels))


def test_shortcut_a_student_passes_and_padding_on_one_side_is_caught(tmp_path):
    assert failing(check("shortcut_a", shortcut_student(tmp_path))) == {}
    bad = failing(check("shortcut_a", shortcut_student(tmp_path, before="0")))
    r = bad["shortcut_a_forward matches npse's reference"]
    assert "zero channels come after x's" in r.message
    assert "(C_out - C) // 2" in bad["shortcut_a_backward matches npse's reference"].message
    assert GRADIENTS.format("shortcut_a_backward") not in bad      # consistent with its own forward


def test_shortcut_a_backward_to_the_wrong_pixels_is_caught(tmp_path):
    bad = failing(check("shortcut_a", shortcut_student(tmp_path, pixels=":, :, :dy.shape[2], :dy.shape[3]")))
    assert "shortcut_a_forward matches npse's reference" not in bad
    assert GRADIENTS.format("shortcut_a_backward") in bad
    assert "must send each entry of d back" in bad["the backward pass is the adjoint of the forward: <A x, d> == <x, A^T d>"].message


SGD_STUDENT = """
    import numpy as np

    def sgd_step(param, grad, buffer, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        g = DECAYED
        if momentum:
            b = FIRST if buffer is None else momentum * buffer + g
            g = NESTEROV
        else:
            b = None
        return param - lr * (g + LATE_DECAY), b
"""
SGD_RIGHT = dict(DECAYED="grad + weight_decay * param", FIRST="g", NESTEROV="g + momentum * b if nesterov else b",
                 LATE_DECAY="0")
SGD_PROPERTIES = ["one step from no buffer matches chapter 11's formulas (the first buffer is g)",
                  "several steps, the buffer fed back, match chapter 11's formulas"]


def sgd_student(tmp_path, **replace):
    source = SGD_STUDENT
    for key, value in dict(SGD_RIGHT, **replace).items():
        source = source.replace(key, value)
    return write(tmp_path, "sgd", source)


def test_sgd_student_passes(tmp_path):
    assert failing(check("sgd", sgd_student(tmp_path))) == {}


@pytest.mark.parametrize("replace, says", [
    (dict(NESTEROV="b"), "you wrote classical momentum"),
    (dict(DECAYED="grad", LATE_DECAY="weight_decay * param"), "BEFORE the momentum buffer"),
    (dict(FIRST="(1 - momentum) * g"), "the buffer is g itself"),
])
def test_sgd_mistakes_are_caught_and_named(tmp_path, replace, says):
    bad = failing(check("sgd", sgd_student(tmp_path, **replace)))
    assert set(bad) == set(SGD_PROPERTIES)
    for r in bad.values():
        assert r.message.startswith("step 1 (k = 0)") and f"hint: " in r.message and says in r.message


def test_sgd_formulas_agree_with_npse_optimiser():
    """The checker's formulas (chapter 11) and npse.optim.SGD give the same trajectory."""
    import numpy as np
    from npse.exercises.reference import sgd_step
    from npse.exercises.sgd import formula_step
    g = np.random.default_rng(0)
    for momentum, nesterov, wd in [(0.9, True, 0.01), (0.9, False, 0.1), (0.0, False, 0.01)]:
        p, b, q, c = g.standard_normal(5), None, None, None
        q = p.copy()
        for _ in range(4):
            grad = g.standard_normal(5)
            p, b = formula_step(p, grad, b, 0.1, momentum, nesterov, wd)
            q, c = sgd_step(q, grad, c, 0.1, momentum, nesterov, wd)
            assert np.abs(p - q).max() < 1e-14 and (b is None) == (c is None)


# ----------------------------------------------------------------------------- hints for unnamed mistakes

def test_batchnorm_without_the_mean_path_gets_a_hint(tmp_path):
    no_mean = "scale * (dy - xhat * dgamma[:, None, None] / m)"
    bad = failing(check("batchnorm2d", write(tmp_path, "batchnorm2d", BATCHNORM.replace("DX", no_mean))))
    r = bad[GRADIENTS.format("batchnorm2d_backward")]
    assert "path through the variance but not the one through the mean" in r.message


def test_conv2d_with_a_flipped_kernel_gets_a_hint(tmp_path):
    right = CONV.replace(" OP ", " += ")
    flipped_forward = right + """
    def conv2d_forward(x, weight, bias, stride, padding):
        from npse.exercises.stubs.conv2d import conv2d_forward as given
        return given(x, weight[:, :, ::-1, ::-1], bias, stride, padding)
"""
    bad = failing(check("conv2d", write(tmp_path, "conv2d", flipped_forward)))
    assert "flips the kernel" in bad["conv2d_forward matches npse's reference"].message
    flipped_dweight = right.replace("dweight = (dy2 @ cols.T).reshape(weight.shape)",
                                    "dweight = (dy2 @ cols.T).reshape(weight.shape)[:, :, ::-1, ::-1]")
    bad = failing(check("conv2d", write(tmp_path, "conv2d", flipped_dweight)))
    r = bad["conv2d_backward matches npse's reference"]
    assert r.message.startswith("dweight") and "rotated by 180 degrees" in r.message


def test_se_block_squeeze_gradient_without_the_mean_gets_a_hint(tmp_path):
    source = SE_BLOCK.replace("SQUEEZE", "squeeze_path * (x.shape[2] * x.shape[3])")
    bad = failing(check("se_block", write(tmp_path, "se_block", source)))
    r = bad[GRADIENTS.format("se_block_backward")]
    assert r.message.startswith("dx: relative error") and "dz / (H*W)" in r.message
