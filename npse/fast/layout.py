"""Memory format: where the numbers of an (N, C, H, W) array lie in memory.

Chapter: docs/B-speed.md (section "Channels last").

Every layer takes and returns arrays indexed x[n, c, i, j], PyTorch's convention. How those numbers
are laid out is a separate choice, the one PyTorch calls ``memory_format``:

- *contiguous* (NCHW): ``x[n, c]`` is one contiguous H x W image per channel;
- *channels last* (NHWC): the C values of one pixel ``x[n, :, i, j]`` lie side by side, so
  ``x.transpose(0, 2, 3, 1)`` is a contiguous (N, H, W, C) array.

Both are the same array to the reader (same shape, same ``x[n, c, i, j]``); NumPy's element-wise
operations keep the layout of their inputs. Channels last makes a convolution's im2col matrix a
row per output pixel, copied in runs of KW*C contiguous numbers, and its product with the weights
gives the next layer's input directly, with no transpose (docs/B-speed.md measures it).
"""
from __future__ import annotations

from ..backend import get_array_module
from .registry import GEMM, charge

charge(__name__, GEMM)     # the copies between the formats, beside the products they feed


def is_channels_last(x) -> bool:
    """Whether ``x`` (N, C, H, W) is stored channels last and not also contiguous.

    An array where both hold (C == 1, or H == W == 1) counts as contiguous: either code path
    reads it the same way.
    """
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous


def to_channels_last(x):
    """The same (N, C, H, W) values stored channels last (a copy, unless they already are)."""
    return nhwc(x).transpose(0, 3, 1, 2)


def nhwc(x):
    """x (N, C, H, W) as a contiguous (N, H, W, C) array: a view when x is channels last."""
    return get_array_module(x).ascontiguousarray(x.transpose(0, 2, 3, 1))


def from_nhwc(a):
    """A contiguous (N, H, W, C) array as the (N, C, H, W) array it stores (a view)."""
    return a.transpose(0, 3, 1, 2)
