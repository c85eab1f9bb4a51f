"""What the command lines share, written once: the parser class, the option types, the options of
``npse train`` (which ``python -m npse.torch_reference train`` takes too), and how a command's
errors become one line and an exit status."""
from __future__ import annotations

import argparse
import os
import sys

from ..backend import BACKENDS


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the default prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _integer(text, low):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value


def positive_int(text) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1)


def nonneg_int(text) -> int:
    """argparse type: an integer >= 0."""
    return _integer(text, 0)


def nonneg_float(text) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_float(text) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def int_list(text) -> tuple:
    """argparse type: comma-separated positive integers, such as 16,32,64."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 16,32,64, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


# ----------------------------------------------------------------------------- running a command

THREADS_HELP = ("threads that share a step's work (npse.fast.threads), BLAS single-threaded "
                "in each (default: the cores this process may use)")


def add_threads_option(p) -> None:
    """``--threads N``: the setting of :func:`npse.fast.threads.set_num_threads`."""
    p.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)


def threads_of(args):
    """``with threads_of(args):`` the threads ``--threads`` asks for (default: the usable cores)
    inside, the setting as it was afterwards (npse.fast.threads.using)."""
    from ..fast.threads import usable_cores, using
    return using(args.threads or usable_cores())


def parse(parser: argparse.ArgumentParser, argv):
    """``(args, None)``, or ``(None, status)`` when parsing ended the command already (``--help``
    exits 0; a usage error, already printed as one line by :class:`Parser`, exits 2)."""
    try:
        return parser.parse_args(argv), None
    except SystemExit as e:
        return None, e.code if isinstance(e.code, int) else 0 if e.code is None else 1


def out_of_memory_message(error: MemoryError) -> str:
    """The one-line message for a MemoryError: npse's own estimates already say what fits."""
    text = " ".join(str(error).split())
    if text.startswith(("a training step", "an evaluation pass")):
        return text
    return (f"out of memory{': ' + text if text else ''}. A smaller --batch-size (or "
            f"--eval-batch-size) needs less; a run's last checkpoint is left intact")


def guarded(run, args, prog: str) -> int:
    """``run(args)``'s exit status, with every error a user can cause (a bad option, missing data,
    a corrupt checkpoint, an unusable backend) turned into one line ``PROG: error: ...`` on
    stderr and status 1, Ctrl-C into status 130. ``NPSE_TRACEBACK=1`` shows the traceback."""
    try:
        status = run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError as e:
        if os.environ.get("NPSE_TRACEBACK"):
            raise
        return fail(prog, out_of_memory_message(e))
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as e:
        if os.environ.get("NPSE_TRACEBACK"):
            raise
        return fail(prog, " ".join(str(e).split()) or type(e).__name__)
    return 0 if status is None else int(status)


def fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


# ----------------------------------------------------------------------------- npse train's options
# Options that map one-to-one to TrainConfig fields have the argparse default None, so that an
# option given on the command line can be told from one left out (--resume takes the
# configuration from the checkpoint and refuses conflicting options).

TRAIN_FIELDS = (
    "model", "dataset", "epochs", "batch_size", "eval_batch_size", "lr", "momentum", "nesterov",
    "weight_decay", "decay_bn_bias", "schedule", "warmup_epochs", "seed", "train_subset",
    "augment", "dtype", "depth", "widths", "shortcut", "se", "se_reduction", "se_squeeze",
    "se_excitation", "se_stages", "se_bias", "data_dir", "download", "backend", "quiet", "out",
)


def add_train_options(p) -> None:
    """The options of ``npse train``, in four groups: run, data, optimisation, model."""
    from ..config import TrainConfig
    defaults = TrainConfig()      # for the help texts
    _add_run_options(p.add_argument_group("run"), defaults)
    _add_data_options(p.add_argument_group("data"), defaults)
    _add_optimisation_options(p.add_argument_group("optimisation"), defaults)
    _add_model_options(p.add_argument_group("model"), defaults)


def _add_run_options(g, d) -> None:
    g.add_argument("--out", metavar="DIR",
                   help="output directory (default: runs/<model>-<timestamp>; required with "
                        "--resume). One that already holds a run is refused unless --resume or "
                        "--overwrite")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in --out, deleting npse's own files there (checkpoint.npz, "
                        "metrics.jsonl, config.json, curves.png) and nothing else")
    g.add_argument("--quiet", action="store_true", default=None,
                   help="no progress bar (the one-line epoch summaries are still printed)")
    g.add_argument("--backend", choices=BACKENDS,
                   help=f"array backend (default: {d.backend}); cupy needs CuPy and a GPU")
    g.add_argument("--reference", action="store_true",
                   help="compute with the reference layers of npse.nn only (the execution policy "
                        "npse.fast.REFERENCE): slower, the same numbers up to rounding")
    add_threads_option(g)


