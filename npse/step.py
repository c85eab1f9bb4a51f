"""One training step, the same everywhere: ``npse train``, ``npse bench`` and the GPU tests."""
from __future__ import annotations


def train_step(model, loss_fn, optimizer, x, y, input_grad=False):
    """Forward, loss, backward and one optimizer update on the batch ``x`` (N, ...), ``y`` (N,).

    The model must already be in training mode (``model.train()``). Returns ``(logits, loss,
    dx)``: the loss as the loss function returns it (a 0-d array on the logits' backend), and
    dL/dx, which training never needs, so it is None unless ``input_grad=True``.
    """
    optimizer.zero_grad()
    logits = model(x)
    loss = loss_fn(logits, y)
    dx = model.backward(loss_fn.backward(), input_grad=input_grad)
    optimizer.step()
    return logits, loss, dx
