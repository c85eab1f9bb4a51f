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
