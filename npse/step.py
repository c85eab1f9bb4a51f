"""One training step, the same everywhere: ``npse train``, ``npse bench`` and the GPU tests."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy

from . import backend

if TYPE_CHECKING:
    from .fast.policy import ExecutionPolicy


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


class Setup:
    """A model under ``policy``, its optimizer and loss (as ``npse train`` builds them), and one
    fixed random batch on the active backend. ``model``: a model name, or a built model (the
    study's probe passes an arm's network)."""

    def __init__(self, model, batch, policy: ExecutionPolicy):
        from . import models, nn, optim
        self.xp = backend.module()
        if isinstance(model, str):
            model = models.build_model(model)
        self.model = model.use_policy(policy)
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = optim.SGD(self.model.named_parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                   weight_decay=5e-4, fused=policy.fused)
        rng = numpy.random.default_rng(0)
        self.x = backend.to_device(rng.standard_normal((batch, 3, 32, 32)).astype(numpy.float32))
        self.y = backend.to_device(rng.integers(0, 10, batch))

    def train_step(self):
        self.model.train()
        train_step(self.model, self.loss_fn, self.optimizer, self.x, self.y)

    def eval_step(self):
        from .nn import no_grad
        self.model.eval()
        with no_grad():
            self.model(self.x)
