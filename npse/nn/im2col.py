"""im2col and col2im: turning a convolution into one matrix product.

Chapter: docs/03-conv2d.md.

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
from .layout import from_nhwc, nhwc


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


def _padded_input(x, padding, workspace, channels_last=False):
    """x (N, C, H, W) zero-padded by ``padding``: a fresh array, or a workspace buffer whose border
    stays zero; stored channels last (:mod:`~npse.nn.layout`) if asked."""
    ph, pw = padding
    if not (ph or pw):
        return x
    n, c, h, w = x.shape
    shape = (n, h + 2 * ph, w + 2 * pw, c) if channels_last else (n, c, h + 2 * ph, w + 2 * pw)
    if workspace is None:
        x_padded = get_array_module(x).zeros(shape, dtype=x.dtype)
    else:
        # The border of this buffer is zero from its creation and never written. The key names the
        # padding: the same padded shape with another padding would have old values where this
        # call expects its zero border.
        name = f"im2col.padded{'_cl' if channels_last else ''}{ph},{pw}"
        x_padded = workspace.get(name, shape, x.dtype, x, zeros=True)
    if channels_last:
        x_padded = from_nhwc(x_padded)
    x_padded[:, :, ph:ph + h, pw:pw + w] = x
    return x_padded


def _geometry(who, x_shape, kernel, stride, padding):
    """Checked (kernel, stride, padding, (OH, OW)) pairs for an (N, C, H, W) input, errors naming ``who``."""
    kernel, stride = pair(kernel, "kernel", who), pair(stride, "stride", who)
    padding = pair(padding, "padding", who)
    return kernel, stride, padding, check_window(who, x_shape, kernel, stride, padding)


def _windows_of(x, kernel, stride, padding, workspace):
    """The (N, C, KH, KW, OH, OW) windows of ``x`` zero-padded: the view both im2col layouts copy."""
    kernel, stride, padding, out_size = _geometry("im2col", x.shape, kernel, stride, padding)
    return windows(_padded_input(x, padding, workspace), kernel, stride, out_size)


def _kept_or_new(x, shape, workspace, name):
    """A fresh array for ``x``'s backend and dtype, or the workspace's buffer ``name``."""
    xp = get_array_module(x)
    return xp.empty(shape, dtype=x.dtype) if workspace is None else workspace.get(name, shape, x.dtype, x)


def im2col(x, kernel, stride=(1, 1), padding=(0, 0), workspace=None):
    """Patches of ``x`` (N, C, H, W) as columns: returns (C*KH*KW, N*OH*OW).

    Row index is (c, ky, kx) in C order, matching ``weight.reshape(O, C*KH*KW)``; column index is
    (n, oy, ox).  With a :class:`~npse.nn.workspace.Workspace` the padded input and the columns
    are written into buffers kept from the last call instead of fresh arrays (same values).
    """
    win = _windows_of(x, kernel, stride, padding, workspace)
    n, c, kh, kw, oh, ow = win.shape
    cols = _kept_or_new(x, (c, kh, kw, n, oh, ow), workspace, "im2col.cols")
    cols[...] = win.transpose(1, 2, 3, 0, 4, 5)
    return cols.reshape(c * kh * kw, n * oh * ow)


def im2col_per_image(x, kernel, stride=(1, 1), padding=(0, 0), workspace=None):
    """Patches of ``x`` (N, C, H, W) as one matrix per image: returns (N, C*KH*KW, OH*OW).

    The same numbers as :func:`im2col`, grouped by image: ``im2col_per_image(x)[n]`` equals
    ``im2col(x)[:, n*OH*OW:(n+1)*OH*OW]``. ``W2 @ cols`` then gives (N, O, OH*OW), which is
    already the output's (N, O, OH, OW) layout, and the copy reads the windows in their own order.
    Chapter 12 says when this layout is the faster one.
    """
    win = _windows_of(x, kernel, stride, padding, workspace)
    n, c, kh, kw, oh, ow = win.shape
    cols = _kept_or_new(x, win.shape, workspace, "im2col.cols_per_image")
    cols[...] = win
    return cols.reshape(n, c * kh * kw, oh * ow)


def im2col_channels_last(x_nhwc, kernel, stride=(1, 1), padding=(0, 0), workspace=None):
    """Patches of a channels-last input as *rows*: x_nhwc (N, H, W, C) -> (N*OH*OW, KH*KW*C).

    Row index is the output pixel (n, oy, ox); column index is (ky, kx, c) in C order, matching
    ``weight.transpose(0, 2, 3, 1).reshape(O, KH*KW*C)``. The product with that matrix's transpose
    is the output as (N*OH*OW, O): the next layer's channels-last input, with no transpose. The
    copy reads KW*C neighbouring numbers at a time (a whole row of the window), where the (N, C,
    H, W) layout reads runs of OW. Chapter 12 measures the difference.
    """
    n, h, w, c = x_nhwc.shape
    kernel, stride, padding, (oh, ow) = _geometry("im2col", (n, c, h, w), kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(x_nhwc)
    x_padded = nhwc(_padded_input(from_nhwc(x_nhwc), padding, workspace, channels_last=True))
    s_n, s_h, s_w, s_c = x_padded.strides
    win = xp.lib.stride_tricks.as_strided(     # win[n, oy, ox, ky, kx, c] = x_padded[n, oy*SH+ky, ox*SW+kx, c]
        x_padded, shape=(n, oh, ow, kh, kw, c),
        strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c),
    )
    cols = _kept_or_new(x_nhwc, win.shape, workspace, "im2col.cols_channels_last")
    cols[...] = win
    return cols.reshape(n * oh * ow, kh * kw * c)


def col2im_channels_last(rows, x_shape, kernel, stride=(1, 1), padding=(0, 0)):
    """The adjoint of :func:`im2col_channels_last`: (N*OH*OW, KH*KW*C) -> (N, H, W, C).

    ``x_shape`` is the input's (N, C, H, W). As :func:`col2im`: one strided ``+=`` per (ky, kx).
    """
    xp = get_array_module(rows)
    n, c, h, w = x_shape
    kernel, stride, padding, (oh, ow) = _geometry("col2im", x_shape, kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    rows = rows.reshape(n, oh, ow, kh, kw, c)
    dx_padded = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=rows.dtype)
    for ky in range(kh):
        for kx in range(kw):
            dx_padded[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] += rows[:, :, :, ky, kx]
    if ph == 0 and pw == 0:
        return dx_padded
    return xp.ascontiguousarray(dx_padded[:, ph:ph + h, pw:pw + w])


def col2im(cols, x_shape, kernel, stride=(1, 1), padding=(0, 0)):
    """The adjoint of :func:`im2col`: (C*KH*KW, N*OH*OW) columns -> (N, C, H, W).

    Each column entry is added back onto the pixel it came from. There is one strided slice per
    kernel offset (ky, kx); inside one offset every output position hits a different pixel, so a
    plain ``+=`` is exact — no scatter-add (``np.add.at``) and no loop over pixels or images.
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    kernel, stride, padding, (oh, ow) = _geometry("col2im", x_shape, kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    cols = cols.reshape(c, kh, kw, n, oh, ow)
    dx_padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for ky in range(kh):
        for kx in range(kw):
            dx_padded[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] += cols[:, ky, kx].transpose(1, 0, 2, 3)
    if ph == 0 and pw == 0:
        return dx_padded
    return xp.ascontiguousarray(dx_padded[:, :, ph:ph + h, pw:pw + w])
