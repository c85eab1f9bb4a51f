"""The array-module shim: one place that decides whether arrays live in NumPy or in CuPy.

Every layer asks this module for its array module (``xp``) instead of importing NumPy, so the same
code runs on the CPU and on a GPU. Chapter: docs/A-backend.md.

The active backend is chosen by the environment variable ``NPSE_BACKEND`` (``numpy``, the default,
or ``cupy``) and can be switched at run time with :func:`set_backend`.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys

import numpy

BACKENDS = ("numpy", "cupy")

# name -> array module.  Tests may replace an entry by a stand-in that records its calls.
_modules: dict = {"numpy": numpy}
_active = "numpy"
_default_dtype = numpy.dtype(numpy.float32)


def _import_cupy():
    """Import CuPy and check that it sees a GPU; raise a clear error otherwise."""
    if "cupy" in _modules:
        return _modules["cupy"]
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "npse backend 'cupy' was asked for, but CuPy is not installed "
            "(pip install 'npse[gpu]' for CUDA 12 or 'npse[gpu-cuda13]' for CUDA 13)"
        ) from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"npse backend 'cupy' was asked for, but CuPy sees no GPU: {e}") from e
    if count < 1:  # pragma: no cover
        raise RuntimeError("npse backend 'cupy' was asked for, but CuPy sees no GPU (0 devices)")
    _modules["cupy"] = cupy
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
        return True
    except RuntimeError:
        return False


def set_backend(name: str) -> None:
    """Make ``name`` ('numpy' or 'cupy') the backend that new arrays and modules use."""
    global _active
    if name not in BACKENDS:
        raise ValueError(f"npse backend must be one of {BACKENDS}, got {name!r}")
    if name == "cupy":
        _import_cupy()
    _active = name


@contextlib.contextmanager
def using(name: str):
    """``with backend.using("cupy"): ...``: ``name`` is the active backend inside the block, and
    whatever was active before is again after it, also when the block raises."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def get_backend() -> str:
    """The name of the active backend: 'numpy' or 'cupy'."""
    return _active


def module(name: str | None = None):
    """The array module of backend ``name`` (default: the active one)."""
    name = _active if name is None else name
    if name not in BACKENDS:
        raise ValueError(f"npse backend must be one of {BACKENDS}, got {name!r}")
    return _import_cupy() if name == "cupy" else _modules["numpy"]


def backend_of(x) -> str:
    """'cupy' for a CuPy array, 'numpy' for anything else array-like."""
    return "cupy" if type(x).__module__.split(".")[0] == "cupy" else "numpy"


def get_array_module(*arrays):
    """The array module that holds ``arrays``; a ``TypeError`` if they mix NumPy and CuPy."""
    names = {backend_of(a) for a in arrays if a is not None}
    if len(names) > 1:
        raise TypeError(
            "npse: arrays from NumPy and CuPy were mixed in one operation; move them to one "
            "backend first (npse.backend.to_device / to_host, or Module.to('numpy'|'cupy'))"
        )
    return module(names.pop() if names else _active)


def to_host(x):
    """A NumPy copy (or the array itself) of ``x``, wherever it lives."""
    if backend_of(x) == "cupy":
        return x.get()
    return numpy.asarray(x)


def to_device(x, backend: str | None = None):
    """``x`` as an array of ``backend`` (default: the active one)."""
    target = _active if backend is None else backend
    if target == "cupy":
        return _import_cupy().asarray(x)
    return to_host(x)


def default_dtype():
    """The dtype new modules get unless they are given ``dtype=`` (float32)."""
    return _default_dtype


def set_default_dtype(dtype) -> None:
    """Change the default dtype (float32 or float64)."""
    global _default_dtype
    _default_dtype = check_float_dtype(dtype, "npse.backend.set_default_dtype")


def check_float_dtype(dtype, where: str):
    """``dtype`` as a NumPy dtype, which must be float32 or float64."""
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype}")
    return dtype


def rng(seed=None) -> numpy.random.Generator:
    """A seeded random generator on the host.

    Initial weights are drawn here and then moved to the backend, so one seed gives the same
    network on NumPy and on CuPy.
    """
    return numpy.random.default_rng(seed)


def reuse_freed_memory() -> bool:
    """Ask the C library to keep freed memory for reuse rather than hand it back to the system.

    A training step frees and re-allocates many arrays of the same large sizes. By default glibc
    returns such blocks to the operating system and gets fresh pages next time, and touching a
    fresh page costs a page fault (docs/B-speed.md measures what this setting saves). It changes the process's allocator, so only npse's command-line
    tools call it; a library user may call it too. Returns False where it does not apply
    (not Linux with glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4          # mallopt parameters from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


_env = os.environ.get("NPSE_BACKEND", "numpy").strip().lower() or "numpy"
if _env not in BACKENDS:
    raise ValueError(f"NPSE_BACKEND must be one of {BACKENDS}, got {_env!r}")
if _env == "cupy":
    set_backend("cupy")
