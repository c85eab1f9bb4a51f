"""Run state on disk, one run in its own process (the worker), and a whole study."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .. import train as T
from ..rundir import write_text_atomic
from .arms import ARMS, PRIMARY, Protocol, seeds_for, study_arms

STUDY_FORMAT = "npse-study"
RUN_RECORD = "run.json"        # git commit, wall time, threads: written by the worker
FAILED = "failed.json"         # why a run failed
LOG = "train.log"              # the worker's output (git-ignored)
LOCK = "study.lock"            # held by the npse study that runs the folder (git-ignored)


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / arm / f"seed-{seed}"


def read_metrics(path: Path) -> list:
    """The epoch records of a metrics.jsonl; ValueError for a line that is not one."""
    records = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}, line {i}: not JSON") from None
        if not isinstance(m, dict) or any(k not in m for k in T.METRIC_KEYS):
            raise ValueError(f"{path}, line {i}: not an epoch record (needs "
                             f"{', '.join(T.METRIC_KEYS)})")
        records.append(m)
    return records


def run_state(directory: Path, expected: dict) -> tuple:
    """``(state, metrics)`` of one run directory; state as in the module docstring.

    ``expected`` is the training dict the run must have (a different one is a ValueError: the
    folder holds another experiment)."""
    d = Path(directory)
    config_path, metrics_path = d / T.CONFIG, d / T.METRICS
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
    if (d / T.CHECKPOINT).exists():
        return "interrupted", metrics
    return "absent", metrics


def git_commit() -> dict:
    """The commit npse runs from (and whether the tree had changes), or None outside git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "npse")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _write_json(path: Path, obj) -> None:
    write_text_atomic(Path(path), json.dumps(obj, indent=2) + "\n")


