"""The patch matrices of the fast convolutions (npse/fast/conv2d.py), written into kept buffers.

The reference, :func:`npse.nn.im2col.im2col`, makes one (C*KH*KW, N*OH*OW) matrix in a fresh
array. Here the same numbers come in three more arrangements, each the one a faster product
wants (docs/B-speed.md):

* :func:`columns`: im2col's matrix, into a :class:`~npse.fast.workspace.Workspace` buffer;
* :func:`columns_per_image`: (N, C*KH*KW, OH*OW), one matrix per image;
* :func:`patch_rows`: (N*OH*OW, KH*KW*C), one *row* per output pixel of a channels-last input,
  with :func:`patch_rows_adjoint` (its col2im);
* :func:`kernel_row_patches`: im2col with a 1 x KW kernel, for the kernel-row products.

With ``workspace=None`` every function makes fresh arrays (same values).
"""
from __future__ import annotations

from ..backend import get_array_module
from ..nn.im2col import geometry, windows
from .layout import from_nhwc
from .registry import COL2IM, IM2COL, charge

charge(__name__, IM2COL)
charge(__name__, COL2IM, ("patch_rows_adjoint", "add_patch_rows"))


def buffer(workspace, name, shape, like, zeros=False):
    """A fresh array for ``like``'s backend and dtype, or the workspace's kept buffer ``name``."""
    if workspace is None:
        xp = get_array_module(like)
        return (xp.zeros if zeros else xp.empty)(shape, dtype=like.dtype)
    return workspace.get(name, shape, like.dtype, like, zeros=zeros)


def padded(x, padding, workspace, channels_last=False):
    """x (N, C, H, W) zero-padded by ``padding``, stored channels last if asked.

    In a workspace the border of the buffer is zero from its creation and never written; the
    buffer's name holds the padding, since the same padded shape with another padding would have
    old values where this call expects its zero border.
    """
    ph, pw = padding
    if not (ph or pw):
        return x
    n, c, h, w = x.shape
    shape = (n, h + 2 * ph, w + 2 * pw, c) if channels_last else (n, c, h + 2 * ph, w + 2 * pw)
    name = f"patches.padded{'_cl' if channels_last else ''}{ph},{pw}"
    x_padded = buffer(workspace, name, shape, x, zeros=True)
    if channels_last:
        x_padded = from_nhwc(x_padded)
    x_padded[:, :, ph:ph + h, pw:pw + w] = x
    return x_padded


def _windows_of(x, kernel, stride, padding, workspace):
    """The (N, C, KH, KW, OH, OW) windows of ``x`` zero-padded (a view)."""
    kernel, stride, padding, out_size = geometry("im2col", x.shape, kernel, stride, padding)
    return windows(padded(x, padding, workspace), kernel, stride, out_size)


def columns(x, kernel, stride=(1, 1), padding=(0, 0), workspace=None):
    """:func:`npse.nn.im2col.im2col`'s (C*KH*KW, N*OH*OW) matrix, written into a kept buffer."""
    win = _windows_of(x, kernel, stride, padding, workspace)
    n, c, kh, kw, oh, ow = win.shape
    cols = buffer(workspace, "patches.columns", (c, kh, kw, n, oh, ow), x)
    cols[...] = win.transpose(1, 2, 3, 0, 4, 5)
    return cols.reshape(c * kh * kw, n * oh * ow)


def columns_per_image(x, kernel, stride=(1, 1), padding=(0, 0), workspace=None):
    """Patches of ``x`` (N, C, H, W) as one matrix per image: (N, C*KH*KW, OH*OW).

    ``columns_per_image(x)[n]`` equals ``im2col(x)[:, n*OH*OW:(n+1)*OH*OW]``: ``W2 @ cols`` is then
    (N, O, OH*OW), already the output's (N, O, OH, OW) layout, and the copy reads the windows in
    their own order.
    """
    win = _windows_of(x, kernel, stride, padding, workspace)
    n, c, kh, kw, oh, ow = win.shape
    cols = buffer(workspace, "patches.columns_per_image", win.shape, x)
    cols[...] = win
    return cols.reshape(n, c * kh * kw, oh * ow)


