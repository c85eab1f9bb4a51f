"""What a training run depends on: :class:`TrainConfig`, its choices, and the three things built
straight from it (the model, the dataset, the learning-rate schedule).

A leaf of the training floor: :mod:`npse.train` (the loop) and :mod:`npse.rundir` (the run
directory) both import it, and neither imports the other's internals. The names are also
reached as ``npse.train.TrainConfig`` and so on, as the chapters write them (docs/11-training.md).
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy

from . import backend
from .data import load_cifar10, load_cifar100
from .models.resnet import SE_VARIANTS, SHORTCUTS
from .optim import Constant, WarmupCosine, he_multistep

DATASETS = ("cifar10", "cifar100")
SCHEDULES = ("cosine", "multistep", "constant")
SE_CHOICES = ("none",) + tuple(v for v in SE_VARIANTS if v is not None)   # "none": no SE
DTYPES = ("float32", "float64")
METRIC_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds",
               "images_per_s")
FULL_EPOCHS = 40  # the full recipe (``npse train --full``)

# Fields that may change between a run and its resumption without changing what is computed
# (eval_batch_size and backend can change the last bits of the numbers, by the user's choice).
RUNTIME_FIELDS = ("out", "data_dir", "download", "backend", "quiet", "resume", "overwrite",
                  "eval_batch_size")

@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are the calibrated quick recipe.

    Model options left at None take the model name's own default (``se_resnet20`` implies
    ``se="standard"``, and so on); ``se="none"`` removes the SE blocks.
    """

    out: str | None = None            # None: runs/<model>-<timestamp>
    model: str = "se_resnet20"
    dataset: str = "cifar10"
    epochs: int = 3
    batch_size: int = 128
    eval_batch_size: int = 250
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bn_bias: bool = True        # False: no weight decay on 1-D params (BN, biases)
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    seed: int = 0
    train_subset: int | None = None
    test_subset: int | None = None    # evaluate on a fixed class-balanced subset (npse study --quick)
    augment: bool = True              # pad-4 crop + flip; False for overfitting checks
    dtype: str = "float32"
    # model overrides (None: the model name's default)
    depth: int | None = None
    widths: tuple | None = None
    shortcut: str | None = None
    se: str | None = None
    se_reduction: int | None = None
    se_squeeze: str | None = None
    se_excitation: str | None = None
    se_stages: tuple | None = None
    se_bias: bool | None = None
    # run-time options: they may differ between a run and its resumption
    data_dir: str | None = None
    download: bool = True
    backend: str = "numpy"
    quiet: bool = False
    resume: bool = False
    overwrite: bool = False

    def validate(self) -> None:
        """Raise ValueError with a clear message for any nonsensical value."""
        def need_int(name, low, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, numpy.integer)) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")

        def need_float(name, low=0.0):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < low:
                raise ValueError(f"{name} must be a finite number >= {low}, got {v!r}")

        def need_choice(name, choices, allow_none=False):
            v = getattr(self, name)
            if (v is None and allow_none) or v in choices:
                return
            raise ValueError(f"{name} must be one of {', '.join(choices)}; got {v!r}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            need_int(name, 1)
        need_int("seed", 0)
        need_int("train_subset", 1, allow_none=True)
        need_int("test_subset", 1, allow_none=True)
        need_int("depth", 1, allow_none=True)
        need_int("se_reduction", 1, allow_none=True)
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs"):
            need_float(name)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be below 1 (0.9 is usual), got {self.momentum!r}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must not exceed epochs "
                             f"({self.epochs})")
        if self.nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0 (use --no-nesterov with "
                             "--momentum 0)")
        need_choice("dataset", DATASETS)
        need_choice("schedule", SCHEDULES)
        need_choice("dtype", DTYPES)
        need_choice("backend", backend.BACKENDS)
        need_choice("se", SE_CHOICES, allow_none=True)
        need_choice("shortcut", SHORTCUTS, allow_none=True)
        for name in ("widths", "se_stages"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (tuple, list)) or not v or any(
                    isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in v)):
                raise ValueError(f"{name} must be a non-empty list of positive integers, got {v!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a model name, got {self.model!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues the run "
                             "in OUT, overwrite starts a new one there")

    def model_overrides(self) -> dict:
        """The keyword arguments for ``npse.models.build_model`` that this config sets."""
        kw = {"num_classes": 100 if self.dataset == "cifar100" else 10,
              "dtype": self.dtype, "seed": self.seed}
        for name in ("depth", "shortcut", "se_reduction", "se_squeeze", "se_excitation",
                     "se_bias"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        for name in ("widths", "se_stages"):
            if getattr(self, name) is not None:
                kw[name] = tuple(getattr(self, name))
        if self.se is not None:
            kw["se"] = None if self.se == "none" else self.se
        return kw

    def training_dict(self) -> dict:
        """The fields that determine the computation (all but the run-time ones), JSON-ready."""
        d = dataclasses.asdict(self)
        for name in RUNTIME_FIELDS:
            d.pop(name)
        return json.loads(json.dumps(d))  # tuples -> lists, as they come back from a checkpoint

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from :meth:`training_dict` output (or any subset of the fields)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown} (a checkpoint from another "
                             f"npse version?)")
        d = dict(d)
        for name in ("widths", "se_stages"):
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        return cls(**d)


def build_model(config: TrainConfig):
    """The freshly initialised model that ``config`` describes (its name and overrides)."""
    from .models import build_model as build  # imported late: the CLI's --help must not need it
    return build(config.model, **config.model_overrides())


def load_dataset(config: TrainConfig):
    """The dataset of ``config`` from ``config.data_dir`` (downloaded there if allowed):
    :func:`npse.data.load_cifar10` or :func:`~npse.data.load_cifar100`."""
    loader = load_cifar100 if config.dataset == "cifar100" else load_cifar10
    return loader(config.data_dir, download=config.download)


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    """The learning rate as a function of the global iteration, for ``steps_per_epoch`` steps an
    epoch: linear warm-up then cosine, He et al.'s multi-step, or constant."""
    total = steps_per_epoch * config.epochs
    if config.schedule == "cosine":
        warmup = min(total, round(config.warmup_epochs * steps_per_epoch))
        return WarmupCosine(config.lr, total, warmup)
    if config.schedule == "multistep":
        return he_multistep(config.lr, steps_per_epoch, config.epochs)
    return Constant(config.lr)
