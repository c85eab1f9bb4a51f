"""The training loop as a library function: ``train(TrainConfig(...)) -> final metrics``.

One run lives in one output directory ``OUT``:

    OUT/checkpoint.npz   model weights (``model.*``), optimiser state (``optim.*``) and, in the
                         metadata, the configuration, the model config, the epoch and iteration
                         reached, the normalisation mean/std, the class names and every epoch's
                         metrics so far. Rewritten atomically at the end of every epoch.
    OUT/metrics.jsonl    one JSON line per finished epoch (a copy of the checkpoint's list).
    OUT/config.json      the configuration, for people to read (the checkpoint is authoritative).

Reproducibility: the model is initialised from ``seed``, and every epoch's shuffle and
augmentation come from ``(seed, epoch)`` (see :mod:`npse.data.loader`); the learning rate is a
pure function of the global iteration. A run resumed from the checkpoint of epoch e therefore
computes exactly what the uninterrupted run computed, bit for bit (on the same backend).

Resuming checks that the run continues what it claims to: the configuration must be the
checkpoint's, and the data must match the fingerprint stored with it (:func:`data_fingerprint`).

Crash safety: the checkpoint, which holds the metrics list, is written first, the metrics line
after it. A crash between the two leaves a checkpoint one line ahead of ``metrics.jsonl``; on
resume ``metrics.jsonl`` is rewritten from the checkpoint, so no line is lost or doubled.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy

from . import backend
from .checkpoint import (CheckpointError, CheckpointReader, Entry, add_prefix, check_entries,
                         model_from_checkpoint, save_checkpoint)
from .data import channel_stats, iterate_batches, load_cifar10, load_cifar100, num_batches, subset
from .memory import check_memory
from .nn import CrossEntropyLoss, no_grad
from .optim import SGD, Constant, WarmupCosine, he_multistep, skip_bn_and_bias

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
CURVES = "curves.png"
# The only files --overwrite may delete: npse's own.
OWN_FILES = (CHECKPOINT, METRICS, CONFIG, CURVES)
CHECKPOINT_FORMAT = "npse-train-checkpoint"
CHECKPOINT_VERSION = 1

DATASETS = ("cifar10", "cifar100")
SCHEDULES = ("cosine", "multistep", "constant")
SE_CHOICES = ("none", "standard", "pre", "post", "identity", "3x3", "nosqueeze")
DTYPES = ("float32", "float64")
METRIC_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds",
               "images_per_s")
FULL_EPOCHS = 40  # the full recipe (``npse train --full``)


#: On the GPU the training loop reads the loss back (and checks it for NaN) every this many steps.
READ_EVERY_ON_GPU = 25


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
        need_choice("shortcut", ("A", "B"), allow_none=True)
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


#: Whether train() estimates a step's memory before it starts (npse.memory.check_memory).
CHECK_MEMORY = True

# Fields that may change between a run and its resumption without changing what is computed
# (eval_batch_size and backend can change the last bits of the numbers, by the user's choice).
RUNTIME_FIELDS = ("out", "data_dir", "download", "backend", "quiet", "resume", "overwrite",
                  "eval_batch_size")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


# ----------------------------------------------------------------------------- helpers

def default_out(model: str) -> str:
    """``runs/<model>-<YYYYmmdd-HHMMSS>``: the output directory when none is given."""
    return os.path.join("runs", f"{model}-{time.strftime('%Y%m%d-%H%M%S')}")


def holds_run(out) -> bool:
    """True when ``out`` holds a run: a checkpoint or a metrics file."""
    out = Path(out)
    return (out / CHECKPOINT).exists() or (out / METRICS).exists()


def _check_out(out: Path, config: TrainConfig) -> None:
    """Refuse, before any work, an ``out`` that is a file or that holds files npse would write
    (unless ``overwrite``, or ``resume`` of the run there)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory; choose another --out")
    if config.resume or config.overwrite:
        return
    occupied = [name for name in OWN_FILES if (out / name).exists()]
    if holds_run(out):
        raise FileExistsError(
            f"{out} already holds a run ({CHECKPOINT} or {METRICS}); continue it with --resume, "
            f"replace it with --overwrite, or choose another --out")
    if occupied:
        raise FileExistsError(
            f"{out} already holds {', '.join(occupied)}, which npse train would overwrite; move "
            f"it away, choose another --out, or pass --overwrite to replace it")


