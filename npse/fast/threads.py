"""Threads: one training step's work shared across the cores, in slices of the batch.

Chapter: docs/B-speed.md (section "Threads").

NumPy releases Python's global lock inside its loops and its BLAS calls, so Python threads that
each run NumPy on their own slice of an array run at the same time. The fast formulations of
npse.fast use this: a convolution copies the patches of images 0..63 and multiplies them by the
weights in one thread while another does images 64..127; BatchNorm sums its channels over each
slice of pixel rows in its own thread and adds the partial sums; ReLU and the SE block's scale
work slice by slice.

Two rules keep the numbers trustworthy:

* **Fixed slices, fixed order.** :func:`spans` cuts ``range(n)`` into the same contiguous slices
  every time for the same ``n`` and thread count, and :func:`combine` adds partial results in
  slice order, never in the order the threads finish. A run with the same seed and thread count
  therefore gives the same numbers bit for bit (``npse train --resume`` stays exact); across
  thread counts, sums are added in other groupings and agree to rounding.
* **No more threads than cores.** With ``n`` threads BLAS runs single-threaded inside each slice
  (:func:`set_num_threads` sets it): one multi-threaded BLAS call per slice would put n x n
  threads on n cores. For one product alone, OpenBLAS's own threads do as well as slices; but
  slices also share out the copies, BatchNorm and the element-wise work, which BLAS never
  touches (docs/B-speed.md measures each).

The setting is process-wide, like ``torch.set_num_threads``: ``npse train``, ``npse evaluate`` and
``npse bench`` take ``--threads N`` (default: the cores this process may use). A library user
starts with one thread and BLAS as the environment set it. On CuPy nothing is sliced: the GPU
runs each operation whole.
"""
from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading

_threads = 1
_pool: "Pool | None" = None
_lock = threading.Lock()


class Pool:
    """``n`` worker threads, each waiting on its own queue for a (function, slice, reply queue).

    A lighter thing than concurrent.futures' executor: a training step hands out about 250 sets
    of slices, and a round trip through these C-implemented queues measured about 25 us, against
    about 75 us with an executor and its futures.
    """

    def __init__(self, n):
        self.inboxes = [queue.SimpleQueue() for _ in range(n)]
        self.workers = [threading.Thread(target=self._work, args=(inbox,), daemon=True,
                                         name=f"npse-{i + 1}")
                        for i, inbox in enumerate(self.inboxes)]
        for t in self.workers:
            t.start()

    @staticmethod
    def _work(inbox):
        _local.in_pool = True
        while True:
            task = inbox.get()
            if task is None:
                return
            fn, s, reply = task
            try:
                reply.put((s.start, fn(s), None))
            except BaseException as e:          # handed back to the caller, raised there
                reply.put((s.start, None, e))

    def run(self, fn, parts):
        """``[fn(s) for s in parts]``: ``parts[0]`` here, the others in the first workers."""
        reply = queue.SimpleQueue()
        for inbox, s in zip(self.inboxes, parts[1:]):
            inbox.put((fn, s, reply))
        try:
            first = fn(parts[0])
        finally:       # every slice has finished before this returns: none still writes a buffer
            others = sorted((reply.get() for _ in parts[1:]), key=lambda r: r[0])
        for _, _, error in others:
            if error is not None:
                raise error
        return [first] + [result for _, result, _ in others]

    def close(self):
        for inbox in self.inboxes:
            inbox.put(None)
        for t in self.workers:
            t.join()


_local = threading.local()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def get_num_threads() -> int:
    """The number of threads the fast formulations share their work across."""
    return _threads


def set_num_threads(n: int) -> None:
    """Share the fast formulations' work across ``n`` threads (``n`` >= 1), BLAS single-threaded
    inside each. ``n`` = 1 runs everything in the calling thread on one core."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected an integer >= 1, got {n!r}")
    with _lock:
        set_blas_threads(1)
        _set_pool(n)


def _set_pool(n):
    """``n`` threads from now on: the pool only grows (its workers are kept when the count goes
    down and up again: a fresh thread's first BLAS calls and first allocations are slow, which
    made a bench that switches between counts in turns measure two threads too slow)."""
    global _threads, _pool
    if n > 1 and (_pool is None or len(_pool.inboxes) < n - 1):
        old, _pool = _pool, Pool(n - 1)
        if old is not None:
            old.close()
    _threads = n


@contextlib.contextmanager
def using(n: int):
    """``with using(n):`` :func:`set_num_threads` ``(n)`` inside, and afterwards the thread count
    and BLAS's threads as they were (what a command run from Python, such as
    ``npse.cli.main(["evaluate", ...])``, leaves behind: nothing)."""
    before = _threads
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(limits=None, user_api="blas")     # remembers; changes nothing
    except ImportError:
        blas = None
    try:
        set_num_threads(n)
        yield n
    finally:
        with _lock:
            _set_pool(before)
        if blas is not None:
            blas.restore_original_limits()


def set_blas_threads(n: int) -> bool:
    """Set the threads of every BLAS library NumPy loaded to ``n``; False where none could be
    set (threadpoolctl absent, or a BLAS it does not know)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return False
    blas = ThreadpoolController().select(user_api="blas")
    blas.limit(limits=n)
    return len(blas.lib_controllers) > 0


def spans(n: int, parts: int | None = None) -> list[slice]:
    """``range(n)`` cut into ``min(parts, n)`` contiguous slices (``parts``: the thread count),
    their lengths differing by at most one, the longer first. Always the same for the same
    arguments: what makes a threaded run repeatable."""
    return list(_spans(n, _threads if parts is None else parts))


@functools.lru_cache(maxsize=1024)
def _spans(n, parts):
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (i < extra))
    return tuple(slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]))


def in_slices(fn, n: int, xp=None) -> list:
    """``[fn(s) for s in spans(n)]``, the slices run at the same time: the first in the calling
    thread, the others in the pool. Results come in slice order. On CuPy (``xp``), or with one
    thread, ``fn(slice(0, n))`` alone; inside a slice (a call from a worker), too. Every slice has
    finished before this returns or raises."""
    pool = _pool
    if (_threads == 1 or pool is None or n < 2 or (xp is not None and xp.__name__ != "numpy")
            or getattr(_local, "in_pool", False)):
        return [fn(slice(0, n))]
    return pool.run(fn, _spans(n, _threads))


def blocks(s: slice, size):
    """The slice ``s`` in consecutive pieces of ``size`` (None: ``s`` whole)."""
    if size is None:
        return [s]
    return [slice(b, min(b + size, s.stop)) for b in range(s.start, s.stop, size)]


def combine(partials):
    """The sum of ``partials`` added left to right: the fixed order of a threaded reduction."""
    total = partials[0]
    for p in partials[1:]:
        total = total + p
    return total
