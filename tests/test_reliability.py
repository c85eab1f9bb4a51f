"""Hostile and careless input (issue "Reliability"): bounded memory, no silent wrong answers, no
lost or overwritten files, one-line errors. One test (or group) per class of the issue; the
property-based fuzzing of the loader and the command line is in test_fuzz_checkpoint.py.
"""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npse.data.cifar as cifar
import npse.train as T
from npse import checkpoint, memory
from npse.models import loading
from npse.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from npse.cli import main
from npse.models import build_model
from npse.models.resnet import ShortcutA
from npse.nn import (AvgPool2d, BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten, GlobalAvgPool2d,
                     GlobalMaxPool2d, Linear, MaxPool2d, ReLU, SEBlock, Sequential, Sigmoid, Tanh)
from npse.fast import FAST
from npse.fast.layout import to_channels_last
from npse.optim import SGD
from test_cli import TOY, assert_one_line_error, run_cli
from test_train import write_cifar10


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-epoch toy run: (run directory, data directory, arrays, meta)."""
    root = tmp_path_factory.mktemp("trained")
    data = write_cifar10(root / "data")
    out = root / "run"
    assert main(["train", *TOY, *data_args(data), "--out", str(out), "--quiet"]) == 0
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    return out, data, arrays, meta


def data_args(data):
    return ["--data-dir", str(data), "--no-download"]


def write_variant(tmp_path, arrays, meta, name="variant"):
    """A copy of a checkpoint with other arrays or metadata, in its own run directory."""
    out = tmp_path / name
    out.mkdir()
    save_checkpoint(out / "checkpoint.npz", arrays, meta)
    return out / "checkpoint.npz"


def npy_bytes(shape, dtype="<f4", payload=b""):
    """An .npy file's bytes whose header says ``shape`` and ``dtype``, followed by ``payload``."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (dtype, tuple(shape))
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload


# ----------------------------------------------------------------------------- 1. memory from a file

def test_a_header_claiming_4_tib_is_refused_before_reading(tmp_path, trained):
    _, data, arrays, meta = trained
    path = write_variant(tmp_path, arrays, meta)
    with zipfile.ZipFile(path, "a") as z:          # an unused entry, a few bytes, 4 TiB claimed
        z.writestr("model.unused.npy", npy_bytes((2**40,), payload=b"\0" * 64))
    with pytest.raises(CheckpointError, match=r"'model.unused' declares shape \(1099511627776,\)"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="declares"):
        T.load_model_for_inference(path)


def test_compressed_and_overlong_entries_are_refused(tmp_path, trained):
    _, _, arrays, meta = trained
    path = write_variant(tmp_path, arrays, meta)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.bomb.npy", npy_bytes((2**22,), "|u1", b"\0" * 2**22))  # 4 MiB in KiBs
    with pytest.raises(CheckpointError, match="more than the file's"):
        load_checkpoint(path)
    path = write_variant(tmp_path, arrays, meta, "small")
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.packed.npy", npy_bytes((16,), "|u1", b"\0" * 16))
    with pytest.raises(CheckpointError, match="'model.packed.npy' is compressed"):
        load_checkpoint(path)


def test_metadata_size_is_bounded(tmp_path, trained):
    _, _, arrays, meta = trained
    path = write_variant(tmp_path, arrays, dict(meta, padding="x" * checkpoint.MAX_META_BYTES))
    with pytest.raises(CheckpointError, match="__meta__' entry holds .* more than"):
        load_checkpoint(path)


def test_model_config_is_checked_before_the_model_is_built(tmp_path, trained, monkeypatch):
    _, _, arrays, meta = trained
    built = []
    monkeypatch.setattr("npse.models.from_config", lambda c: built.append(c))
    wide = dict(meta, model_config=dict(meta["model_config"], widths=[4, 8, 100000]))
    with pytest.raises(CheckpointError, match=r"describes a model of .* GiB, but the file holds"):
        T.load_model_for_inference(write_variant(tmp_path, arrays, wide, "wide"))
    deep = dict(meta, model_config=dict(meta["model_config"], depth=10**6 + 4))
    with pytest.raises(CheckpointError, match=r"'depth' must be an integer in \[1, 1202\]"):
        T.load_model_for_inference(write_variant(tmp_path, arrays, deep, "deep"))
    assert built == []


