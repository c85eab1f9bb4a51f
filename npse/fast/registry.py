"""Which faster formulation replaces which reference, how a policy puts them in place, and what
``npse bench``'s profile calls the time spent in each.

A layer formulation is an object with the reference's function pair as methods: for
``nn.Conv2d``, ``forward(x, weight, bias, stride, padding, keep)`` and ``backward(dy, cache,
input_grad)``, the arguments and results of :func:`npse.nn.conv2d.conv2d_forward` /
``conv2d_backward`` plus ``keep`` (False: no backward will follow, so nothing need be kept; the
cache is then None). A layer runs its ``formulation`` attribute when one is set and its
reference functions otherwise.

:func:`register` records a formulation against the layer class whose reference it replaces;
:func:`register_update` records a formulation of an optimizer's update of one parameter (not a
layer: npse.optim, not a policy, decides when it runs). tests/test_formulations.py runs every
registered one against its reference, so a new formulation is tested by being registered, and
it fails for a module of npse.fast that defines a formulation nothing registers.
:func:`attach` gives each layer of a model the formulation its policy chooses (None under the
reference policy).

The profile (``npse bench``, :func:`npse.bench.profile_step`) sorts a step's time into
:data:`CATEGORIES` by the module and function it was spent in, as declared here: each
registration declares its formulation's module, :func:`charge_reference` a reference layer's
module by its class, :func:`charge` any other module (the helpers of npse.fast, im2col, the
optimizer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import nn
from .policy import ExecutionPolicy
from .workspace import Workspace

#: The parts of a training step that ``npse bench``'s profile reports, in its order.
CATEGORIES = ("im2col", "GEMM + layout copies", "col2im", "BatchNorm",
              "element-wise (ReLU, SE, pool, add, fc)", "loss", "optimizer",
              "threads (handing out slices, waiting)", "Python overhead")
IM2COL, GEMM, COL2IM, BATCHNORM, ELEMENTWISE, LOSS, OPTIMIZER, THREADS, PYTHON = CATEGORIES


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
    ``module``: the module that holds its arithmetic; ``category``: the profile's name for the
    time spent there.
    """

    layer: type
    name: str
    make: Callable
    chosen: bool = False
    backends: tuple = ("numpy", "cupy")
    module: str = ""
    category: str = ""


@dataclass(frozen=True)
class UpdateFormulation:
    """A faster formulation of an optimizer's update of one parameter.

    ``optimizer``: the name of the npse.optim class whose plain update it replaces (a name, not
    the class: npse.optim uses npse.fast, so npse.fast cannot import it). ``make()`` builds the
    update: ``applies(xp, momentum)`` says whether it runs for parameters on array module ``xp``;
    ``update(p, grad, buffer, lr, momentum, weight_decay, nesterov)`` updates ``p`` in place and
    returns the momentum buffer (``buffer`` is None before the first step). The other fields are
    :class:`Formulation`'s.
    """

    optimizer: str
    name: str
    make: Callable
    backends: tuple = ("numpy", "cupy")
    module: str = ""
    category: str = OPTIMIZER


FORMULATIONS: list[Formulation] = []
UPDATES: list[UpdateFormulation] = []


def register(layer, name, make, chosen=False, backends=("numpy", "cupy"), module=None,
             category=None) -> Formulation:
    """Record ``make`` as a formulation of ``layer``; ``module`` (default: where ``make`` is
    defined) holds its arithmetic, which the profile counts under ``category`` (default: the
    category of the layer's reference, :func:`charge_reference`)."""
    if any(f.layer is layer and f.name == name for f in FORMULATIONS):
        raise ValueError(f"npse.fast: a formulation {name!r} of {layer.__name__} is already registered")
    category = category or _REFERENCE_CATEGORY.get(layer)
    if category is None:
        raise ValueError(f"npse.fast: {layer.__name__} has no profile category; give one or "
                         "declare its reference's with charge_reference")
    f = Formulation(layer, name, make, chosen, tuple(backends), module or make.__module__, category)
    charge(f.module, category)
    FORMULATIONS.append(f)
    return f


def register_update(optimizer, name, make, backends=("numpy", "cupy"), module=None,
                    category=OPTIMIZER) -> UpdateFormulation:
    """Record ``make`` as a formulation of the update of the optimizer named ``optimizer``
    (arguments as :func:`register`'s)."""
    if any(u.optimizer == optimizer and u.name == name for u in UPDATES):
        raise ValueError(f"npse.fast: an update {name!r} of {optimizer} is already registered")
    u = UpdateFormulation(optimizer, name, make, tuple(backends), module or make.__module__, category)
    charge(u.module, category)
    UPDATES.append(u)
    return u


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


# --- the profile's categories ---------------------------------------------------------------------
# module name -> {function name: category, None: the category of every function not named}
_PROFILE: dict[str, dict] = {}
_REFERENCE_CATEGORY: dict[type, str] = {}


def charge(module: str, category, functions=None) -> None:
    """Declare that the profile counts the time spent in ``functions`` (names; None: every
    function of ``module`` not named in another declaration) of the module named ``module``
    under ``category``, one of :data:`CATEGORIES` (None: Python overhead)."""
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"npse.fast: unknown profile category {category!r}; one of {CATEGORIES}")
    rules = _PROFILE.setdefault(module, {})
    for name in (None,) if functions is None else functions:
        rules[name] = category


def charge_reference(layer, category) -> None:
    """Declare the category of a reference layer of npse.nn: every function of its module,
    except the Module's own ``forward`` and ``backward`` (keeping the cache and checking the
    arguments, Python overhead), is that layer's arithmetic."""
    _REFERENCE_CATEGORY[layer] = category
    charge(layer.__module__, category)
    charge(layer.__module__, None, ("forward", "backward"))


def profile_category(module: str, function: str):
    """The category of time spent in ``function`` of the module named ``module`` (None:
    Python overhead, or nothing npse declared)."""
    rules = _PROFILE.get(module, {})
    return rules.get(function, rules.get(None))


for _layer, _category in ((nn.Conv2d, GEMM), (nn.BatchNorm2d, BATCHNORM), (nn.ReLU, ELEMENTWISE),
                          (nn.Sigmoid, ELEMENTWISE), (nn.Tanh, ELEMENTWISE), (nn.Linear, ELEMENTWISE),
                          (nn.GlobalAvgPool2d, ELEMENTWISE), (nn.SEBlock, ELEMENTWISE),
                          (nn.SEBlockNoSqueeze, ELEMENTWISE), (nn.ShortcutA, ELEMENTWISE),
                          (nn.CrossEntropyLoss, LOSS)):
    charge_reference(_layer, _category)
charge(nn.im2col.__module__, IM2COL, ("im2col", "windows", "pad2d"))   # the rest: checks
charge(nn.im2col.__module__, COL2IM, ("col2im",))
charge(nn.GlobalAvgPool2d.__module__, None, ("check_has_pixels",))     # a check too
# A model's own forward and backward add the residual branches; they are names here because
# npse.models imports npse.fast.
charge("npse.models.resnet", ELEMENTWISE, ("forward", "backward"))
charge("npse.optim.sgd", OPTIMIZER)
# npse.fast.threads: the calling thread hands out slices and waits for the other threads' (at
# one thread, nothing); a name here, since npse.fast.threads imports nothing of npse
charge("npse.fast.threads", THREADS)
