"""Optimisers and learning-rate schedules.

* :class:`SGD` — stochastic gradient descent with (Nesterov) momentum and weight decay, with the
  exact update rule of ``torch.optim.SGD`` (dampening 0);
* :func:`skip_bn_and_bias` — a ``decay_filter`` that exempts 1-D parameters from weight decay;
* :mod:`npse.optim.schedules` — per-iteration learning-rate schedules (warm-up + cosine, He et al.'s
  step schedule, constant).
"""
from .schedules import Constant, MultiStep, WarmupCosine, he_multistep
from .sgd import SGD, skip_bn_and_bias

__all__ = ["SGD", "skip_bn_and_bias", "WarmupCosine", "MultiStep", "Constant", "he_multistep"]
