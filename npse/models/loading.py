"""Building a model from a checkpoint: the model's own rules for what a file may describe.

The file format (entries, metadata, atomic writes) is :mod:`npse.checkpoint`'s job; what a
``model_config`` read from a file may ask for, how large that model is, and loading its weights
all or nothing are the models' (docs/11-training.md, "Checkpoints").
"""
from __future__ import annotations

import inspect

import numpy

from ..checkpoint import CheckpointError, CheckpointReader, Entry, check_entries
from .resnet import BLOCKS, cifar_resnet, from_config


#: The deepest CIFAR ResNet of He et al. (2016) has 1202 layers; a deeper model_config is refused.
MAX_DEPTH = 1202


def parameter_bound(config: dict) -> int:
    """The number of values (parameters and buffers) of the CIFAR (SE-)ResNet that ``config``
    (a :func:`check_model_config`-checked dict) describes, counted without building it, as
    :mod:`npse.models.resnet` lays the network out (the tests compare it with built models).
    Callers treat it as an estimate and allow for slack."""
    bottleneck = config["block"] == "bottleneck"
    per_stage = (config["depth"] - 2) // (9 if bottleneck else 6)
    se, reduction, stages = config.get("se"), config["se_reduction"], config.get("se_stages") or ()
    widths = config["widths"]

    def bn(c):
        return 4 * c + 2                  # weight, bias, two running statistics; the int64 count

    total = 27 * widths[0] + bn(widths[0])
    in_planes = widths[0]
    for stage, planes in enumerate(widths, start=1):
        for i in range(per_stage):
            out = 4 * planes if bottleneck else planes
            stride = 2 if stage > 1 and i == 0 else 1
            if bottleneck:
                total += in_planes * planes + 9 * planes * planes + planes * out
                total += 2 * bn(planes) + bn(out)
            else:
                total += 9 * in_planes * planes + 9 * planes * planes + 2 * bn(planes)
            if config["shortcut"] == "B" and (stride != 1 or in_planes != out):
                total += in_planes * out + bn(out)
            if se not in (None, "none") and stage in stages:
                c = {"pre": in_planes, "3x3": planes}.get(se, out)
                hidden = max(1, c // reduction)
                total += 2 * c * hidden + hidden + c
            in_planes = out
    return total + in_planes * config["num_classes"] + config["num_classes"]


def check_model_config(config, where) -> None:
    """Refuse a ``model_config`` (from a file: untrusted) whose types or sizes are wrong, before
    anything is built from it. The fields the size depends on are checked here; the rest by
    :func:`npse.models.cifar_resnet` when the model is built."""
    def fail(why):
        raise CheckpointError(f"{where}: model_config {why}")

    if not isinstance(config, dict):
        fail(f"must be a JSON object, got {type(config).__name__}")
    known = set(inspect.signature(cifar_resnet).parameters)
    unknown = sorted(set(config) - known)
    if unknown:
        fail(f"has unknown keys {unknown}")

    def count(name, low, high=None):
        v = config.get(name)
        if type(v) is not int or v < low or (high is not None and v > high):
            fail(f"'{name}' must be an integer in [{low}, {high or 'inf'}], got {v!r}")

    for name in ("depth", "num_classes", "widths", "se_reduction", "block", "shortcut"):
        if name not in config:
            fail(f"lacks '{name}'")
    count("depth", 1, MAX_DEPTH)
    count("num_classes", 1)
    count("se_reduction", 1)
    widths = config["widths"]
    if not isinstance(widths, list) or len(widths) != 3 or \
            any(type(w) is not int or w < 1 for w in widths):
        fail(f"'widths' must be three positive integers, got {widths!r}")
    for name in ("block", "shortcut", "se", "se_squeeze", "se_excitation", "dtype"):
        if not isinstance(config.get(name), (str, type(None))):
            fail(f"'{name}' must be a name (a string), got {config[name]!r}"[:200])
    if config["block"] not in BLOCKS:
        fail(f"'block' must be one of {BLOCKS}, got {config['block']!r}")
    stages = config.get("se_stages", [])
    if not isinstance(stages, list) or any(type(s) is not int for s in stages):
        fail(f"'se_stages' must be a list of integers, got {stages!r}")
    if config.get("dtype", "float32") not in ("float32", "float64"):
        fail(f"'dtype' must be float32 or float64, got {config.get('dtype')!r}")


def model_from_checkpoint(reader: CheckpointReader, config, prefix: str = "model"):
    """The model that ``config`` (a model_config) describes, with the weights ``reader`` holds
    under ``prefix`` loaded into it: every step checked before memory is spent on it.

    1. ``config`` is checked (:func:`check_model_config`), and the model it describes may not be
       much larger than the weights the file holds (:func:`parameter_bound`);
    2. the model is built; every ``prefix.*`` entry must be one of its state-dict entries, with
       the same shape and dtype, and none may be missing;
    3. the arrays are read and must be finite; then they are loaded, all or nothing.
    Any failure is a :class:`CheckpointError` naming the file and the entry.
    """
    where = reader.path
    check_model_config(config, where)
    head = prefix + "."
    held = sum(e.nbytes for k, e in reader.entries.items() if k.startswith(head))
    itemsize = numpy.dtype(config.get("dtype", "float32")).itemsize
    needed = parameter_bound(config) * itemsize
    # A file holds its weights uncompressed, so an honest model_config describes a model no
    # larger than the weights in the file; the factor leaves room for the bound's slack.
    if needed > 4 * held + 2**20:
        raise CheckpointError(
            f"{where}: model_config describes a model of {_size(needed)}, but the file holds "
            f"{_size(held)} of '{prefix}.*' weights")
    try:
        model = from_config(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: model_config is invalid: {e}") from None
    expected = {head + k: Entry(tuple(v.shape), numpy.dtype(v.dtype))
                for k, v in model.state_dict().items()}
    check_entries(reader, expected, head)
    state = {}
    for key in expected:
        array = reader.read(key)
        if array.dtype.kind == "f" and not numpy.isfinite(array).all():
            bad = int(array.size - numpy.isfinite(array).sum())
            raise CheckpointError(f"{where}: '{key}' holds {bad} non-finite value(s) (NaN or "
                                  f"inf); these weights cannot give meaningful results")
        state[key[len(head):]] = array
    try:
        model.load_state_dict(state)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: the arrays do not fit the model: {e}") from None
    return model


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