def patch_rows(x_nhwc, kernel, stride=(1, 1), padding=(0, 0), workspace=None):
    """Patches of a channels-last input as *rows*: x_nhwc (N, H, W, C) -> (N*OH*OW, KH*KW*C).

    Row index is the output pixel (n, oy, ox); column index is (ky, kx, c) in C order, matching
    ``weight.transpose(0, 2, 3, 1).reshape(O, KH*KW*C)``. The product with that matrix's transpose
    is the output as (N*OH*OW, O), the next layer's channels-last input, with no transpose; the
    copy reads KW*C neighbouring numbers at a time.
    """
    rows, fill = patch_rows_in_slices(x_nhwc, kernel, stride, padding, workspace)
    fill(slice(0, x_nhwc.shape[0]))
    return rows.reshape(-1, rows.shape[-1])


def patch_rows_in_slices(x_nhwc, kernel, stride=(1, 1), padding=(0, 0), workspace=None):
    """:func:`patch_rows` in two steps, for threads (npse/fast/threads.py): the buffer, returned
    as (N, OH*OW, KH*KW*C) and not yet filled, and ``fill(s)``, which writes the rows of the
    images in the slice ``s``. The buffers are taken here, in one thread; slices touch disjoint
    parts of them, so they may be filled at the same time."""
    n, h, w, c = x_nhwc.shape
    kernel, stride, padding, (oh, ow) = geometry("im2col", (n, c, h, w), kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(x_nhwc)
    if ph or pw:
        x_padded = buffer(workspace, f"patches.padded_cl{ph},{pw}",     # as padded() names it
                          (n, h + 2 * ph, w + 2 * pw, c), x_nhwc, zeros=True)
    else:
        x_padded = x_nhwc
    s_n, s_h, s_w, s_c = x_padded.strides
    win = xp.lib.stride_tricks.as_strided(     # win[n, oy, ox, ky, kx, c] = x_padded[n, oy*SH+ky, ox*SW+kx, c]
        x_padded, shape=(n, oh, ow, kh, kw, c),
        strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c),
    )
    rows = buffer(workspace, "patches.rows", win.shape, x_nhwc)

    def fill(s):
        if x_padded is not x_nhwc:      # the border stays zero: only the interior is written
            x_padded[s, ph:ph + h, pw:pw + w] = x_nhwc[s]
        rows[s] = win[s]
    return rows.reshape(n, oh * ow, kh * kw * c), fill


def patch_rows_adjoint(rows, x_shape, kernel, stride=(1, 1), padding=(0, 0)):
    """The adjoint of :func:`patch_rows`: (N*OH*OW, KH*KW*C) -> (N, H, W, C), a new array.

    ``x_shape`` is the input's (N, C, H, W). As col2im: one strided ``+=`` per (ky, kx).
    """
    xp = get_array_module(rows)
    n, c, h, w = x_shape
    kernel, stride, padding, _ = geometry("col2im", x_shape, kernel, stride, padding)
    (ph, pw) = padding
    dx_padded = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=rows.dtype)
    add_patch_rows(dx_padded, rows, kernel, stride)
    if ph == 0 and pw == 0:
        return dx_padded
    return xp.ascontiguousarray(dx_padded[:, ph:ph + h, pw:pw + w])


def add_patch_rows(dx_padded, rows, kernel, stride):
    """dx_padded (N, HP, WP, C) += the adjoint of patch rows ``rows`` (N*OH*OW, KH*KW*C) of the
    same N images: each row's numbers added back where :func:`patch_rows` read them."""
    n, hp, wp, c = dx_padded.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    rows = rows.reshape(n, oh, ow, kh, kw, c)
    for ky in range(kh):
        for kx in range(kw):
            dx_padded[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] += rows[:, :, :, ky, kx]


def kernel_row_patches(x_nhwc, kw, padding, workspace=None):
    """The patches of the kernel-row products: x_nhwc (N, H, W, C) -> E (N, HP*OW, KW*C).

    E[n, r*OW + ox, (kx, c)] = x_padded[n, r, ox + kx, c] for every padded row r (HP = H + 2*PH):
    :func:`patch_rows` with a 1 x KW kernel, KW copies of the input where im2col makes KH*KW.
    :func:`patch_rows_in_slices` with the same kernel gives them in two steps.
    """
    e, fill = patch_rows_in_slices(x_nhwc, (1, kw), (1, 1), padding, workspace)
    fill(slice(0, x_nhwc.shape[0]))
    return e
