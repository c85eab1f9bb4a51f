"""Checkpoint files: named arrays plus JSON metadata in one ``.npz``, written atomically.

Layout of the file (an uncompressed NumPy ``.npz``, i.e. a zip of ``.npy`` files)::

    <key>       one entry per array, key as given (dots allowed: "model.layer1.0.conv1.weight")
    __meta__    uint8 array: the UTF-8 bytes of json.dumps(meta)

No pickles anywhere: object arrays are refused on save and ``np.load(allow_pickle=False)`` is used
on load, so loading a checkpoint cannot run code.

Atomicity: the file is written under a temporary name in the same directory, flushed and fsynced,
then renamed onto the final name with ``os.replace`` (atomic on POSIX and Windows). A crash at any
moment leaves the old checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy

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


def load_checkpoint(path) -> tuple[dict, dict]:
    """Read a file written by :func:`save_checkpoint`: ``(arrays, meta)``, arrays as NumPy."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"npse checkpoint not found: {path}")
    if not path.is_file():
        raise IsADirectoryError(f"npse checkpoint path is not a file: {path}")
    bad = f"{path}: truncated or not an npse checkpoint"
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        # Not a zip archive at all (random bytes, an empty file, a lone .npy); checked here so that
        # np.load never falls back to its "this is a pickle" interpretation of the bytes.
        raise ValueError(f"{bad} (not an .npz archive: starts with {magic!r})")
    try:
        with numpy.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise _NoMeta()
            # Read everything now: a damaged member fails here, not later in the caller.
            arrays = {k: z[k] for k in z.files if k != META_KEY}
            meta_raw = z[META_KEY]
    except _NoMeta:
        raise ValueError(
            f"{path}: no '{META_KEY}' entry, so not an npse checkpoint (an .npz written by "
            "something else?)"
        ) from None
    except PermissionError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{bad} ({type(e).__name__}: {e})") from e
    try:
        if meta_raw.dtype != numpy.uint8 or meta_raw.ndim != 1:
            raise ValueError(f"dtype {meta_raw.dtype}, shape {meta_raw.shape}")
        meta = json.loads(meta_raw.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: the '{META_KEY}' entry is corrupt ({e})") from e
    return arrays, meta


class _NoMeta(Exception):
    """Internal: the archive is readable but has no metadata entry."""


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
