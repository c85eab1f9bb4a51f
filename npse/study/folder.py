"""A study folder on disk: the names of its files, where each run lives, and reading them back.

The scheduler (:mod:`.runs`) writes a folder and the report (:mod:`.report`) reads one; both go
through this module, so that neither needs the other to know where a file is.

    OUT/study.json                 the protocol and the studies run in the folder
    OUT/study.lock                 held by the npse study that runs the folder (git-ignored)
    OUT/results.{json,md,png}      the report
    OUT/<arm>/seed-<s>/            one run: what ``npse train`` writes (config.json,
                                   metrics.jsonl, checkpoint.npz), plus run.json or failed.json
                                   and train.log
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from ..rundir import CHECKPOINT, CONFIG, METRICS, read_metrics, write_text_atomic
from .arms import PRIMARY, Protocol, study_arms

STUDY_FORMAT = "npse-study"
STUDY_FILE = "study.json"      # the protocol: written once, checked by every later run
RUN_RECORD = "run.json"        # git commit, wall time, threads: written by the worker
FAILED = "failed.json"         # why a run failed
LOG = "train.log"              # the worker's output (git-ignored)
LOCK = "study.lock"            # held by the npse study that runs the folder (git-ignored)
RESULTS_JSON, RESULTS_MD, RESULTS_PNG = "results.json", "results.md", "results.png"


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / arm / f"seed-{seed}"


def write_json(path: Path, obj) -> None:
    """Every JSON file of a study folder, written the same way: indented, atomically."""
    write_text_atomic(Path(path), json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- one run

def run_state(directory: Path, expected: dict) -> tuple:
    """``(state, metrics)`` of one run directory; state as in the docstring of :mod:`npse.study`.

    ``expected`` is the training dict the run must have (a different one is a ValueError: the
    folder holds another experiment)."""
    d = Path(directory)
    config_path, metrics_path = d / CONFIG, d / METRICS
    if config_path.exists():
        try:
            saved = json.loads(config_path.read_text(encoding="utf-8")).get("config")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            raise ValueError(f"{config_path}: not an npse run configuration") from None
        diff = sorted(k for k in set(expected) | set(saved or {})
                      if (saved or {}).get(k) != expected.get(k))
        if diff:
            raise ValueError(f"{d} holds a run with another configuration ("
                             + "; ".join(f"{k}: {(saved or {}).get(k)!r}, the study wants "
                                         f"{expected.get(k)!r}" for k in diff[:3])
                             + "); use another --out")
    if (d / FAILED).exists():
        return "failed", []
    metrics = read_metrics(metrics_path) if metrics_path.exists() else []
    complete = config_path.exists() and [m["epoch"] for m in metrics] == \
        list(range(1, expected["epochs"] + 1))
    if complete:
        return "finished", metrics
    if (d / CHECKPOINT).exists():
        return "interrupted", metrics
    return "absent", metrics


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


def seeds_on_disk(out: Path, names: str) -> int:
    """The --seeds a folder was run with: the most seeds of any non-primary arm (>= 1)."""
    out = Path(out)
    most = 1
    for arm in study_arms(names):
        if arm in PRIMARY or not (out / arm).is_dir():
            continue
        found = [int(p.name[5:]) for p in (out / arm).glob("seed-*") if p.name[5:].isdigit()]
        most = max([most] + [s + 1 for s in found])
    return most


# ----------------------------------------------------------------------------- the protocol

def open_study_folder(out: Path, protocol: Protocol, names: str) -> None:
    """Create ``OUT/study.json`` or check that the folder holds this protocol."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    path = out / STUDY_FILE
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path}: not a study description (not JSON)") from None
        if not isinstance(saved, dict) or saved.get("format") != STUDY_FORMAT:
            raise ValueError(f"{path}: not an npse study folder")
        mine = protocol.as_dict()
        diff = [f"{k}={mine.get(k)!r} (the folder has {saved['protocol'].get(k)!r})"
                for k in mine if saved.get("protocol", {}).get(k) != mine.get(k)]
        if diff:
            raise ValueError(f"{out} holds a study with another protocol: {'; '.join(diff)}; "
                             f"use another --out, or the folder's own options")
        studies = list(dict.fromkeys(saved.get("studies", []) + names.split(",")))
    else:
        if out.is_dir() and any(p.name not in (".gitignore", "_data") for p in out.iterdir()):
            raise ValueError(f"--out {out} is not empty and holds no study.json: not a study "
                             f"folder; choose an empty or new folder")
        studies = names.split(",")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {"format": STUDY_FORMAT, "protocol": protocol.as_dict(),
                      "studies": studies})


def read_protocol(out: Path) -> tuple:
    """``(protocol, studies)`` of an existing study folder."""
    path = Path(out) / STUDY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {out} is not a study folder")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        p = dict(saved["protocol"])
        if p.get("widths") is not None:
            p["widths"] = tuple(p["widths"])
        return Protocol(**p), list(saved.get("studies", []))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{path}: not a study description") from None


# ----------------------------------------------------------------------------- the lock

@contextlib.contextmanager
def study_lock(out: Path):
    """Hold ``OUT/study.lock`` while a study runs, so that a second ``npse study`` on the same
    folder (another study of the same protocol, say) cannot start the same runs a second time."""
    path = Path(out) / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(2):
        try:
            with open(path, "x", encoding="utf-8") as f:
                json.dump(me, f)
            break
        except FileExistsError:
            holder = lock_holder(path)
            if holder:
                raise ValueError(f"{out} is being run by another npse study ({holder}); wait "
                                 f"for it to end or stop it, or delete {path} if no study "
                                 f"runs there") from None
            path.unlink(missing_ok=True)            # its process is gone: a stale lock
    else:
        raise ValueError(f"{path}: could not take the study lock")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def lock_holder(path: Path):
    """Who holds the lock (a description), or None when its process no longer exists."""
    try:
        held = json.loads(Path(path).read_text(encoding="utf-8"))
        pid, host = int(held["pid"]), str(held["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None                                  # unreadable: treated as stale
    where = f"process {pid} since {held.get('started', '?')}"
    if host != socket.gethostname():
        return f"{where} on {host}"                  # cannot be checked from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass                                         # alive, but another user's
    return where
