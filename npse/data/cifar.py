"""CIFAR-10 and CIFAR-100 from the official *binary* releases: find, download, check, read.

Layouts (as in the official archives):

    DIR/cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin, batches.meta.txt
        record = 1 label byte + 3072 pixel bytes                          (3073 bytes)
    DIR/cifar-100-binary/train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt
        record = 1 coarse label byte + 1 fine label byte + 3072 pixel bytes (3074 bytes)

The 3072 pixel bytes are 1024 red, then 1024 green, then 1024 blue values, each plane a 32x32
image in row-major order, so a plain reshape to (3, 32, 32) gives channels-first images.

Files are read with NumPy on the host as raw bytes; nothing here uses pickle.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

import numpy

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
CIFAR100_MD5 = "03b5dce01913d631647c71ecec9e9cb8"

CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch.bin",)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR100_DIR = "cifar-100-binary"

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32  # 3072 bytes per image
#: The most records one official file holds (CIFAR-100's train.bin; CIFAR-10's hold 10000).
MAX_RECORDS = 50000


@dataclasses.dataclass
class Dataset:
    """A labelled image data set held on the host.

    x_train: uint8 (N_train, 3, 32, 32)    y_train: int64 (N_train,)
    x_test:  uint8 (N_test, 3, 32, 32)     y_test:  int64 (N_test,)
    classes: list of class names; y == k means classes[k].
    """

    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_test: numpy.ndarray
    y_test: numpy.ndarray
    classes: list


def resolve_data_dir(data_dir=None) -> pathlib.Path:
    """Where data lives: ``data_dir`` if given, else ``$NPSE_DATA``, else ``~/.cache/npse``."""
    if data_dir is not None and str(data_dir) != "":
        return pathlib.Path(data_dir).expanduser()
    env = os.environ.get("NPSE_DATA", "")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "npse"


# ----------------------------------------------------------------------------- reading records

def read_records(path, label_bytes: int, num_classes, kind: str = "CIFAR"):
    """Read one binary file of records ``label_bytes`` label bytes + 3072 pixel bytes each.

    Returns (x, labels): x uint8 (N, 3, 32, 32); labels int64 (N, label_bytes).
    ``num_classes`` gives, per label byte, the exclusive upper bound its values must respect;
    ``kind`` ("CIFAR-10", "CIFAR-100") only words the error messages.
    """
    path = pathlib.Path(path)
    record = label_bytes + PIXELS
    size = path.stat().st_size
    if size > MAX_RECORDS * record:       # before reading: a huge (or sparse) file is not data
        raise ValueError(f"{path}: size {size} bytes is more than the {MAX_RECORDS} records of "
                         f"{record} bytes that the largest official {kind} file holds; not a "
                         f"{kind} binary file")
    raw = numpy.fromfile(path, dtype=numpy.uint8)
    if raw.size == 0 or raw.size % record != 0:
        raise ValueError(
            f"{path}: size {raw.size} bytes is not a positive multiple of the record size "
            f"{record} bytes; the file is truncated or not a {kind} binary file"
        )
    raw = raw.reshape(-1, record)
    labels = raw[:, :label_bytes].astype(numpy.int64)
    for j, bound in enumerate(num_classes):
        bad = labels[:, j] >= bound
        if bad.any():
            i = int(numpy.argmax(bad))
            raise ValueError(
                f"{path}: record {i} has label {int(labels[i, j])}, but labels must be in "
                f"0..{bound - 1}; the file is corrupt or not a {kind} binary file"
            )
    # Copy so the images do not keep the label bytes alive and are C-contiguous.
    x = numpy.ascontiguousarray(raw[:, label_bytes:]).reshape((-1,) + IMAGE_SHAPE)
    return x, labels


def read_cifar10_file(path):
    """One CIFAR-10 binary file -> (x uint8 (N, 3, 32, 32), y int64 (N,))."""
    x, labels = read_records(path, 1, (10,), "CIFAR-10")
    return x, labels[:, 0].copy()


def read_cifar100_file(path, label: str = "fine"):
    """One CIFAR-100 binary file -> (x uint8 (N, 3, 32, 32), y int64 (N,)), fine or coarse y."""
    column = _cifar100_column(label)
    x, labels = read_records(path, 2, (20, 100), "CIFAR-100")
    return x, labels[:, column].copy()


def _cifar100_column(label: str) -> int:
    if label not in ("fine", "coarse"):
        raise ValueError(f"CIFAR-100 label must be 'fine' or 'coarse', got {label!r}")
    return 1 if label == "fine" else 0


def _read_names(path: pathlib.Path, count: int, fallback):
    """Class names, one per non-empty line of ``path``; ``fallback`` if the file is absent."""
    if not path.is_file():
        return list(fallback)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: the class names are not UTF-8 text (byte {e.start}); the file "
                         f"is corrupt, or delete it to use the standard names") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != count:
        raise ValueError(f"{path}: expected {count} class names, found {len(names)}")
    return names


def check_official_sizes(paths, record: int, official: dict) -> None:
    """Refuse a folder that mixes files of the official size with files of another size: a
    file cut at a record boundary reads as fewer images without any other sign. ``official``
    maps a file name to its record count in the official release. Folders whose files are all
    smaller (tests, synthetic data) are taken as they are."""
    sizes = {pathlib.Path(p): pathlib.Path(p).stat().st_size for p in paths}
    full = [p for p, n in sizes.items() if n == official[p.name] * record]
    cut = [p for p, n in sizes.items() if n != official[p.name] * record]
    if full and cut:
        p = cut[0]
        raise ValueError(f"{p}: {sizes[p] // record} records ({sizes[p]} bytes), but the official "
                         f"file holds {official[p.name]} ({official[p.name] * record} bytes) as "
                         f"{full[0].name} beside it does; the file is truncated: delete the "
                         f"folder {p.parent} and download again")


def _read_split(paths, reader):
    parts = [reader(p) for p in paths]
    return numpy.concatenate([p[0] for p in parts]), numpy.concatenate([p[1] for p in parts])


# ----------------------------------------------------------------------------- loading

def load_cifar10(data_dir=None, download: bool = True) -> Dataset:
    """CIFAR-10 from ``resolve_data_dir(data_dir)/cifar-10-batches-bin``, downloading if allowed.

    Returns a Dataset: 50000 train and 10000 test images for the official release.
    """
    root = resolve_data_dir(data_dir)
    folder = root / CIFAR10_DIR
    names = CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES
    _ensure_files(root, folder, names, CIFAR10_URL, CIFAR10_MD5, download)
    check_official_sizes([folder / n for n in names], 1 + PIXELS, dict.fromkeys(names, 10000))
    x_train, y_train = _read_split([folder / n for n in CIFAR10_TRAIN_FILES], read_cifar10_file)
    x_test, y_test = _read_split([folder / n for n in CIFAR10_TEST_FILES], read_cifar10_file)
    classes = _read_names(folder / "batches.meta.txt", 10, CIFAR10_CLASSES)
    return Dataset(x_train, y_train, x_test, y_test, classes)


def load_cifar100(data_dir=None, download: bool = True, label: str = "fine") -> Dataset:
    """CIFAR-100 from ``resolve_data_dir(data_dir)/cifar-100-binary``, downloading if allowed.

    ``label``: "fine" (100 classes) or "coarse" (20 superclasses).
    """
    _cifar100_column(label)  # fail on a bad ``label`` before any download
    root = resolve_data_dir(data_dir)
    folder = root / CIFAR100_DIR
    _ensure_files(root, folder, ("train.bin", "test.bin"), CIFAR100_URL, CIFAR100_MD5, download)
    check_official_sizes([folder / "train.bin", folder / "test.bin"], 2 + PIXELS,
                         {"train.bin": 50000, "test.bin": 10000})
    x_train, y_train = read_cifar100_file(folder / "train.bin", label)
    x_test, y_test = read_cifar100_file(folder / "test.bin", label)
    count = 100 if label == "fine" else 20
    classes = _read_names(folder / f"{label}_label_names.txt", count,
                          [str(k) for k in range(count)])
    return Dataset(x_train, y_train, x_test, y_test, classes)


def _missing(folder: pathlib.Path, names):
    return [n for n in names if not (folder / n).is_file()]


def _ensure_files(root, folder, names, url, md5, download):
    """Make sure ``folder`` holds ``names``: download the archive if allowed, else explain."""
    missing = _missing(folder, names)
    if not missing:
        return
    if not download:
        raise FileNotFoundError(
            f"CIFAR data not found: searched {folder} and it lacks {', '.join(missing)}. "
            f"To get it, download the official archive {url} and extract it in {root} "
            f"(so that {folder} appears), or run without --no-download to fetch it "
            f"automatically, or point --data-dir / NPSE_DATA at a directory that has it."
        )
    download_and_extract(url, md5, root)
    missing = _missing(folder, names)
    if missing:
        raise FileNotFoundError(
            f"the archive {url} was extracted in {root}, but {folder} still lacks "
            f"{', '.join(missing)}"
        )


# ----------------------------------------------------------------------------- download

class DownloadError(OSError):
    """A download failed (network, HTTP error, unreachable URL)."""


def md5_of(path, chunk: int = 1 << 20) -> str:
    """Hex MD5 digest of a file, read in chunks so large archives need little memory."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def make_data_dir(dest: pathlib.Path) -> None:
    """Create the data directory ``dest``, or say in one line why it cannot be (a file is in
    the way, no permission) and where the choice of directory came from."""
    source = ("--data-dir" if _from_option(dest) else "NPSE_DATA" if os.environ.get("NPSE_DATA")
              else "the default, ~/.cache/npse")
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"the data directory {dest} (from {source}) is a file, not a "
                                 f"directory; choose another with --data-dir or NPSE_DATA")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the data directory {dest} (from {source}): "
                      f"{e.strerror or e}; choose another with --data-dir or NPSE_DATA") from None