def _add_data_options(g, d) -> None:
    from ..config import DATASETS
    g.add_argument("--dataset", choices=DATASETS, help=f"default: {d.dataset}")
    g.add_argument("--data-dir", metavar="DIR",
                   help="where the CIFAR binary files are or go (default: $NPSE_DATA or "
                        "~/.cache/npse)")
    g.add_argument("--no-download", dest="download", action="store_false", default=None,
                   help="fail if the data are missing instead of downloading them")
    g.add_argument("--train-subset", type=positive_int, metavar="N",
                   help="train on a fixed class-balanced subset of N images")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no pad-4 crop and flip (for overfitting checks)")


def _add_optimisation_options(g, d) -> None:
    from ..config import FULL_EPOCHS, SCHEDULES
    g.add_argument("--epochs", type=positive_int,
                   help=f"length of the schedule in epochs (default: {d.epochs})")
    g.add_argument("--full", action="store_true",
                   help=f"the full recipe: {FULL_EPOCHS} epochs (PyTorch reached 87.9%% test "
                        "accuracy with it on a JPEG re-encoding of CIFAR-10)")
    g.add_argument("--batch-size", type=positive_int, help=f"default: {d.batch_size}")
    g.add_argument("--eval-batch-size", type=positive_int, help=f"default: {d.eval_batch_size}")
    g.add_argument("--lr", type=nonneg_float, help=f"peak learning rate (default: {d.lr})")
    g.add_argument("--momentum", type=nonneg_float, help=f"default: {d.momentum}")
    g.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=None,
                   help="classical momentum instead of Nesterov's")
    g.add_argument("--weight-decay", type=nonneg_float,
                   help=f"L2 weight decay on all parameters (default: {d.weight_decay})")
    g.add_argument("--no-decay-bn-bias", dest="decay_bn_bias", action="store_false",
                   default=None, help="no weight decay on 1-D parameters (BatchNorm, biases)")
    g.add_argument("--schedule", choices=SCHEDULES,
                   help="cosine: linear warm-up then cosine to 0, per iteration; multistep: "
                        "He et al., lr/10 at 50%% and 75%%; constant (default: cosine)")
    g.add_argument("--warmup-epochs", type=nonneg_float,
                   help=f"warm-up length for --schedule cosine (default: {d.warmup_epochs:g})")
    g.add_argument("--seed", type=nonneg_int,
                   help=f"seeds the model's initial weights and every epoch's shuffle and "
                        f"augmentation (default: {d.seed})")


def _add_model_options(g, d) -> None:
    from ..config import DTYPES, SE_CHOICES
    from ..models.resnet import SHORTCUTS
    from ..nn import GATES, SQUEEZES
    g.add_argument("--model", help=f"a name from npse.models.MODELS (default: {d.model})")
    g.add_argument("--dtype", choices=DTYPES, help=f"default: {d.dtype}")
    g.add_argument("--depth", type=positive_int, help="override the depth the name implies")
    g.add_argument("--widths", type=int_list, metavar="W1,W2,W3",
                   help="channels of the three stages (default 16,32,64); 4,8,8 makes a toy")
    g.add_argument("--shortcut", choices=SHORTCUTS,
                   help="A: zero-padding identity (default), B: 1x1 projection")
    g.add_argument("--se", choices=SE_CHOICES,
                   help="SE variant (default: what the model name implies)")
    g.add_argument("--se-reduction", type=positive_int, help="SE reduction ratio r (default 16)")
    g.add_argument("--se-squeeze", choices=tuple(SQUEEZES), help="default: avg")
    g.add_argument("--se-excitation", choices=tuple(GATES),
                   help="default: sigmoid")
    g.add_argument("--se-stages", type=int_list, metavar="1,2,3",
                   help="stages that get SE blocks (default: 1,2,3)")
    g.add_argument("--no-se-bias", dest="se_bias", action="store_false", default=None,
                   help="SE fully connected layers without biases")


def train_config(args):
    """The :class:`~npse.config.TrainConfig` that ``npse train``'s parsed options ``args`` ask
    for: a new run's, or (``--resume``) the checkpoint's with the options given again checked."""
    from ..config import FULL_EPOCHS, TrainConfig
    from ..rundir import default_out, resume_config
    given = {k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k) is not None}
    if args.full:
        if "epochs" in given:
            raise ValueError("give --epochs or --full, not both")
        given["epochs"] = FULL_EPOCHS
    if args.resume:
        if args.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if args.out is None:
            raise ValueError("--resume needs --out DIR, the directory of the run to continue")
        return resume_config(given.pop("out"), **given)
    config = TrainConfig(**given, overwrite=args.overwrite)
    if config.out is None:
        config.out = default_out(config.model)
    return config
