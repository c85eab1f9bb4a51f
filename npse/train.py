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
# The training configuration (npse/config.py) and the run directory (npse/rundir.py) are their
# own modules; the public names of both are also reached as npse.train.*, as the chapters, the
# tutorials and the tests write them.
from .config import (  # noqa: F401  (re-exported)
    DATASETS, DTYPES, FULL_EPOCHS, METRIC_KEYS, RUNTIME_FIELDS, SCHEDULES, SE_CHOICES, TrainConfig,
    build_model, load_dataset, make_schedule)
from .data import channel_stats, iterate_batches, num_batches, subset
from .memory import check_memory
from .nn import CrossEntropyLoss, no_grad
from .optim import SGD, skip_bn_and_bias
from .rundir import (  # noqa: F401  (the first two lines are re-exported, not used here)
    CURVES, OWN_FILES, CHECKPOINT_FORMAT, holds_run, open_run_checkpoint, read_metrics,
    load_model_for_inference, read_checkpoint_meta, resume_config,
    CHECKPOINT, CONFIG, METRICS, check_out, default_out, check_same_data, data_fingerprint, kept_message,
    metrics_text, prepare_out, read_for_resume, write_epoch, write_failed_error,
    write_text_atomic)
from .fast.threads import get_num_threads
from .step import train_step


#: On the GPU the training loop reads the loss back (and checks it for NaN) every this many steps.
READ_EVERY_ON_GPU = 25


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


# ----------------------------------------------------------------------------- reading checkpoints
# A checkpoint comes from a file, so nothing in it is trusted: the metadata is checked field by
# field, the model it describes is checked against the arrays' headers before anything is read
# (npse.models.loading.model_from_checkpoint), and weights must be finite.


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
    return (loss_sum / len(y_host), float((pred == y_host).mean()),
            per_class_accuracy(pred, y_host, int(logits.shape[1])))


def per_class_accuracy(pred, y, num_classes: int) -> numpy.ndarray:
    """(num_classes,) float64: the share of each class's samples (labels ``y``, host ints) that
    ``pred`` gets right; NaN for a class with no sample."""
    total = numpy.bincount(y, minlength=num_classes).astype(numpy.float64)
    right = numpy.bincount(y[pred == y], minlength=num_classes).astype(numpy.float64)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        return numpy.where(total > 0, right / numpy.maximum(total, 1), numpy.nan)


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
    # Overflow on the way to a NaN loss would print a NumPy warning per layer; the loss check
    # reports it once, with the epoch and iteration.
    with backend.using(config.backend), \
            numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _train(config, out, log, policy)


@dataclasses.dataclass
class Run:
    """What :func:`train`'s three parts hand on: set up (:func:`prepare_run`), run the epochs
    (:func:`run_epochs`), sum up (:func:`finish_run`)."""

    config: TrainConfig
    out: Path
    model: object
    optimizer: SGD
    classes: list
    x_train: object              # uint8 (N, 3, H, W) and int64 (N,) labels, host arrays
    y_train: object
    x_test: object
    y_test: object
    mean: list                   # per colour channel, from the training images (or the checkpoint)
    std: list
    described: dict              # image counts and fingerprint, stored with every checkpoint
    steps: int                   # iterations per epoch
    schedule: object
    start_epoch: int
    iteration: int
    metrics: list                # one record per finished epoch (METRIC_KEYS)


def _train(config: TrainConfig, out: Path, log, policy) -> dict:
    from .fast import FAST
    run = prepare_run(config, out, log, FAST if policy is None else policy)
    per_class = run_epochs(run, log)
    return finish_run(run, per_class, log)


def _model_and_optimizer(config: TrainConfig, out: Path, policy):
    """``(model, optimizer, checkpoint metadata or None)``: new, or read back for a resume."""
    meta = optim_state = None
    if config.resume:
        meta, model, optim_state = read_for_resume(out, config)
    else:
        model = build_model(config)
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
    return model, opt, meta


def prepare_run(config: TrainConfig, out: Path, log, policy) -> Run:
    """Everything before the first epoch. All that can fail on bad input (the output directory,
    the checkpoint, the data, the memory a step needs) is checked before ``out`` is touched;
    then ``out`` is made ready and ``config.json`` written."""
    check_out(out, config)
    model, opt, meta = _model_and_optimizer(config, out, policy)
    data = load_dataset(config)
    if config.train_subset is not None and config.train_subset > len(data.y_train):
        log(f"note: --train-subset {config.train_subset} is more than the {len(data.y_train)} "
            f"training images of {config.dataset}; training on all of them")
    x_train, y_train = subset(data.x_train, data.y_train, config.train_subset, seed=config.seed)
    x_test, y_test = subset(data.x_test, data.y_test, config.test_subset, seed=0)
    described = {"n_train": len(y_train), "n_test": len(y_test),
                 "fingerprint": data_fingerprint(x_train, y_train, x_test, y_test)}
    if meta is not None:
        mean, std = meta["mean"], meta["std"]
        check_same_data(out, meta, described)
    else:
        mean, std = (a.tolist() for a in channel_stats(x_train))
    num_classes = model.config["num_classes"]
    for split, labels in (("training", y_train), ("test", y_test)):
        if len(labels) and int(labels.max()) >= num_classes:
            raise ValueError(f"{config.dataset} {split} labels go up to {int(labels.max())}, but "
                             f"{config.model} has {num_classes} outputs")
    # Fails now, with the estimate, rather than in the middle of an epoch (npse/memory.py).
    check_memory(model.config, x_train.shape[1:], config.batch_size, len(y_train),
                 config.eval_batch_size, len(y_test), policy)
    steps = num_batches(len(y_train), config.batch_size)
    run = Run(config, out, model, opt, list(data.classes), x_train, y_train, x_test, y_test,
              mean, std, described, steps, make_schedule(config, steps),
              *((meta["epoch"], meta["iteration"], list(meta["metrics"])) if meta is not None
                else (0, 0, [])))
    _start_out(run, resumed=meta is not None)
    n_params = sum(int(p.data.size) for p in model.parameters())
    log(f"{config.model}: {n_params:,} parameters ({config.dtype}, {config.backend}); "
        f"{config.dataset}: {len(y_train)} train / {len(y_test)} test images; "
        f"{steps} iterations per epoch; {run.schedule.describe()}")
    log(policy.describe())
    threads = get_num_threads()
    log(f"{threads} thread{'s' if threads > 1 else ''} (npse.fast.threads)")
    if meta is not None:
        log(f"resuming {out} after epoch {run.start_epoch}/{config.epochs}")
        if meta.get("threads") not in (None, threads):
            log(f"note: the run so far used {meta['threads']} threads: from here on the numbers "
                f"agree with an uninterrupted run to rounding, not bit for bit")
    return run


