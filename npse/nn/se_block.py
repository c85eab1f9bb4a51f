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


def choose(layer, name, value, options):
    """``options[value]``: the (forward, backward) pair named ``value``; a ValueError naming the
    layer and the choices for a name that is not one of them."""
    if value not in options:
        raise ValueError(f"{layer}: {name} must be one of {sorted(options)}, got {value!r}")
    return options[value]


def channel_scale_forward(x, s):
    """The block's last step: x (N, C, H, W), s (N, C) -> y = x * s[:, :, None, None], cache."""
    return x * s[:, :, None, None], (x, s)


def channel_scale_backward(dy, cache):
    """dy (N, C, H, W) -> dx = dy * s (the direct path of x) and ds = sum over H, W of dy * x (N, C)."""
    x, s = cache
    return dy * s[:, :, None, None], (dy * x).sum(axis=(2, 3))


def se_block_forward(x, w1, b1, w2, b2, squeeze="avg", excitation="sigmoid"):
    """x (N, C, H, W) -> y (N, C, H, W), cache.  ``cache["gate"]`` is s (N, C)."""
    squeeze_fwd, _ = choose("SEBlock", "squeeze", squeeze, SQUEEZES)
    gate_fwd, _ = choose("SEBlock", "excitation", excitation, GATES)
    z, squeeze_cache = squeeze_fwd(x)
    a, fc1_cache = linear.linear_forward(z, w1, b1)
    r, relu_mask = activations.relu_forward(a)
    u, fc2_cache = linear.linear_forward(r, w2, b2)
    s, gate_cache = gate_fwd(u)
    y, scale_cache = channel_scale_forward(x, s)
    cache = dict(scale_cache=scale_cache, gate=s, squeeze=squeeze, excitation=excitation, squeeze_cache=squeeze_cache,
                 fc1_cache=fc1_cache, relu_mask=relu_mask, fc2_cache=fc2_cache, gate_cache=gate_cache)
    return y, cache


def se_block_backward(dy, cache):
    """dy (N, C, H, W) -> dx, dw1, db1, dw2, db2 (db* None when the block has no biases)."""
    _, squeeze_bwd = SQUEEZES[cache["squeeze"]]
    _, gate_bwd = GATES[cache["excitation"]]
    dx, ds = channel_scale_backward(dy, cache["scale_cache"])        # (N, C, H, W), (N, C)
    du = gate_bwd(ds, cache["gate_cache"])
    dr, dw2, db2 = linear.linear_backward(du, cache["fc2_cache"])
    da = activations.relu_backward(dr, cache["relu_mask"])
    dz, dw1, db1 = linear.linear_backward(da, cache["fc1_cache"])
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
    docs/13-role-of-excitation.md.  ``.fixed_gate`` is the value in force (None: the computed gate).

    The module runs its children ``fc1`` and ``fc2`` (which accumulate their own gradients) around
    the squeeze, ReLU, gate and scale functions; :func:`se_block_forward` / :func:`se_block_backward`
    are the same block as one pair of functions, which the tests compare it with.
    ``formulation``: faster squeeze and scale functions set by a model's execution policy
    (npse.fast), or None for the reference ones here.
    """

    def __init__(self, channels, reduction=16, squeeze="avg", excitation="sigmoid", bias=True,
                 dtype=None, rng=None):
        super().__init__(dtype=dtype)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"SEBlock: channels must be a positive int, got {channels!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"SEBlock: reduction must be a positive int, got {reduction!r}")
        choose("SEBlock", "squeeze", squeeze, SQUEEZES)
        choose("SEBlock", "excitation", excitation, GATES)
        self.channels, self.reduction = channels, reduction
        self.hidden = max(1, channels // reduction)
        self.squeeze, self.excitation = squeeze, excitation
        rng = as_rng(rng)
        self.fc1 = Linear(channels, self.hidden, bias=bias, dtype=self.dtype, rng=rng)
        self.fc2 = Linear(self.hidden, channels, bias=bias, dtype=self.dtype, rng=rng)
        self.gate = None
        self.fixed_gate = None
        self.formulation = None

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
        route = self.formulation
        squeeze_fwd, _ = SQUEEZES[self.squeeze] if route is None else route.squeeze(self.squeeze)
        scale_fwd = channel_scale_forward if route is None else route.scale_forward
        gate_fwd, _ = GATES[self.excitation]
        z, squeeze_cache = squeeze_fwd(x)                             # (N, C)
        r, relu_mask = activations.relu_forward(self.fc1(z))         # (N, h)
        s, gate_cache = gate_fwd(self.fc2(r))                         # (N, C)
        y, scale_cache = scale_fwd(x, s)
        self.gate = s
        self._save(dict(route=route, gate=s, squeeze=self.squeeze, excitation=self.excitation,
                        squeeze_cache=squeeze_cache, relu_mask=relu_mask, gate_cache=gate_cache,
                        scale_cache=scale_cache))
        return y

    def backward(self, dy):
        check_array(dy, "SEBlock.backward", 4, self.dtype, self.channels, what="dy")
        cache = self._take_cache()
        if "fixed_gate" in cache:
            return dy * cache["fixed_gate"][:, :, None, None]
        route = cache["route"]
        _, squeeze_bwd = SQUEEZES[self.squeeze] if route is None else route.squeeze(self.squeeze)
        scale_bwd = channel_scale_backward if route is None else route.scale_backward
        _, gate_bwd = GATES[self.excitation]
        dx, ds = scale_bwd(dy, cache["scale_cache"])
        dr = self.fc2.backward(gate_bwd(ds, cache["gate_cache"]))
        dz = self.fc1.backward(activations.relu_backward(dr, cache["relu_mask"]))
        dx += squeeze_bwd(dz, cache["squeeze_cache"])
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
