"""A study folder on disk: the names of its files, where each run lives, and reading them back.

The scheduler (:mod:`.runs`) writes a folder and the report (:mod:`.report`) reads one; both go
through this module, so that neither needs the other to know where a file is.

    OUT/study.json                 the protocol and the studies run in the folder
    OUT/study.lock                 flock'd by the npse study that runs the folder (git-ignored)
    OUT/results.{json,md,png}      the report
    OUT/<arm>/seed-<s>/            one run: what ``npse train`` writes (config.json,
                                   metrics.jsonl, checkpoint.npz), plus run.json or failed.json
                                   and train.log
    OUT/<arm>/seed-<s>/.run.lock   flock'd by the process that trains there (git-ignored)
    OUT/<arm>/seed-<s>.replaced-<UTC time>/   a run moved aside by --rerun (never deleted)

Locks are ``fcntl.flock`` locks, never files whose existence means "taken": the kernel releases
one when its process dies, however it dies, so there is no stale lock to guess about, and lock
files are never deleted (deleting a locked file would let a second taker lock a new one).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import socket
import time
from pathlib import Path

from ..config import METRIC_KEYS
from ..rundir import CHECKPOINT, CONFIG, METRICS, read_metrics, write_text_atomic
from .arms import MAX_SEEDS, PRIMARY, Protocol, study_arms

STUDY_FORMAT = "npse-study"
STUDY_FILE = "study.json"      # the protocol: written once, checked by every later run
RUN_RECORD = "run.json"        # git commit, wall time, threads: written by the worker
FAILED = "failed.json"         # why a run failed
LOG = "train.log"              # the worker's output (git-ignored)
LOCK = "study.lock"            # flock'd by the npse study that runs the folder (git-ignored)
RUN_LOCK = ".run.lock"         # flock'd by whoever trains in a run folder (git-ignored)
LOCK_FORMAT = "npse-study-lock/flock"   # marks a lock written by this npse, not an older one
REPLACED = ".replaced-"        # seed-<s>.replaced-<UTC time>: a run moved aside by --rerun
# A metrics file of far more bytes than any protocol's epochs need is not read into memory.
MAX_METRICS_BYTES = 1 << 20
RESULTS_JSON, RESULTS_MD, RESULTS_PNG = "results.json", "results.md", "results.png"


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / arm / f"seed-{seed}"


def write_json(path: Path, obj) -> None:
    """Every JSON file of a study folder, written the same way: indented, atomically."""
    write_text_atomic(Path(path), json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- one run

@dataclasses.dataclass
class RunState:
    """What a run folder holds: ``state`` (see :mod:`npse.study`), its epochs, and for a
    damaged run ``why``: which file is wrong and how."""
    state: str
    metrics: list
    why: str = ""


class Damaged(Exception):
    """A run folder whose files contradict each other or are not what npse writes."""


def run_state(directory: Path, expected: dict) -> tuple:
    """``(state, metrics)`` of one run directory (:func:`inspect_run` without the reason)."""
    found = inspect_run(directory, expected)
    return found.state, found.metrics


def inspect_run(directory: Path, expected: dict, lock_is_mine: bool = False) -> RunState:
    """The state of one run directory, read from its files alone; nothing is written.

    ``expected`` is the training dict the run must have: a valid config.json of a different
    one is a ValueError (the folder holds another experiment). Files that are not what npse
    writes, or that contradict each other, make the run ``damaged``, with the reason.
    ``lock_is_mine``: the caller holds the run's lock (so that no one writes the files between
    this reading and the worker it starts); the lock, held, is then not asked about."""
    d = Path(directory)
    try:
        return _inspect(d, expected, lock_is_mine)
    except Damaged as e:
        return RunState("damaged", [], str(e))


def _inspect(d: Path, expected: dict, lock_is_mine: bool = False) -> RunState:
    if d.is_symlink() or (d.exists() and not d.is_dir()):
        raise Damaged(f"{d}: a {'symbolic link' if d.is_symlink() else 'file'}, where npse "
                      f"keeps a run folder")
    if not d.exists():
        return RunState("absent", [])
    for name in (CONFIG, METRICS, RUN_RECORD, FAILED, CHECKPOINT, RUN_LOCK, LOG):
        if (d / name).is_symlink() or ((d / name).exists() and not (d / name).is_file()):
            raise Damaged(f"{d / name}: a symbolic link or a folder, where npse writes a file")
    if not lock_is_mine and lock_is_held(d / RUN_LOCK):
        return RunState("running", [])     # its files are being written: not read now
    has_config = _check_config(d / CONFIG, expected)
    metrics = _read_epochs(d / METRICS, expected["epochs"]) if (d / METRICS).exists() else []
    record = _read_object(d / RUN_RECORD)
    if _read_object(d / FAILED) is not None:
        return RunState("failed", metrics)
    if metrics and not has_config:
        raise Damaged(f"{d / CONFIG} missing but {METRICS} has {_epochs(len(metrics))}")
    complete = has_config and len(metrics) == expected["epochs"]
    if record is not None and not complete:
        raise Damaged(f"{d / RUN_RECORD} says finished but " + (
            f"{METRICS} stops at epoch {len(metrics)}" if metrics else
            f"{METRICS} holds no epoch" if has_config else f"{CONFIG} is missing"))
    if complete and record is not None and "test_acc" in record \
            and record["test_acc"] != metrics[-1]["test_acc"]:
        raise Damaged(f"{d / RUN_RECORD} gives test_acc {record['test_acc']!r}, but the last "
                      f"line of {METRICS} {metrics[-1]['test_acc']!r}")
    if complete:
        return RunState("finished", metrics)
    if (d / CHECKPOINT).exists():
        return RunState("interrupted", metrics)
    return RunState("absent", metrics)


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def _check_config(path: Path, expected: dict) -> bool:
    """Whether the run has its config.json; a ValueError if it is another experiment's."""
    if not path.exists():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise Damaged(f"{path}: not JSON") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise Damaged(f"{path}: no \"config\" object, not an npse run configuration")
    saved = saved["config"]
    diff = sorted(k for k in set(expected) | set(saved) if saved.get(k) != expected.get(k))
    if diff:
        raise ValueError(f"{path.parent} holds a run with another configuration ("
                         + "; ".join(f"{k}: {_short(saved.get(k))}, the study wants "
                                     f"{expected.get(k)!r}" for k in diff[:3])
                         + "); use another --out")
    return True


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_object(path: Path):
    """A JSON object file (run.json, failed.json) or None if there is none; else Damaged."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise Damaged(f"{path}: not JSON") from None
    if not isinstance(value, dict):
        raise Damaged(f"{path}: not a JSON object")
    return value


def _real(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _read_epochs(path: Path, epochs: int) -> list:
    """The epoch records of metrics.jsonl, each checked: epochs 1, 2, ... in order, at most
    ``epochs`` of them, every value a finite number (blank lines are skipped, as npse does)."""
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise Damaged(f"{path}: {path.stat().st_size} bytes, far more than "
                      f"{_epochs(epochs)} write")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise Damaged(f"{path}: not UTF-8 text") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except ValueError:
            raise Damaged(f"{where}: not JSON (a truncated or garbled line)") from None
        if not isinstance(record, dict) or any(k not in record for k in METRIC_KEYS):
            raise Damaged(f"{where}: not an epoch record (it needs {', '.join(METRIC_KEYS)})")
        bad = [k for k in METRIC_KEYS if not _real(record[k])]
        if bad:
            raise Damaged(f"{where}: {bad[0]} is {_short(record[bad[0]])}, not a finite number")
        epoch = record["epoch"]
        if type(epoch) is not int:
            raise Damaged(f"{where}: epoch {_short(epoch)} is not a whole number")
        if epoch in [r["epoch"] for r in records]:
            raise Damaged(f"{path}: epoch {epoch} appears twice")
        if epoch != len(records) + 1 or epoch > epochs:
            raise Damaged(f"{where}: epoch {_short(epoch)} where epoch {len(records) + 1} "
                          + ("should be" if len(records) < epochs else
                             f"cannot be (the protocol has {epochs})"))
        if not 0 <= record["test_acc"] <= 1:
            raise Damaged(f"{where}: test_acc {record['test_acc']} is not in [0, 1]")
        records.append(record)
    return records


def failed_error(directory: Path):
    """The error recorded in a failed run's failed.json (None if it names none)."""
    return json.loads((Path(directory) / FAILED).read_text(encoding="utf-8")).get("error")