def _remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files (``.NAME.tmp-PID``) that a killed npse left behind while
    writing one of its own files; those of a process still running are kept."""
    for tmp in out.glob(".*.tmp-*"):
        name, _, pid = tmp.name[1:].rpartition(".tmp-")
        if name in OWN_FILES and pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False        # this process writes nothing while it starts
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True         # someone else's process, or a platform without signals: keep it
    return True


#: Every this many images enter the data fingerprint's pixel sample (all labels enter it).
FINGERPRINT_EVERY = 50
_FINGERPRINT_PARTS = {"train_labels": "training labels", "train_pixels": "training images",
                      "test_labels": "test labels", "test_pixels": "test images"}


def data_fingerprint(x_train, y_train, x_test, y_test) -> dict:
    """Short hashes of the data a run uses, to tell on resume whether they are the same: all
    labels and every FINGERPRINT_EVERY-th image of each split (a few MB, milliseconds)."""
    def digest(a):
        host = numpy.ascontiguousarray(backend.to_host(a))
        return hashlib.sha256(host.tobytes()).hexdigest()[:16]

    return {"train_labels": digest(numpy.asarray(y_train, dtype=numpy.int64)),
            "train_pixels": digest(x_train[::FINGERPRINT_EVERY]),
            "test_labels": digest(numpy.asarray(y_test, dtype=numpy.int64)),
            "test_pixels": digest(x_test[::FINGERPRINT_EVERY])}


def _check_same_data(out: Path, meta: dict, now: dict) -> None:
    """Refuse to resume on other data than the run's; warn once if the run has no fingerprint."""
    saved = meta["data"]
    hint = f"check --data-dir (the run used {meta.get('data_dir') or 'the default data directory'})"
    if (saved["n_train"], saved["n_test"]) != (now["n_train"], now["n_test"]):
        raise ValueError(f"cannot resume {out}: the run had {saved['n_train']} train / "
                         f"{saved['n_test']} test images, the data now {now['n_train']} / "
                         f"{now['n_test']}; {hint}")
    old = saved.get("fingerprint")
    if old is None:
        print(f"npse: warning: {out / CHECKPOINT} predates data fingerprints, so whether the "
              f"data are the run's cannot be checked", file=sys.stderr)
        return
    changed = [what for key, what in _FINGERPRINT_PARTS.items()
               if old.get(key) != now["fingerprint"][key]]
    if changed:
        raise ValueError(f"cannot resume {out}: the {', '.join(changed)} differ from the run's "
                         f"(same numbers of images); {hint}")


def _build_model(name: str, overrides: dict):
    from .models import build_model  # imported late: the CLI's --help must not need it
    return build_model(name, **overrides)


def _model_from_config(config: dict):
    from .models import from_config
    return from_config(config)


def _load_dataset(config: TrainConfig):
    loader = load_cifar100 if config.dataset == "cifar100" else load_cifar10
    return loader(config.data_dir, download=config.download)


def _make_schedule(config: TrainConfig, steps_per_epoch: int):
    total = steps_per_epoch * config.epochs
    if config.schedule == "cosine":
        warmup = min(total, round(config.warmup_epochs * steps_per_epoch))
        return WarmupCosine(config.lr, total, warmup)
    if config.schedule == "multistep":
        return he_multistep(config.lr, steps_per_epoch, config.epochs)
    return Constant(config.lr)


