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
    assert len(results) >= 4


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
                          (["check", "linear", stub, "--examples", "0"], "expected an integer >= 1")]:
        status, _, err = exit_status(argv, capsys)
        assert status == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1 or "usage" in err
