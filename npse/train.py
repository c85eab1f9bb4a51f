"""The training loop as a library function: ``train(TrainConfig(...)) -> final metrics``.

Three parts, each short enough to read on its own: one step (:func:`npse.step.train_step`,
shared with ``npse bench`` and the GPU tests), one epoch of steps (:func:`train_epoch`), and
:func:`train`, which sets up the model, data and schedule, runs the epochs and writes the run
directory after each one (npse/rundir.py: what is written, and what a resume checks).

Reproducibility: the model is initialised from ``seed``, and every epoch's shuffle and
augmentation come from ``(seed, epoch)`` (see :mod:`npse.data.loader`); the learning rate is a
pure function of the global iteration. A run resumed from the checkpoint of epoch e therefore
computes exactly what the uninterrupted run computed, bit for bit (on the same backend and
execution policy).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy

from . import backend
from .checkpoint import CheckpointError
from .data import channel_stats, iterate_batches, load_cifar10, load_cifar100, num_batches, subset
from .memory import check_memory
from .models.resnet import SE_VARIANTS, SHORTCUTS
from .nn import CrossEntropyLoss, no_grad
from .optim import SGD, Constant, WarmupCosine, he_multistep, skip_bn_and_bias
# What a run directory holds, how it is written and what a resume checks: npse/rundir.py. Its
# public names are also reached as npse.train.* (by the CLI, the study, the tests, the chapters).
from .rundir import (  # noqa: F401  (the first two lines are re-exported, not used here)
    CURVES, OWN_FILES, CHECKPOINT_FORMAT, holds_run, open_run_checkpoint,
    load_model_for_inference, read_checkpoint_meta, resume_config,
    CHECKPOINT, CONFIG, METRICS, RUNTIME_FIELDS, default_out, data_fingerprint, write_epoch,
    write_text_atomic, _check_out, _check_same_data, _kept, _metrics_text, _prepare_out,
    _read_for_resume, _write_failed)
from .step import train_step


DATASETS = ("cifar10", "cifar100")
SCHEDULES = ("cosine", "multistep", "constant")
SE_CHOICES = ("none",) + tuple(v for v in SE_VARIANTS if v is not None)   # "none": no SE
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


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


# ----------------------------------------------------------------------------- helpers


def _build_model(name: str, overrides: dict):
    from .models import build_model  # imported late: the CLI's --help must not need it
    return build_model(name, **overrides)


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


# ----------------------------------------------------------------------------- reading checkpoints
# A checkpoint comes from a file, so nothing in it is trusted: the metadata is checked field by
# field, the model it describes is checked against the arrays' headers before anything is read
# (npse.checkpoint.model_from_checkpoint), and weights must be finite.


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


def _epoch_line(m: dict, epochs: int) -> str:
    return (f"epoch {m['epoch']}/{epochs}  train loss {m['train_loss']:.4f} acc "
            f"{100 * m['train_acc']:.2f}%  test loss {m['test_loss']:.4f} acc "
            f"{100 * m['test_acc']:.2f}%  lr {m['lr']:.4g}  {m['seconds']:.1f} s  "
            f"{m['images_per_s']:.0f} img/s")


def train_epoch(model, loss_fn, optimizer, schedule, batches, steps, iteration, read_every, stop,
                bar):
    """One epoch: :func:`~npse.step.train_step` on each of the ``steps`` batches of ``batches``,
    the learning rate set from ``schedule(iteration)`` before each (``iteration`` counts steps
    across epochs). The loss and the correct predictions are summed where the logits live and
    read every ``read_every`` steps and at the end (on a GPU each read waits for the device); a
    non-finite loss calls ``stop(where, value)``, which raises. ``bar`` is a tqdm progress bar.

    Returns (mean training loss, training accuracy, images seen, last learning rate, iteration).
    """
    model.train()
    started = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    pending_loss, pending_correct, first_pending = 0.0, 0, 0
    lr = optimizer.lr
    for i, (xb, yb) in enumerate(batches):
        lr = optimizer.lr = schedule(iteration)
        logits, loss, _ = train_step(model, loss_fn, optimizer, xb, yb)
        pending_loss = pending_loss + loss * len(yb)
        pending_correct = pending_correct + (logits.argmax(axis=1) == yb).sum()
        if (i + 1) % read_every == 0 or i + 1 == steps:
            chunk = float(pending_loss)
            if not math.isfinite(chunk):
                where = (f"iteration {i + 1}/{steps}" if first_pending == i else
                         f"iterations {first_pending + 1}-{i + 1} of {steps}")
                stop(f"{where} (global iteration {iteration + 1})", chunk)
            loss_sum += chunk
            correct += int(pending_correct)
            pending_loss, pending_correct, first_pending = 0.0, 0, i + 1
        iteration += 1
        seen += len(yb)
        bar.update(1)
        if not bar.disable and first_pending == i + 1:     # just read: show it
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - started):.0f}", refresh=False)
    return loss_sum / seen, correct / seen, seen, lr, iteration


def train(config: TrainConfig, log=print, policy=None) -> dict:
    """Train (or, with ``config.resume``, continue training) one model; return final metrics.

    ``log(str)`` receives the human-readable lines (start-up summary, the execution policy,
    one line per epoch, the final accuracy); pass ``None`` for silence. The progress bar goes to
    stderr and is shown only when stderr is a terminal and ``config.quiet`` is False.
    ``policy``: how the model computes (:class:`npse.fast.ExecutionPolicy`, default
    :data:`npse.fast.FAST`); it is not part of the configuration, so a run may be resumed under
    another one (the numbers agree to rounding, tests/test_formulations.py).

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
            return _train(config, out, log, policy)
    finally:
        backend.set_backend(previous_backend)