def _write_text_atomic(path: Path, text: str) -> None:
    """Write under a temporary name, then rename: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _metrics_text(metrics) -> str:
    return "".join(json.dumps(m) + "\n" for m in metrics)


# ----------------------------------------------------------------------------- reading checkpoints
# A checkpoint comes from a file, so nothing in it is trusted: the metadata is checked field by
# field, the model it describes is checked against the arrays' headers before anything is read
# (npse.checkpoint.model_from_checkpoint), and weights must be finite.

def _real(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _shown(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_run_meta(meta: dict, where, resume: bool) -> TrainConfig:
    """The configuration of a training checkpoint's metadata ``meta``, after checking every field
    that evaluating (and, with ``resume``, continuing) the run relies on."""
    def fail(why):
        raise CheckpointError(f"{where}: {why}")

    if meta.get("format") != CHECKPOINT_FORMAT:
        fail(f"not an npse training checkpoint (no '{CHECKPOINT_FORMAT}' metadata)")
    version = meta.get("version", CHECKPOINT_VERSION)
    if type(version) is not int or version > CHECKPOINT_VERSION:
        fail(f"checkpoint version {_shown(version)} is not one this npse reads "
             f"(up to {CHECKPOINT_VERSION})")
    for key in ("config", "model_config", "epoch", "iteration", "mean", "std", "classes",
                "metrics"):
        if key not in meta:
            fail(f"the checkpoint metadata lacks '{key}'")
    if not isinstance(meta["config"], dict):
        fail(f"'config' must be a JSON object, got {_shown(meta['config'])}")
    try:
        config = TrainConfig.from_dict(meta["config"])
        config.validate()
    except (TypeError, ValueError) as e:
        fail(f"its config is invalid: {e}")
    epoch, iteration = meta["epoch"], meta["iteration"]
    if type(epoch) is not int or not 0 <= epoch <= config.epochs:
        fail(f"'epoch' must be an integer in [0, {config.epochs}], got {_shown(epoch)}")
    if type(iteration) is not int or iteration < 0:
        fail(f"'iteration' must be an integer >= 0, got {_shown(iteration)}")
    for name in ("mean", "std"):
        v = meta[name]
        if not (isinstance(v, list) and len(v) == 3 and all(_real(a) for a in v)):
            fail(f"'{name}' must be three finite numbers, one per colour channel, got {_shown(v)}")
    if min(meta["std"]) <= 0:
        fail(f"'std' must be > 0 (the images are divided by it), got {meta['std']}")
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        fail(f"'classes' must be a list of class names, got {_shown(classes)}")
    if not isinstance(meta["metrics"], list):
        fail(f"'metrics' must be a list, got {_shown(meta['metrics'])}")
    if meta.get("data_dir") is not None and not isinstance(meta["data_dir"], str):
        fail(f"'data_dir' must be a path or null, got {_shown(meta['data_dir'])}")
    ebs = meta.get("eval_batch_size")
    if ebs is not None and (type(ebs) is not int or ebs < 1):
        fail(f"'eval_batch_size' must be an integer >= 1 or null, got {_shown(ebs)}")
    if resume:
        _check_resume_meta(meta, fail)
    return config


def _check_resume_meta(meta: dict, fail) -> None:
    """What continuing a run needs beyond evaluation: its metrics so far, its data description."""
    metrics = meta["metrics"]
    if len(metrics) != meta["epoch"]:
        fail(f"'metrics' has {len(metrics)} entries for {meta['epoch']} epochs")
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or not all(_real(m.get(k)) for k in METRIC_KEYS) \
                or m["epoch"] != i + 1:
            fail(f"metrics entry {i + 1} must hold the numbers {', '.join(METRIC_KEYS)} with "
                 f"epoch {i + 1}, got {_shown(m)}")
    data = meta.get("data")
    if not isinstance(data, dict) or type(data.get("n_train")) is not int or \
            type(data.get("n_test")) is not int:
        fail(f"'data' must give the numbers of images n_train and n_test, got {_shown(data)}")
    if not isinstance(data.get("fingerprint", {}), dict):
        fail(f"'data.fingerprint' must be a JSON object, got {_shown(data['fingerprint'])}")


def open_run_checkpoint(path, resume: bool = False):
    """``(reader, meta, config)`` of the training checkpoint at ``path``, its metadata checked
    (:func:`_check_run_meta`); no array is read yet. Close ``reader`` (a context manager)."""
    reader = CheckpointReader(path)
    try:
        config = _check_run_meta(reader.meta, reader.path, resume)
        others = [k for k in reader.entries if not k.startswith(("model.", "optim."))]
        if others:
            raise CheckpointError(f"{reader.path}: unexpected entries {', '.join(others[:3])} "
                                  f"(a training checkpoint holds model.* and optim.* only)")
    except BaseException:
        reader.close()
        raise
    return reader, reader.meta, config


def _optimizer_entries(model) -> dict:
    """Every ``optim.*`` entry an SGD over ``model`` may save, with its shape and dtype."""
    entries = {"optim.step": Entry((), numpy.dtype(numpy.int64))}
    for name, p in model.named_parameters():
        entries[f"optim.momentum_buffer.{name}"] = Entry(tuple(p.shape), numpy.dtype(p.dtype))
    return entries


def _model_from_run(reader, meta):
    """The run's model with its weights (on NumPy), all entries of the file checked."""
    model = model_from_checkpoint(reader, meta["model_config"])
    if len(meta["classes"]) != model.config["num_classes"]:
        raise CheckpointError(f"{reader.path}: 'classes' names {len(meta['classes'])} classes, "
                              f"but the model has {model.config['num_classes']} outputs")
    check_entries(reader, _optimizer_entries(model), "optim.", optional=True)
    return model


