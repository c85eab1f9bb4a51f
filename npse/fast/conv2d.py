"""Faster formulations of :func:`npse.nn.conv2d.conv2d_forward` / ``conv2d_backward``.

The reference makes one im2col matrix X (C*KH*KW, N*OH*OW) and computes Y2 = W2 @ X + b,
dW2 = dY2 @ X^T, dX = W2^T @ dY2, dx = col2im(dX). The same numbers, in other orders
(docs/B-speed.md measures each):

* ``batch``: the reference's products, with X and the output kept in workspace buffers.
* ``per_image``: one product per image, Y[n] = W2 @ X[n] (N, O, OH*OW), already the output's
  layout; dW2 = sum over n of dY[n] @ X[n]^T.
* ``patch_rows`` (an input stored channels last): one patch *row* per output pixel,
  Yr = Xr @ Wr^T + b with Xr (N*OH*OW, KH*KW*C), Wr = W as (O, KH*KW*C); Yr (N*OH*OW, O) is the
  output stored channels last. dWr = dYr^T @ Xr, dXr = dYr @ Wr.
* ``kernel_rows`` (channels last, stride 1): output row oy reads input rows oy + ky, so with the
  patches E of a 1 x KW kernel (N, HP*OW, KW*C), Y[n] = sum over ky of E[n, ky*OW : ky*OW + OH*OW]
  @ Wky, Wky[(kx, c), o] = W[o, c, ky, kx]: KH smaller products over a third of the patches.

and for the input gradient of a stride-1 convolution (``policy.input_gradient="convolution"``):
dx = conv2d(dy padded by K-1-P, W') with W'[c, o, ky, kx] = W[o, c, K-1-ky, K-1-kx], which needs
no col2im (and P <= K-1, true of every 'same' or 'valid' convolution).

:class:`Conv2dFormulations` picks one by the policy and how x is stored; the single routes are
registered too, and tests/test_formulations.py compares every one with the reference.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..nn import Conv2d
from ..nn.im2col import check_window, col2im, pair
from .layout import from_nhwc, is_channels_last, nhwc
from .workspace import Workspace
from . import patches as P
from .policy import CONV_LAYOUTS, ExecutionPolicy
from .registry import register
from .threads import blocks, combine, in_slices

ROWS = ("patch_rows", "kernel_rows")          # the layouts whose y and dx are stored channels last


class Conv2dFormulations:
    """The convolution of one layer under ``policy``.

    ``layout``: None picks per call (channels last by how x is stored, then the policy's
    thresholds); one of :data:`~npse.fast.policy.CONV_LAYOUTS` forces that route wherever it
    applies (kernel rows need stride 1; elsewhere their patch rows run).
    The layer's own workspace keeps its patches from forward to backward; ``shared`` holds the
    buffers that live only while one call runs (:class:`~npse.fast.registry.SharedWorkspaces`).
    """

    def __init__(self, policy: ExecutionPolicy, shared, layout=None):
        if layout is not None and layout not in CONV_LAYOUTS:
            raise ValueError(f"Conv2dFormulations: layout must be one of {CONV_LAYOUTS}, got {layout!r}")
        self.policy, self.layout = policy, layout
        self.workspace = Workspace() if policy.workspaces else None
        self.backward_ws = shared.backward if shared else None
        self.no_grad_ws = shared.no_grad if shared else None
        self.scratch = shared.scratch if shared else None

    # --- which route ---------------------------------------------------------------------------
    def forward_layout(self, xp, channels_last, channels, stride, out_size) -> str:
        if self.layout is not None:
            forced_rows = self.layout == "kernel_rows" and tuple(stride) != (1, 1)
            return "patch_rows" if forced_rows else self.layout
        if channels_last:
            return "kernel_rows" if self.policy.uses_kernel_rows(xp, channels, stride) else "patch_rows"
        return "per_image" if self.policy.uses_per_image(xp, out_size) else "batch"

    def input_grad_layout(self, xp, layout, out_channels, image_size) -> str:
        """The route of dx as a convolution of dy: the forward's family, thresholds on dy's shape."""
        if self.layout is not None:
            return self.layout
        if layout in ROWS:
            return "kernel_rows" if self.policy.uses_kernel_rows(xp, out_channels, (1, 1)) else "patch_rows"
        return layout

    def input_grad_by_convolution(self, stride, padding, kernel) -> bool:
        return (self.policy.input_gradient == "convolution" and tuple(stride) == (1, 1)
                and padding[0] < kernel[0] and padding[1] < kernel[1])

    # --- the reference's pair --------------------------------------------------------------------
    def forward(self, x, weight, bias=None, stride=1, padding=0, keep=True):
        """:func:`npse.nn.conv2d.conv2d_forward`; ``keep=False``: no backward follows (cache None)."""
        xp = get_array_module(x, weight, bias)
        stride, padding = pair(stride, "stride", "conv2d"), pair(padding, "padding", "conv2d")
        o, c, kh, kw = weight.shape
        out_size = check_window("Conv2d", x.shape, (kh, kw), stride, padding)
        layout = self.forward_layout(xp, is_channels_last(x), c, stride, out_size)
        workspace = self.workspace if keep else self.no_grad_ws
        y, kept = _FORWARD[layout](x, weight, stride, padding, out_size, workspace, self.scratch,
                                   self.policy)
        if bias is not None:
            y += bias.reshape(1, o, 1, 1)
        cache = (layout, x.shape, kept, weight, bias is not None, stride, padding) if keep else None
        return y, cache

    def backward(self, dy, cache, input_grad=True):
        """:func:`npse.nn.conv2d.conv2d_backward` for a cache of :meth:`forward`."""
        layout, x_shape, kept, weight, has_bias, stride, padding = cache
        xp = get_array_module(dy)
        o, c, kh, kw = weight.shape
        if layout in ROWS:
            dy = from_nhwc(nhwc(dy))         # read channels last: a view if dy is stored so
        dweight = _WEIGHT_GRAD[layout](dy, kept, weight.shape, self.backward_ws, self.scratch)
        dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
        if not input_grad:
            return None, dweight, dbias
        if self.input_grad_by_convolution(stride, padding, (kh, kw)):
            route = self.input_grad_layout(xp, layout, o, x_shape[2:])
            dx = self.dx_by_convolution(dy, weight, x_shape, padding, route)
        elif layout in ROWS:
            dx = from_nhwc(_input_grad_rows(dy, weight, x_shape, stride, padding))
        else:
            dcols = weight.reshape(o, -1).T @ _batch_columns(dy, self.backward_ws)  # (C*KH*KW, N*OH*OW)
            dx = col2im(dcols, x_shape, (kh, kw), stride, padding)
        return dx, dweight, dbias

    def dx_by_convolution(self, dy, weight, x_shape, padding, route):
        """dx of a stride-1 convolution: dy, padded by K-1-P, convolved with W' (C, O, KH, KW)."""
        o, c, kh, kw = weight.shape
        pad = (kh - 1 - padding[0], kw - 1 - padding[1])
        flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        dx, _ = _FORWARD[route](dy, flipped, (1, 1), pad, tuple(x_shape[2:]), self.backward_ws,
                                self.scratch, self.policy)
        return dx


