"""A table of a model's layers: output shape, parameters and multiply-adds per image."""
from __future__ import annotations

import numpy

from .. import backend
from ..nn import Conv2d, Linear, Module, SEBlock, no_grad
from .resnet import SEBlockNoSqueeze


def leaf_modules(model):
    """``[(name, module)]``: modules without children, plus SE blocks taken whole (their own work,
    the squeeze, gate and scale, runs around their fc children, so the block is the unit a
    table of layers should time and count)."""
    se = [name for name, m in model.named_modules() if isinstance(m, (SEBlock, SEBlockNoSqueeze))]
    inside_se = tuple(f"{name}." for name in se)
    return [(name, m) for name, m in model.named_modules()
            if name in se or (not m._modules and not (inside_se and name.startswith(inside_se)))]


def _multiply_adds(m, shape):
    """Multiply-adds per image of a Conv2d, Linear or SE block whose output has ``shape``."""
    if isinstance(m, Conv2d):
        return int(numpy.prod(shape[1:])) * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
    if isinstance(m, Linear):
        return m.in_features * m.out_features * int(numpy.prod(shape[1:-1] or (1,)))
    if isinstance(m, SEBlock):
        return 2 * m.channels * m.hidden
    if isinstance(m, SEBlockNoSqueeze):
        return 2 * m.channels * m.hidden * int(numpy.prod(shape[2:]))
    return 0


def summary_rows(model: Module, input_shape=(1, 3, 32, 32)) -> list:
    """``[(name, type, output shape, parameters, multiply-adds per image)]`` for every leaf
    module, from one forward pass on zeros of ``input_shape``.

    Multiply-adds count the convolutions, Linear layers and SE blocks (per image), the usual
    convention; element-wise work is not counted.
    """
    records = {}
    leaves = leaf_modules(model)
    handles = [m.register_forward_hook(lambda m, x, y, _name=name: records.setdefault(_name, y.shape))
               for name, m in leaves]
    try:
        xp = backend.module()
        was_training = model.training
        model.eval()
        with no_grad():
            model(xp.zeros(input_shape, dtype=model.dtype))
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name, m in leaves:
        shape = records.get(name)
        params = sum(int(p.data.size) for p in m.parameters())
        madds = 0 if shape is None else _multiply_adds(m, shape)
        rows.append((name, type(m).__name__, shape[1:] if shape else None, params, madds))
    return rows


def summary(model: Module, input_shape=(1, 3, 32, 32)) -> str:
    """A table of :func:`summary_rows` with the totals underneath."""
    rows = summary_rows(model, input_shape)
    total_params, total_madds = model_costs(model, input_shape, rows)
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'layer':<{width}}{'type':<18}{'output':<14}{'params':>10}{'mult-adds':>14}", "-" * (width + 56)]
    lines += [f"{n:<{width}}{t:<18}{'x'.join(map(str, s)) if s else '-':<14}{p:>10,}{a:>14,}"
              for n, t, s, p, a in rows]
    lines += ["-" * (width + 56),
              f"total parameters: {total_params:,}   multiply-adds per image: {total_madds:,}"]
    return "\n".join(lines)


def model_costs(model: Module, input_shape=(1, 3, 32, 32), rows=None) -> tuple:
    """``(parameters, multiply-adds per image)`` of ``model``: the totals under :func:`summary`."""
    rows = summary_rows(model, input_shape) if rows is None else rows
    return sum(r[3] for r in rows), sum(r[4] for r in rows)


def count_parameters(model: Module) -> int:
    return sum(int(p.data.size) for p in model.parameters())
