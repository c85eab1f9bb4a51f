"""The trained weights shipped in ``weights/``: each folder's weights file matches its SHA256SUMS,
loads as npse weights (no optimiser state, no pickles), and carries the configuration,
normalisation and metrics of the run (its config.json and metrics.jsonl).

These read files only; scoring the weights needs CIFAR-10 (``npse evaluate``), and the PyTorch
twin's agreement is ``python -m npse.torch_reference evaluate`` (chapter 11)."""
import hashlib
import json
import pathlib
import re

import pytest

from npse.rundir import load_model_for_inference

WEIGHTS = pathlib.Path(__file__).resolve().parent.parent / "weights"
SHIPPED = sorted(p.parent for p in WEIGHTS.glob("*/SHA256SUMS"))


def test_there_are_shipped_weights():
    assert WEIGHTS / "se_resnet20-10ep" in SHIPPED


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_checksums_hold(folder):
    lines = [line.split() for line in (folder / "SHA256SUMS").read_text().splitlines() if line]
    assert lines
    for digest, name in lines:
        data = (folder / name.lstrip("*")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_weights_load_and_carry_their_run(folder):
    (path,) = [folder / n.lstrip("*") for _, n in
               (line.split() for line in (folder / "SHA256SUMS").read_text().splitlines() if line)
               if n.endswith(".npz")]
    model, meta = load_model_for_inference(path)
    assert meta["weights_only"] is True and meta["data_dir"] is None
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    config = json.loads((folder / "config.json").read_text())
    assert [r["epoch"] for r in records] == list(range(1, config["config"]["epochs"] + 1))
    assert meta["epoch"] == len(records)
    assert [m["test_acc"] for m in meta["metrics"]] == [r["test_acc"] for r in records]
    assert meta["config"] == config["config"] and meta["model_config"] == model.config
    assert meta["mean"] == pytest.approx(config["mean"]) and meta["std"] == pytest.approx(config["std"])
    assert meta["classes"] == config["classes"]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_weights_hold_no_pickles(folder):
    import numpy as np
    for path in folder.glob("*.npz"):
        with np.load(path, allow_pickle=False) as f:
            assert all(f[k].dtype != object for k in f.files), path
    assert not (folder / "in-progress").exists(), "a finished run keeps no resume checkpoint"


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_torch_twin_transcript_matches_the_run(folder):
    """torch_twin.txt is what `python -m npse.torch_reference evaluate` printed on these weights:
    its npse line must be the run's last epoch, and the twin must agree image by image."""
    text = (folder / "torch_twin.txt").read_text()
    last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    expected = (f"{last['test_loss']:.4f}", f"{100 * last['test_acc']:.2f}")
    for who in ("npse", "PyTorch twin"):
        found = re.search(rf"^{who} +test loss (\S+) +test accuracy (\S+)%$", text, re.M)
        assert found and found.groups() == expected, (who, found and found.groups(), expected)
    assert "predictions differ on 0 of 10000 images" in text
