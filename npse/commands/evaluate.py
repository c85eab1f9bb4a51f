"""``npse evaluate``: the test accuracy of a checkpoint, overall and per class."""
from __future__ import annotations

from pathlib import Path

from ..backend import BACKENDS
from . import options

HELP = "test accuracy of a checkpoint"

DESCRIPTION = ("Load a training checkpoint and print its test accuracy, overall and per class. "
               "The model and the normalisation come from the checkpoint.")


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint.npz written by npse train (or the run's directory)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where the CIFAR files are (default: $NPSE_DATA, else the run's own "
                        "folder if it exists, else ~/.cache/npse)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="fail if the data are missing instead of downloading them")
    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="array backend (default: numpy)")
    p.add_argument("--batch-size", type=options.positive_int, default=250, help="default: 250")
    options.add_threads_option(p)


def data_dir_for(given, recorded):
    """Where to look for the data: ``--data-dir``, then ``$NPSE_DATA``, then the folder the
    checkpoint recorded if it still exists, then the default. A checkpoint is a file from
    anywhere: it must not choose where npse creates folders and downloads."""
    import os
    if given is not None:
        return given
    if os.environ.get("NPSE_DATA"):
        return None                      # the loader reads $NPSE_DATA itself
    if isinstance(recorded, str) and recorded and Path(recorded).is_dir():
        return recorded
    return None


def run(args) -> int:
    from .. import backend

    backend.reuse_freed_memory()
    with options.threads_of(args):
        return _evaluate(args)


def _evaluate(args) -> int:
    from .. import backend
    from ..config import TrainConfig, load_dataset
    from ..fast import FAST
    from ..rundir import CHECKPOINT, load_model_for_inference
    from ..train import evaluate

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    model, meta = load_model_for_inference(path, args.backend)
    model.use_policy(FAST)                   # the fast formulations, as npse train evaluated
    config = TrainConfig.from_dict(meta["config"])
    config.data_dir = data_dir_for(args.data_dir, meta.get("data_dir"))
    config.download = args.download
    with backend.using(args.backend):
        data = load_dataset(config)
        loss, acc, per_class = evaluate(model, data.x_test, data.y_test, meta["mean"],
                                        meta["std"], args.batch_size)
    classes = meta["classes"]
    print(f"{path}: {config.model} on {config.dataset}, epoch {meta['epoch']}/{config.epochs}")
    print(f"test loss {loss:.4f}  test accuracy {100 * acc:.2f}% ({len(data.y_test)} images)")
    width = max(len(c) for c in classes)
    for name, a in zip(classes, per_class):
        shown = "   n/a" if a != a else f"{100 * a:6.2f}%"
        print(f"  {name:<{width}}  {shown}")
    return 0