def wall_seconds(directory: Path, metrics: list) -> float:
    """A finished run's wall time: run.json's, else (no or a bad record) its epochs' sum."""
    try:
        record = json.loads((Path(directory) / RUN_RECORD).read_text(encoding="utf-8"))
        return float(record["wall_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return float(sum(m["seconds"] for m in metrics))


_SEED_FOLDER = re.compile(r"seed-(0|[1-9][0-9]{0,8})")


def seed_numbers(arm_folder: Path) -> list:
    """The seeds of the run folders ``seed-<s>`` in ``arm_folder`` below MAX_SEEDS, sorted;
    other names (a ``.replaced-`` copy, ``seed-007``, ``seed-999999999``) are not runs."""
    if not Path(arm_folder).is_dir():
        return []
    found = [int(m.group(1)) for p in Path(arm_folder).iterdir()
             if (m := _SEED_FOLDER.fullmatch(p.name))]
    return sorted(s for s in found if s < MAX_SEEDS)


def seeds_on_disk(out: Path, names: str) -> int:
    """The --seeds a folder was run with: the most seeds of any non-primary arm (>= 1)."""
    out = Path(out)
    most = 1
    for arm in study_arms(names):
        if arm not in PRIMARY:
            most = max([most] + [s + 1 for s in seed_numbers(out / arm)])
    return most


def replace_run(directory: Path) -> Path:
    """Move a run folder aside to ``seed-<s>.replaced-<UTC time>`` (nothing is deleted) and
    return where it went; a ValueError if a process trains there now."""
    d = Path(directory)
    if d.is_dir() and not d.is_symlink() and lock_is_held(d / RUN_LOCK):
        raise ValueError(f"{d} is being trained by another process (its {RUN_LOCK} is locked); "
                         f"stop that process first")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = d.with_name(f"{d.name}{REPLACED}{stamp}"), 1
    while target.exists() or target.is_symlink():
        n += 1
        target = d.with_name(f"{d.name}{REPLACED}{stamp}-{n}")
    os.rename(d, target)
    return target


# ----------------------------------------------------------------------------- the protocol

def check_study_folder(out: Path, protocol: Protocol, names: str) -> list:
    """The studies ``OUT/study.json`` will list once ``names`` run in ``out``; ValueError, and
    nothing written, when ``out`` is a file, a folder of something else, or a study of another
    protocol. (Called before anything, ``--quick``'s data included, is written there.)"""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    path = out / STUDY_FILE
    if not path.exists():
        if out.is_dir() and any(p.name not in (".gitignore", "_data") for p in out.iterdir()):
            raise ValueError(f"--out {out} is not empty and holds no study.json: not a study "
                             f"folder; choose an empty or new folder")
        return names.split(",")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ValueError(f"{path}: not a study description (not JSON)") from None
    if not isinstance(saved, dict) or saved.get("format") != STUDY_FORMAT:
        raise ValueError(f"{path}: not an npse study folder")
    _, earlier = read_protocol(out)          # checks the file's fields and types
    mine = protocol.as_dict()
    diff = [f"{k}={mine.get(k)!r} (the folder has {saved['protocol'].get(k)!r})"
            for k in mine if saved["protocol"].get(k) != mine.get(k)]
    if diff:
        raise ValueError(f"{out} holds a study with another protocol: {'; '.join(diff)}; "
                         f"use another --out, or the folder's own options")
    return list(dict.fromkeys(earlier + names.split(",")))


def open_study_folder(out: Path, protocol: Protocol, names: str) -> None:
    """Create ``OUT/study.json`` or check that the folder holds this protocol."""
    out = Path(out)
    path = out / STUDY_FILE
    studies = check_study_folder(out, protocol, names)
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {"format": STUDY_FORMAT, "protocol": protocol.as_dict(),
                      "studies": studies})


_PROTOCOL_KEYS = set(Protocol().as_dict())


def read_protocol(out: Path) -> tuple:
    """``(protocol, studies)`` of an existing study folder."""
    path = Path(out) / STUDY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {out} is not a study folder")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved["protocol"], dict) or set(saved["protocol"]) != _PROTOCOL_KEYS:
            raise KeyError("protocol")          # a protocol must name every field, no other
        p = dict(saved["protocol"])
        if p.get("widths") is not None:
            p["widths"] = tuple(p["widths"])
        studies = saved.get("studies", [])
        if not isinstance(studies, list) or not all(isinstance(n, str) for n in studies):
            raise TypeError("studies")
        return Protocol(**p), studies
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{path}: not a study description") from None


def folder_studies(out: Path, names: str) -> str:
    """The studies a folder's table shows: every study its study.json lists (the folder's
    whole table, whichever study ran last), or ``names`` where it lists none."""
    _, studies = read_protocol(out)
    study_arms(names)
    return ",".join(studies) if studies else names


# ----------------------------------------------------------------------------- the locks

def try_lock(path: Path):
    """An fd holding an exclusive flock on ``path`` (created if need be), or None when another
    open file holds it. Non-blocking; the lock lasts until the fd is closed or its process
    ends, in whatever way."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_is_held(path: Path) -> bool:
    """Whether some open file holds the flock on ``path`` (this process's included). Creates
    and writes nothing: a shared lock is tried and given back at once."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)                     # closing gives a lock taken here back
    return False


@contextlib.contextmanager
def study_lock(out: Path):
    """Hold ``OUT/study.lock`` while a study runs, so that a second ``npse study`` on the same
    folder (another study of the same protocol, say) cannot start the same runs a second time.

    The lock is a flock: taking it is one system call, so two takers cannot both win, and the
    kernel releases it when the holder dies. The file is never deleted. Once locked, the holder
    writes who it is into it, for the refusal message of the next taker. An older npse wrote a
    JSON lock without flock: if its process still runs, the folder is refused all the same."""
    path = Path(out) / LOCK
    fd = try_lock(path)
    if fd is None:
        raise ValueError(f"{out} is being run by another npse study ({_described(path)}); wait "
                         f"for it to end or stop it: its lock is released when it ends")
    mine = False
    try:
        old = _old_holder(path)
        if old:
            raise ValueError(f"{out} is being run by another npse study ({old}) of an older "
                             f"npse; wait for it to end or stop it")
        me = {"format": LOCK_FORMAT, "pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        mine = True
        yield
    finally:
        if mine:
            os.ftruncate(fd, 0)          # no description of a holder that is gone
        os.close(fd)


def lock_holder(path: Path):
    """Who holds the study lock ``path`` (a description), or None when nobody does."""
    path = Path(path)
    if lock_is_held(path):
        return _described(path)
    return _old_holder(path)


def _lock_contents(path: Path):
    try:
        held = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def _described(path: Path) -> str:
    """The description a flock holder wrote (it may not have written it yet)."""
    held = _lock_contents(path) or {}
    if held.get("format") != LOCK_FORMAT:
        return "a process that is starting"
    where = f"process {held.get('pid')} since {held.get('started', '?')}"
    return where if held.get("host") == socket.gethostname() else f"{where} on {held.get('host')}"


def _old_holder(path: Path):
    """The holder an older npse's JSON lock names, if its process still runs (else None)."""
    held = _lock_contents(path)
    if held is None or held.get("format") == LOCK_FORMAT:
        return None
    try:
        pid, host = int(held["pid"]), str(held["host"])
    except (KeyError, TypeError, ValueError):
        return None                      # not a lock an npse wrote
    if pid <= 0:
        return None                      # kill(0 or -1) would ask about whole groups
    where = f"process {pid} since {held.get('started', '?')}"
    if host != socket.gethostname():
        return f"{where} on {host}"      # cannot be checked from here
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return None
    except PermissionError:
        pass                             # alive, but another user's
    return where