def _train(config: TrainConfig, out: Path, log, policy) -> dict:
    from tqdm import tqdm

    from .fast import FAST
    policy = FAST if policy is None else policy

    # --- everything that can fail on bad input happens before OUT is touched -------------------
    _check_out(out, config)
    meta = optim_state = None
    if config.resume:
        meta, model, optim_state = _read_for_resume(out, config)
    else:
        model = _build_model(config.model, config.model_overrides())
    model.to(config.backend)
    model.use_policy(policy)
    opt = SGD(model.named_parameters(), lr=config.lr, momentum=config.momentum,
              nesterov=config.nesterov, weight_decay=config.weight_decay,
              decay_filter=None if config.decay_bn_bias else skip_bn_and_bias,
              fused=policy.fused)
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
    # Fails now, with the estimate, rather than in the middle of an epoch (npse/memory.py).
    check_memory(model.config, x_train.shape[1:], config.batch_size, len(y_train),
                 config.eval_batch_size, len(y_test), policy)

    steps = num_batches(len(y_train), config.batch_size)
    schedule = _make_schedule(config, steps)
    if meta is not None:
        start_epoch, iteration, metrics = meta["epoch"], meta["iteration"], list(meta["metrics"])
    else:
        start_epoch, iteration, metrics = 0, 0, []

    _prepare_out(out, config)
    # From here on OUT is ours.
    try:
        write_text_atomic(out / CONFIG, json.dumps(
            {"config": config.training_dict(), "model_config": model.config, "mean": mean,
             "std": std, "classes": list(data.classes)}, indent=2) + "\n")
        if meta is not None:
            # The checkpoint is the truth: repair a metrics file that a crash left one line short.
            write_text_atomic(out / METRICS, _metrics_text(metrics))
    except OSError as e:
        raise _write_failed(e, out / (CONFIG if meta is None else METRICS), out, metrics) from e

    n_params = sum(int(p.data.size) for p in model.parameters())
    log(f"{config.model}: {n_params:,} parameters ({config.dtype}, {config.backend}); "
        f"{config.dataset}: {len(y_train)} train / {len(y_test)} test images; "
        f"{steps} iterations per epoch; {schedule.describe()}")
    log(policy.describe())
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
        started = time.perf_counter()
        # disable=None: tqdm hides itself when stderr is not a terminal (no bar spam in logs).
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="it",
                   file=sys.stderr, disable=True if config.quiet else None, leave=False,
                   dynamic_ncols=True, mininterval=0.5)

        def stop(where, value, _epoch=epoch):
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {_epoch + 1}, {where}; the run "
                f"stops. {_kept(out, metrics)}. A smaller --lr usually helps")
        try:
            batches = iterate_batches(x_train, y_train, config.batch_size, mean, std,
                                      shuffle=True, augment=config.augment, seed=config.seed,
                                      epoch=epoch, dtype=dtype)
            train_loss, train_acc, seen, lr, iteration = train_epoch(
                model, loss_fn, opt, schedule, batches, steps, iteration, read_every, stop, bar)
        finally:
            bar.close()
        train_seconds = time.perf_counter() - started
        test_loss, test_acc, per_class = evaluate(model, x_test, y_test, mean, std,
                                                  config.eval_batch_size, dtype=dtype)
        if not math.isfinite(test_loss):
            raise NonFiniteLossError(
                f"the test loss became {test_loss} after epoch {epoch + 1}; the run stops. "
                f"{_kept(out, metrics)}. A smaller --lr usually helps")
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                  "test_loss": test_loss, "test_acc": test_acc, "lr": lr,
                  "seconds": time.perf_counter() - started,
                  "images_per_s": seen / train_seconds}
        metrics.append(record)
        write_epoch(out, model, opt, config, record, {
            "epoch": epoch + 1, "iteration": iteration, "mean": mean, "std": std,
            "classes": list(data.classes), "data": described,
            "data_dir": None if config.data_dir is None else str(config.data_dir),
            "eval_batch_size": config.eval_batch_size}, metrics)
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
