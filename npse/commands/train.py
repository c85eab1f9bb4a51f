"""``npse train``: train a (SE-)ResNet on CIFAR (npse/train.py; docs/11-training.md)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from . import options

HELP = "train a (SE-)ResNet on CIFAR"

DESCRIPTION = (
    "Train a (SE-)ResNet on CIFAR-10/100 with SGD (Nesterov momentum), weight decay and a "
    "per-iteration learning-rate schedule. The defaults are the calibrated quick recipe: "
    "se_resnet20, 3 epochs (about 13 minutes on 2 CPU cores, about a minute on a GPU). --full "
    "runs the full recipe, 40 epochs, with which PyTorch reached 87.9% test accuracy on a JPEG "
    "re-encoding of CIFAR-10 (docs/11). Each epoch appends a line to OUT/metrics.jsonl and "
    "rewrites OUT/checkpoint.npz; --resume continues an interrupted run and ends with exactly the "
    "metrics of an uninterrupted one.")

EPILOG = ("On --resume the configuration comes from the checkpoint: training options given again "
          "must agree with it (else an error); --data-dir, --no-download, --backend, "
          "--eval-batch-size, --quiet and --threads may change (with another --threads the "
          "numbers agree to rounding, not bit for bit).")


def add_arguments(parser) -> None:
    options.add_train_options(parser)


def run(args) -> int:
    from .. import backend
    from ..rundir import CHECKPOINT
    from ..train import train

    backend.reuse_freed_memory()     # fewer page faults in long runs (see its docstring)
    config = options.train_config(args)
    policy = None
    if args.reference:
        from ..fast import REFERENCE as policy
    try:
        with options.threads_of(args):
            train(config, policy=policy)
    except KeyboardInterrupt:
        if (Path(config.out) / CHECKPOINT).exists():
            print(f"interrupted; resume with: npse train --out {shlex.quote(config.out)} --resume",
                  file=sys.stderr)
        else:
            print("interrupted before the first epoch finished; no checkpoint was written",
                  file=sys.stderr)
        return 130
    return 0
