"""Checkpoint files: named arrays plus JSON metadata in one ``.npz``, written atomically.

Layout of the file (an uncompressed NumPy ``.npz``, i.e. a zip of ``.npy`` files)::

    <key>       one entry per array, key as given (dots allowed: "model.layer1.0.conv1.weight")
    __meta__    uint8 array: the UTF-8 bytes of json.dumps(meta)

No pickles anywhere: object arrays are refused on save and ``np.load(allow_pickle=False)`` is used
on load, so loading a checkpoint cannot run code.

Reading a file, which may be damaged or crafted, never costs more memory than the file's size:
:class:`CheckpointReader` checks every entry's header against the bytes it holds before an array
is read, and :func:`npse.models.loading.model_from_checkpoint` checks a model's description and every weight's
shape, dtype and finiteness before and after reading (docs/11-training.md, "Checkpoints").

Atomicity: the file is written under a temporary name in the same directory, flushed and fsynced,
then renamed onto the final name with ``os.replace`` (atomic on POSIX and Windows). A crash at any
moment leaves the old checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy
from numpy.lib import format as npy_format

from . import backend

META_KEY = "__meta__"
# np.savez(file, *args, allow_pickle=..., **kwds) takes these names for itself.
_RESERVED = {META_KEY, "file", "allow_pickle"}


def _json_default(obj):
    """Let NumPy scalars and small arrays (a loss value, a seed) into the metadata."""
    if isinstance(obj, numpy.generic):
        return obj.item()
    if isinstance(obj, numpy.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _host_arrays(arrays: dict) -> dict:
    out = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"save_checkpoint: array keys must be non-empty strings, got {key!r}")
        if key in _RESERVED:
            raise ValueError(f"save_checkpoint: the key {key!r} is reserved; rename the array")
        host = numpy.asarray(backend.to_host(value))
        if host.dtype.hasobject:
            raise ValueError(
                f"save_checkpoint: '{key}' is an object array (dtype {host.dtype}); checkpoints "
                "hold numeric arrays only, never pickled objects"
            )
        out[key] = host
    return out


def save_checkpoint(path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` (NumPy or CuPy, any shapes) and JSON-able ``meta`` to ``path`` atomically.

    ``path`` is written exactly as given (no ``.npz`` is appended).
    """
    path = Path(path)
    host = _host_arrays(arrays)
    try:
        meta_bytes = json.dumps(meta, default=_json_default).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"save_checkpoint: meta must be JSON serialisable: {e}") from e
    host[META_KEY] = numpy.frombuffer(meta_bytes, dtype=numpy.uint8)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"save_checkpoint: directory {path.parent} does not exist")

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            # A file object, not a name: np.savez would append ".npz" to a name.
            numpy.savez(f, **host)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a stray temporary file behind.
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; not possible on every OS (Windows), so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- reading

#: The largest metadata entry read (JSON text). A long run's metrics take a few hundred bytes per
#: epoch, so this leaves room for thousands of epochs while a crafted file cannot make it huge.
MAX_META_BYTES = 8 * 2**20
#: The largest .npy header read (NumPy's own default limit).
_MAX_NPY_HEADER = 10000
#: Array element kinds a checkpoint may hold: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """What an entry's .npy header declares, read without reading the array itself."""

    shape: tuple
    dtype: numpy.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"shape {self.shape}, dtype {self.dtype}"