def load_model_for_inference(path, backend_name: str = "numpy"):
    """``(model, meta)``: the model of a training checkpoint, with its weights, in eval mode on
    backend ``backend_name``, and the checkpoint's checked metadata.

    Reads full training checkpoints and weights-only ones (``model.*`` entries, no ``optim.*``).
    Everything in the file is checked before memory is spent on it and the weights must be
    finite (see :func:`npse.checkpoint.model_from_checkpoint`); a bad file is a
    :class:`~npse.checkpoint.CheckpointError` (a ValueError) naming the file and the problem.
    ``meta["mean"]`` / ``meta["std"]`` are three finite numbers each, std > 0.
    """
    reader, meta, _ = open_run_checkpoint(path)
    with reader:
        model = _model_from_run(reader, meta)
    model.eval()
    return model.to(backend_name), meta


def read_checkpoint_meta(path) -> tuple[dict, dict]:
    """``(arrays, meta)`` of a training checkpoint, its metadata checked; a
    :class:`~npse.checkpoint.CheckpointError` (a ValueError) if it is not one. Reads every array
    (at most the file's size); :func:`load_model_for_inference` checks the arrays too."""
    reader, meta, _ = open_run_checkpoint(path)
    with reader:
        return {key: reader.read(key) for key in reader.entries}, meta


def _read_for_resume(out: Path, config: TrainConfig):
    """``(meta, model, optimiser state)`` of the run in ``out``, everything checked: the
    configuration must be the run's, the file a full training checkpoint."""
    path = out / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    reader, meta, _ = open_run_checkpoint(path, resume=True)
    with reader:
        saved = meta["config"]
        mine = config.training_dict()
        diff = [f"{k}={mine.get(k)!r} (the run has {saved.get(k)!r})"
                for k in sorted(set(mine) | set(saved)) if mine.get(k) != saved.get(k)]
        if diff:
            raise ValueError(f"cannot resume {out}: {'; '.join(diff)}")
        if "optim.step" not in reader.entries:
            raise CheckpointError(
                f"cannot resume {out}: {path} holds model weights only, no optimiser state "
                f"(optim.*); it can be evaluated but not continued. Start a new run instead "
                f"(another --out, or --overwrite)")
        model = _model_from_run(reader, meta)
        state = {}
        for key in reader.entries:
            if key.startswith("optim."):
                array = reader.read(key)
                if array.dtype.kind == "f" and not numpy.isfinite(array).all():
                    raise CheckpointError(f"{path}: '{key}' holds non-finite values (NaN or inf)")
                state[key[len("optim."):]] = array
    return meta, model, state


