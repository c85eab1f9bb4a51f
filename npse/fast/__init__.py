"""npse.fast: faster formulations of the reference layers of npse.nn and of the SGD update, and
the policy that picks them.

Every function here computes the same numbers as a reference of npse.nn (or the plain update of
npse.optim.SGD) in a cheaper order (docs/B-speed.md says which, and what each gained). Each is
registered against what it replaces (:mod:`npse.fast.registry`); a model's
:class:`~npse.fast.policy.ExecutionPolicy` decides which run. Here too: the memory format
(:mod:`~npse.fast.layout`), the kept buffers (:mod:`~npse.fast.workspace`) and the bench's cost
model (:mod:`~npse.fast.cost`). npse.fast imports npse.nn, never the reverse: a reader of npse.nn
meets only the reference.
"""
from . import batchnorm2d, conv2d, elementwise, sgd, squeeze  # noqa: F401  (registers the formulations)
from .policy import FAST, REFERENCE, ExecutionPolicy, policy_from_memory_format
from .registry import (FORMULATIONS, UPDATES, Formulation, SharedWorkspaces, UpdateFormulation,
                       attach, formulations_of)

__all__ = ["FAST", "REFERENCE", "ExecutionPolicy", "policy_from_memory_format", "FORMULATIONS",
           "UPDATES", "Formulation", "UpdateFormulation", "SharedWorkspaces", "attach",
           "formulations_of"]