class CheckpointReader:
    """An open checkpoint whose arrays are read one at a time, each only after its header was
    checked, so that a damaged or crafted file cannot make the reader allocate more than the
    file holds.

    On opening, every entry must be stored uncompressed (as :func:`save_checkpoint` writes them)
    and its header (shape, dtype) must account for exactly the bytes the entry holds; the entries
    together may not hold more bytes than the file. So no array read is larger than the file.
    ``entries`` maps each key (without ``.npy``) to its :class:`Entry`; ``meta`` is the parsed
    metadata (a dict). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path):
        self.path = path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"npse checkpoint not found: {path}")
        if not path.is_file():
            raise IsADirectoryError(f"npse checkpoint path is not a file: {path}")
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            # Not a zip archive at all (random bytes, an empty file, a lone .npy): refused here so
            # that nothing ever falls back to reading the bytes as a pickle.
            raise self._bad(f"not an .npz archive: starts with {magic!r}")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
            if isinstance(e, PermissionError):
                raise
            raise self._bad(f"{type(e).__name__}: {e}") from None
        try:
            self.entries = self._read_headers(path.stat().st_size)
            if META_KEY not in self.entries:
                raise CheckpointError(
                    f"{path}: no '{META_KEY}' entry, so not an npse checkpoint (an .npz written "
                    "by something else?)")
            self.meta = self._read_meta()
            del self.entries[META_KEY]
        except BaseException:
            self._zip.close()
            raise

    def _bad(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: truncated or not an npse checkpoint ({why})")

    def _read_headers(self, file_size: int) -> dict:
        infos = self._zip.infolist()
        declared = sum(i.file_size for i in infos)
        if declared > file_size:
            raise self._bad(f"its entries claim {declared} bytes, more than the file's "
                            f"{file_size}")
        entries = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or name[:-4] in entries:
                raise self._bad(f"unexpected or repeated entry {name!r}")
            if info.compress_type != zipfile.ZIP_STORED:
                raise self._bad(f"entry {name!r} is compressed; npse writes checkpoints "
                                "uncompressed")
            key = name[:-4]
            try:
                with self._zip.open(info) as f:
                    version = npy_format.read_magic(f)
                    read_header = {(1, 0): npy_format.read_array_header_1_0,
                                   (2, 0): npy_format.read_array_header_2_0}.get(version)
                    if read_header is None:
                        raise ValueError(f".npy format version {version} is not supported")
                    shape, _, dtype = read_header(f, max_header_size=_MAX_NPY_HEADER)
                    header_bytes = f.tell()
            except (ValueError, OSError, EOFError, SyntaxError, TypeError, zipfile.BadZipFile,
                    zlib.error) as e:
                if isinstance(e, PermissionError):
                    raise
                raise self._bad(f"entry '{key}' has no valid .npy header: "
                                f"{' '.join(str(e).split())[:200]}") from None
            if dtype.names is not None or dtype.subdtype is not None or \
                    dtype.kind not in _NUMERIC_KINDS:
                raise self._bad(f"entry '{key}' has dtype {dtype}; checkpoints hold plain "
                                "numeric arrays only")
            entry = Entry(tuple(int(n) for n in shape), dtype)
            if header_bytes + entry.nbytes != info.file_size:
                raise self._bad(f"entry '{key}' declares {entry.describe()} "
                                f"({entry.nbytes} bytes) but holds {info.file_size - header_bytes}")
            entries[key] = entry
        return entries

    def _read_meta(self) -> dict:
        entry = self.entries[META_KEY]
        if entry.dtype != numpy.uint8 or len(entry.shape) != 1:
            raise CheckpointError(f"{self.path}: the '{META_KEY}' entry is corrupt "
                                  f"({entry.describe()}, expected 1-D uint8)")
        if entry.nbytes > MAX_META_BYTES:
            raise CheckpointError(f"{self.path}: the '{META_KEY}' entry holds {entry.nbytes} "
                                  f"bytes, more than the {MAX_META_BYTES} npse reads")
        raw = self.read(META_KEY)
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise CheckpointError(f"{self.path}: the '{META_KEY}' entry is corrupt "
                                  f"({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{self.path}: the '{META_KEY}' entry holds a JSON "
                                  f"{type(meta).__name__}, expected an object")
        return meta

    def read(self, key: str) -> numpy.ndarray:
        """The array stored under ``key`` (its size was checked when the file was opened)."""
        try:
            with self._zip.open(key + ".npy") as f:
                return npy_format.read_array(f, allow_pickle=False,
                                             max_header_size=_MAX_NPY_HEADER)
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            if isinstance(e, PermissionError):
                raise
            raise self._bad(f"entry '{key}': {type(e).__name__}: {e}") from None

    def close(self) -> None:
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_checkpoint(path) -> tuple[dict, dict]:
    """Read a file written by :func:`save_checkpoint`: ``(arrays, meta)``, arrays as NumPy.

    Every entry is read (through :class:`CheckpointReader`, so at most the file's size in all).
    A damaged or foreign file is a :class:`CheckpointError` (a ValueError) naming the file.
    """
    with CheckpointReader(path) as reader:
        arrays = {key: reader.read(key) for key in reader.entries}
        return arrays, reader.meta


def split_prefixed(arrays: dict, prefix: str) -> dict:
    """The entries whose key starts with ``prefix + "."``, with that prefix removed.

    ``split_prefixed({"model.fc.weight": w, "optim.step": s}, "model") == {"fc.weight": w}``
    """
    if not prefix or prefix.endswith("."):
        raise ValueError(f"split_prefixed: prefix must be non-empty, without a trailing '.', got {prefix!r}")
    head = prefix + "."
    return {k[len(head):]: v for k, v in arrays.items() if k.startswith(head)}


def add_prefix(arrays: dict, prefix: str) -> dict:
    """The inverse of :func:`split_prefixed`: every key becomes ``prefix + "." + key``."""
    if not prefix or prefix.endswith("."):
        raise ValueError(f"add_prefix: prefix must be non-empty, without a trailing '.', got {prefix!r}")
    return {f"{prefix}.{k}": v for k, v in arrays.items()}


# ----------------------------------------------------------------------------- a model's weights

def _first_few(keys: list) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def check_entries(reader: CheckpointReader, expected: dict, head: str, optional=False) -> None:
    """Compare the entries of ``reader`` whose key starts with ``head`` with ``expected``
    ({key: Entry}): unknown, misshapen or (unless ``optional``) missing ones are refused."""
    given = {k: e for k, e in reader.entries.items() if k.startswith(head)}
    unknown = sorted(set(given) - set(expected))
    missing = [] if optional else sorted(set(expected) - set(given))
    if unknown or missing:
        parts = ([f"unexpected entries {_first_few(unknown)}"] if unknown else []) + \
                ([f"missing entries {_first_few(missing)}"] if missing else [])
        raise CheckpointError(f"{reader.path}: the arrays do not fit the model of its "
                              f"model_config: {'; '.join(parts)}")
    for key, entry in given.items():
        want = expected[key]
        if entry.shape != want.shape or entry.dtype != want.dtype:
            raise CheckpointError(f"{reader.path}: the arrays do not fit the model of its "
                                  f"model_config: '{key}' has {entry.describe()}, expected "
                                  f"{want.describe()}")