def _from_option(dest: pathlib.Path) -> bool:
    env = os.environ.get("NPSE_DATA", "")
    default = pathlib.Path.home() / ".cache" / "npse"
    return dest != default and (not env or dest != pathlib.Path(env).expanduser())


def download_and_extract(url: str, md5: str, dest) -> pathlib.Path:
    """Fetch the tar.gz at ``url`` into ``dest``, check its MD5, extract it safely in ``dest``.

    An archive already in ``dest`` with the right MD5 is reused. Returns the archive's path.
    A wrong MD5 raises ValueError and removes the file; a failed fetch raises DownloadError.
    """
    dest = pathlib.Path(dest)
    make_data_dir(dest)
    archive = dest / (url.rstrip("/").rsplit("/", 1)[-1] or "download.tar.gz")
    local = md5_of(archive) if archive.is_file() else None
    if local != md5:
        try:
            _download(url, archive)
        except DownloadError as e:
            if local is None:
                raise
            # Say first what was found here: the failed download is only the second problem.
            raise DownloadError(
                f"{archive} is there but its MD5 is {local}, not {md5} (a damaged or different "
                f"file), and fetching a fresh copy failed: {e}") from e
    digest = md5_of(archive)
    if digest != md5:
        archive.unlink()
        raise ValueError(
            f"MD5 mismatch for {url}: expected {md5}, got {digest}; the file was removed. "
            f"Try again, or download it by hand and pass --data-dir"
        )
    safe_extract(archive, dest)
    return archive


