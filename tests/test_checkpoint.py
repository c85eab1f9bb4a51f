"""Checkpoint files: round trip, atomic replacement, clear errors for damaged or foreign files."""
import os

import numpy as np
import pytest

from npse import checkpoint
from npse.checkpoint import add_prefix, load_checkpoint, save_checkpoint, split_prefixed
from npse.nn.module import Parameter
from npse.optim import SGD


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "model.layer1.0.conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "model.layer1.0.bn1.running_mean": rng.standard_normal(4),           # float64
        "model.layer1.0.bn1.num_batches_tracked": np.array(17, dtype=np.int64),
        "optim.step": np.array(123, dtype=np.int64),
        "data.order": rng.permutation(10).astype(np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


META = {"epoch": 3, "lr": 0.05, "arch": "se_resnet20", "history": [1.5, 0.75], "ok": True,
        "note": "naïve ✓"}


def test_round_trip(tmp_path):
    path = tmp_path / "ckpt.npz"
    arrays = sample_arrays()
    save_checkpoint(path, arrays, META)
    got, meta = load_checkpoint(path)
    assert meta == META
    assert list(got) == list(arrays)  # dotted keys survive, order kept
    for k, v in arrays.items():
        assert type(got[k]) is np.ndarray
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind
    # Readable by plain NumPy, without pickles.
    with np.load(path, allow_pickle=False) as z:
        assert "__meta__" in z.files and z["__meta__"].dtype == np.uint8


def test_path_is_written_as_given_and_numpy_scalars_in_meta(tmp_path):
    path = tmp_path / "last"  # no .npz suffix: must not become "last.npz"
    save_checkpoint(str(path), {"x": np.ones(2)}, {"loss": np.float32(0.5), "seed": np.int64(7),
                                                     "v": np.arange(3)})
    assert path.is_file() and not (tmp_path / "last.npz").exists()
    _, meta = load_checkpoint(path)
    assert meta == {"loss": 0.5, "seed": 7, "v": [0, 1, 2]}


def test_overwrite_replaces_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.zeros(3)}, {"epoch": 1})
    save_checkpoint(path, {"b": np.ones(2)}, {"epoch": 2})
    arrays, meta = load_checkpoint(path)
    assert list(arrays) == ["b"] and meta == {"epoch": 2}


def test_failed_replace_keeps_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.arange(5)}, {"epoch": 1})
    old_bytes = path.read_bytes()

    def boom(src, dst):
        assert os.path.exists(src)  # the new file was fully written before the rename
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(checkpoint.os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"a": np.arange(7)}, {"epoch": 2})
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    monkeypatch.undo()
    arrays, meta = load_checkpoint(path)
    assert meta == {"epoch": 1} and arrays["a"].tolist() == list(range(5))


def test_failure_while_writing_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.arange(5)}, {"epoch": 1})
    old_bytes = path.read_bytes()

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of np.savez

    monkeypatch.setattr(checkpoint.numpy, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"a": np.arange(7)}, {"epoch": 2})
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_no_pickles_and_bad_keys(tmp_path):
    path = tmp_path / "ckpt.npz"
    with pytest.raises(ValueError, match="'bad' is an object array"):
        save_checkpoint(path, {"bad": np.array([{"a": 1}, None], dtype=object)}, {})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, {"__meta__": np.zeros(1)}, {})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, {"file": np.zeros(1)}, {})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(path, {"a": np.zeros(1)}, {"when": object()})
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        save_checkpoint(tmp_path / "no_such_dir" / "c.npz", {"a": np.zeros(1)}, {})
    assert os.listdir(tmp_path) == []  # nothing was written by any of these


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0, 10 / 1000])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"w": np.ones(1000)}, {"epoch": 1})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"ckpt\.npz.*truncated or not an npse checkpoint"):
        load_checkpoint(path)


def test_foreign_files(tmp_path):
    rand = tmp_path / "random.npz"
    rand.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"random\.npz.*not an npse checkpoint"):
        load_checkpoint(rand)
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match=r"array\.npy.*not an npse checkpoint"):
        load_checkpoint(npy)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(3))
    with pytest.raises(ValueError, match=r"plain\.npz.*no '__meta__'"):
        load_checkpoint(plain)


def test_prefix_helpers():
    arrays = {"model.fc.weight": 1, "model.bn.bias": 2, "optim.step": 3, "modelx.y": 4}
    assert split_prefixed(arrays, "model") == {"fc.weight": 1, "bn.bias": 2}
    assert split_prefixed(arrays, "optim") == {"step": 3}
    assert split_prefixed(arrays, "data") == {}
    assert add_prefix(split_prefixed(arrays, "model"), "model") == {
        "model.fc.weight": 1, "model.bn.bias": 2}
    with pytest.raises(ValueError):
        split_prefixed(arrays, "")
    with pytest.raises(ValueError):
        split_prefixed(arrays, "model.")


def test_optimizer_state_survives_a_checkpoint(tmp_path):
    """The trainer's use: parameters and optimiser state in one file, resumed bit for bit."""
    def grads(ps, t):
        for i, p in enumerate(ps):
            p.grad[...] = np.cos(p.data + t + i)

    def make():
        rng = np.random.default_rng(5)
        return [Parameter(rng.standard_normal((3, 2))), Parameter(rng.standard_normal(2))]

    full = make()
    opt = SGD(full, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for t in range(6):
        grads(full, t)
        opt.step()

    part = make()
    opt = SGD(part, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for t in range(3):
        grads(part, t)
        opt.step()
    arrays = {**add_prefix({str(i): p.data for i, p in enumerate(part)}, "model"),
              **add_prefix(opt.state_dict(), "optim")}
    save_checkpoint(tmp_path / "c.npz", arrays, {"iteration": 3})

    arrays, meta = load_checkpoint(tmp_path / "c.npz")
    resumed = [Parameter(a) for a in split_prefixed(arrays, "model").values()]
    opt = SGD(resumed, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    opt.load_state_dict(split_prefixed(arrays, "optim"))
    for t in range(meta["iteration"], 6):
        grads(resumed, t)
        opt.step()
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(a.data, b.data)