def test_parameter_bound_counts_the_built_models():
    """The size check relies on this count; it must match what npse.models builds."""
    for name, kw in [("se_resnet20", {}), ("resnet8", dict(shortcut="B")),
                     ("se_resnet29", dict(se="3x3", widths=(4, 8, 8))),
                     ("se_resnet8", dict(se="pre", se_bias=False, se_reduction=2)),
                     ("se_resnet8", dict(se="nosqueeze", shortcut="B"))]:
        model = build_model(name, **kw)
        state = model.state_dict().values()
        # An int64 counter per BatchNorm counts as two float32 values in the bound.
        exact = sum(int(v.size) * (2 if v.dtype == np.int64 else 1) for v in state)
        bound = loading.parameter_bound(model.config)
        assert exact <= bound <= 1.05 * exact, (name, kw, exact, bound)


def test_unknown_missing_and_misshapen_entries(tmp_path, trained):
    _, _, arrays, meta = trained
    cases = {
        "unknown": (dict(arrays, **{"model.extra": np.zeros(3, np.float32)}), "unexpected entries"),
        "missing": ({k: v for k, v in arrays.items() if k != "model.fc.bias"}, "missing entries"),
        "shape": (dict(arrays, **{"model.fc.bias": np.zeros(11, np.float32)}),
                  r"'model.fc.bias' has shape \(11,\), dtype float32, expected shape \(10,\)"),
        "dtype": (dict(arrays, **{"model.fc.bias": arrays["model.fc.bias"].astype(np.float64)}),
                  "dtype float64, expected shape"),
        "other": (dict(arrays, **{"notes": np.zeros(1)}), "unexpected entries notes"),
        "optim": (dict(arrays, **{"optim.momentum_buffer.fc.bias": np.zeros(3, np.float32)}),
                  "'optim.momentum_buffer.fc.bias' has shape"),
    }
    for name, (changed, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            T.load_model_for_inference(write_variant(tmp_path, changed, meta, name))


def test_weights_only_file_evaluates_but_does_not_resume(tmp_path, trained, capsys):
    out, data, arrays, meta = trained
    weights = {k: v for k, v in arrays.items() if k.startswith("model.")}
    path = write_variant(tmp_path, weights, dict(meta, weights_only=True), "weights")
    model, _ = T.load_model_for_inference(path)
    full, _ = T.load_model_for_inference(out / "checkpoint.npz")
    assert not model.training
    for (k, a), (_, b) in zip(model.state_dict().items(), full.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    rc, stdout, _ = run_cli(capsys, "evaluate", path, *data_args(data))
    assert rc == 0 and "test accuracy" in stdout
    rc, _, err = run_cli(capsys, "train", "--out", path.parent, "--resume", *data_args(data))
    assert_one_line_error(rc, err)
    assert "model weights only" in err and "evaluated but not continued" in err


# ----------------------------------------------------------------------------- 2. memory of a step

def test_an_impossible_batch_size_is_refused_with_what_fits(tmp_path, trained, capsys,
                                                           monkeypatch):
    _, data, _, _ = trained
    monkeypatch.setattr(memory, "available_memory", lambda: 20 * 2**20)
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args(data), "--batch-size", "100000",
                         "--out", out)
    assert_one_line_error(rc, err)
    assert "a training step at --batch-size 100000 needs about" in err
    assert "20 MiB is available; --batch-size" in err and "would fit" in err
    fits = int(err.split("--batch-size ")[-1].split()[0])
    assert 1 <= fits < 100           # the whole data set, 100 images, does not fit
    assert not out.exists()
    monkeypatch.setattr(memory, "available_memory", lambda: 2**30)
    rc, _, _ = run_cli(capsys, "train", *TOY, *data_args(data), "--batch-size", "100000",
                       "--epochs", "1", "--out", out)
    assert rc == 0                   # a batch larger than the data set is the data set


def test_the_estimate_predicts_a_larger_batch(monkeypatch):
    """The linear model from batches 2 and 4 against a step measured at batch 24."""
    model = build_model("se_resnet8", widths=(4, 8, 8), se_reduction=2)
    estimate = memory.estimate_memory(model.config, (3, 32, 32))
    for name, training in (("train", True), ("eval", False)):
        fixed, per_image = estimate[name]
        probe = build_model("se_resnet8", widths=(4, 8, 8), se_reduction=2).use_policy(FAST)
        measured = memory._step_peak(probe, 24, (3, 32, 32), training)
        assert abs(fixed + 24 * per_image - measured) <= 0.1 * measured, (name, measured)


def test_memory_error_anywhere_is_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(config, **options):
        np.empty(2**62, dtype=np.uint8)        # NumPy's own MemoryError, raised deep inside

    monkeypatch.setattr(T, "train", no_memory)
    rc, _, err = run_cli(capsys, "train", "--out", tmp_path / "run")
    assert_one_line_error(rc, err)
    assert "out of memory" in err and "--batch-size" in err


# ----------------------------------------------------------------------------- 3. upstream gradients

def _layers():
    """(name, module, input shape) for every module with a backward."""
    return [
        ("Conv2d", lambda: Conv2d(3, 4, 3, padding=1, dtype="float64"), (2, 3, 5, 5)),
        ("Conv2d", lambda: Conv2d(3, 4, 3, stride=2, dtype="float64"), (2, 3, 7, 7)),
        ("ReLU", lambda: ReLU(dtype="float64"), (2, 5)),
        ("Sigmoid", lambda: Sigmoid(dtype="float64"), (2, 5)),
        ("Tanh", lambda: Tanh(dtype="float64"), (2, 3, 4, 4)),
        ("GlobalAvgPool2d", lambda: GlobalAvgPool2d(dtype="float64"), (2, 3, 4, 4)),
        ("GlobalMaxPool2d", lambda: GlobalMaxPool2d(dtype="float64"), (2, 3, 4, 4)),
        ("MaxPool2d", lambda: MaxPool2d(2, dtype="float64"), (2, 3, 4, 4)),
        ("AvgPool2d", lambda: AvgPool2d(2, dtype="float64"), (2, 3, 4, 4)),
        ("Linear", lambda: Linear(5, 3, dtype="float64"), (2, 5)),
        ("BatchNorm2d", lambda: BatchNorm2d(3, dtype="float64"), (2, 3, 4, 4)),
        ("SEBlock", lambda: SEBlock(4, reduction=2, dtype="float64"), (2, 4, 3, 3)),
        ("Flatten", lambda: Flatten(dtype="float64"), (2, 3, 2, 2)),
        ("ShortcutA", lambda: ShortcutA(2, 4, 2, dtype="float64"), (2, 2, 4, 4)),
        ("Sequential", lambda: Sequential(Linear(5, 3, dtype="float64"), ReLU(dtype="float64"),
                                          dtype="float64"), (2, 5)),
    ]


@given(which=st.integers(0, len(_layers()) - 1), axis=st.integers(0, 3),
       delta=st.sampled_from([-1, 1, 2]), channels_last=st.booleans(), seed=st.integers(0, 99))
def test_backward_refuses_a_dy_unlike_the_output(which, axis, delta, channels_last, seed):
    name, make, shape = _layers()[which]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if channels_last and x.ndim == 4:
        x = to_channels_last(x)
    layer = make()
    y = layer(x)
    wrong = list(y.shape)
    axis %= len(wrong)
    wrong[axis] = wrong[axis] + delta if wrong[axis] + delta >= 1 else wrong[axis] + 1
    expected = (rf"^{name}\.backward: dy has shape {re.escape(str(tuple(wrong)))} .* forward "
                rf"pass produced shape {re.escape(str(tuple(y.shape)))}")
    with pytest.raises(ValueError, match=expected):
        layer.backward(np.ones(wrong))
    layer(x)
    with pytest.raises((TypeError, ValueError), match=name):
        layer.backward(np.ones(y.shape, dtype=np.float32))
    # The right dy, stored either way, is accepted.
    layer(x)
    dy = rng.standard_normal(y.shape)
    assert layer.backward(to_channels_last(dy) if dy.ndim == 4 else dy).shape == x.shape


def test_network_backward_checks_its_dlogits():
    model = build_model("se_resnet8", widths=(4, 8, 8), se_reduction=2, dtype="float64")
    model(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"CifarResNet.backward: dy has shape \(1, 10\)"):
        model.backward(np.zeros((1, 10)))


# ----------------------------------------------------------------------------- 4. meaningless results

@pytest.mark.parametrize("change, message", [
    (dict(arrays={"model.fc.weight": np.nan}), "'model.fc.weight' holds 1 non-finite"),
    (dict(arrays={"model.bn1.running_var": np.inf}), "'model.bn1.running_var' holds"),
    (dict(meta={"std": [0.0, 0.2, 0.2]}), "'std' must be > 0"),
    (dict(meta={"std": [0.2, 0.2]}), "'std' must be three finite numbers"),
    (dict(meta={"mean": [float("nan"), 0.0, 0.0]}), "'mean' must be three finite numbers"),
    (dict(meta={"mean": ["0.5", 0.5, 0.5]}), "'mean' must be three finite numbers"),
    (dict(meta={"classes": ["a", "b"]}), "'classes' names 2 classes, but the model has 10"),
])
def test_evaluate_refuses_unusable_weights_and_statistics(tmp_path, trained, capsys, change,
                                                          message):
    _, data, arrays, meta = trained
    arrays = dict(arrays)
    for key, value in change.get("arrays", {}).items():
        arrays[key] = arrays[key].copy()
        arrays[key].flat[0] = value
    path = write_variant(tmp_path, arrays, dict(meta, **change.get("meta", {})))
    rc, stdout, err = run_cli(capsys, "evaluate", path, *data_args(data))
    assert_one_line_error(rc, err)
    assert message in err and stdout == ""


# ----------------------------------------------------------------------------- 5. the same data

def _resumable_copy(tmp_path, trained, name, **meta_changes):
    """A copy of the trained run whose configuration asks for a third epoch."""
    out, _, arrays, meta = trained
    meta = dict(meta, config=dict(meta["config"], epochs=3), **meta_changes)
    path = write_variant(tmp_path, arrays, meta, name)
    shutil.copy(out / "metrics.jsonl", path.parent)
    return path.parent


def test_resume_refuses_other_data_of_the_same_size(tmp_path, trained, capsys):
    run = _resumable_copy(tmp_path, trained, "run")
    other = write_cifar10(tmp_path / "other", seed=1)
    rc, _, err = run_cli(capsys, "train", "--out", run, "--resume", *data_args(other))
    assert_one_line_error(rc, err)
    assert "the training labels, training images" in err and "check --data-dir" in err
    # Only the test images changed: the message says so.
    _, data, _, _ = trained
    changed = tmp_path / "changed"
    shutil.copytree(data, changed)
    test_file = changed / "cifar-10-batches-bin" / "test_batch.bin"
    raw = bytearray(test_file.read_bytes())
    raw[1] ^= 0xFF                                      # a pixel of the first test image
    test_file.write_bytes(bytes(raw))
    rc, _, err = run_cli(capsys, "train", "--out", run, "--resume", *data_args(changed))
    assert_one_line_error(rc, err)
    assert "the test images differ from the run's" in err
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2


def test_a_checkpoint_without_fingerprint_resumes_with_a_warning(tmp_path, trained, capsys):
    _, data, _, meta = trained
    run = _resumable_copy(tmp_path, trained, "old", data={"n_train": 100, "n_test": 40})
    rc, stdout, err = run_cli(capsys, "train", "--out", run, "--resume", *data_args(data))
    assert rc == 0 and "epoch 3/3" in stdout
    assert err.count("\n") == 1 and "warning" in err and "predates data fingerprints" in err
    _, meta = load_checkpoint(run / "checkpoint.npz")
    assert set(meta["data"]["fingerprint"]) == {"train_labels", "train_pixels", "test_labels",
                                                "test_pixels"}


# ----------------------------------------------------------------------------- 6. users' files

@pytest.mark.parametrize("name", T.OWN_FILES)
def test_a_users_file_npse_would_write_is_not_overwritten(tmp_path, trained, capsys, name):
    _, data, _, _ = trained
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("the user's own\n")
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args(data), "--out", out)
    assert_one_line_error(rc, err)
    assert "already holds" in err and name in err and "--overwrite" in err
    assert (out / name).read_text() == "the user's own\n" and len(list(out.iterdir())) == 1