def resume_config(out, **given) -> TrainConfig:
    """The configuration to resume the run in ``out``: the checkpoint's, plus ``given``.

    ``given`` holds options set explicitly (on the command line). Run-time options
    (:data:`RUNTIME_FIELDS`) are taken from it; a training option that differs from the
    checkpoint's is a ValueError, since the resumed run would no longer repeat the original.
    """
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    reader, meta, _ = open_run_checkpoint(path, resume=True)
    reader.close()
    saved = meta["config"]
    probe = json.loads(json.dumps({k: v for k, v in given.items() if k not in RUNTIME_FIELDS},
                                  default=list))
    conflicts = [f"{k}={probe[k]!r} (the run has {saved.get(k)!r})" for k in probe
                 if probe[k] != saved.get(k)]
    if conflicts:
        raise ValueError(
            f"cannot resume {out}: {'; '.join(conflicts)}. On resume the configuration comes "
            f"from the checkpoint: drop these options, or start a new run (another --out, or "
            f"--overwrite)")
    config = TrainConfig.from_dict(saved)
    # Run-time options not given again keep the run's own values: its data directory, and its
    # evaluation batch size (another one would change the last bits of the test metrics).
    if meta.get("data_dir") is not None:
        config.data_dir = meta["data_dir"]
    if meta.get("eval_batch_size") is not None:
        config.eval_batch_size = int(meta["eval_batch_size"])
    for k, v in given.items():
        if k in RUNTIME_FIELDS:
            setattr(config, k, v)
    config.out, config.resume, config.overwrite = str(out), True, False
    return config


# ----------------------------------------------------------------------------- evaluation

def evaluate(model, x, y, mean, std, batch_size=250, dtype=None):
    """Loss, accuracy and per-class accuracy of ``model`` on uint8 images ``x`` (N, 3, H, W).

    Runs under :func:`npse.nn.no_grad` in eval mode (BatchNorm uses its running statistics); the
    model's previous mode is restored afterwards. Returns ``(loss, acc, per_class_acc)``: the mean
    cross-entropy and the accuracy as Python floats, and a float64 host array (classes,) with
    NaN for a class that has no sample in ``y``.
    """
    if len(y) == 0:
        raise ValueError("evaluate: no samples")
    dtype = model.dtype if dtype is None else dtype
    was_training = model.training
    model.eval()
    loss_fn = CrossEntropyLoss()
    loss_sum, preds = 0.0, []
    try:
        with no_grad():
            for xb, yb in iterate_batches(x, y, batch_size, mean, std, shuffle=False,
                                          augment=False, dtype=dtype):
                logits = model(xb)
                # Summed where the logits live: on the GPU, nothing is read back per batch.
                loss_sum = loss_sum + loss_fn(logits, yb) * len(yb)
                preds.append(logits.argmax(axis=1))
    finally:
        model.train(was_training)
    y_host = backend.to_host(y).astype(numpy.int64)
    pred = numpy.concatenate([backend.to_host(p) for p in preds])
    loss_sum = float(loss_sum)
    num_classes = int(logits.shape[1])
    hits = pred == y_host
    total = numpy.bincount(y_host, minlength=num_classes).astype(numpy.float64)
    right = numpy.bincount(y_host[hits], minlength=num_classes).astype(numpy.float64)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        per_class = numpy.where(total > 0, right / numpy.maximum(total, 1), numpy.nan)
    return loss_sum / len(y_host), float(hits.mean()), per_class


# ----------------------------------------------------------------------------- training

