"""Running a study: one run in its own process (the worker), and the scheduler that starts the
workers of a whole study, then writes its report. Where each file of the folder lives, and what
state a run is in, is :mod:`.folder`'s."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..config import TrainConfig
from ..rundir import METRICS, OWN_FILES
from ..train import NonFiniteLossError, train
from .arms import ARMS, PRIMARY, Protocol, seeds_for, study_arms
from .folder import (FAILED, LOG, RUN_RECORD, open_study_folder, read_metrics, run_dir, run_state,
                     study_lock, write_json)
from .report import aggregate, write_report


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


def run_one(spec: dict) -> int:
    """Train one arm x seed as described by ``spec`` (made by :func:`worker_spec`); return 0 or 1.

    Runs in its own process: a failure is recorded in ``failed.json``, success in ``run.json``.
    """
    config = TrainConfig(**{k: tuple(v) if k in ("widths", "se_stages") and v else v
                            for k, v in spec["config"].items()})
    out = Path(config.out)
    started = time.time()
    record = {"arm": spec["arm"], "seed": config.seed, **git_commit(),
              "threads": spec.get("threads"), "started": time.strftime(
                  "%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "command": spec["command"]}
    try:
        final = train(config, log=print)
    except KeyboardInterrupt:
        return 130
    except (NonFiniteLossError, MemoryError, ValueError, OSError, RuntimeError) as e:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / FAILED, {**record, "error": f"{type(e).__name__}: "
                                  + " ".join(str(e).split())})
        print(f"failed: {e}", file=sys.stderr)
        return 1
    record.update(wall_seconds=round(time.time() - started, 1), test_acc=final["test_acc"])
    write_json(out / RUN_RECORD, record)
    return 0


@dataclasses.dataclass
class Job:
    arm: str
    seed: int
    directory: Path
    state: str
    config: TrainConfig


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


def worker_spec(job: Job, threads: int, command: str) -> dict:
    """What the worker of ``job`` is given (JSON-ready): its arm, training configuration
    (resumed, or started over), BLAS threads and the command line recorded in run.json."""
    config = dataclasses.asdict(job.config)
    if job.state == "interrupted":
        config["resume"] = True
    elif job.state == "absent" and any((job.directory / n).exists() for n in OWN_FILES):
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
            while todo and len(running) < jobs and fits_in_time(todo[0], walls, deadline):
                job = todo.pop(0)
                running.append((job, _start(job, worker_spec(job, threads, command),
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
    results = aggregate(names, out, protocol, seeds)
    write_report(results, out, names, log=log)
    return results


def fits_in_time(job: Job, walls: dict, deadline) -> bool:
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
        metrics = read_metrics(job.directory / METRICS)
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
        write_json(job.directory / FAILED, {"arm": job.arm, "seed": job.seed, **git_commit(),
                                            "error": why})
    return f"{counter} {name}: FAILED: {why} (see {job.directory / LOG})"


def stop_on_sigterm() -> None:
    """Let ``kill PID`` stop a study (or a worker) as Ctrl-C would: a background job started by
    a non-interactive shell ignores SIGINT, so SIGTERM is the signal that reaches it."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
