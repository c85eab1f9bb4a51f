"""Tests for npse.data: binary CIFAR readers, download/extract safety, transforms, batches."""
from __future__ import annotations

import hashlib
import io
import os
import pathlib
import tarfile

import numpy as np
import pytest

from npse import backend
from npse.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    channel_stats,
    download_and_extract,
    draw_augmentation,
    epoch_rng,
    iterate_batches,
    load_cifar10,
    load_cifar100,
    normalize,
    num_batches,
    random_crop_flip,
    resolve_data_dir,
    safe_extract,
    subset,
)

TRAIN_PER_FILE, TEST_N = 7, 5


# ----------------------------------------------------------------------------- fixtures

def _images(rng, n):
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _cifar10_bytes(x, y):
    """Records written by hand, plane by plane, row by row (no reshape shortcut)."""
    out = bytearray()
    for img, label in zip(x, y):
        out.append(int(label))
        for c in range(3):            # R, then G, then B
            for r in range(32):       # row-major
                out.extend(bytes(int(v) for v in img[c, r]))
    return bytes(out)


def _write_cifar10(root, rng, meta=True):
    folder = pathlib.Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _images(rng, TRAIN_PER_FILE), rng.integers(0, 10, TRAIN_PER_FILE)
        (folder / f"data_batch_{i}.bin").write_bytes(_cifar10_bytes(x, y))
        xs.append(x)
        ys.append(y)
    xt, yt = _images(rng, TEST_N), rng.integers(0, 10, TEST_N)
    (folder / "test_batch.bin").write_bytes(_cifar10_bytes(xt, yt))
    names = [f"class{k}" for k in range(10)]
    if meta:
        (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    return folder, np.concatenate(xs), np.concatenate(ys), xt, yt, names


def _write_cifar100(root, rng, n_train=9, n_test=4):
    folder = pathlib.Path(root) / "cifar-100-binary"
    folder.mkdir(parents=True)
    data = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x = _images(rng, n)
        fine, coarse = rng.integers(0, 100, n), rng.integers(0, 20, n)
        recs = np.concatenate([coarse[:, None], fine[:, None], x.reshape(n, -1)], axis=1)
        (folder / f"{name}.bin").write_bytes(recs.astype(np.uint8).tobytes())
        data[name] = (x, fine, coarse)
    return folder, data


@pytest.fixture
def cifar10_dir(tmp_path):
    return (tmp_path, *_write_cifar10(tmp_path, np.random.default_rng(0)))


def _tar_gz(path, files=(), extra=()):
    """Build a tar.gz at ``path`` from {name: bytes} plus raw TarInfo members in ``extra``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return hashlib.md5(pathlib.Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- reading

def test_cifar10_round_trip(cifar10_dir):
    root, folder, x, y, xt, yt, names = cifar10_dir
    ds = load_cifar10(root, download=False)
    assert ds.x_train.shape == (5 * TRAIN_PER_FILE, 3, 32, 32) and ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, x)
    np.testing.assert_array_equal(ds.y_train, y)
    np.testing.assert_array_equal(ds.x_test, xt)
    np.testing.assert_array_equal(ds.y_test, yt)
    assert ds.classes == names
    # First pixel bytes of the first record: R(0,0), R(0,1); G plane starts at byte 1 + 1024.
    raw = (folder / "data_batch_1.bin").read_bytes()
    assert raw[1] == x[0, 0, 0, 0] and raw[2] == x[0, 0, 0, 1] and raw[33] == x[0, 0, 1, 0]
    assert raw[1 + 1024] == x[0, 1, 0, 0] and raw[1 + 2048] == x[0, 2, 0, 0]


def test_cifar10_default_classes(tmp_path):
    _write_cifar10(tmp_path, np.random.default_rng(1), meta=False)
    assert load_cifar10(tmp_path, download=False).classes == list(CIFAR10_CLASSES)


@pytest.mark.parametrize("label", ["fine", "coarse"])
def test_cifar100_round_trip(tmp_path, label):
    _, data = _write_cifar100(tmp_path, np.random.default_rng(2))
    ds = load_cifar100(tmp_path, download=False, label=label)
    col = 1 if label == "fine" else 2
    np.testing.assert_array_equal(ds.x_train, data["train"][0])
    np.testing.assert_array_equal(ds.y_train, data["train"][col])
    np.testing.assert_array_equal(ds.x_test, data["test"][0])
    np.testing.assert_array_equal(ds.y_test, data["test"][col])
    assert ds.classes == [str(k) for k in range(100 if label == "fine" else 20)]


def test_cifar100_bad_label_kind(tmp_path):
    with pytest.raises(ValueError, match="fine"):
        load_cifar100(tmp_path, download=False, label="medium")


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NPSE_DATA", raising=False)
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "npse"
    monkeypatch.setenv("NPSE_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_truncated_file(cifar10_dir):
    root, folder = cifar10_dir[:2]
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-10])
    size = 7 * 3073 - 10
    with pytest.raises(ValueError, match="truncated") as err:
        load_cifar10(root, download=False)
    msg = str(err.value)
    assert "data_batch_3.bin" in msg and str(size) in msg and "3073" in msg


def test_label_out_of_range(cifar10_dir, tmp_path):
    root, folder = cifar10_dir[:2]
    raw = bytearray((folder / "test_batch.bin").read_bytes())
    raw[2 * 3073] = 12  # label byte of record 2
    (folder / "test_batch.bin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="12") as err:
        load_cifar10(root, download=False)
    assert "test_batch.bin" in str(err.value)

    other = tmp_path / "c100"
    f100, _ = _write_cifar100(other, np.random.default_rng(3))
    raw = bytearray((f100 / "train.bin").read_bytes())
    raw[0] = 20  # coarse label out of 0..19
    (f100 / "train.bin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="train.bin"):
        load_cifar100(other, download=False, label="fine")


def test_missing_without_download(tmp_path):
    where = tmp_path / "nothing-here"
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(where, download=False)
    msg = str(err.value)
    assert str(where) in msg and "data_batch_1.bin" in msg
    assert "cifar-10-binary.tar.gz" in msg and "--data-dir" in msg
    assert not where.exists()  # nothing created, nothing fetched


# ----------------------------------------------------------------------------- download

def test_file_url_download_and_extract(tmp_path):
    src = tmp_path / "src"
    _, x, y, xt, yt, _ = _write_cifar10(src, np.random.default_rng(4))
    files = [(f"cifar-10-batches-bin/{p.name}", p.read_bytes())
             for p in sorted((src / "cifar-10-batches-bin").iterdir())]
    archive = tmp_path / "cifar-10-binary.tar.gz"
    md5 = _tar_gz(archive, files)
    dest = tmp_path / "data"
    got = download_and_extract(archive.as_uri(), md5, dest)
    assert got == dest / "cifar-10-binary.tar.gz" and got.is_file()
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]
    ds = load_cifar10(dest, download=False)
    np.testing.assert_array_equal(ds.x_train, x)
    np.testing.assert_array_equal(ds.y_test, yt)


def test_wrong_md5_refused(tmp_path):
    archive = tmp_path / "a.tar.gz"
    md5 = _tar_gz(archive, [("hello.txt", b"hi")])
    dest = tmp_path / "data"
    with pytest.raises(ValueError) as err:
        download_and_extract(archive.as_uri(), "0" * 32, dest)
    assert md5 in str(err.value) and "0" * 32 in str(err.value)
    assert list(dest.iterdir()) == []  # no archive left behind, nothing extracted


def test_failed_download_names_url(tmp_path):
    url = (tmp_path / "absent.tar.gz").as_uri()
    with pytest.raises(OSError) as err:
        download_and_extract(url, "0" * 32, tmp_path / "data")
    assert url in str(err.value) and "--data-dir" in str(err.value)
    assert list((tmp_path / "data").iterdir()) == []


def _symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hardlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_tar_refused(tmp_path, case):
    dest = tmp_path / "dest"
    outside = tmp_path / "evil"
    files, extra = [("ok.txt", b"fine")], []
    if case == "dotdot":
        files.append(("../evil", b"bad"))
    elif case == "absolute":
        files.append((str(outside), b"bad"))
    elif case == "symlink":
        extra.append(_symlink("link", str(tmp_path)))
    elif case == "hardlink":
        extra.append(_hardlink("link", str(outside)))
    else:
        dev = tarfile.TarInfo("dev")
        dev.type = tarfile.CHRTYPE
        extra.append(dev)
    archive = tmp_path / "bad.tar.gz"
    md5 = _tar_gz(archive, files, extra)
    with pytest.raises(ValueError, match="unsafe"):
        safe_extract(archive, dest)
    with pytest.raises(ValueError, match="unsafe"):
        download_and_extract(archive.as_uri(), md5, tmp_path / "dest2")
    assert not outside.exists()
    assert not (dest / "ok.txt").exists() and not (dest / "link").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz", "dest", "dest2"]


# ----------------------------------------------------------------------------- transforms

def test_normalize_constant_image():
    x = np.full((2, 3, 4, 4), 200, dtype=np.uint8)
    out = normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    assert out.dtype == np.float32 and out.shape == x.shape
    expected = (200 / 255 - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    np.testing.assert_allclose(out[1, :, 2, 3], expected, rtol=1e-6)
    np.testing.assert_allclose(out, np.broadcast_to(expected[None, :, None, None], x.shape),
                               rtol=1e-6)
    assert normalize(x, CIFAR10_MEAN, CIFAR10_STD, dtype=np.float64).dtype == np.float64


def test_channel_stats():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(10, 3, 5, 6), dtype=np.uint8)
    mean, std = channel_stats(x, chunk=3)
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-10)
    assert mean.dtype == np.float64 and mean.shape == (3,)


def _crop_flip_reference(x, oy, ox, flips, pad):
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for i in range(n):
        p = np.zeros((c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
        p[:, pad:pad + h, pad:pad + w] = x[i]
        crop = p[:, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


@pytest.mark.parametrize("pad", [0, 1, 4])
def test_random_crop_flip_matches_loop(pad):
    rng = np.random.default_rng(6 + pad)
    x = rng.standard_normal((9, 3, 8, 6)).astype(np.float32)
    oy, ox, flips = draw_augmentation(rng, 9, pad)
    flips[0], flips[1] = True, False  # both branches always exercised
    got = random_crop_flip(x, oy, ox, flips, pad=pad)
    np.testing.assert_array_equal(got, _crop_flip_reference(x, oy, ox, flips, pad))


def test_random_crop_flip_extremes():
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3) + 1
    got = random_crop_flip(x, np.array([0, 2]), np.array([0, 2]), np.array([False, True]), pad=1)
    np.testing.assert_array_equal(got[0, 0], [[0, 0, 0], [0, 1, 2], [0, 4, 5]])
    np.testing.assert_array_equal(got[1, 0], [[0, 15, 14], [0, 18, 17], [0, 0, 0]])
    with pytest.raises(ValueError):
        random_crop_flip(x, np.array([0, 3]), np.array([0, 0]), np.array([False, True]), pad=1)


# ----------------------------------------------------------------------------- batches

def _epoch(x, y, **kw):
    return [(backend.to_host(a), backend.to_host(b))
            for a, b in iterate_batches(x, y, 4, CIFAR10_MEAN, CIFAR10_STD, **kw)]


def _toy(n=11):
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), np.arange(n) % 3


def test_every_sample_once_per_epoch():
    x, y = _toy()
    ids = np.arange(len(y))  # use labels = indices to track samples
    batches = _epoch(x, ids, seed=3, epoch=2)
    assert len(batches) == num_batches(11, 4) == 3
    assert [len(b[1]) for b in batches] == [4, 4, 3]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(11))
    assert seen.tolist() != list(range(11))  # actually shuffled
    for xb, yb in batches:  # images follow their labels
        assert yb.dtype == np.int64 and xb.dtype == np.float32
        np.testing.assert_allclose(xb, normalize(x[yb], CIFAR10_MEAN, CIFAR10_STD), rtol=1e-6)
    dropped = _epoch(x, ids, seed=3, epoch=2, drop_last=True)
    assert len(dropped) == num_batches(11, 4, drop_last=True) == 2
    plain = np.concatenate([b[1] for b in _epoch(x, ids, shuffle=False)])
    assert plain.tolist() == list(range(11))


def test_reproducible_from_seed_and_epoch():
    x, y = _toy()
    a = _epoch(x, y, augment=True, seed=1, epoch=5)
    b = _epoch(x, y, augment=True, seed=1, epoch=5)  # as a resumed run would draw it
    c = _epoch(x, y, augment=True, seed=1, epoch=6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))
    assert epoch_rng(1, 5).integers(1 << 30) == epoch_rng(1, 5).integers(1 << 30)
    assert epoch_rng(1, 5).integers(1 << 30) != epoch_rng(1, 6).integers(1 << 30)


def test_augmented_batches_match_reference():
    x, y = _toy()
    rng = epoch_rng(2, 0)
    order = rng.permutation(len(y))
    oy, ox, flips = draw_augmentation(rng, len(y))
    got = np.concatenate([b[0] for b in _epoch(x, y, augment=True, seed=2, epoch=0)])
    ref = _crop_flip_reference(normalize(x[order], CIFAR10_MEAN, CIFAR10_STD), oy, ox, flips, 4)
    np.testing.assert_array_equal(got, ref)


def test_subset_balanced_and_fixed():
    y = np.repeat(np.arange(4), [50, 30, 5, 15])
    x = np.arange(len(y))
    xs, ys = subset(x, y, 20, seed=0)
    assert len(ys) == 20 and np.array_equal(y[xs], ys)
    assert np.bincount(ys, minlength=4).tolist() == [5, 5, 5, 5]
    xs2, _ = subset(x, y, 20, seed=0)
    assert np.array_equal(xs, xs2) and np.all(np.diff(xs) > 0)
    _, ys = subset(x, y, 40, seed=1)  # class 2 runs out after 5; the others fill in
    counts = np.bincount(ys, minlength=4)
    assert counts[2] == 5 and sorted(counts.tolist()) == [5, 11, 12, 12]
    assert subset(x, y, None, 0)[0] is x


@pytest.fixture(params=["numpy", "cupy"])
def data_backend(request):
    """Run a test with each backend active; CuPy skips where it or a GPU is absent."""
    if request.param == "cupy" and not backend.cupy_available():
        pytest.skip("CuPy with a GPU is not available")
    previous = backend.get_backend()
    backend.set_backend(request.param)
    yield request.param
    backend.set_backend(previous)


def test_batches_on_active_backend_match_host(data_backend):
    x, y = _toy()
    rng = epoch_rng(4, 1)
    order = rng.permutation(len(y))
    oy, ox, flips = draw_augmentation(rng, len(y))
    ref = _crop_flip_reference(normalize(x[order], CIFAR10_MEAN, CIFAR10_STD, xp=np),
                               oy, ox, flips, 4)
    got = list(iterate_batches(x, y, 4, CIFAR10_MEAN, CIFAR10_STD, augment=True, seed=4, epoch=1))
    for xb, yb in got:
        assert backend.backend_of(xb) == backend.backend_of(yb) == data_backend
    np.testing.assert_allclose(np.concatenate([backend.to_host(b[0]) for b in got]), ref,
                               rtol=1e-6, atol=1e-6)
    assert np.concatenate([backend.to_host(b[1]) for b in got]).tolist() == y[order].tolist()


# ----------------------------------------------------------------------------- hygiene

def test_no_pickle():
    import npse.data as pkg
    for f in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        text = f.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, f.name


@pytest.mark.slow
def test_real_cifar10():
    root = os.environ.get("NPSE_DATA")
    if not root or not (pathlib.Path(root) / "cifar-10-batches-bin" / "test_batch.bin").is_file():
        pytest.skip("real CIFAR-10 not found under $NPSE_DATA")
    ds = load_cifar10(root, download=False)
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert np.bincount(ds.y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    mean, std = channel_stats(ds.x_train)
    np.testing.assert_allclose(mean, CIFAR10_MEAN, atol=0.01)
    np.testing.assert_allclose(std, CIFAR10_STD, atol=0.01)


# ----------------------------------------------------------------------------- crop offsets, two guards
# The crop offsets must cover 0 .. 2*pad, both ends included: an off-by-one (0 .. 2*pad - 1, or
# 1 .. 2*pad) makes the augmentation lopsided and no shape or range check notices.

@pytest.mark.parametrize("pad", [1, 2, 4])
def test_crop_offsets_reach_both_ends_over_many_seeds(pad):
    seen_y, seen_x = set(), set()
    for seed in range(200):
        oy, ox, _ = draw_augmentation(np.random.default_rng(seed), 8, pad)
        seen_y.update(oy.tolist())
        seen_x.update(ox.tolist())
    assert seen_y == seen_x == set(range(2 * pad + 1))


@pytest.mark.parametrize("pad", [2, 4])
def test_augmented_batches_show_every_crop_offset(pad):
    """Through the loader: a constant image, zero-padded and cropped, shows its offset as rows
    and columns of zeros (the mean colour) at the top/left (offset < pad) or bottom/right."""
    x = np.full((64, 3, 8, 8), 200, dtype=np.uint8)
    y = np.zeros(64, dtype=np.int64)
    offsets_y, offsets_x = set(), set()
    for epoch in range(3):
        for xb, _ in iterate_batches(x, y, 64, (0.5,) * 3, (0.25,) * 3, shuffle=False, augment=True,
                                     seed=1, epoch=epoch, dtype="float64", pad=pad):
            zero = backend.to_host(xb)[:, 0] == 0                      # (N, H, W)
            rows, cols = zero.all(axis=2), zero.all(axis=1)            # (N, H), (N, W)
            for r, c in zip(rows, cols):
                top, bottom = int(r[:pad].sum()), int(r[-pad:].sum())
                left, right = int(c[:pad].sum()), int(c[-pad:].sum())
                offsets_y.add(pad - top + bottom)
                offsets_x.add(pad - left + right)
    assert offsets_y == offsets_x == set(range(2 * pad + 1))
