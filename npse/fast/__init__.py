"""npse.fast: faster formulations of the reference layers of npse.nn, and the policy that picks them.

Every function here computes the same numbers as a reference function pair of npse.nn in a
cheaper order (docs/B-speed.md says which, and what each gained). Each is registered against
the layer whose reference it replaces (:mod:`npse.fast.registry`); a model's
:class:`~npse.fast.policy.ExecutionPolicy` decides which run. npse.fast imports npse.nn, never
the reverse: a reader of npse.nn meets only the reference.
"""
from . import batchnorm2d, conv2d, squeeze  # noqa: F401  (registers the formulations)
from .policy import FAST, REFERENCE, ExecutionPolicy, policy_from_memory_format
from .registry import FORMULATIONS, Formulation, SharedWorkspaces, attach, formulations_of

__all__ = ["FAST", "REFERENCE", "ExecutionPolicy", "policy_from_memory_format", "FORMULATIONS",
           "Formulation", "SharedWorkspaces", "attach", "formulations_of"]
