"""Running a study: one run in its own process (the worker), and the scheduler that starts the
workers of a whole study, then writes its report. Where each file of the folder lives, and what
state a run is in, is :mod:`.folder`'s."""
from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..config import TrainConfig, build_model
from ..fast.threads import set_num_threads, usable_cores  # noqa: F401  (usable_cores: re-exported)
from ..rundir import METRICS, OWN_FILES
from ..train import NonFiniteLossError, train
from .arms import ARMS, MAX_SEEDS, PRIMARY, Protocol, seeds_for, study_arms
from .folder import (FAILED, LOG, RUN_LOCK, RUN_RECORD, folder_studies, inspect_run,
                     open_study_folder, read_metrics, replace_run, run_dir, seeds_on_disk,
                     study_lock, try_lock, write_json)

#: A worker's exit status when its run folder's lock is held by another process: nothing done.
LOCKED = 75
from .report import aggregate, write_report


def git_commit(root=None) -> dict:
    """The commit npse runs from, and whether its ``npse/`` folder had uncommitted changes;
    None for both outside git. ``root``: the checkout (default: the one this npse is in)."""
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)

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
    if config.backend == "numpy":              # this run's share of the cores
        set_num_threads(spec.get("threads") or 1)
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
    why: str = ""        # a damaged run: which file is wrong and how


def plan(names: str, out: Path, protocol: Protocol, seeds: int, retry_failed=False,
         rerun=(), **runtime) -> list:
    """Every arm x seed of the study with its state, in the order they will run: every seed
    of the baseline and the reference first (no arm's interval exists until their repeated
    seeds measure the noise), then seed 0 of each other arm, then its seed 1, and so on; the
    Bottleneck arms, the slowest, last. The runs ``rerun`` names ((arm, seed) pairs) are
    planned as absent, whatever their folders hold: they are to be moved aside."""
    jobs = []
    for arm in study_arms(names):
        for s in seeds_for(arm, seeds):
            d = run_dir(out, arm, s)
            config = protocol.train_config(ARMS[arm], s, d, **runtime)
            if (arm, s) in rerun:
                jobs.append(Job(arm, s, d, "absent", config))
                continue
            found = inspect_run(d, config.training_dict())
            if found.state == "failed" and retry_failed:
                (d / FAILED).unlink()
                found = inspect_run(d, config.training_dict())
            jobs.append(Job(arm, s, d, found.state, config, found.why))
    order = {"bottleneck": 1, "basic": 0}
    jobs.sort(key=lambda j: (order[ARMS[j.arm].network], j.arm not in PRIMARY, j.seed))
    return jobs


def parse_rerun(items, names: str, seeds: int) -> list:
    """``--rerun ARM:SEED`` options as (arm, seed) pairs, each a run of the study."""
    pairs = []
    for item in items or ():
        arm, _, seed = str(item).rpartition(":")
        if not arm or not seed.isdigit():
            raise ValueError(f"study: --rerun takes ARM:SEED, like reference:2, got {item!r}")
        if arm not in study_arms(names):
            raise ValueError(f"study: --rerun {item}: {arm!r} is not an arm of {names} "
                             f"({', '.join(study_arms(names))})")
        if int(seed) not in seeds_for(arm, seeds):
            raise ValueError(f"study: --rerun {item}: this study runs seeds 0.."
                             f"{len(seeds_for(arm, seeds)) - 1} of {arm} (see --seeds)")
        pairs.append((arm, int(seed)))
    return pairs


def worker_spec(job: Job, threads: int, command: str) -> dict:
    """What the worker of ``job`` is given (JSON-ready): its arm, training configuration
    (resumed, or started over), BLAS threads and the command line recorded in run.json."""
    config = dataclasses.asdict(job.config)
    if job.state == "interrupted":
        config["resume"] = True
    elif job.state == "absent" and any((job.directory / n).exists() for n in OWN_FILES):
        config["overwrite"] = True   # a partial run without a checkpoint starts again
    return {"arm": job.arm, "config": config, "threads": threads, "command": command}


#: Beside a step's own memory, a worker holds the whole CIFAR-10 (180 MiB as uint8, read before
#: a subset is taken) and the interpreter with NumPy (about 100 MiB).
WORKER_BASE_BYTES = 280 * 2**20


