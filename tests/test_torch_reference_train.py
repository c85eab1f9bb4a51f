"""``python -m npse.torch_reference train``: the PyTorch twin trained with npse's recipe.

Without PyTorch the command must fail with one clear line. With it, a toy run in float64 must
compute what ``npse train`` computes with the same options: same initial weights, data order,
augmentation, schedule and SGD update, so the metrics agree to rounding.
"""
import json
import sys

import pytest

import npse.torch_reference as R
from npse.train import TrainConfig, train
from test_train import write_cifar10

TOY = ["--model", "se_resnet8", "--widths", "4,8,8", "--se-reduction", "2", "--epochs", "2",
       "--batch-size", "16", "--eval-batch-size", "50", "--dtype", "float64", "--no-download"]


def test_without_torch_the_error_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)        # `import torch` now raises ImportError
    assert R.main(["train", *TOY, "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PyTorch is not installed" in err, err


def test_options_of_npse_train_only_are_refused(tmp_path, capsys):
    assert R.main(["train", "--resume", "--out", str(tmp_path)]) == 1
    assert "options of npse train only" in capsys.readouterr().err


def test_a_directory_holding_a_run_is_refused(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert R.main(["train", *TOY, "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"


def test_toy_run_matches_npse_train(tmp_path, capsys):
    pytest.importorskip("torch")
    data = write_cifar10(tmp_path / "data")
    out = tmp_path / "torch"
    assert R.main(["train", *TOY, "--data-dir", str(data), "--out", str(out), "--threads", "1"]) == 0
    assert "final test accuracy" in capsys.readouterr().out
    theirs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train(TrainConfig(model="se_resnet8", widths=(4, 8, 8), se_reduction=2, epochs=2, batch_size=16,
                      eval_batch_size=50, dtype="float64", data_dir=str(data), download=False,
                      out=str(tmp_path / "npse"), quiet=True), log=None)
    ours = [json.loads(line) for line in (tmp_path / "npse" / "metrics.jsonl").read_text().splitlines()]
    assert len(theirs) == len(ours) == 2
    for a, b in zip(ours, theirs):
        for key in ("train_loss", "test_loss", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-9), (key, a, b)
        assert a["train_acc"] == b["train_acc"] and a["test_acc"] == b["test_acc"]


def test_evaluate_without_torch_the_error_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert R.main(["evaluate", str(tmp_path / "checkpoint.npz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PyTorch is not installed" in err, err


def test_evaluate_scores_npse_weights_as_npse_does(tmp_path, capsys):
    """The twin, given a trained checkpoint's weights, predicts what npse predicts image by image,
    and both report npse evaluate's accuracy."""
    pytest.importorskip("torch")
    data = write_cifar10(tmp_path / "data")
    train(TrainConfig(model="se_resnet8", widths=(4, 8, 8), se_reduction=2, epochs=1, batch_size=16,
                      eval_batch_size=50, data_dir=str(data), download=False,
                      out=str(tmp_path / "run"), quiet=True), log=None)
    r = R.evaluate_reference(tmp_path / "run", data_dir=str(data), download=False, batch_size=7)
    assert r["images"] > 0 and r["differing"] == 0
    assert r["max_logit_diff"] <= 1e-4 * max(1.0, r["max_logit"])
    assert r["npse"]["acc"] == r["torch"]["acc"]
    assert r["npse"]["loss"] == pytest.approx(r["torch"]["loss"], rel=1e-5)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert r["npse"]["acc"] == metrics[-1]["test_acc"]
    assert r["npse"]["loss"] == pytest.approx(metrics[-1]["test_loss"], rel=1e-5)
    from npse.config import load_dataset
    from npse.rundir import load_model_for_inference
    from npse.train import evaluate
    model, meta = load_model_for_inference(tmp_path / "run" / "checkpoint.npz")
    d = load_dataset(TrainConfig.from_dict(dict(meta["config"], data_dir=str(data), download=False)))
    loss, acc, per_class = evaluate(model, d.x_test, d.y_test, meta["mean"], meta["std"])
    assert r["npse"]["per_class"] == pytest.approx(list(per_class), nan_ok=True)
    assert r["torch"]["per_class"] == pytest.approx(list(per_class), nan_ok=True)
    assert R.main(["evaluate", str(tmp_path / "run"), "--data-dir", str(data), "--no-download",
                   "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {100 * r['torch']['acc']:.2f}%" in out and "differ on 0 of" in out
