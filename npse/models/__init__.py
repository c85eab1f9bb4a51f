"""npse.models: CIFAR ResNets and SE-ResNets.  Chapter: docs/10-se-resnet.md."""
from functools import partial

from .resnet import (SE_VARIANTS, BasicBlock, Bottleneck, CifarResNet, SEBlockNoSqueeze, ShortcutA,
                     cifar_resnet, from_config)
from .summary import count_parameters, model_costs, summary


def _factory(depth, block, se):
    def build(**overrides):
        args = dict(depth=depth, block=block, se=se)
        args.update(overrides)
        return cifar_resnet(**args)
    kind = "SE-ResNet" if se else "ResNet"
    build.__doc__ = f"{kind}-{depth} for CIFAR ({block} blocks); keyword arguments as cifar_resnet."
    return build


MODELS = {}
for _depth in (8, 14, 20, 32, 44, 56, 110):
    MODELS[f"resnet{_depth}"] = _factory(_depth, "basic", None)
    MODELS[f"se_resnet{_depth}"] = _factory(_depth, "basic", "standard")
for _depth in (29, 56, 164):
    MODELS[f"resnet{_depth}_bottleneck" if _depth == 56 else f"resnet{_depth}"] = _factory(_depth, "bottleneck", None)
    MODELS[f"se_resnet{_depth}_bottleneck" if _depth == 56 else f"se_resnet{_depth}"] = _factory(_depth, "bottleneck", "standard")

globals().update(MODELS)   # resnet20(), se_resnet20(), se_resnet164(), ...


def build_model(name: str, **overrides):
    """The model called ``name`` in :data:`MODELS`, with ``cifar_resnet`` arguments overridden."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name](**overrides)