def cap_jobs(jobs: int, names: str, protocol: Protocol, backend_name: str, log) -> int:
    """``jobs``, or fewer when more runs at once cannot help on the CPU: at most one per core
    this process may use, and at most as many as the available memory holds (each run's
    memory as :func:`npse.memory.estimate_memory` predicts its step, plus its data). Says so
    in one line when it caps."""
    if backend_name != "numpy" or jobs == 1:
        return jobs
    from ..memory import available_memory
    cores = usable_cores()
    limits = [(cores, f"{cores} core{'s' if cores != 1 else ''} to share")]
    free = available_memory()
    if free is not None:
        need = max(run_memory(protocol, ARMS[a]) for a in study_arms(names))
        limits.append((max(1, int(free // need)), f"{free / 2**30:.1f} GiB of memory available, "
                                                  f"about {need / 2**20:.0f} MiB a run"))
    cap, why = min(limits)
    if jobs <= cap:
        return jobs
    log(f"study: --jobs {jobs} capped to {cap}: {why}")
    return cap


def run_memory(protocol: Protocol, arm) -> int:
    """Bytes one worker of ``arm`` needs: its training step, evaluation pass and optimiser
    (npse.memory's estimate) and :data:`WORKER_BASE_BYTES`."""
    from ..memory import estimate_memory
    from ..models.loading import parameter_bound
    config = protocol.train_config(arm, 0, Path("."))
    model_config = build_model(config).config
    estimate = estimate_memory(model_config, (3, 32, 32))
    fixed, per_image = estimate["train"]
    eval_fixed, eval_per_image = estimate["eval"]
    step = max(fixed + per_image * config.batch_size,
               eval_fixed + eval_per_image * config.eval_batch_size)
    return int(step + 3 * 4 * parameter_bound(model_config) + WORKER_BASE_BYTES)


def run_study(names: str, out, protocol: Protocol, seeds: int = 1, jobs: int = 1,
              retry_failed: bool = False, log=print, command: str = "", threads=None,
              time_limit=None, rerun=(), runner=None, **runtime) -> dict:
    """Run every unfinished arm x seed of the study ``names`` in ``out``, ``jobs`` at a time,
    then write the report of every study in the folder. Returns the results dict (see
    :func:`aggregate`).

    ``time_limit`` (seconds, optional): no run is started once the runs finished so far say it
    could not end in time, and at the limit the running ones are stopped as SIGTERM stops them
    (each keeps its last checkpoint and resumes next time); then the report is written.
    ``rerun``: runs ``"ARM:SEED"`` whose folders are moved aside (never deleted) and trained
    again: the way to redo a finished or damaged run, which is otherwise never touched.
    ``runner``: runs the jobs elsewhere instead of ``jobs`` worker processes here (see
    :mod:`.cluster`): called as ``runner(todo, threads, command, log, (before, total))`` with
    the study lock held, it runs the jobs and logs a :func:`progress_line` as each ends."""
    protocol.validate()
    if runner is not None and time_limit is not None:
        raise ValueError("study: --time-limit is for runs on this machine; it does not apply "
                         "with --scheduler")
    if time_limit is not None and (isinstance(time_limit, bool) or not time_limit > 0):
        raise ValueError(f"study: time_limit must be > 0 seconds, got {time_limit!r}")
    deadline = None if time_limit is None else time.time() + time_limit
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"study: --seeds must be an integer >= 1 and <= {MAX_SEEDS}, got "
                         f"{seeds!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"study: --jobs must be an integer >= 1, got {jobs!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"study: --threads must be an integer >= 1, got {threads!r}")
    out = Path(out)
    study_arms(names)
    if runner is None:
        jobs = cap_jobs(jobs, names, protocol, runtime.get("backend", "numpy"), log)
    replace = parse_rerun(rerun, names, seeds)
    plan(names, out, protocol, seeds, rerun=replace, **runtime)   # checked before any write
    open_study_folder(out, protocol, names)
    with study_lock(out):
        for arm, s in replace:
            d = run_dir(out, arm, s)
            if d.exists() or d.is_symlink():
                log(f"--rerun {arm}:{s}: moved {d} to {replace_run(d).name}; training it again")
        all_jobs = plan(names, out, protocol, seeds, retry_failed, **runtime)
        return _schedule(names, out, protocol, seeds, jobs, all_jobs, threads, deadline,
                         command, log, runtime, runner)


def _schedule(names, out, protocol, seeds, jobs, all_jobs, threads, deadline, command, log,
              runtime, runner=None) -> dict:
    todo = [j for j in all_jobs if j.state in ("absent", "interrupted")]
    skipped = [j for j in all_jobs if j.state in ("damaged", "running")]
    done = len(all_jobs) - len(todo) - len(skipped)
    cores = usable_cores()
    if runtime.get("backend", "numpy") != "numpy":
        threads = None      # on CuPy the runs share the GPU; BLAS threads do not matter
    elif threads is None and runner is None:
        threads = max(1, cores // jobs)   # (on a cluster, each worker's cores decide)
    at_once = (f"on {runner.where}" if runner is not None
               else f"{min(jobs, max(1, len(todo)))} at a time")
    log(f"study {names} in {out}: {len(all_jobs)} runs, {done} already finished or failed, "
        + (f"{len(skipped)} skipped, " if skipped else "")
        + f"{len(todo)} to run, {at_once}"
        + (f" ({threads} thread{'s' if threads > 1 else ''} each)" if threads else ""))
    for job in skipped:
        log(skip_line(job))
    running: list = []
    counts = (done + len(skipped), len(all_jobs))
    try:
        if runner is not None:
            runner(todo, threads, command, log, counts)
            todo = []
        else:
            _run_jobs(todo, running, jobs, threads, deadline, command, log, counts)
    except BaseException:
        _stop(running)     # whatever went wrong here, no worker goes on unsupervised
        raise
    if todo:
        log(f"time limit: {len(todo)} run{'s' if len(todo) != 1 else ''} not started; the same "
            f"command runs {'them' if len(todo) != 1 else 'it'} later")
    table = folder_studies(out, names)
    results = aggregate(table, out, protocol, max(seeds, seeds_on_disk(out, table)))
    write_report(results, out, table, log=log)
    return results


def skip_line(job: Job) -> str:
    """The one line that says why the scheduler leaves a run alone."""
    name = f"{job.arm} seed {job.seed}"
    if job.state == "running":
        return (f"skipped {name}: another process trains it now (its {RUN_LOCK} is locked)")
    return (f"skipped {name}: damaged: {job.why}; left as it is (--rerun {job.arm}:{job.seed} "
            f"moves it aside and trains it again)")


def _run_jobs(todo, running, jobs, threads, deadline, command, log, counts) -> None:
    """Start the jobs of ``todo`` (popped as they start) ``jobs`` at a time and wait for them;
    ``running`` holds the live ones, for the caller to stop if anything goes wrong."""
    before, total = counts
    finished = 0
    walls: dict = {}                # network -> wall times of the runs finished here
    while todo or running:
        while todo and len(running) < jobs and fits_in_time(todo[0], walls, deadline):
            job = todo.pop(0)
            proc = _start(job, worker_spec(job, threads, command), threads)
            if proc is None:
                finished += 1
                log(skip_line(dataclasses.replace(job, state="running")))
            else:
                running.append((job, proc, time.time()))
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
            log(progress_line(job, proc.returncode, time.time() - t0,
                               f"[{before + finished}/{total}]"))
            if proc.returncode == 130:
                raise KeyboardInterrupt
        if deadline is not None and time.time() >= deadline and running:
            _stop(running)
            log(f"time limit reached: {len(running)} run{'s' if len(running) != 1 else ''}"
                f" stopped ({', '.join(f'{j.arm} seed {j.seed}' for j, _, _ in running)});"
                f" each resumes from its last checkpoint")
            running.clear()
            break


def fits_in_time(job: Job, walls: dict, deadline) -> bool:
    """Whether ``job`` can end before ``deadline``, judged by the longest run of its network (or
    of any network) finished so far; before any has finished every run is given its chance."""
    if deadline is None:
        return True
    seen = walls.get(ARMS[job.arm].network) or [w for ws in walls.values() for w in ws]
    return not seen or time.time() + max(seen) <= deadline


def _stop(running) -> None:
    for _, proc, _ in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)      # each worker keeps its last checkpoint
    for _, proc, _ in running:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:         # a worker that ignores SIGTERM: no checkpoint
            proc.kill()                           # is written after this, so none is lost
            proc.wait()


def worker_env(threads) -> dict:
    """The environment of a worker process: unbuffered output (train.log shows each epoch as it
    ends) and, on the CPU, ``threads`` BLAS threads."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def _start(job: Job, spec: dict, threads):
    """The worker of ``job``, started holding the run's lock; None if another process holds it."""
    job.directory.mkdir(parents=True, exist_ok=True)
    fd = try_lock(job.directory / RUN_LOCK)
    if fd is None:
        return None
    return spawn_worker(job, spec, threads, fd)


def spawn_worker(job: Job, spec: dict, threads, fd: int) -> subprocess.Popen:
    """Start the worker process of ``job``, handing it ``fd``: an open file that holds the
    run's lock. This process's copy of ``fd`` is closed, in every case.

    The fd is passed (``pass_fds``) rather than the lock taken again by the worker: the
    worker holds it from its first instruction, and once this process closes its copy, only
    the worker does. The worker is told this process's pid, to die with it."""
    spec = {**spec, "lock_fd": fd, "parent": os.getpid()}
    try:
        with open(job.directory / LOG, "a", encoding="utf-8") as log_file:
            return subprocess.Popen([sys.executable, "-m", "npse.study", "--worker",
                                     json.dumps(spec)], stdout=log_file,
                                    stderr=subprocess.STDOUT, env=worker_env(threads),
                                    pass_fds=(fd,))
    finally:
        os.close(fd)


def progress_line(job: Job, code: int, seconds: float, counter: str) -> str:
    """The line that says how a run ended: its accuracy, or why not (a worker that died
    without saying why gets its failed.json here, written under the run's lock)."""
    name = f"{job.arm} seed {job.seed}"
    if code == 0:
        metrics = read_metrics(job.directory / METRICS)
        epochs = metrics[-1]["epoch"]
        return (f"{counter} {name}: {100 * metrics[-1]['test_acc']:.2f}% after {epochs} "
                f"epoch{'s' if epochs != 1 else ''} ({seconds / 60:.1f} min)")
    if code == 130:
        return f"{counter} {name}: interrupted (it resumes from its checkpoint)"
    if code == LOCKED:
        return f"{counter} {name}: skipped, another process holds its {RUN_LOCK}"
    if (job.directory / FAILED).exists():
        why = json.loads((job.directory / FAILED).read_text(encoding="utf-8"))["error"]
    else:
        why = (f"the worker died (signal {-code}; out of memory?)" if code < 0
               else f"the worker exited with status {code}")
        fd = try_lock(job.directory / RUN_LOCK)   # the folder's owner writes, or nobody
        if fd is not None:
            try:
                write_json(job.directory / FAILED, {"arm": job.arm, "seed": job.seed,
                                                    **git_commit(), "error": why})
            finally:
                os.close(fd)
    return f"{counter} {name}: FAILED: {why} (see {job.directory / LOG})"


def stop_on_sigterm() -> None:
    """Let ``kill PID`` stop a study (or a worker) as Ctrl-C would: a background job started by
    a non-interactive shell ignores SIGINT, so SIGTERM is the signal that reaches it."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


# ----------------------------------------------------------------------------- the worker's side

PR_SET_PDEATHSIG = 1    # linux/prctl.h


def die_with_parent(parent: int) -> bool:
    """Ask for SIGTERM when the study process ``parent`` dies, however it dies (SIGKILL
    included), so that no worker trains on unsupervised; False if it is already gone.

    On Linux the kernel sends it (prctl PR_SET_PDEATHSIG); elsewhere a thread polls the parent.
    The parent may die before the request is made, so the parent pid is checked after it."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), ctypes.c_ulong(0),
                               ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        return False
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    return True


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def hold_run_lock(spec: dict) -> bool:
    """Whether this worker holds the lock of its run folder: the fd its scheduler passed
    (checked to be that folder's lock file, and locked by this open file), else one it takes
    itself, kept open until the process ends."""
    path = Path(spec["config"]["out"]) / RUN_LOCK
    fd = spec.get("lock_fd")
    if fd is None:
        fd = try_lock(path)
        if fd is None:
            return False
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a no-op where this open file holds it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)   # who trains here, for people to see
    except (OSError, TypeError):
        return False
    return True