# --- the four routes: forward (x, W -> y without bias, what backward keeps) and dW --------------
def _weight_rows(weight):
    """W (O, C, KH, KW) as the (O, KH*KW*C) matrix whose columns match patch rows."""
    return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _batch_columns(dy, workspace):
    """dy (N, O, OH, OW) as the (O, N*OH*OW) matrix dY2 of the batch-wide products (a kept buffer)."""
    n, o, oh, ow = dy.shape
    dy2 = P.buffer(workspace, "conv.dy2", (o, n, oh, ow), dy)
    dy2[...] = dy.transpose(1, 0, 2, 3)
    return dy2.reshape(o, -1)


def _forward_batch(x, weight, stride, padding, out_size, workspace, scratch, policy):
    xp = get_array_module(x)
    n, (o, _, kh, kw), (oh, ow) = x.shape[0], weight.shape, out_size
    cols = P.columns(x, (kh, kw), stride, padding, workspace)                  # (C*KH*KW, N*OH*OW)
    w2 = xp.ascontiguousarray(weight).reshape(o, -1)
    y2 = xp.matmul(w2, cols, out=P.buffer(workspace, "conv.y2", (o, cols.shape[1]), x))
    y = xp.empty((n, o, oh, ow), dtype=x.dtype)
    y[...] = y2.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)
    return y, cols