# ----------------------------------------------------------------------------- 7. all or nothing

def test_load_state_dict_is_all_or_nothing():
    model = build_model("se_resnet8", widths=(4, 8, 8), se_reduction=2)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    last = list(state)[-1]
    state[last] = np.full(state[last].shape, "x")                 # right shape, not numbers
    with pytest.raises(ValueError, match=f"'{last}' has dtype <U1"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_sgd_load_state_dict_is_all_or_nothing():
    model = build_model("resnet8", widths=(4, 8, 8))
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    opt.step()
    saved = opt.state_dict()
    broken = {k: (v + 1 if k != "step" else np.array(7)) for k, v in saved.items()}
    last_buffer = [k for k in broken if k.startswith("momentum_buffer.")][-1]
    broken[last_buffer] = np.zeros(1)
    with pytest.raises(ValueError, match=f"'{last_buffer}' has shape"):
        opt.load_state_dict(broken)
    assert opt.step_count == 1
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)


# ----------------------------------------------------------------------------- 8. crafted metadata

def _raw_checkpoint(path, arrays, meta_text):
    """A checkpoint whose metadata is ``meta_text`` as given (save_checkpoint writes only dicts)."""
    with zipfile.ZipFile(path, "w") as z:
        for key, value in list(arrays.items()) + [
                ("__meta__", np.frombuffer(meta_text.encode(), np.uint8))]:
            with z.open(key + ".npy", "w") as f:
                np.lib.format.write_array(f, value)


