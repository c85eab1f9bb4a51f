"""Reusable scratch buffers.

Allocating a fresh array of tens of megabytes can cost more than filling it (every new page
faults; docs/B-speed.md measures it), and a training step would allocate the same big patch
matrices again and again.
A ``Workspace`` hands out the same array each time it is asked for the same (name, shape, dtype).
Only *internal* temporaries live here: an array returned to the caller must never be a
workspace buffer, since the next call would overwrite it.

Memory stays bounded: a workspace keeps at most ``shapes_per_name`` arrays under one name (the
ones used most recently), so a last, smaller batch or an evaluation at another batch size
replaces buffers instead of piling up new ones.
"""
from __future__ import annotations

import weakref

from ..backend import get_array_module

_every_workspace = weakref.WeakSet()


def clear_all() -> None:
    """Empty every workspace: a measurement of a step's memory (npse.train.estimate_memory) must
    see the step allocate its buffers, not find them kept from an earlier step."""
    for workspace in list(_every_workspace):
        workspace.clear()


class Workspace:
    def __init__(self, shapes_per_name: int = 1):
        self.shapes_per_name = shapes_per_name
        self._arrays = {}
        _every_workspace.add(self)

    def get(self, name, shape, dtype, like, zeros=False):
        """An array of ``shape``/``dtype`` on the backend of ``like``, reused across calls.

        With ``zeros=True`` the array is zero-filled when first made and never cleared again:
        callers use this for padded buffers whose border stays zero because only the interior is
        ever written.
        """
        xp = get_array_module(like)
        shape = tuple(shape)
        kept = self._arrays.setdefault((name, str(dtype), xp.__name__), [])
        for i, a in enumerate(kept):
            if a.shape == shape:
                kept.append(kept.pop(i))         # most recently used last
                return a
        a = xp.zeros(shape, dtype=dtype) if zeros else xp.empty(shape, dtype=dtype)
        kept.append(a)
        if len(kept) > self.shapes_per_name:
            kept.pop(0)
        return a

    def nbytes(self) -> int:
        return sum(a.nbytes for kept in self._arrays.values() for a in kept)

    def clear(self):
        self._arrays.clear()
