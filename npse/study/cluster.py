"""``npse study --scheduler ADDRESS``: a study's runs as tasks of a Dask distributed cluster.

The study process plans the runs and holds ``OUT/study.lock`` as it does locally; each run that
is left to train becomes one task (:func:`train_task`). A task runs on some Dask worker, whose
machine sees the study folder at the same path (shared storage). There it takes the run's
``.run.lock``, reads the run's state again (a retried task finds the checkpoint its first try
left), and starts the same worker process a local study starts, handing it the lock: that
process dies with the Dask worker (prctl/watchdog) and the kernel then releases the lock.

So the run store decides what trains, never Dask: a task that finds its run finished returns
without training, one that finds the lock held waits for it (a first try that is still dying)
and then gives up with the same "skipped" line a local study prints. Dask decides only where:
a task whose worker dies is run again elsewhere (``allowed-failures``), one that raises is
retried (``retries``), and the retry resumes from the last checkpoint.

Dask is imported only here, and only when a study is run with ``--scheduler`` (the optional
extra ``npse[cluster]``); nothing else in npse needs it.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from ..data.cifar import CIFAR10_DIR, CIFAR10_TEST_FILES, CIFAR10_TRAIN_FILES, resolve_data_dir
from .folder import LOCK, LOG, RUN_LOCK, STUDY_FILE, inspect_run, lock_is_held, try_lock
from .runs import LOCKED, Job, progress_line, spawn_worker, worker_spec

INSTALL = "pip install 'npse[cluster]'"
#: Seconds to reach the scheduler, and then to find a worker there: an address where nothing
#: answers is said to be so at once, not after Dask's default of half a minute.
CONNECT_TIMEOUT = 5.0
#: Seconds a task waits for a run lock that another process holds before it gives the run up:
#: long enough for the worker of an earlier try, killed with its Dask worker, to end, and for
#: an NFSv4 server to drop the lock of a machine that died (its lease: 90 s by default).
LOCK_WAIT = 150.0
#: Tries of a task that raised (the storage went away for a moment, say) after the first. A
#: task whose Dask worker died is run again by Dask's own count (distributed.scheduler.
#: allowed-failures, 3 by default), whatever this says.
RETRIES = 2
#: Seconds the study waits, after Ctrl-C, for the cancelled runs to stop (and keep their
#: checkpoints) before it exits.
STOP_WAIT = 60.0


def import_distributed():
    """The ``distributed`` module, or an ImportError that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise ImportError(f"study: --scheduler needs Dask distributed, which is not installed "
                          f"here: {INSTALL}") from None
    return distributed


def connect(address: str, timeout: float = CONNECT_TIMEOUT):
    """A ``distributed.Client`` of the scheduler at ``address`` that has a worker, or a
    ValueError that says which of the two is missing, within about ``2 * timeout`` seconds."""
    distributed = import_distributed()
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"study: --scheduler {address}: no Dask scheduler answered within "
                         f"{timeout:g} s ({reason}); start one with `dask scheduler`") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as e:
        client.close()
        raise ValueError(f"study: --scheduler {address}: the scheduler has no worker (start "
                         f"one on each machine: dask worker {address} --nthreads 1)") from e
    except BaseException:
        client.close()
        raise
    return client


# ----------------------------------------------------------------------------- before any run

def check_workers(client, out: Path, data_dir) -> None:
    """Ask every worker, before any run starts, whether it can train this study's runs; a
    ValueError naming the first worker that cannot, and why (see :func:`worker_problem`)."""
    out = Path(out)
    study_text = (out / STUDY_FILE).read_text(encoding="utf-8")
    lock_text = (out / LOCK).read_text(encoding="utf-8")
    found = client.run(worker_problem, str(out), data_dir, study_text, lock_text,
                       on_error="return")
    if not found:
        raise ValueError("study: the Dask cluster has no worker left")
    for address, problem in sorted(found.items()):
        if isinstance(problem, ImportError):
            problem = (f"cannot import npse ({type(problem).__name__}: {problem}); install "
                       f"npse there, the same version as here")
        elif isinstance(problem, BaseException):
            problem = f"the check failed: {type(problem).__name__}: {problem}"
        if problem:
            raise ValueError(f"study: Dask worker {address}: " + " ".join(str(problem).split()))


def worker_problem(out: str, data_dir, study_text: str, lock_text: str):
    """Run on a worker: why it cannot train the study in ``out`` (a sentence), or None.

    It must see the folder at the same path, hold the same study.json, and see the study lock
    the study process wrote just now (a folder that is a copy, not shared, has another or none)
    and be able to write there; and it must find the CIFAR-10 files where its runs will look."""
    folder, host = Path(out), socket.gethostname()
    where = f"on {host}, the study folder {out}"
    if not folder.is_dir():
        return f"{where} does not exist: put it on storage every worker shares, at the same path"
    try:
        if (folder / STUDY_FILE).read_text(encoding="utf-8") != study_text:
            return f"{where} holds another {STUDY_FILE}: it is not the folder this study runs"
        if (folder / LOCK).read_text(encoding="utf-8") != lock_text:
            return (f"{where} is a copy, not the folder this study runs (its {LOCK} differs): "
                    f"put it on storage every worker shares")
    except (OSError, UnicodeDecodeError) as e:
        return f"{where} cannot be read ({type(e).__name__}: {e})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{where} is not writable by the worker's user"
    root = resolve_data_dir(data_dir)
    missing = [n for n in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES
               if not (root / CIFAR10_DIR / n).is_file()]
    if missing:
        return (f"on {host}, no CIFAR-10 in {root / CIFAR10_DIR} ({missing[0]} is missing): "
                f"put the data there, or give --data-dir a folder every worker shares")
    return None