@pytest.mark.parametrize("text, message", [
    ("[1, 2, 3]", "holds a JSON list, expected an object"),
    ('"hello"', "holds a JSON str"),
    ("{" * 100000, "is corrupt"),
    ('{"format": 1', "is corrupt"),
])
def test_metadata_that_is_not_an_object(tmp_path, trained, capsys, text, message):
    _, data, arrays, _ = trained
    _raw_checkpoint(tmp_path / "c.npz", arrays, text)
    rc, _, err = run_cli(capsys, "evaluate", tmp_path / "c.npz", *data_args(data))
    assert_one_line_error(rc, err)
    assert message in err


@pytest.mark.parametrize("change, message", [
    ({"model_config": "se_resnet8"}, "model_config must be a JSON object, got str"),
    ({"model_config": {"depth": 8}}, "model_config lacks"),
    ({"model_config": {"widths": [4, 8]}}, "'widths' must be three positive integers"),
    ({"model_config": {"se_stages": "123"}}, "'se_stages' must be a list of integers"),
    ({"model_config": {"se": "sideways"}}, "model_config is invalid: cifar_resnet: se must be"),
    ({"model_config": {"colour": "blue"}}, "unknown keys ['colour']"),
    ({"config": [1]}, "'config' must be a JSON object"),
    ({"config": {"lr": "fast"}}, "its config is invalid: lr must be"),
    ({"config": {"depth": 3.5}}, "its config is invalid: depth must be"),
    ({"epoch": "2"}, "'epoch' must be an integer in [0, 2]"),
    ({"epoch": 99}, "'epoch' must be an integer in [0, 2]"),
    ({"iteration": None}, "'iteration' must be an integer"),
    ({"metrics": {}}, "'metrics' must be a list"),
    ({"classes": "airplane"}, "'classes' must be a list of class names"),
    ({"format": "npse-gates"}, "not an npse training checkpoint"),
    ({"version": 99}, "checkpoint version 99 is not one this npse reads"),
    ({"data_dir": 7}, "'data_dir' must be a path or null"),
])
def test_crafted_metadata_is_one_line(tmp_path, trained, capsys, change, message):
    _, data, arrays, meta = trained
    meta = dict(meta)
    for key, value in change.items():
        keep_rest = isinstance(value, dict) and isinstance(meta.get(key), dict) and \
            not (key == "model_config" and value == {"depth": 8})
        meta[key] = dict(meta[key], **value) if keep_rest else value
    path = write_variant(tmp_path, arrays, meta)
    rc, _, err = run_cli(capsys, "evaluate", path, *data_args(data))
    assert_one_line_error(rc, err)
    assert message in err