def _download(url: str, target: pathlib.Path) -> None:
    """Stream ``url`` to a temporary file next to ``target``, then rename it into place.

    The rename happens only after a complete download, so an interrupted one never leaves a
    half-written file under the final name.
    """
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise DownloadError(
                    f"could not download {url}: {e}. Download it by hand, extract it in a "
                    f"directory and pass that directory with --data-dir (or NPSE_DATA)"
                ) from e
            with response:
                total = response.headers.get("Content-Length")
                bar = _progress(int(total) if total else None, target.name)
                try:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                        if bar is not None:
                            bar.update(len(block))
                except OSError as e:
                    raise DownloadError(
                        f"download of {url} broke off: {e}. Download it by hand and pass "
                        f"--data-dir"
                    ) from e
                finally:
                    if bar is not None:
                        bar.close()
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _progress(total, name):
    """A tqdm bar when stderr is a terminal (progress bars garble log files), else None."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr)


def check_tar_members(tar: tarfile.TarFile, dest) -> list:
    """Every member of ``tar``, after checking that none can write outside ``dest``.

    Refused: absolute names, names with a '..' component, symbolic and hard links, devices,
    FIFOs -- anything but plain files and directories. Raises ValueError naming the member.
    """
    root = os.path.realpath(dest)
    members = tar.getmembers()
    for m in members:
        name = m.name
        parts = name.replace("\\", "/").split("/")
        drive = len(name) > 1 and name[1] == ":"  # C:... on Windows
        if name.startswith(("/", "\\")) or os.path.isabs(name) or drive:
            raise ValueError(f"unsafe archive member {name!r}: absolute path")
        if ".." in parts:
            raise ValueError(f"unsafe archive member {name!r}: '..' in path")
        if not (m.isfile() or m.isdir()):
            raise ValueError(f"unsafe archive member {name!r}: not a plain file or directory "
                             f"(links and devices are refused)")
        target = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([root, target]) != root:
            raise ValueError(f"unsafe archive member {name!r}: would land outside {dest}")
    return members


def safe_extract(archive, dest) -> None:
    """Extract the tar(.gz) ``archive`` in ``dest`` after checking every member.

    The explicit check protects Pythons without extraction filters; where ``tarfile`` has the
    "data" filter (3.12, and 3.10.12 / 3.11.4 onwards) it is used as a second line of defence.
    All members are checked before anything is written, so a bad archive writes nothing.
    """
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        members = check_tar_members(tar, dest)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - old Python; members were checked above
            tar.extractall(dest, members=members)
