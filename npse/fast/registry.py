"""Which faster formulation replaces which reference layer, and how a policy puts them in place.

A formulation is an object with the reference's function pair as methods: for ``nn.Conv2d``,
``forward(x, weight, bias, stride, padding, keep)`` and ``backward(dy, cache, input_grad)``, the
arguments and results of :func:`npse.nn.conv2d.conv2d_forward` / ``conv2d_backward`` plus
``keep`` (False: no backward will follow, so nothing need be kept; the cache is then None). A
layer runs its ``formulation`` attribute when one is set and its reference functions otherwise.

:func:`register` records a formulation against the layer class whose reference it replaces;
tests/test_formulations.py runs every registered one against the reference, so a new
formulation is tested by being registered. :func:`attach` gives each layer of a model the
formulation its policy chooses (None under the reference policy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .workspace import Workspace
from .policy import ExecutionPolicy


class SharedWorkspaces:
    """Scratch buffers shared by all layers of one model: those that live only while one layer
    runs (the backward passes', the forward passes' under no_grad, temporaries inside a call).
    A few shapes per name: one per stage of a ResNet (forward: also the stem and each stage's
    strided convolution, so an evaluation pass reuses all of its buffers)."""

    def __init__(self, enabled: bool = True):
        self.backward = Workspace(shapes_per_name=4) if enabled else None
        self.no_grad = Workspace(shapes_per_name=8) if enabled else None
        self.scratch = Workspace(shapes_per_name=4) if enabled else None


@dataclass(frozen=True)
class Formulation:
    """``make(policy, shared)`` builds the formulation object for one layer of ``layer``'s type.

    ``chosen``: whether :func:`attach` uses it (one per layer class: the one that picks among the
    others by the policy's thresholds); the others are single routes, registered so that the
    agreement suite checks each of them on every drawn shape. ``backends``: where it runs.
    """

    layer: type
    name: str
    make: Callable
    chosen: bool = False
    backends: tuple = ("numpy", "cupy")


FORMULATIONS: list[Formulation] = []


def register(layer, name, make, chosen=False, backends=("numpy", "cupy")) -> Formulation:
    if any(f.layer is layer and f.name == name for f in FORMULATIONS):
        raise ValueError(f"npse.fast: a formulation {name!r} of {layer.__name__} is already registered")
    f = Formulation(layer, name, make, chosen, tuple(backends))
    FORMULATIONS.append(f)
    return f


def formulations_of(layer) -> list[Formulation]:
    return [f for f in FORMULATIONS if f.layer is layer]


def attach(model, policy: ExecutionPolicy) -> None:
    """Set ``formulation`` on every layer of ``model`` that has one registered: the chosen
    formulation under ``policy``, or None (the reference) when ``policy.formulations`` is off.
    Workspaces are made afresh, so buffers of an earlier policy or backend are dropped."""
    shared = SharedWorkspaces(policy.workspaces) if policy.formulations else None
    chosen = {f.layer: f for f in FORMULATIONS if f.chosen}
    for _, m in model.named_modules():
        f = chosen.get(type(m))
        if f is not None:
            m.formulation = f.make(policy, shared) if policy.formulations else None