@pytest.mark.parametrize("change, message", [
    ({"metrics": "drop_key"}, "metrics entry 2 must hold the numbers"),
    ({"metrics": "short"}, "'metrics' has 1 entries for 2 epochs"),
    ({"data": None}, "'data' must give the numbers of images"),
    ({"data": {"n_train": "100", "n_test": 40}}, "'data' must give the numbers of images"),
])
def test_crafted_metadata_on_resume_is_one_line(tmp_path, trained, capsys, change, message):
    _, data, _, meta = trained
    if change.get("metrics") == "drop_key":
        change = {"metrics": [dict(m) for m in meta["metrics"]]}
        del change["metrics"][1]["test_acc"]
    elif change.get("metrics") == "short":
        change = {"metrics": meta["metrics"][:1]}
    run = _resumable_copy(tmp_path, trained, "run", **change)
    rc, _, err = run_cli(capsys, "train", "--out", run, "--resume", *data_args(data))
    assert_one_line_error(rc, err)
    assert message in err


@pytest.mark.parametrize("argv, message", [
    (["--models", ""], "argument --models: expected comma-separated model names"),
    (["--models", " , "], "argument --models"),
    (["--batch-sizes", ""], "argument --batch-sizes: expected comma-separated batch sizes >= 2"),
    (["--batch-sizes", "abc"], "got 'abc'"),
    (["--batch-sizes", "1"], "batch sizes >= 2"),
    (["--repeats", "x"], "argument --repeats"),
])
def test_bench_lists_are_checked_by_the_parser(capsys, argv, message):
    rc, _, err = run_cli(capsys, "bench", *argv)
    assert rc == 2
    assert_one_line_error(rc, err)
    assert message in err


