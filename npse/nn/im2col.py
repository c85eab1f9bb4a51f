"""im2col and col2im: turning a convolution into one matrix product.

Chapter: docs/06-conv2d.md.

For an input ``x`` of shape (N, C, H, W), a kernel of KH x KW, stride S and zero padding P, every
output position (n, oy, ox) looks at a C x KH x KW patch of the padded input. ``im2col`` lays each
patch out as one *column* of a matrix of shape (C*KH*KW, N*OH*OW); the convolution is then the single
matrix product ``W.reshape(O, C*KH*KW) @ cols``.

``col2im`` goes the other way for gradients: it adds every column entry back onto the input pixel it
was copied from. It is the *adjoint* of im2col, not its inverse (a pixel that sits in several
patches receives the sum of their entries): ``<im2col(x), c> == <x, col2im(c)>`` for all x, c.
"""
from __future__ import annotations

from ..backend import get_array_module


def pair(v, name: str = "value", layer: str = "layer"):
    """``3 -> (3, 3)``; ``(3, 2)`` stays; anything else is a clear error."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{layer}: {name} must be an int or a pair, got {v!r}")
        a, b = v
    else:
        a = b = v
    for t in (a, b):
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {v!r}")
    return int(a), int(b)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((size + 2*padding - kernel) / stride) + 1, PyTorch's rule (no ceil mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def check_window(layer, x_shape, kernel, stride, padding):
    """Raise if the (padded) input is smaller than the kernel; return (OH, OW)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h, w = x_shape[2], x_shape[3]
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ValueError(
            f"{layer}: kernel {kh}x{kw} is larger than the padded input "
            f"{h + 2 * ph}x{w + 2 * pw} (input {h}x{w}, padding {ph},{pw})"
        )
    return conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)


def pad2d(x, padding, value=0.0):
    """Pad the last two axes of ``x`` (N, C, H, W) by ``padding`` = (PH, PW) with ``value``."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def windows(x_padded, kernel, stride, out_size):
    """A read-only strided *view* of shape (N, C, KH, KW, OH, OW) into a padded input.

    ``windows(xp)[n, c, ky, kx, oy, ox] == xp[n, c, oy*SH + ky, ox*SW + kx]``: no data is copied.
    """
    xp = get_array_module(x_padded)
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    n, c = x_padded.shape[:2]
    s_n, s_c, s_h, s_w = x_padded.strides
    return xp.lib.stride_tricks.as_strided(
        x_padded, shape=(n, c, kh, kw, oh, ow),
        strides=(s_n, s_c, s_h, s_w, s_h * sh, s_w * sw),
    )


def geometry(who, x_shape, kernel, stride, padding):
    """Checked (kernel, stride, padding, (OH, OW)) pairs for an (N, C, H, W) input, errors naming ``who``."""
    kernel, stride = pair(kernel, "kernel", who), pair(stride, "stride", who)
    padding = pair(padding, "padding", who)
    return kernel, stride, padding, check_window(who, x_shape, kernel, stride, padding)


def im2col(x, kernel, stride=(1, 1), padding=(0, 0)):
    """Patches of ``x`` (N, C, H, W) as columns: returns (C*KH*KW, N*OH*OW).

    Row index is (c, ky, kx) in C order, matching ``weight.reshape(O, C*KH*KW)``; column index is
    (n, oy, ox).  The windows are a view of the padded input; one copy lays them out.
    """
    kernel, stride, padding, out_size = geometry("im2col", x.shape, kernel, stride, padding)
    win = windows(pad2d(x, padding), kernel, stride, out_size)      # (N, C, KH, KW, OH, OW)
    n, c, kh, kw, oh, ow = win.shape
    cols = win.transpose(1, 2, 3, 0, 4, 5)                           # (C, KH, KW, N, OH, OW)
    return cols.reshape(c * kh * kw, n * oh * ow)                    # reshape copies here


def col2im(cols, x_shape, kernel, stride=(1, 1), padding=(0, 0)):
    """The adjoint of :func:`im2col`: (C*KH*KW, N*OH*OW) columns -> (N, C, H, W).

    Each column entry is added back onto the pixel it came from. There is one strided slice per
    kernel offset (ky, kx); inside one offset every output position hits a different pixel, so a
    plain ``+=`` is exact — no scatter-add (``np.add.at``) and no loop over pixels or images.
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    kernel, stride, padding, (oh, ow) = geometry("col2im", x_shape, kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    cols = cols.reshape(c, kh, kw, n, oh, ow)
    dx_padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for ky in range(kh):
        for kx in range(kw):
            dx_padded[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] += cols[:, ky, kx].transpose(1, 0, 2, 3)
    if ph == 0 and pw == 0:
        return dx_padded
    return xp.ascontiguousarray(dx_padded[:, :, ph:ph + h, pw:pw + w])
