"""The Squeeze-and-Excitation block (Hu et al., 2018).  Chapter: docs/09-se-block.md.

Symbols: x (N, C, H, W), hidden width h = max(1, C // reduction), fc1: W1 (h, C), b1 (h,),
fc2: W2 (C, h), b2 (C,).

    squeeze:     z = pool(x)                      (N, C)   global average (or max) pooling
    excitation:  a = z @ W1^T + b1,  r = relu(a)  (N, h)
                 u = r @ W2^T + b2,  s = gate(u)  (N, C)   gate: sigmoid (or tanh, relu)
    scale:       y = x * s[:, :, None, None]      (N, C, H, W)

Backward follows both paths that x takes:
    ds = sum over H, W of (dy * x)                 (N, C)
    du = ds * gate'(u);  dr = du @ W2;  da = dr * [a > 0];  dz = da @ W1
    dx = dy * s[:, :, None, None]  +  pool_backward(dz)
The second term, the gradient through the squeeze, is the one that is easy to forget.
"""
from __future__ import annotations

import numpy

from ..backend import get_array_module, to_host
from . import activations, linear, pooling
from .init import as_rng
from .layout import is_channels_last, nhwc
from .linear import Linear
from .module import Module, check_array

SQUEEZES = {
    "avg": (pooling.global_avgpool2d_forward, pooling.global_avgpool2d_backward),
    "max": (pooling.global_maxpool2d_forward, pooling.global_maxpool2d_backward),
}
GATES = {
    "sigmoid": (activations.sigmoid_forward, activations.sigmoid_backward),
    "tanh": (activations.tanh_forward, activations.tanh_backward),
    "relu": (activations.relu_forward, activations.relu_backward),
}


def _choice(layer, name, value, options):
    if value not in options:
        raise ValueError(f"{layer}: {name} must be one of {sorted(options)}, got {value!r}")
    return options[value]


def spatial_dot(a, b):
    """sum over H and W of a * b, both (N, C, H, W) -> (N, C), without making the product array:
    one dot product per (n, c) row of the (N*C, H*W) views.  Equals ``(a * b).sum(axis=(2, 3))``.
    If ``a`` is stored channels last, the sums run down the columns of (N, H*W, C) views instead."""
    xp = get_array_module(a, b)
    n, c, h, w = a.shape
    if is_channels_last(a):
        a3, b3 = nhwc(a).reshape(n, h * w, c), nhwc(b).reshape(n, h * w, c)
        return xp.einsum("npc,npc->nc", a3, b3)
    a2, b2 = a.reshape(n * c, h * w), b.reshape(n * c, h * w)
    rows = xp.vecdot(a2, b2) if hasattr(xp, "vecdot") else xp.einsum("ij,ij->i", a2, b2)
    return rows.reshape(n, c)


def se_block_forward(x, w1, b1, w2, b2, squeeze="avg", excitation="sigmoid"):
    """x (N, C, H, W) -> y (N, C, H, W), cache.  ``cache["gate"]`` is s (N, C)."""
    squeeze_fwd, _ = _choice("SEBlock", "squeeze", squeeze, SQUEEZES)
    gate_fwd, _ = _choice("SEBlock", "excitation", excitation, GATES)
    z, squeeze_cache = squeeze_fwd(x)
    a, fc1_cache = linear.linear_forward(z, w1, b1)
    r, relu_mask = activations.relu_forward(a)
    u, fc2_cache = linear.linear_forward(r, w2, b2)
    s, gate_cache = gate_fwd(u)
    y = x * s[:, :, None, None]
    cache = dict(x=x, gate=s, squeeze=squeeze, excitation=excitation, squeeze_cache=squeeze_cache,
                 fc1_cache=fc1_cache, relu_mask=relu_mask, fc2_cache=fc2_cache, gate_cache=gate_cache)
    return y, cache


def se_block_backward(dy, cache):
    """dy (N, C, H, W) -> dx, dw1, db1, dw2, db2 (db* None when the block has no biases)."""
    x, s = cache["x"], cache["gate"]
    _, squeeze_bwd = SQUEEZES[cache["squeeze"]]
    _, gate_bwd = GATES[cache["excitation"]]
    ds = spatial_dot(dy, x)                                           # (N, C)
    du = gate_bwd(ds, cache["gate_cache"])
    dr, dw2, db2 = linear.linear_backward(du, cache["fc2_cache"])
    da = activations.relu_backward(dr, cache["relu_mask"])
    dz, dw1, db1 = linear.linear_backward(da, cache["fc1_cache"])
    dx = dy * s[:, :, None, None]
    dx += squeeze_bwd(dz, cache["squeeze_cache"])
    return dx, dw1, db1, dw2, db2


