"""The run directory of ``npse train``: what is written there, and what is checked on resume.

One run lives in one output directory ``OUT``:

    OUT/checkpoint.npz   model weights (``model.*``), optimiser state (``optim.*``) and, in the
                         metadata, the configuration, the model config, the epoch and iteration
                         reached, the normalisation mean/std, the class names and every epoch's
                         metrics so far. Rewritten atomically at the end of every epoch.
    OUT/metrics.jsonl    one JSON line per finished epoch (a copy of the checkpoint's list).
    OUT/config.json      the configuration, for people to read (the checkpoint is authoritative).

Resuming checks that the run continues what it claims to: the checkpoint's metadata field by
field (:func:`open_run_checkpoint`), the configuration against the run's
(:func:`read_for_resume`, :func:`resume_config`), and the data against the fingerprint stored
with it (:func:`data_fingerprint`, :func:`check_same_data`).

Crash safety: the checkpoint, which holds the metrics list, is written first, the metrics line
after it (:func:`write_epoch`). A crash between the two leaves a checkpoint one line ahead of
``metrics.jsonl``; on resume ``metrics.jsonl`` is rewritten from the checkpoint, so no line is
lost or doubled. The training loop itself is npse/train.py.
"""
from __future__ import annotations

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
                         save_checkpoint)
from .config import METRIC_KEYS, RUNTIME_FIELDS, TrainConfig
from .models.loading import model_from_checkpoint

CHECKPOINT = "checkpoint.npz"

METRICS = "metrics.jsonl"

CONFIG = "config.json"

CURVES = "curves.png"

# The only files --overwrite may delete: npse's own.
OWN_FILES = (CHECKPOINT, METRICS, CONFIG, CURVES)

CHECKPOINT_FORMAT = "npse-train-checkpoint"

CHECKPOINT_VERSION = 1


def default_out(model: str) -> str:
    """``runs/<model>-<YYYYmmdd-HHMMSS>``: the output directory when none is given."""
    return os.path.join("runs", f"{model}-{time.strftime('%Y%m%d-%H%M%S')}")

def holds_run(out) -> bool:
    """True when ``out`` holds a run: a checkpoint or a metrics file."""
    out = Path(out)
    return (out / CHECKPOINT).exists() or (out / METRICS).exists()

def check_out(out: Path, config: TrainConfig) -> None:
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

def check_same_data(out: Path, meta: dict, now: dict) -> None:
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

#: A run writes one line of about 250 bytes per epoch; a longer line or a larger file is not one.
MAX_METRICS_LINE = 64 * 1024
MAX_METRICS_BYTES = 64 * 2**20


def read_metrics(path) -> list[dict]:
    """The epoch records of a ``metrics.jsonl`` file, in order (an empty file gives ``[]``).

    FileNotFoundError when there is no such file; ValueError naming the file (and the line) for
    one that is too large, not UTF-8 text, or holds a line that is not an epoch record: a JSON
    object giving every key of :data:`~npse.config.METRIC_KEYS` as a finite number. Read line
    by line, so the memory needed is bounded whatever the file holds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file: {path} does not exist (is it a run directory "
                                f"of npse train?)")
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, more than the "
                         f"{MAX_METRICS_BYTES // 2**20} MiB a metrics file of npse train can "
                         f"reach; not a metrics file")
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(iter(lambda: f.readline(MAX_METRICS_LINE + 1), ""), 1):
                if len(line) > MAX_METRICS_LINE:
                    raise ValueError(f"{path}, line {number}: longer than "
                                     f"{MAX_METRICS_LINE} characters; not an epoch record")
                if line.strip():
                    records.append(_epoch_record(path, number, line))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} of a line); not a metrics "
                         f"file") from None
    return records


def _epoch_record(path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {number}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}, line {number}: JSON nested too deeply") from None
    missing = [k for k in METRIC_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise ValueError(f"{path}, line {number}: not an epoch record, it lacks "
                         f"{', '.join(missing)}")
    bad = [k for k in METRIC_KEYS if not _real(record[k])]
    if bad:
        raise ValueError(f"{path}, line {number}: {bad[0]} must be a finite number, got "
                         f"{_shown(record[bad[0]])}")
    return record


def write_text_atomic(path: Path, text: str) -> None:
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

def metrics_text(metrics) -> str:
    return "".join(json.dumps(m) + "\n" for m in metrics)

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
    finite (see :func:`npse.models.loading.model_from_checkpoint`); a bad file is a
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

def read_for_resume(out: Path, config: TrainConfig):
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

def prepare_out(out: Path, config: TrainConfig) -> None:
    """Make ``out`` ready to write: with ``overwrite`` delete npse's own files there (and nothing
    else); on resume or overwrite remove the temporaries a killed run left behind."""
    check_out(out, config)     # again: the directory may have changed while the data loaded
    if config.overwrite and out.is_dir():
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the output directory {out}: {e.strerror or e}") from None
    if config.resume or config.overwrite:
        _remove_stale_temporaries(out)

def write_failed_error(error: OSError, what: Path, out: Path, kept_metrics) -> OSError:
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

def kept_message(out: Path, metrics) -> str:
    """What a stopped run leaves behind, for the error message."""
    if not metrics:
        return "No checkpoint was written (no epoch finished)"
    return f"{out / CHECKPOINT} keeps the last good epoch ({metrics[-1]['epoch']})"


def write_epoch(out: Path, model, optimizer, config: TrainConfig, record: dict, meta: dict,
                metrics: list) -> None:
    """Save the end of an epoch: the checkpoint (weights, optimiser state, and ``meta`` with the
    metrics list, ``record`` already appended), then ``record`` as a line of ``metrics.jsonl``.
    A failed write is an OSError that says what is intact."""
    try:
        save_checkpoint(out / CHECKPOINT, {
            **add_prefix(model.state_dict(), "model"),
            **add_prefix(optimizer.state_dict(), "optim"),
        }, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": config.training_dict(), "model_config": model.config, "metrics": metrics,
            **meta})
    except OSError as e:
        raise write_failed_error(e, out / CHECKPOINT, out, metrics[:-1]) from e
    try:
        with open(out / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:    # the checkpoint has the line: a resume rewrites the file from it
        raise write_failed_error(e, out / METRICS, out, metrics) from e
