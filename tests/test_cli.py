"""The ``npse`` command line: train / evaluate / plot / bench, errors as one line, exit codes.

Most tests call ``npse.cli.main(argv)`` in-process (fast); two run ``python -m npse`` for real.
"""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import npse.train as T
from npse import backend
from npse.checkpoint import load_checkpoint, save_checkpoint
from npse.cli import main
from test_train import write_cifar10

TOY = ["--model", "se_resnet8", "--widths", "4,8,8", "--se-reduction", "2", "--batch-size", "16",
       "--eval-batch-size", "50", "--epochs", "2"]


@pytest.fixture
def data_args(tmp_path):
    return ["--data-dir", str(write_cifar10(tmp_path / "data")), "--no-download"]


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err):
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("npse") and "error" in lines[0], err
    assert "Traceback" not in err


def strip_timing(path):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_s")}
            for line in path.read_text().splitlines()]


def test_python_m_npse_help_and_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "npse", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "train" in done.stdout and "evaluate" in done.stdout
    done = subprocess.run([sys.executable, "-m", "npse", "train", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--resume" in done.stdout and "87.9%" in done.stdout
    done = subprocess.run([sys.executable, "-m", "npse", "train", "--epochs", "0"],
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(done.returncode, done.stderr)


def test_train_evaluate_refuse_and_overwrite(tmp_path, data_args, capsys):
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(capsys, "train", *TOY, *data_args, "--out", out)
    assert rc == 0
    assert "epoch 1/2" in stdout and "epoch 2/2" in stdout and "final test accuracy" in stdout
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert set(json.loads(lines[0])) == set(T.METRIC_KEYS)

    rc, stdout, _ = run_cli(capsys, "evaluate", out / "checkpoint.npz", *data_args)
    assert rc == 0
    final = json.loads(lines[-1])["test_acc"]
    assert f"test accuracy {100 * final:.2f}%" in stdout
    assert "airplane" in stdout and "truck" in stdout  # per-class lines with class names

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args, "--out", out)
    assert_one_line_error(rc, err)
    assert "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    rc, _, _ = run_cli(capsys, "train", *TOY, *data_args, "--out", out, "--epochs", "1",
                       "--overwrite")
    assert rc == 0 and len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(tmp_path, data_args, capsys,
                                                         monkeypatch):
    assert run_cli(capsys, "train", *TOY, *data_args, "--out", tmp_path / "a")[0] == 0

    from npse import rundir
    real_save = rundir.save_checkpoint

    def save_then_ctrl_c(*args, **kw):  # Ctrl-C right after the first checkpoint
        real_save(*args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "save_checkpoint", save_then_ctrl_c)
    out = tmp_path / "b"
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args, "--out", out)
    assert rc == 130
    assert f"interrupted; resume with: npse train --out {out} --resume" in err
    _, meta = load_checkpoint(out / "checkpoint.npz")  # intact and readable
    assert meta["epoch"] == 1
    monkeypatch.setattr(rundir, "save_checkpoint", real_save)

    # Options on resume: run-time ones may be given, training ones must agree.
    rc, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--lr", "0.3", *data_args)
    assert_one_line_error(rc, err)
    assert "lr" in err
    rc, _, _ = run_cli(capsys, "train", "--out", out, "--resume", "--quiet", *data_args)
    assert rc == 0
    assert strip_timing(tmp_path / "a" / "metrics.jsonl") == strip_timing(out / "metrics.jsonl")
    wa, _ = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    wb, _ = load_checkpoint(out / "checkpoint.npz")
    assert sorted(wa) == sorted(wb)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_train_reference_uses_the_reference_layers_and_matches_fast(tmp_path, data_args,
                                                                    capsys):
    toy = [*TOY, "--epochs", "1", "--dtype", "float64", "--train-subset", "40"]
    rc, fast_out, _ = run_cli(capsys, "train", *toy, *data_args, "--out", tmp_path / "fast")
    assert rc == 0 and "execution policy 'fast'" in fast_out
    rc, ref_out, _ = run_cli(capsys, "train", *toy, *data_args, "--out", tmp_path / "ref",
                             "--reference")
    assert rc == 0 and "execution policy 'reference'" in ref_out
    fast, ref = (strip_timing(tmp_path / d / "metrics.jsonl") for d in ("fast", "ref"))
    for a, b in zip(fast, ref):                 # float64: the two policies agree to rounding
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k