class SEBlock(Module):
    """Squeeze-and-Excitation: (N, C, H, W) -> (N, C, H, W), each channel scaled by its gate.

    ``SEBlock(channels, reduction=16, squeeze="avg"|"max", excitation="sigmoid"|"tanh"|"relu",
    bias=True)``; children ``fc1 = Linear(C, h)`` and ``fc2 = Linear(h, C)`` with
    h = max(1, channels // reduction), so ``state_dict`` holds ``fc1.weight``, ``fc1.bias``,
    ``fc2.weight``, ``fc2.bias``.  After a forward pass ``.gate`` holds s, shape (N, C).

    ``fix_gate(value)`` replaces s by a constant (a scalar or a (C,) array, the same for every
    image) in later forward passes until ``fix_gate(None)``: the test-time probe of
    docs/14-role-of-excitation.md.  ``.fixed_gate`` is the value in force (None: the computed gate).
    """

    def __init__(self, channels, reduction=16, squeeze="avg", excitation="sigmoid", bias=True,
                 dtype=None, rng=None):
        super().__init__(dtype=dtype)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"SEBlock: channels must be a positive int, got {channels!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"SEBlock: reduction must be a positive int, got {reduction!r}")
        _choice("SEBlock", "squeeze", squeeze, SQUEEZES)
        _choice("SEBlock", "excitation", excitation, GATES)
        self.channels, self.reduction = channels, reduction
        self.hidden = max(1, channels // reduction)
        self.squeeze, self.excitation = squeeze, excitation
        rng = as_rng(rng)
        self.fc1 = Linear(channels, self.hidden, bias=bias, dtype=self.dtype, rng=rng)
        self.fc2 = Linear(self.hidden, channels, bias=bias, dtype=self.dtype, rng=rng)
        self.gate = None
        self.fixed_gate = None

    def fix_gate(self, value) -> None:
        """From the next forward pass on, scale every image's channels by ``value`` instead of the
        computed gate: ``y = x * value[None, :, None, None]``.  ``value`` is a scalar or a (C,)
        array (NumPy or CuPy); None restores the computed gate.

        While a gate is fixed, fc1 and fc2 are not run and backward returns ``dy * value`` without
        touching their gradients: the output no longer depends on them.
        """
        self.fixed_gate = checked_fixed_gate("SEBlock", value, self.channels)

    def forward(self, x):
        self._check_input(x, 4, self.channels)
        if self.fixed_gate is not None:
            xp = get_array_module(x)
            s = xp.broadcast_to(xp.asarray(self.fixed_gate, dtype=x.dtype), x.shape[:2])
            self.gate = s
            self._save(dict(fixed_gate=s))
            return x * s[:, :, None, None]
        b1 = self.fc1.bias.data if self.fc1.bias else None
        b2 = self.fc2.bias.data if self.fc2.bias else None
        y, cache = se_block_forward(x, self.fc1.weight.data, b1, self.fc2.weight.data, b2,
                                    self.squeeze, self.excitation)
        self.gate = cache["gate"]
        self._save(cache)
        return y

    def backward(self, dy):
        check_array(dy, "SEBlock.backward", 4, self.dtype, self.channels, what="dy")
        cache = self._take_cache()
        if "fixed_gate" in cache:
            return dy * cache["fixed_gate"][:, :, None, None]
        dx, dw1, db1, dw2, db2 = se_block_backward(dy, cache)
        self.fc1.weight.grad += dw1
        self.fc2.weight.grad += dw2
        if db1 is not None:
            self.fc1.bias.grad += db1
        if db2 is not None:
            self.fc2.bias.grad += db2
        return dx

    def kink_signature(self):
        if self._cache is None:
            return None
        c = self._cache
        if "fixed_gate" in c:
            return []                       # a constant gate: y = x * s has no kink
        sig = [c["relu_mask"]]
        if c["excitation"] == "relu":
            sig.append(c["gate_cache"])
        if c["squeeze"] == "max":
            sig.append(c["squeeze_cache"][1])
        return sig

    def extra_repr(self):
        return (f"{self.channels}, reduction={self.reduction}, hidden={self.hidden}, "
                f"squeeze={self.squeeze!r}, excitation={self.excitation!r}")


def checked_fixed_gate(layer, value, channels):
    """``value`` as a host float64 array of shape () or (C,), or None; a clear error otherwise."""
    if value is None:
        return None
    host = numpy.asarray(to_host(value))
    if host.dtype.kind not in "biuf" or host.shape not in ((), (channels,)):
        raise ValueError(f"{layer}.fix_gate: expected a number or a real array of shape "
                         f"({channels},), got dtype {host.dtype} and shape {host.shape}")
    host = host.astype(numpy.float64)
    if not numpy.isfinite(host).all():
        raise ValueError(f"{layer}.fix_gate: the gate values must be finite")
    return host
