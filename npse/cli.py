"""The ``npse`` command: ``npse train``, ``evaluate``, ``plot``, ``excitation``, ``bench``, ``study``.

Every error a user can cause (a bad option, missing data, a corrupt checkpoint, an unusable
backend) ends as one line ``npse: error: ...`` on stderr and a non-zero exit status, never as a
traceback. Set ``NPSE_TRACEBACK=1`` to see the traceback anyway (for debugging npse itself).

Exit status: 0 success, 1 error, 2 bad command line, 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from . import train as T
from .backend import BACKENDS
from .models.resnet import SHORTCUTS
from .nn import GATES, SQUEEZES

PROG = "npse"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the default prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- option types

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _nonneg_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _nonneg_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _int_list(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 16,32,64, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


# ----------------------------------------------------------------------------- npse train

D = T.TrainConfig()  # the defaults, for the help texts

# Options of `npse train` that map one-to-one to TrainConfig fields. Their argparse default is
# None, so that an option given on the command line can be told from one left out (--resume
# takes the configuration from the checkpoint and refuses conflicting options).
TRAIN_FIELDS = (
    "model", "dataset", "epochs", "batch_size", "eval_batch_size", "lr", "momentum", "nesterov",
    "weight_decay", "decay_bn_bias", "schedule", "warmup_epochs", "seed", "train_subset",
    "augment", "dtype", "depth", "widths", "shortcut", "se", "se_reduction", "se_squeeze",
    "se_excitation", "se_stages", "se_bias", "data_dir", "download", "backend", "quiet", "out",
)


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train a (SE-)ResNet on CIFAR",
        description=(
            "Train a (SE-)ResNet on CIFAR-10/100 with SGD (Nesterov momentum), weight decay and a "
            "per-iteration learning-rate schedule. The defaults are the calibrated quick recipe: "
            f"se_resnet20, {D.epochs} epochs (about 13 minutes on 2 CPU cores, about a minute on "
            f"a GPU). --full runs the full recipe, {T.FULL_EPOCHS} epochs, with which PyTorch reached 87.9% test "
            "accuracy on a JPEG re-encoding of CIFAR-10 (docs/11). Each epoch appends a line to OUT/metrics.jsonl and rewrites "
            "OUT/checkpoint.npz; --resume continues an interrupted run and ends with exactly the "
            "metrics of an uninterrupted one."),
        epilog=("On --resume the configuration comes from the checkpoint: training options given "
                "again must agree with it (else an error); --data-dir, --no-download, --backend, "
                "--eval-batch-size and --quiet may change."))
    g = p.add_argument_group("run")
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
                   help=f"array backend (default: {D.backend}); cupy needs CuPy and a GPU")
    g.add_argument("--reference", action="store_true",
                   help="compute with the reference layers of npse.nn only (the execution policy "
                        "npse.fast.REFERENCE): slower, the same numbers up to rounding")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=T.DATASETS, help=f"default: {D.dataset}")
    g.add_argument("--data-dir", metavar="DIR",
                   help="where the CIFAR binary files are or go (default: $NPSE_DATA or "
                        "~/.cache/npse)")
    g.add_argument("--no-download", dest="download", action="store_false", default=None,
                   help="fail if the data are missing instead of downloading them")
    g.add_argument("--train-subset", type=_positive_int, metavar="N",
                   help="train on a fixed class-balanced subset of N images")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no pad-4 crop and flip (for overfitting checks)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=_positive_int,
                   help=f"length of the schedule in epochs (default: {D.epochs})")
    g.add_argument("--full", action="store_true",
                   help=f"the full recipe: {T.FULL_EPOCHS} epochs (PyTorch reached 87.9%% test "
                        "accuracy with it on a JPEG re-encoding of CIFAR-10)")
    g.add_argument("--batch-size", type=_positive_int, help=f"default: {D.batch_size}")
    g.add_argument("--eval-batch-size", type=_positive_int, help=f"default: {D.eval_batch_size}")
    g.add_argument("--lr", type=_nonneg_float, help=f"peak learning rate (default: {D.lr})")
    g.add_argument("--momentum", type=_nonneg_float, help=f"default: {D.momentum}")
    g.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=None,
                   help="classical momentum instead of Nesterov's")
    g.add_argument("--weight-decay", type=_nonneg_float,
                   help=f"L2 weight decay on all parameters (default: {D.weight_decay})")
    g.add_argument("--no-decay-bn-bias", dest="decay_bn_bias", action="store_false",
                   default=None, help="no weight decay on 1-D parameters (BatchNorm, biases)")
    g.add_argument("--schedule", choices=T.SCHEDULES,
                   help="cosine: linear warm-up then cosine to 0, per iteration; multistep: "
                        "He et al., lr/10 at 50%% and 75%%; constant (default: cosine)")
    g.add_argument("--warmup-epochs", type=_nonneg_float,
                   help=f"warm-up length for --schedule cosine (default: {D.warmup_epochs:g})")
    g.add_argument("--seed", type=_nonneg_int,
                   help=f"seeds the model's initial weights and every epoch's shuffle and "
                        f"augmentation (default: {D.seed})")
    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"a name from npse.models.MODELS (default: {D.model})")
    g.add_argument("--dtype", choices=T.DTYPES, help=f"default: {D.dtype}")
    g.add_argument("--depth", type=_positive_int, help="override the depth the name implies")
    g.add_argument("--widths", type=_int_list, metavar="W1,W2,W3",
                   help="channels of the three stages (default 16,32,64); 4,8,8 makes a toy")
    g.add_argument("--shortcut", choices=SHORTCUTS,
                   help="A: zero-padding identity (default), B: 1x1 projection")
    g.add_argument("--se", choices=T.SE_CHOICES,
                   help="SE variant (default: what the model name implies)")
    g.add_argument("--se-reduction", type=_positive_int, help="SE reduction ratio r (default 16)")
    g.add_argument("--se-squeeze", choices=tuple(SQUEEZES), help="default: avg")
    g.add_argument("--se-excitation", choices=tuple(GATES),
                   help="default: sigmoid")
    g.add_argument("--se-stages", type=_int_list, metavar="1,2,3",
                   help="stages that get SE blocks (default: 1,2,3)")
    g.add_argument("--no-se-bias", dest="se_bias", action="store_false", default=None,
                   help="SE fully connected layers without biases")
    p.set_defaults(func=_run_train)


def _train_config(args) -> T.TrainConfig:
    given = {k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k) is not None}
    if args.full:
        if "epochs" in given:
            raise ValueError("give --epochs or --full, not both")
        given["epochs"] = T.FULL_EPOCHS
    if args.resume:
        if args.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if args.out is None:
            raise ValueError("--resume needs --out DIR, the directory of the run to continue")
        return T.resume_config(given.pop("out"), **given)
    config = T.TrainConfig(**given, overwrite=args.overwrite)
    if config.out is None:
        config.out = T.default_out(config.model)
    return config


def _run_train(args) -> int:
    config = _train_config(args)
    policy = None
    if args.reference:
        from .fast import REFERENCE as policy
    try:
        T.train(config, policy=policy)
    except KeyboardInterrupt:
        out = config.out
        if (Path(out) / T.CHECKPOINT).exists():
            print(f"interrupted; resume with: npse train --out {shlex.quote(out)} --resume",
                  file=sys.stderr)
        else:
            print("interrupted before the first epoch finished; no checkpoint was written",
                  file=sys.stderr)
        return 130
    return 0


# ----------------------------------------------------------------------------- npse evaluate

def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate", help="test accuracy of a checkpoint",
        description="Load a training checkpoint and print its test accuracy, overall and per "
                    "class. The model and the normalisation come from the checkpoint.")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint.npz written by npse train (or the run's directory)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where the CIFAR files are (default: the run's, else $NPSE_DATA or "
                        "~/.cache/npse)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="fail if the data are missing instead of downloading them")
    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="array backend (default: numpy)")
    p.add_argument("--batch-size", type=_positive_int, default=250, help="default: 250")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from . import backend
    from .fast import FAST

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / T.CHECKPOINT
    model, meta = T.load_model_for_inference(path, args.backend)
    model.use_policy(FAST)                   # the fast formulations, as npse train evaluated
    config = T.TrainConfig.from_dict(meta["config"])
    config.data_dir = args.data_dir if args.data_dir is not None else meta.get("data_dir")
    config.download = args.download
    previous = backend.get_backend()
    backend.set_backend(args.backend)
    try:
        data = T._load_dataset(config)
        loss, acc, per_class = T.evaluate(model, data.x_test, data.y_test, meta["mean"],
                                          meta["std"], args.batch_size)
    finally:
        backend.set_backend(previous)
    classes = meta["classes"]
    print(f"{path}: {config.model} on {config.dataset}, epoch {meta['epoch']}/{config.epochs}")
    print(f"test loss {loss:.4f}  test accuracy {100 * acc:.2f}% ({len(data.y_test)} images)")
    width = max(len(c) for c in classes)
    for name, a in zip(classes, per_class):
        shown = "   n/a" if a != a else f"{100 * a:6.2f}%"
        print(f"  {name:<{width}}  {shown}")
    return 0


# ----------------------------------------------------------------------------- npse plot

def _add_plot(sub):
    p = sub.add_parser(
        "plot", help="draw the learning curves of a run",
        description="Draw loss and accuracy (train and test) and the learning rate per epoch "
                    "from OUT/metrics.jsonl into OUT/curves.png. Needs matplotlib: "
                    "pip install 'npse[plot]'.")
    p.add_argument("out", metavar="OUT", help="a run directory of npse train")
    p.add_argument("--output", metavar="PNG", help="where to write (default: OUT/curves.png)")
    p.set_defaults(func=_run_plot)


def _run_plot(args) -> int:
    from . import plot

    path = plot.plot_run(args.out, args.output)
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- npse excitation

def _add_excitation(sub):
    from . import excitation    # its options live next to the analysis (docs/13-role-of-excitation.md)
    p = sub.add_parser(
        "excitation", help="what the SE gates of a trained network do, per class and depth",
        description="Run the test set through a trained SE network, record every SE block's gates "
                    "per class (OUT/gates.npz), measure class-specificity, saturation and spread, "
                    "check the paper's claims, probe each stage by fixing its gates, and draw the "
                    "paper's figures 6 and 7 (OUT/*.png, needs matplotlib).")
    excitation.add_arguments(p, _positive_int)
    p.set_defaults(func=excitation.command)


# ----------------------------------------------------------------------------- npse bench

def _add_bench(sub):
    from . import bench
    p = sub.add_parser("bench", help="time forward and backward passes",
                       description="Benchmarks (see npse.bench).")
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)


# ----------------------------------------------------------------------------- npse study

def _add_study(sub):
    from . import study
    p = sub.add_parser(
        "study", help="run one of the paper's ablations (arms x seeds) and tabulate it",
        description="Run a study of the paper's ablations: every arm x seed is an ordinary "
                    "training run in OUT/<arm>/seed-<s>/; finished runs are skipped, interrupted "
                    "ones resumed. Writes OUT/results.{json,md,png}. See docs/12-studies.md.")
    study.add_arguments(p)
    p.set_defaults(func=study.main_from_args)


def _out_of_memory(error: MemoryError) -> str:
    """The one-line message for a MemoryError: npse's own estimates already say what fits."""
    text = " ".join(str(error).split())
    if text.startswith(("a training step", "an evaluation pass")):
        return text
    return (f"out of memory{': ' + text if text else ''}. A smaller --batch-size (or "
            f"--eval-batch-size) needs less; a run's last checkpoint is left intact")


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


# ----------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Squeeze-and-Excitation ResNets in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_evaluate(sub)
    _add_plot(sub)
    _add_excitation(sub)
    _add_bench(sub)
    _add_study(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed by _Parser.error
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    if args.command is None:
        return _fail("a command is required: train, evaluate, plot, excitation, bench or study "
                     "(see 'npse --help')")
    if args.command in ("train", "evaluate", "bench"):
        from . import backend
        backend.reuse_freed_memory()     # fewer page faults in long runs (see its docstring)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError as e:
        if os.environ.get("NPSE_TRACEBACK"):
            raise
        return _fail(_out_of_memory(e))
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as e:
        if os.environ.get("NPSE_TRACEBACK"):
            raise
        return _fail(" ".join(str(e).split()) or type(e).__name__)
    return 0 if status is None else int(status)