# ----------------------------------------------------------------------------- the task

def train_task(job: Job, threads, command: str, lock_wait: float = LOCK_WAIT) -> dict:
    """Run on a Dask worker: train the run of ``job`` (resuming it where it has a checkpoint),
    in a worker process of its own; returns ``{"code": exit status, "seconds": ...}``, or
    ``{"state": ...}`` when the run turned out finished, failed or damaged and was left alone.

    ``threads`` BLAS threads (None: the worker's cores shared among its task slots). Cancelling
    the task (Ctrl-C in the study, or the study's client gone) stops the process as SIGTERM
    does: the run keeps its last checkpoint."""
    worker = import_distributed().get_worker()
    key = worker.get_current_task()
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(1, worker.state.nthreads))
    job.directory.mkdir(parents=True, exist_ok=True)
    fd = wait_for_lock(job.directory / RUN_LOCK, lock_wait)
    if fd is None:
        return {"code": LOCKED, "seconds": 0.0}
    try:
        # Read under the lock: the state may have changed since the study planned the run
        # (an earlier try of this task trained some epochs, or all of them).
        found = inspect_run(job.directory, job.config.training_dict(), lock_is_mine=True)
        if found.state not in ("absent", "interrupted"):
            os.close(fd)
            return {"state": found.state}
        job = dataclasses.replace(job, state=found.state)
        with open(job.directory / LOG, "a", encoding="utf-8") as log:
            log.write(f"npse study: {'resuming' if found.state == 'interrupted' else 'starting'}"
                      f" on {socket.gethostname()}, Dask worker {worker.address} (pid "
                      f"{os.getpid()}), {threads} thread{'s' if threads != 1 else ''}\n")
    except BaseException:
        os.close(fd)
        raise
    started = time.time()
    proc = spawn_worker(job, worker_spec(job, threads, command), threads, fd)
    code = supervise(proc, lambda: cancelled(worker, key))
    return {"code": code, "seconds": time.time() - started}


def wait_for_lock(path: Path, seconds: float):
    """An fd holding the flock on ``path``, taken within ``seconds``, or None."""
    end = time.time() + seconds
    while True:
        fd = try_lock(path)
        if fd is not None or time.time() >= end:
            return fd
        time.sleep(0.5)


def cancelled(worker, key) -> bool:
    """Whether the scheduler no longer wants the task ``key`` that this thread runs: Dask
    cannot stop a running task's thread, so the task asks, and stops its process itself."""
    task = worker.state.tasks.get(key)
    return task is None or task.state == "cancelled"


def supervise(proc: subprocess.Popen, stop_asked) -> int:
    """Wait for ``proc``, stopping it as SIGTERM does once ``stop_asked()`` says so, or when
    anything goes wrong here; its exit status."""
    try:
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if stop_asked():
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)        # the run keeps its last checkpoint
            try:
                proc.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:       # it ignores SIGTERM: no checkpoint is
                proc.kill()                         # written after this, so none is lost
                proc.wait()
    return proc.returncode


# ----------------------------------------------------------------------------- the study's side

class DaskRunner:
    """The ``runner`` of :func:`npse.study.runs.run_study` that runs the jobs on a cluster:
    checks the workers, submits one task a run, prints a progress line as each ends."""

    def __init__(self, client, out: Path, data_dir, retries: int = RETRIES):
        self.client, self.out, self.data_dir, self.retries = client, Path(out), data_dir, retries
        workers = len(client.scheduler_info().get("workers", {}))
        self.where = (f"the Dask cluster at {client.scheduler.address} ({workers} "
                      f"worker{'s' if workers != 1 else ''} now)")

    def __call__(self, todo, threads, command, log, counts) -> None:
        if not todo:
            return
        check_workers(self.client, self.out, self.data_dir)
        distributed = import_distributed()
        tag = uuid.uuid4().hex[:8]
        futures = {}
        for rank, job in enumerate(todo):
            # Priorities keep the study's order (noise estimate first, Bottleneck arms last).
            future = self.client.submit(train_task, job, threads, command, pure=False,
                                        key=f"npse-{job.arm}-seed-{job.seed}-{tag}",
                                        retries=self.retries, priority=len(todo) - rank)
            futures[future] = job
        before, total = counts
        try:
            for n, future in enumerate(distributed.as_completed(futures, loop=self.client.loop), start=1):
                log(ended_line(future, futures[future], f"[{before + n}/{total}]"))
        except BaseException:
            self.client.cancel(list(futures), force=True)
            wait_released(todo, STOP_WAIT)
            raise


def ended_line(future, job: Job, counter: str) -> str:
    """The progress line of a task that ended: a local study's line for its run, or why the
    cluster did not run it to the end."""
    try:
        result = future.result()
    except Exception as e:      # it raised on every try, or its workers kept dying
        why = " ".join(str(e).split()) or type(e).__name__
        return (f"{counter} {job.arm} seed {job.seed}: not run to the end on the cluster "
                f"({type(e).__name__}: {why}); it keeps its checkpoint, and the same command "
                f"resumes it")
    if "state" in result:
        return (f"{counter} {job.arm} seed {job.seed}: {result['state']} when its task started "
                f"(another process ran it); left as it is")
    return progress_line(job, result["code"], result["seconds"], counter)


def wait_released(jobs, seconds: float) -> None:
    """Wait (at most ``seconds``) until no process holds the lock of a run of ``jobs``."""
    end = time.time() + seconds
    while time.time() < end and any(lock_is_held(j.directory / RUN_LOCK) for j in jobs):
        time.sleep(0.2)