def _start_out(run: Run, resumed: bool) -> None:
    """Make ``run.out`` ours: prepared, ``config.json`` written, and on a resume
    ``metrics.jsonl`` rewritten from the checkpoint (the truth: a crash may have left the file
    one line short)."""
    out = run.out
    prepare_out(out, run.config)
    try:
        write_text_atomic(out / CONFIG, json.dumps(
            {"config": run.config.training_dict(), "model_config": run.model.config,
             "mean": run.mean, "std": run.std, "classes": run.classes}, indent=2) + "\n")
        if resumed:
            write_text_atomic(out / METRICS, metrics_text(run.metrics))
    except OSError as e:
        raise write_failed_error(e, out / (METRICS if resumed else CONFIG), out,
                                 run.metrics) from e


def run_epochs(run: Run, log):
    """Train the epochs from ``run.start_epoch`` on, evaluating and saving after each; return
    the last epoch's per-class test accuracy (None when the run was already complete)."""
    from tqdm import tqdm

    config, out, metrics = run.config, run.out, run.metrics
    # The labels were checked once (prepare_run), so the loss need not check each batch (on the
    # GPU that check would read two numbers back to the host at every step).
    loss_fn = CrossEntropyLoss(check_targets=False)
    # Reading the loss as a Python number waits for the device. On the CPU that costs nothing, so
    # it is read (and checked for NaN/inf) at every step; on the GPU every READ_EVERY_ON_GPU steps.
    read_every = READ_EVERY_ON_GPU if backend.get_backend() == "cupy" else 1
    dtype = numpy.dtype(config.dtype)
    per_class = None
    for epoch in range(run.start_epoch, config.epochs):
        started = time.perf_counter()
        # disable=None: tqdm hides itself when stderr is not a terminal (no bar spam in logs).
        bar = tqdm(total=run.steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="it",
                   file=sys.stderr, disable=True if config.quiet else None, leave=False,
                   dynamic_ncols=True, mininterval=0.5)

        def stop(where, value, _epoch=epoch):
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {_epoch + 1}, {where}; the run "
                f"stops. {kept_message(out, metrics)}. A smaller --lr usually helps")
        try:
            batches = iterate_batches(run.x_train, run.y_train, config.batch_size, run.mean,
                                      run.std, shuffle=True, augment=config.augment,
                                      seed=config.seed, epoch=epoch, dtype=dtype)
            train_loss, train_acc, seen, lr, run.iteration = train_epoch(
                run.model, loss_fn, run.optimizer, run.schedule, batches, run.steps,
                run.iteration, read_every, stop, bar)
        finally:
            bar.close()
        train_seconds = time.perf_counter() - started
        test_loss, test_acc, per_class = evaluate(run.model, run.x_test, run.y_test, run.mean,
                                                  run.std, config.eval_batch_size, dtype=dtype)
        if not math.isfinite(test_loss):
            raise NonFiniteLossError(
                f"the test loss became {test_loss} after epoch {epoch + 1}; the run stops. "
                f"{kept_message(out, metrics)}. A smaller --lr usually helps")
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                  "test_loss": test_loss, "test_acc": test_acc, "lr": lr,
                  "seconds": time.perf_counter() - started,
                  "images_per_s": seen / train_seconds}
        metrics.append(record)
        write_epoch(out, run.model, run.optimizer, config, record, {
            "epoch": epoch + 1, "iteration": run.iteration, "mean": run.mean, "std": run.std,
            "classes": run.classes, "data": run.described,
            "data_dir": None if config.data_dir is None else str(config.data_dir),
            "eval_batch_size": config.eval_batch_size, "threads": get_num_threads()}, metrics)
        log(_epoch_line(record, config.epochs))
    return per_class


def finish_run(run: Run, per_class, log) -> dict:
    """The final metrics :func:`train` returns; a run that was already complete is evaluated
    once more for its per-class accuracy."""
    config, out = run.config, run.out
    if not run.metrics:  # pragma: no cover - epochs >= 1 guarantees one epoch
        raise RuntimeError("no epoch was run")
    if per_class is None:
        _, _, per_class = evaluate(run.model, run.x_test, run.y_test, run.mean, run.std,
                                   config.eval_batch_size, dtype=numpy.dtype(config.dtype))
        log(f"{out} is already complete ({config.epochs} epochs)")
    final = dict(run.metrics[-1])
    log(f"final test accuracy: {100 * final['test_acc']:.2f}% after {final['epoch']} epochs "
        f"(checkpoint {out / CHECKPOINT})")
    final.update(out=str(out), checkpoint=str(out / CHECKPOINT), classes=run.classes,
                 per_class_acc=[float(a) for a in per_class])
    return final
