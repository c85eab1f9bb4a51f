"""Reusable scratch buffers.

Allocating a fresh 40-75 MB array costs more than filling it on this kind of machine (every new
page faults), and a training step would allocate the same big im2col matrices again and again.
A ``Workspace`` hands out the same array each time it is asked for the same (name, shape, dtype).
Only *internal* temporaries live here: an array returned to the caller must never be a
workspace buffer, since the next call would overwrite it.
"""
from __future__ import annotations

from ..backend import get_array_module


class Workspace:
    def __init__(self):
        self._arrays = {}

    def get(self, name, shape, dtype, like, zeros=False):
        """An array of ``shape``/``dtype`` on the backend of ``like``, reused across calls.

        With ``zeros=True`` the array is zero-filled when first made and never cleared again:
        callers use this for padded buffers whose border stays zero because only the interior is
        ever written.
        """
        xp = get_array_module(like)
        key = (name, tuple(shape), str(dtype), xp.__name__)
        a = self._arrays.get(key)
        if a is None:
            a = xp.zeros(shape, dtype=dtype) if zeros else xp.empty(shape, dtype=dtype)
            self._arrays[key] = a
        return a

    def clear(self):
        self._arrays.clear()