# ----------------------------------------------------------------------------- 9. clear messages

def test_non_utf8_class_names_name_the_file(tmp_path, capsys):
    data = write_cifar10(tmp_path / "data")
    names = data / "cifar-10-batches-bin" / "batches.meta.txt"
    names.write_bytes(b"\xff\xfeairplane\n")
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args(data), "--out", tmp_path / "run")
    assert_one_line_error(rc, err)
    assert str(names) in err and "not UTF-8" in err


def test_out_being_a_file(tmp_path, trained, capsys):
    _, data, _, _ = trained
    (tmp_path / "afile").write_text("mine")
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args(data), "--out", tmp_path / "afile")
    assert_one_line_error(rc, err)
    assert "is a file, not a directory" in err and "Errno" not in err
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("fail_at, expected", [
    (2, "is intact and holds epoch 1; free some space, then continue with: npse train --out"),
    (1, "No epoch was saved; start the run again after freeing some space"),
])
def test_a_full_disk_says_what_is_intact(tmp_path, trained, capsys, monkeypatch, fail_at,
                                         expected):
    _, data, _, _ = trained
    from npse import rundir     # it writes the run directory
    real_save, calls = rundir.save_checkpoint, []

    def disk_full(*args, **kw):
        calls.append(1)
        if len(calls) == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(*args, **kw)

    monkeypatch.setattr(rundir, "save_checkpoint", disk_full)
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args(data), "--out", out)
    assert_one_line_error(rc, err)
    assert "the disk is full" in err and expected in err
    if fail_at == 2:
        assert load_checkpoint(out / "checkpoint.npz")[1]["epoch"] == 1
        monkeypatch.setattr(rundir, "save_checkpoint", real_save)
        rc, stdout, _ = run_cli(capsys, "train", "--out", out, "--resume", *data_args(data))
        assert rc == 0 and "epoch 2/2" in stdout