def _forward_per_image(x, weight, stride, padding, out_size, workspace, scratch, policy):
    xp = get_array_module(x)
    n, (o, _, kh, kw), (oh, ow) = x.shape[0], weight.shape, out_size
    cols = P.columns_per_image(x, (kh, kw), stride, padding, workspace)        # (N, C*KH*KW, OH*OW)
    y = xp.matmul(xp.ascontiguousarray(weight).reshape(o, -1), cols)          # (N, O, OH*OW)
    return y.reshape(n, o, oh, ow), cols


def _forward_patch_rows(x, weight, stride, padding, out_size, workspace, scratch, policy):
    xp = get_array_module(x)
    n, (o, _, kh, kw), (oh, ow) = x.shape[0], weight.shape, out_size
    rows, fill = P.patch_rows_in_slices(nhwc(x), (kh, kw), stride, padding, workspace)
    rows2, pixels = rows.reshape(n * oh * ow, -1), oh * ow                     # (N*OH*OW, KH*KW*C)
    w_rows = _weight_rows(weight).T
    y = xp.empty((n * oh * ow, o), dtype=x.dtype)                               # (N*OH*OW, O)
    per_block = policy.images_per_block(xp, rows[0].nbytes)

    def images(s):                  # the patches of a few images, then their rows of the product
        for b in blocks(s, per_block):
            fill(b)
            xp.matmul(rows2[b.start * pixels:b.stop * pixels], w_rows,
                      out=y[b.start * pixels:b.stop * pixels])
    in_slices(images, n, xp)
    return from_nhwc(y.reshape(n, oh, ow, o)), rows2


def _forward_kernel_rows(x, weight, stride, padding, out_size, workspace, scratch, policy):
    xp = get_array_module(x)
    n, (o, c, kh, kw), (oh, ow) = x.shape[0], weight.shape, out_size
    e, fill = P.patch_rows_in_slices(nhwc(x), (1, kw), (1, 1), padding, workspace)  # (N, HP*OW, KW*C)
    y = xp.empty((n, oh * ow, o), dtype=x.dtype)
    part = P.buffer(scratch, "conv.kernel_row_product", y.shape, y) if kh > 1 else None
    w_kys = [weight[:, :, ky].transpose(2, 1, 0).reshape(kw * c, o) for ky in range(kh)]  # rows (kx, c)
    per_block = policy.images_per_block(xp, e[0].nbytes)

    def images(s):                  # the patches of a few images, then their KH products
        for b in blocks(s, per_block):
            fill(b)
            for ky, w_ky in enumerate(w_kys):
                xp.matmul(e[b, ky * ow:ky * ow + oh * ow], w_ky, out=part[b] if ky else y[b])
                if ky:
                    y[b] += part[b]
    in_slices(images, n, xp)
    return from_nhwc(y.reshape(n, oh, ow, o)), e


def _weight_grad_batch(dy, cols, weight_shape, workspace, scratch):
    return (_batch_columns(dy, workspace) @ cols.T).reshape(weight_shape)


def _weight_grad_per_image(dy, cols, weight_shape, workspace, scratch):
    xp = get_array_module(dy)
    n, o = dy.shape[:2]
    products = P.buffer(workspace, "conv.dweight_per_image", (n, o, cols.shape[1]), dy)
    dweight = xp.matmul(dy.reshape(n, o, -1), cols.transpose(0, 2, 1), out=products).sum(axis=0)
    return dweight.reshape(weight_shape)                        # sum over n of dY[n] @ X[n]^T


