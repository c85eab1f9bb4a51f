"""The NoSqueeze ablation of the SE block (Hu et al., TPAMI, table 13).  Chapter: docs/10-se-resnet.md.

Without global pooling, fc1 and fc2 become 1x1 convolutions, weights W1 (h, C, 1, 1) and
W2 (C, h, 1, 1), and the gate has one value per position and channel:

    a = conv1x1(x, W1) + b1,  r = relu(a),  u = conv1x1(r, W2) + b2,  s = gate(u)   (N, C, H, W)
    y = x * s
backward:
    du = gate'(u) * (dy * x);  dr, dW2, db2 = conv1x1 backward;  da = dr * [a > 0];
    dx = dy * s + (the input gradient of conv1x1(x, W1) for da)
"""
from __future__ import annotations

from ..backend import get_array_module
from . import activations
from .conv2d import Conv2d, conv2d_backward, conv2d_forward
from .init import as_rng
from .module import Module, check_array
from .se_block import GATES, choose, checked_fixed_gate


def se_no_squeeze_forward(x, w1, b1, w2, b2, excitation="sigmoid"):
    """x (N, C, H, W) -> y (N, C, H, W), cache.  ``cache["gate"]`` is s (N, C, H, W)."""
    gate_fwd, _ = choose("SEBlockNoSqueeze", "excitation", excitation, GATES)
    a, fc1_cache = conv2d_forward(x, w1, b1)
    r, relu_mask = activations.relu_forward(a)
    u, fc2_cache = conv2d_forward(r, w2, b2)
    s, gate_cache = gate_fwd(u)
    return x * s, dict(x=x, gate=s, excitation=excitation, fc1_cache=fc1_cache,
                       relu_mask=relu_mask, fc2_cache=fc2_cache, gate_cache=gate_cache)


def se_no_squeeze_backward(dy, cache):
    """dy (N, C, H, W) -> dx, dw1, db1, dw2, db2 (db* None when the block has no biases)."""
    _, gate_bwd = GATES[cache["excitation"]]
    du = gate_bwd(dy * cache["x"], cache["gate_cache"])
    dr, dw2, db2 = conv2d_backward(du, cache["fc2_cache"])
    da = activations.relu_backward(dr, cache["relu_mask"])
    dx_gate, dw1, db1 = conv2d_backward(da, cache["fc1_cache"])
    return dy * cache["gate"] + dx_gate, dw1, db1, dw2, db2


class SEBlockNoSqueeze(Module):
    """The SE block without its squeeze: (N, C, H, W) -> (N, C, H, W).

    Children ``fc1 = Conv2d(C, h, 1)``, ``relu``, ``fc2 = Conv2d(h, C, 1)`` (h = max(1, C //
    reduction)); the module runs them, and :func:`se_no_squeeze_forward` / ``_backward`` are the
    same block as one pair of functions, which the tests compare it with. ``.gate`` holds s
    (N, C, H, W) after a forward pass. ``fix_gate(value)`` works as SEBlock's: a scalar or (C,)
    value used at every image and position.
    """

    def __init__(self, channels, reduction=16, excitation="sigmoid", bias=True, dtype=None, rng=None):
        super().__init__(dtype=dtype)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"SEBlockNoSqueeze: channels must be a positive int, got {channels!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"SEBlockNoSqueeze: reduction must be a positive int, got {reduction!r}")
        choose("SEBlockNoSqueeze", "excitation", excitation, GATES)
        self.channels, self.reduction = channels, reduction
        self.hidden = max(1, channels // reduction)
        self.excitation = excitation
        rng = as_rng(rng)
        self.fc1 = Conv2d(channels, self.hidden, 1, bias=bias, dtype=self.dtype, rng=rng)
        self.relu = activations.ReLU(dtype=self.dtype)
        self.fc2 = Conv2d(self.hidden, channels, 1, bias=bias, dtype=self.dtype, rng=rng)
        self.gate = None
        self.fixed_gate = None

    def fix_gate(self, value) -> None:
        """Scale by the constant ``value`` (scalar or (C,)) instead of the computed gate; None
        restores it.  As in SEBlock.fix_gate, fc1 and fc2 are then skipped and get no gradient."""
        self.fixed_gate = checked_fixed_gate("SEBlockNoSqueeze", value, self.channels)

    def forward(self, x):
        self._check_input(x, 4, self.channels)
        if self.fixed_gate is not None:
            xp = get_array_module(x)
            s = xp.asarray(self.fixed_gate, dtype=x.dtype).reshape(-1, 1, 1)
            self.gate = xp.broadcast_to(s, x.shape)
            self._save((x, self.gate, None))
            return x * s
        gate_forward, _ = GATES[self.excitation]
        s, gate_cache = gate_forward(self.fc2(self.relu(self.fc1(x))))
        self.gate = s
        self._save((x, s, gate_cache))
        return x * s

    def backward(self, dy):
        check_array(dy, "SEBlockNoSqueeze.backward", 4, self.dtype, self.channels, what="dy")
        x, s, gate_cache = self._take_cache()
        if gate_cache is None:          # a fixed gate: the output depends on x only through x * s
            return dy * s
        _, gate_backward = GATES[self.excitation]
        du = gate_backward(dy * x, gate_cache)
        return dy * s + self.fc1.backward(self.relu.backward(self.fc2.backward(du)))

    def extra_repr(self):
        return f"{self.channels}, reduction={self.reduction}, hidden={self.hidden}, excitation={self.excitation!r}"