def test_interrupt_before_the_first_checkpoint(tmp_path, data_args, capsys, monkeypatch):
    def ctrl_c(*args, **kw):
        raise KeyboardInterrupt
        yield  # pragma: no cover

    monkeypatch.setattr(T, "iterate_batches", ctrl_c)
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args, "--out", tmp_path / "run")
    assert rc == 130 and "no checkpoint" in err


def test_non_finite_loss_is_one_line_and_exit_1(tmp_path, data_args, capsys):
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args, "--out", tmp_path / "run",
                         "--lr", "1e12", "--schedule", "constant", "--epochs", "3")
    assert_one_line_error(rc, err)
    assert "loss became" in err and "epoch" in err


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "0"],
    ["train", "--batch-size", "-1"],
    ["train", "--train-subset", "0"],
    ["train", "--lr", "abc"],
    ["train", "--lr", "nan"],
    ["train", "--se", "bogus"],
    ["train", "--dataset", "mnist"],
    ["train", "--widths", "4,x,8"],
    ["train", "--epochs", "2", "--full"],
    ["train", "--resume"],
    ["train", "--resume", "--overwrite", "--out", "somewhere"],
    ["train", "--frobnicate"],
    ["frobnicate"],
    [],
])
def test_usage_errors_are_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, not even runs/
    rc, _, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extra, message", [
    (["--model", "nosuch"], "unknown model"),
    (["--depth", "9"], "depth"),
    (["--se-stages", "4"], "se_stages"),
    (["--warmup-epochs", "5"], "warmup"),
    (["--momentum", "0"], "Nesterov"),
    (["--resume"], "nothing to resume"),
])
def test_library_errors_are_one_line(extra, message, tmp_path, data_args, capsys):
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args, "--out", tmp_path / "run", *extra)
    assert_one_line_error(rc, err)
    assert message in err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_missing_data_with_no_download(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "train", *TOY, "--data-dir", tmp_path / "empty",
                         "--no-download", "--out", tmp_path / "run")
    assert_one_line_error(rc, err)
    assert "CIFAR data not found" in err
    assert not (tmp_path / "run").exists()


def test_cupy_backend_without_cupy(tmp_path, data_args, capsys):
    if backend.cupy_available():
        pytest.skip("CuPy with a GPU is available here")
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args, "--out", tmp_path / "run",
                         "--backend", "cupy")
    assert_one_line_error(rc, err)
    assert "CuPy" in err
    assert not (tmp_path / "run").exists()


def test_evaluate_errors(tmp_path, data_args, capsys):
    rc, _, err = run_cli(capsys, "evaluate", tmp_path / "nope.npz")
    assert_one_line_error(rc, err)
    assert "not found" in err

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint at all")
    rc, _, err = run_cli(capsys, "evaluate", junk)
    assert_one_line_error(rc, err)

    other = tmp_path / "other.npz"
    save_checkpoint(other, {"w": np.zeros(3)}, {"hello": 1})
    rc, _, err = run_cli(capsys, "evaluate", other)
    assert_one_line_error(rc, err)
    assert "not an npse training checkpoint" in err

    # A checkpoint whose model config no longer matches its arrays.
    out = tmp_path / "run"
    assert run_cli(capsys, "train", *TOY, "--epochs", "1", *data_args, "--out", out)[0] == 0
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    meta["model_config"]["widths"] = [4, 8, 16]
    save_checkpoint(out / "checkpoint.npz", arrays, meta)
    rc, _, err = run_cli(capsys, "evaluate", out, *data_args)
    assert_one_line_error(rc, err)
    assert "do not fit the model" in err


def test_plot_without_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    record = {k: 1.0 for k in T.METRIC_KEYS}
    (out / "metrics.jsonl").write_text(json.dumps(dict(record, epoch=1)) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rc, _, err = run_cli(capsys, "plot", out)
    assert_one_line_error(rc, err)
    assert "pip install 'npse[plot]'" in err
    assert rc == 1


def test_plot_errors(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "plot", tmp_path)
    assert_one_line_error(rc, err)
    assert "metrics.jsonl" in err
    (tmp_path / "metrics.jsonl").write_text("{broken\n")
    rc, _, err = run_cli(capsys, "plot", tmp_path)
    assert_one_line_error(rc, err)
    assert "line 1" in err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib is not installed (pip install 'npse[plot]')")
def test_plot_draws_curves(tmp_path, data_args, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", *TOY, *data_args, "--out", out)[0] == 0
    rc, stdout, _ = run_cli(capsys, "plot", out)
    assert rc == 0 and "curves.png" in stdout
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_is_registered(capsys):
    assert run_cli(capsys, "bench", "--help")[0] == 0