def _weight_grad_patch_rows(dy, rows, weight_shape, workspace, scratch):
    xp = get_array_module(dy)
    n = dy.shape[0]
    o, c, kh, kw = weight_shape
    dy_rows, pixels = nhwc(dy).reshape(-1, o), dy.shape[2] * dy.shape[3]      # (N*OH*OW, O)

    def images(s):                  # the part of dWr = dYr^T @ Xr that images s contribute
        r = slice(s.start * pixels, s.stop * pixels)
        return dy_rows[r].T @ rows[r]
    dweight = combine(in_slices(images, n, xp))
    return xp.ascontiguousarray(dweight.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))


def _weight_grad_kernel_rows(dy, e, weight_shape, workspace, scratch):
    """dWky = sum over n of dY[n]^T @ E[n, ky*OW : ky*OW + OH*OW]."""
    xp = get_array_module(dy)
    n, _, oh, ow = dy.shape
    o, c, kh, kw = weight_shape
    dy_t = nhwc(dy).reshape(n, oh * ow, o).transpose(0, 2, 1)                  # (N, O, OH*OW)
    products = P.buffer(scratch, "conv.kernel_row_dweight", (n, o, kw * c), dy)

    def images(s):                  # the part of every dWky that images s contribute
        part = xp.empty((kh, o, kw * c), dtype=dy.dtype)
        for ky in range(kh):
            xp.matmul(dy_t[s], e[s, ky * ow:ky * ow + oh * ow], out=products[s])
            part[ky] = products[s].sum(axis=0)
        return part
    dweight = combine(in_slices(images, n, xp)).reshape(kh, o, kw, c)
    return xp.ascontiguousarray(dweight.transpose(1, 3, 0, 2))


def _input_grad_rows(dy, weight, x_shape, stride, padding):
    """dx (N, H, W, C) of a convolution by patch rows: dXr = dYr @ Wr (N*OH*OW, KH*KW*C), then
    the adjoint of the patch rows, image slice by image slice (a new array)."""
    xp = get_array_module(dy)
    n, c, h, w = x_shape
    o, _, kh, kw = weight.shape
    (ph, pw), pixels = padding, dy.shape[2] * dy.shape[3]
    dy_rows, w_rows = nhwc(dy).reshape(-1, o), _weight_rows(weight)
    dx_padded = xp.empty((n, h + 2 * ph, w + 2 * pw, c), dtype=dy.dtype)
    dx = dx_padded if ph == 0 and pw == 0 else xp.empty((n, h, w, c), dtype=dy.dtype)

    def images(s):
        dx_padded[s] = 0
        P.add_patch_rows(dx_padded[s], dy_rows[s.start * pixels:s.stop * pixels] @ w_rows,
                         (kh, kw), stride)
        if dx is not dx_padded:
            dx[s] = dx_padded[s, ph:ph + h, pw:pw + w]
    in_slices(images, n, xp)
    return dx


_FORWARD = dict(batch=_forward_batch, per_image=_forward_per_image,
                patch_rows=_forward_patch_rows, kernel_rows=_forward_kernel_rows)
_WEIGHT_GRAD = dict(batch=_weight_grad_batch, per_image=_weight_grad_per_image,
                    patch_rows=_weight_grad_patch_rows, kernel_rows=_weight_grad_kernel_rows)

register(Conv2d, "chosen by the policy", Conv2dFormulations, chosen=True)
for _layout in CONV_LAYOUTS:
    for _route in ("convolution", "col2im"):
        register(Conv2d, f"{_layout}, stride-1 dx by {_route}",
                 lambda policy, shared, _l=_layout, _r=_route:
                 Conv2dFormulations(policy.replace(input_gradient=_r), shared, layout=_l))