def test_a_local_archive_with_a_wrong_md5_is_named(tmp_path, capsys, monkeypatch):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(b"not the archive")

    def offline(url, target):
        raise cifar.DownloadError(f"could not download {url}: no network")

    monkeypatch.setattr(cifar, "_download", offline)
    rc, _, err = run_cli(capsys, "train", *TOY, "--data-dir", tmp_path, "--out", tmp_path / "r")
    assert_one_line_error(rc, err)
    assert f"{archive} is there but its MD5 is {cifar.md5_of(archive)}" in err
    assert "fetching a fresh copy failed: could not download" in err


def test_float16_message_suggests_only_what_exists():
    with pytest.raises(TypeError) as caught:
        Conv2d(3, 4, 3)(np.zeros((1, 3, 8, 8), np.float16))
    message = str(caught.value)
    assert "dtype=float16" not in message
    assert "x.astype('float32')" in message and "float32 or float64 only" in message
    with pytest.raises(TypeError, match="build the layer with dtype=float64"):
        Conv2d(3, 4, 3)(np.zeros((1, 3, 8, 8)))


# ----------------------------------------------------------------------------- 10. smaller things

def test_resume_removes_a_killed_runs_temporary_file(tmp_path, trained, capsys):
    _, data, _, _ = trained
    run = _resumable_copy(tmp_path, trained, "run")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = run / f".checkpoint.npz.tmp-{done.stdout.strip()}"  # its writer has exited
    alive = run / f".checkpoint.npz.tmp-{os.getppid()}"          # a process still running
    foreign = run / ".notes.txt.tmp-1"                            # not one of npse's files
    for p in (stale, alive, foreign):
        p.write_bytes(b"PK\x03\x04 half")
    rc, _, _ = run_cli(capsys, "train", "--out", run, "--resume", *data_args(data))
    assert rc == 0
    assert not stale.exists() and alive.exists() and foreign.exists()


@pytest.mark.parametrize("argv, message", [
    (["--momentum", "5"], "momentum must be below 1"),
    (["--momentum", "1"], "momentum must be below 1"),
])
def test_momentum_must_be_below_one(tmp_path, trained, capsys, argv, message):
    _, data, _, _ = trained
    rc, _, err = run_cli(capsys, "train", *TOY, *data_args(data), *argv, "--out", tmp_path / "r")
    assert_one_line_error(rc, err)
    assert message in err and not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="momentum must be < 1"):
        SGD(build_model("resnet8", widths=(4, 8, 8)).named_parameters(), momentum=1.0)


@pytest.mark.parametrize("eps", [-1, 0, float("nan"), float("inf"), "1e-5", None])
def test_batchnorm_eps_must_be_positive_and_finite(eps):
    with pytest.raises(ValueError, match="BatchNorm2d: eps must be a finite number > 0"):
        BatchNorm2d(3, eps=eps)


@given(h=st.integers(0, 3), w=st.integers(0, 3), n=st.integers(1, 3))
def test_empty_inputs_are_refused_not_nan(h, w, n):
    x = np.zeros((n, 2, h, w), np.float32)
    for layer in (GlobalAvgPool2d(), GlobalMaxPool2d()):
        if h * w == 0:
            with pytest.raises(ValueError, match=f"{type(layer).__name__}: the input has no pixels"):
                layer(x)
        else:
            assert layer(x).shape == (n, 2)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: logits of shape \(0, 10\)"):
        CrossEntropyLoss()(np.zeros((0, 10), np.float32), np.zeros(0, np.int64))


def test_a_train_subset_larger_than_the_data_is_reported(tmp_path, trained, capsys):
    _, data, _, _ = trained
    rc, stdout, _ = run_cli(capsys, "train", *TOY, *data_args(data), "--train-subset", "1000",
                            "--epochs", "1", "--out", tmp_path / "run")
    assert rc == 0
    assert "note: --train-subset 1000 is more than the 100 training images" in stdout