def run_one(spec: dict) -> int:
    """Train one arm x seed as described by ``spec`` (made by :func:`_spec`); return 0 or 1.

    Runs in its own process: a failure is recorded in ``failed.json``, success in ``run.json``.
    """
    config = T.TrainConfig(**{k: tuple(v) if k in ("widths", "se_stages") and v else v
                              for k, v in spec["config"].items()})
    out = Path(config.out)
    started = time.time()
    record = {"arm": spec["arm"], "seed": config.seed, **git_commit(),
              "threads": spec.get("threads"), "started": time.strftime(
                  "%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "command": spec["command"]}
    try:
        final = T.train(config, log=print)
    except KeyboardInterrupt:
        return 130
    except (T.NonFiniteLossError, MemoryError, ValueError, OSError, RuntimeError) as e:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / FAILED, {**record, "error": f"{type(e).__name__}: "
                                   + " ".join(str(e).split())})
        print(f"failed: {e}", file=sys.stderr)
        return 1
    record.update(wall_seconds=round(time.time() - started, 1), test_acc=final["test_acc"])
    _write_json(out / RUN_RECORD, record)
    return 0


@dataclasses.dataclass
class Job:
    arm: str
    seed: int
    directory: Path
    state: str
    config: T.TrainConfig


def plan(names: str, out: Path, protocol: Protocol, seeds: int, retry_failed=False,
         **runtime) -> list:
    """Every arm x seed of the study with its state, in the order they will run: every seed
    of the baseline and the reference first (no arm's interval exists until their repeated
    seeds measure the noise), then seed 0 of each other arm, then its seed 1, and so on; the
    Bottleneck arms, the slowest, last."""
    jobs = []
    for arm in study_arms(names):
        for s in seeds_for(arm, seeds):
            d = run_dir(out, arm, s)
            config = protocol.train_config(ARMS[arm], s, d, **runtime)
            state, _ = run_state(d, config.training_dict())
            if state == "failed" and retry_failed:
                (d / FAILED).unlink()
                state, _ = run_state(d, config.training_dict())
            jobs.append(Job(arm, s, d, state, config))
    order = {"bottleneck": 1, "basic": 0}
    jobs.sort(key=lambda j: (order[ARMS[j.arm].network], j.arm not in PRIMARY, j.seed))
    return jobs


def open_study_folder(out: Path, protocol: Protocol, names: str) -> None:
    """Create ``OUT/study.json`` or check that the folder holds this protocol."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    path = out / "study.json"
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
    _write_json(path, {"format": STUDY_FORMAT, "protocol": protocol.as_dict(),
                       "studies": studies})


def read_protocol(out: Path) -> tuple:
    """``(protocol, studies)`` of an existing study folder."""
    path = Path(out) / "study.json"
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


def _spec(job: Job, threads: int, command: str) -> dict:
    config = dataclasses.asdict(job.config)
    if job.state == "interrupted":
        config["resume"] = True
    elif job.state == "absent" and any((job.directory / n).exists() for n in T.OWN_FILES):
        config["overwrite"] = True   # a partial run without a checkpoint starts again
    return {"arm": job.arm, "config": config, "threads": threads, "command": command}


def run_study(names: str, out, protocol: Protocol, seeds: int = 1, jobs: int = 1,
              retry_failed: bool = False, log=print, command: str = "", threads=None,
              time_limit=None, **runtime) -> dict:
    """Run every unfinished arm x seed of the study ``names`` in ``out``, ``jobs`` at a time,
    then write the report. Returns the results dict (see :func:`aggregate`).

    ``time_limit`` (seconds, optional): no run is started once the runs finished so far say it
    could not end in time, and at the limit the running ones are stopped as SIGTERM stops them
    (each keeps its last checkpoint and resumes next time); then the report is written."""
    protocol.validate()
    if time_limit is not None and (isinstance(time_limit, bool) or not time_limit > 0):
        raise ValueError(f"study: time_limit must be > 0 seconds, got {time_limit!r}")
    deadline = None if time_limit is None else time.time() + time_limit
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"study: --seeds must be an integer >= 1, got {seeds!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"study: --jobs must be an integer >= 1, got {jobs!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"study: --threads must be an integer >= 1, got {threads!r}")
    out = Path(out)
    study_arms(names)
    plan(names, out, protocol, seeds, **runtime)    # checks the runs before anything is written
    open_study_folder(out, protocol, names)
    with study_lock(out):
        all_jobs = plan(names, out, protocol, seeds, retry_failed, **runtime)
        return _schedule(names, out, protocol, seeds, jobs, all_jobs, threads, deadline,
                         command, log, runtime)


def _schedule(names, out, protocol, seeds, jobs, all_jobs, threads, deadline, command, log,
              runtime) -> dict:
    todo = [j for j in all_jobs if j.state in ("absent", "interrupted")]
    done = len(all_jobs) - len(todo)
    cores = os.cpu_count() or 1
    if runtime.get("backend", "numpy") != "numpy":
        threads = None      # on CuPy the runs share the GPU; BLAS threads do not matter
    elif threads is None:
        threads = max(1, cores // jobs)
    log(f"study {names} in {out}: {len(all_jobs)} runs, {done} already finished or failed, "
        f"{len(todo)} to run, {min(jobs, max(1, len(todo)))} at a time"
        + (f" ({threads} BLAS thread{'s' if threads > 1 else ''} each)" if threads else ""))
    running: list = []
    finished = 0
    walls: dict = {}                # network -> wall times of the runs finished here
    try:
        while todo or running:
            while todo and len(running) < jobs and _fits(todo[0], walls, deadline):
                job = todo.pop(0)
                running.append((job, _start(job, _spec(job, threads, command),
                                            threads), time.time()))
            if not running:
                break                                   # the time left fits no further run
            time.sleep(0.2)
            for item in list(running):
                job, proc, t0 = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                finished += 1
                if proc.returncode == 0:
                    walls.setdefault(ARMS[job.arm].network, []).append(time.time() - t0)
                log(_progress_line(job, proc.returncode, time.time() - t0,
                                   f"[{done + finished}/{len(all_jobs)}]"))
                if proc.returncode == 130:
                    raise KeyboardInterrupt
            if deadline is not None and time.time() >= deadline and running:
                _stop(running)
                log(f"time limit reached: {len(running)} run{'s' if len(running) != 1 else ''}"
                    f" stopped ({', '.join(f'{j.arm} seed {j.seed}' for j, _, _ in running)});"
                    f" each resumes from its last checkpoint")
                running = []
                break
    except KeyboardInterrupt:
        _stop(running)
        raise
    if todo:
        log(f"time limit: {len(todo)} run{'s' if len(todo) != 1 else ''} not started; the same "
            f"command runs {'them' if len(todo) != 1 else 'it'} later")
    from .report import aggregate, write_report      # report reads runs: imported here
    results = aggregate(names, out, protocol, seeds)
    write_report(results, out, names, log=log)
    return results


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
            holder = _lock_holder(path)
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


def _lock_holder(path: Path):
    """Who holds the lock (a description), or None when its process no longer exists."""
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
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


def _fits(job: Job, walls: dict, deadline) -> bool:
    """Whether ``job`` can end before ``deadline``, judged by the longest run of its network (or
    of any network) finished so far; before any has finished every run is given its chance."""
    if deadline is None:
        return True
    seen = walls.get(ARMS[job.arm].network) or [w for ws in walls.values() for w in ws]
    return not seen or time.time() + max(seen) <= deadline


def _stop(running) -> None:
    for _, proc, _ in running:
        proc.send_signal(signal.SIGTERM)          # each worker keeps its last checkpoint
    for _, proc, _ in running:
        proc.wait()


def worker_env(threads) -> dict:
    """The environment of a worker process: unbuffered output (train.log shows each epoch as it
    ends) and, on the CPU, ``threads`` BLAS threads."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def _start(job: Job, spec: dict, threads) -> subprocess.Popen:
    job.directory.mkdir(parents=True, exist_ok=True)
    env = worker_env(threads)
    log_file = open(job.directory / LOG, "a", encoding="utf-8")
    try:
        return subprocess.Popen([sys.executable, "-m", "npse.study", "--worker",
                                 json.dumps(spec)], stdout=log_file, stderr=subprocess.STDOUT,
                                env=env)
    finally:
        log_file.close()


def _progress_line(job: Job, code: int, seconds: float, counter: str) -> str:
    name = f"{job.arm} seed {job.seed}"
    if code == 0:
        metrics = read_metrics(job.directory / T.METRICS)
        epochs = metrics[-1]["epoch"]
        return (f"{counter} {name}: {100 * metrics[-1]['test_acc']:.2f}% after {epochs} "
                f"epoch{'s' if epochs != 1 else ''} ({seconds / 60:.1f} min)")
    if code == 130:
        return f"{counter} {name}: interrupted (it resumes from its checkpoint)"
    if (job.directory / FAILED).exists():
        why = json.loads((job.directory / FAILED).read_text(encoding="utf-8"))["error"]
    else:
        why = (f"the worker died (signal {-code}; out of memory?)" if code < 0
               else f"the worker exited with status {code}")
        _write_json(job.directory / FAILED, {"arm": job.arm, "seed": job.seed, **git_commit(),
                                             "error": why})
    return f"{counter} {name}: FAILED: {why} (see {job.directory / LOG})"


def _stop_on_sigterm() -> None:
    """Let ``kill PID`` stop a study (or a worker) as Ctrl-C would: a background job started by
    a non-interactive shell ignores SIGINT, so SIGTERM is the signal that reaches it."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