def _prepare_out(out: Path, config: TrainConfig) -> None:
    """Make ``out`` ready to write: with ``overwrite`` delete npse's own files there (and nothing
    else); on resume or overwrite remove the temporaries a killed run left behind."""
    _check_out(out, config)     # again: the directory may have changed while the data loaded
    if config.overwrite and out.is_dir():
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the output directory {out}: {e.strerror or e}") from None
    if config.resume or config.overwrite:
        _remove_stale_temporaries(out)


def _write_failed(error: OSError, what: Path, out: Path, kept_metrics) -> OSError:
    """An error for a failed write of ``what`` that says what is intact and how to go on."""
    full = error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    why = "the disk is full" if full else (error.strerror or str(error))
    if kept_metrics:
        after = (f"{out / CHECKPOINT} is intact and holds epoch {kept_metrics[-1]['epoch']}; "
                 f"{'free some space, then ' if full else ''}continue with: npse train --out "
                 f"{shlex.quote(str(out))} --resume")
    else:
        after = "No epoch was saved; start the run again" + (
            " after freeing some space" if full else "")
    return OSError(f"could not write {what}: {why}. {after}")


def _kept(out: Path, metrics) -> str:
    """What a stopped run leaves behind, for the error message."""
    if not metrics:
        return "No checkpoint was written (no epoch finished)"
    return f"{out / CHECKPOINT} keeps the last good epoch ({metrics[-1]['epoch']})"


def _epoch_line(m: dict, epochs: int) -> str:
    return (f"epoch {m['epoch']}/{epochs}  train loss {m['train_loss']:.4f} acc "
            f"{100 * m['train_acc']:.2f}%  test loss {m['test_loss']:.4f} acc "
            f"{100 * m['test_acc']:.2f}%  lr {m['lr']:.4g}  {m['seconds']:.1f} s  "
            f"{m['images_per_s']:.0f} img/s")


def train(config: TrainConfig, log=print) -> dict:
    """Train (or, with ``config.resume``, continue training) one model; return final metrics.

    ``log(str)`` receives the human-readable lines (start-up summary, one line per epoch, the
    final accuracy); pass ``None`` for silence. The progress bar goes to stderr and is shown
    only when stderr is a terminal and ``config.quiet`` is False.

    Returns the last epoch's metrics (the keys of :data:`METRIC_KEYS`) plus ``out``,
    ``checkpoint``, ``classes`` and ``per_class_acc`` (a list, test set, last epoch).

    Raises ValueError (bad configuration; a damaged checkpoint is its subclass CheckpointError),
    FileExistsError (``out`` holds a run or a file npse would write, and neither resume nor
    overwrite is set), FileNotFoundError (data, checkpoint), MemoryError (a step at this batch
    size cannot fit: :func:`npse.memory.check_memory`), NonFiniteLossError, OSError (a failed
    write, saying what is intact); KeyboardInterrupt passes through. In every case the last
    checkpoint is left intact.
    """
    log = log or (lambda s: None)
    config = dataclasses.replace(config)
    config.validate()
    if config.out is None:
        config.out = default_out(config.model)
    out = Path(config.out)
    previous_backend = backend.get_backend()
    backend.set_backend(config.backend)
    try:
        # Overflow on the way to a NaN loss would print a NumPy warning per layer; the loss
        # check below reports it once, with the epoch and iteration.
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return _train(config, out, log)
    finally:
        backend.set_backend(previous_backend)


def _train(config: TrainConfig, out: Path, log) -> dict:
    from tqdm import tqdm

    # --- everything that can fail on bad input happens before OUT is touched -------------------
    _check_out(out, config)
    meta = optim_state = None
    if config.resume:
        meta, model, optim_state = _read_for_resume(out, config)
    else:
        model = _build_model(config.model, config.model_overrides())
    model.to(config.backend)
    opt = SGD(model.named_parameters(), lr=config.lr, momentum=config.momentum,
              nesterov=config.nesterov, weight_decay=config.weight_decay,
              decay_filter=None if config.decay_bn_bias else skip_bn_and_bias)
    if optim_state is not None:
        try:
            opt.load_state_dict(optim_state)
        except ValueError as e:
            raise CheckpointError(f"{out / CHECKPOINT}: the optimiser state does not fit: {e}") \
                from None

    data = _load_dataset(config)
    if config.train_subset is not None and config.train_subset > len(data.y_train):
        log(f"note: --train-subset {config.train_subset} is more than the {len(data.y_train)} "
            f"training images of {config.dataset}; training on all of them")
    x_train, y_train = subset(data.x_train, data.y_train, config.train_subset, seed=config.seed)
    x_test, y_test = subset(data.x_test, data.y_test, config.test_subset, seed=0)
    described = {"n_train": len(y_train), "n_test": len(y_test),
                 "fingerprint": data_fingerprint(x_train, y_train, x_test, y_test)}
    if meta is not None:
        mean, std = meta["mean"], meta["std"]
        _check_same_data(out, meta, described)
    else:
        mean, std = (a.tolist() for a in channel_stats(x_train))
    if CHECK_MEMORY:
        check_memory(model.config, x_train.shape[1:], config.batch_size, len(y_train),
                     config.eval_batch_size, len(y_test))

    steps = num_batches(len(y_train), config.batch_size)
    schedule = _make_schedule(config, steps)
    if meta is not None:
        start_epoch, iteration, metrics = meta["epoch"], meta["iteration"], list(meta["metrics"])
    else:
        start_epoch, iteration, metrics = 0, 0, []

    _prepare_out(out, config)
    # From here on OUT is ours.
    try:
        _write_text_atomic(out / CONFIG, json.dumps(
            {"config": config.training_dict(), "model_config": model.config, "mean": mean,
             "std": std, "classes": list(data.classes)}, indent=2) + "\n")
        if meta is not None:
            # The checkpoint is the truth: repair a metrics file that a crash left one line short.
            _write_text_atomic(out / METRICS, _metrics_text(metrics))
    except OSError as e:
        raise _write_failed(e, out / (CONFIG if meta is None else METRICS), out, metrics) from e

    n_params = sum(int(p.data.size) for p in model.parameters())
    log(f"{config.model}: {n_params:,} parameters ({config.dtype}, {config.backend}); "
        f"{config.dataset}: {len(y_train)} train / {len(y_test)} test images; "
        f"{steps} iterations per epoch; {schedule.describe()}")
    if meta is not None:
        log(f"resuming {out} after epoch {start_epoch}/{config.epochs}")

    num_classes = model.config["num_classes"]
    for split, labels in (("training", y_train), ("test", y_test)):
        if len(labels) and int(labels.max()) >= num_classes:
            raise ValueError(f"{config.dataset} {split} labels go up to {int(labels.max())}, but "
                             f"{config.model} has {num_classes} outputs")
    # The labels were checked once just above, so the loss need not check each batch (on the
    # GPU that check would read two numbers back to the host at every step).
    loss_fn = CrossEntropyLoss(check_targets=False)
    # Reading the loss as a Python number waits for the device. On the CPU that costs nothing, so
    # it is read (and checked for NaN/inf) at every step; on the GPU every READ_EVERY_ON_GPU steps.
    read_every = READ_EVERY_ON_GPU if backend.get_backend() == "cupy" else 1
    dtype = numpy.dtype(config.dtype)
    per_class = None
    for epoch in range(start_epoch, config.epochs):
        model.train()
        started = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        pending_loss, pending_correct, first_pending = 0.0, 0, 0
        # disable=None: tqdm hides itself when stderr is not a terminal (no bar spam in logs).
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="it",
                   file=sys.stderr, disable=True if config.quiet else None, leave=False,
                   dynamic_ncols=True, mininterval=0.5)
        try:
            batches = iterate_batches(x_train, y_train, config.batch_size, mean, std,
                                      shuffle=True, augment=config.augment, seed=config.seed,
                                      epoch=epoch, dtype=dtype)
            for i, (xb, yb) in enumerate(batches):
                lr = schedule(iteration)
                opt.lr = lr
                logits = model(xb)
                loss = loss_fn(logits, yb)
                b = len(yb)
                # Device values until read below (sums of 0-d arrays stay on the device).
                pending_loss = pending_loss + loss * b
                pending_correct = pending_correct + (logits.argmax(axis=1) == yb).sum()
                if (i + 1) % read_every == 0 or i + 1 == steps:
                    chunk = float(pending_loss)
                    if not math.isfinite(chunk):
                        where = (f"iteration {i + 1}/{steps}" if first_pending == i else
                                 f"iterations {first_pending + 1}-{i + 1} of {steps}")
                        raise NonFiniteLossError(
                            f"the training loss became {chunk} at epoch {epoch + 1}, {where} "
                            f"(global iteration {iteration + 1}); the run stops. "
                            f"{_kept(out, metrics)}. A smaller --lr usually helps")
                    loss_sum += chunk
                    correct += int(pending_correct)
                    pending_loss, pending_correct, first_pending = 0.0, 0, i + 1
                opt.zero_grad()
                model.backward(loss_fn.backward(), input_grad=False)
                opt.step()
                iteration += 1
                seen += b
                bar.update(1)
                if not bar.disable and first_pending == i + 1:     # just read: show it
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                                    img_s=f"{seen / (time.perf_counter() - started):.0f}",
                                    refresh=False)
        finally:
            bar.close()
        train_seconds = time.perf_counter() - started
        test_loss, test_acc, per_class = evaluate(model, x_test, y_test, mean, std,
                                                  config.eval_batch_size, dtype=dtype)
        if not math.isfinite(test_loss):
            raise NonFiniteLossError(
                f"the test loss became {test_loss} after epoch {epoch + 1}; the run stops. "
                f"{_kept(out, metrics)}. A smaller --lr usually helps")
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                  "test_loss": test_loss, "test_acc": test_acc, "lr": lr,
                  "seconds": time.perf_counter() - started,
                  "images_per_s": seen / train_seconds}
        metrics.append(record)
        # Checkpoint first (it carries the metrics list), then the metrics line: see the module
        # docstring for why this order cannot lose or duplicate a line.
        try:
            save_checkpoint(out / CHECKPOINT, {
                **add_prefix(model.state_dict(), "model"),
                **add_prefix(opt.state_dict(), "optim"),
            }, {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": config.training_dict(), "model_config": model.config,
                "epoch": epoch + 1, "iteration": iteration, "mean": mean, "std": std,
                "classes": list(data.classes), "metrics": metrics, "data": described,
                "data_dir": None if config.data_dir is None else str(config.data_dir),
                "eval_batch_size": config.eval_batch_size,
            })
        except OSError as e:
            raise _write_failed(e, out / CHECKPOINT, out, metrics[:-1]) from e
        try:
            with open(out / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:    # the checkpoint has the line: a resume rewrites the file from it
            raise _write_failed(e, out / METRICS, out, metrics) from e
        log(_epoch_line(record, config.epochs))

    if not metrics:  # pragma: no cover - epochs >= 1 guarantees one epoch
        raise RuntimeError("no epoch was run")
    if per_class is None:  # the run was already complete: evaluate its final weights
        _, _, per_class = evaluate(model, x_test, y_test, mean, std, config.eval_batch_size,
                                   dtype=dtype)
        log(f"{out} is already complete ({config.epochs} epochs)")
    final = dict(metrics[-1])
    log(f"final test accuracy: {100 * final['test_acc']:.2f}% after {final['epoch']} epochs "
        f"(checkpoint {out / CHECKPOINT})")
    final.update(out=str(out), checkpoint=str(out / CHECKPOINT), classes=list(data.classes),
                 per_class_acc=[float(a) for a in per_class])
    return final
