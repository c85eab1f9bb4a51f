"""How many runs at once? ``npse study NAME --probe 1,2,4,8``.

Before a study is spread over ``--jobs K`` processes it pays to know what K buys: on the CPU the
cores are shared out, so the total rarely grows; on a GPU one run of a small network is
launch-bound (the host issues kernels faster than the GPU needs them, chapter B), so several runs
side by side can use the GPU that one leaves idle. The probe measures it: for each K it starts K
processes that train the study's reference arm on a random batch, lets each warm up, then times
all K over the same window, and prints the images per second of one run and of all K together.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .arms import ARMS, QUICK, Protocol
from ..fast.threads import set_num_threads
from .runs import usable_cores, worker_env

WARMUP_STEPS = 3        # CuPy compiles its kernels and fills its memory pool in the first steps
TRAIN_IMAGES, TEST_IMAGES = 50000, 10000


def probe_worker(spec: dict) -> int:
    """One process of the probe (``python -m npse.study --probe-worker SPEC``): warm up, print
    ``ready``, wait for a line on stdin, train for ``spec["seconds"]``, print the images/s."""
    from .. import backend
    from ..fast import FAST
    from ..models import build_model
    from ..step import Setup
    backend.set_backend(spec["backend"])
    if spec["backend"] == "numpy":
        set_num_threads(spec.get("threads") or 1)
    xp = backend.module()
    protocol = Protocol(**{**spec["protocol"], "widths": spec["protocol"]["widths"]
                           and tuple(spec["protocol"]["widths"])})
    config = protocol.train_config(ARMS["reference"], 0, Path("."), backend=spec["backend"])
    # The same network, optimizer and execution policy as the study's runs, on a random batch.
    setup = Setup(build_model(config.model, **config.model_overrides()), protocol.batch_size,
                   FAST)
    batch = protocol.batch_size

    def sync():
        if spec["backend"] == "cupy":
            xp.cuda.Device().synchronize()

    for _ in range(WARMUP_STEPS):
        setup.train_step()
    sync()
    print("ready", flush=True)
    sys.stdin.readline()                        # every process of this K starts together
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < spec["seconds"]:
        setup.train_step()
        steps += 1
    sync()
    print(json.dumps({"images_per_s": steps * batch / (time.perf_counter() - start)}),
          flush=True)
    return 0


def probe(protocol: Protocol, ks, backend: str = "numpy", seconds: float = 10.0,
          minutes=None, log=print) -> list:
    """Time the reference arm with K processes side by side for each K in ``ks``.

    Returns one dict per K: ``jobs``, ``per_run`` and ``total`` images/s, ``run_minutes`` (the
    time one run of the protocol would take at that K) and ``error`` (None, or why a process of
    that K failed, e.g. the GPU's memory; larger K are then not tried). The last line names the
    K with the most images per second in all, among the K whose runs end within ``minutes``
    where that is given (a study with ``--time-limit``).
    """
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"study: --probe takes positive integers like 1,2,4,8, got {ks!r}")
    if not seconds > 0:
        raise ValueError(f"study: --probe-seconds must be > 0, got {seconds!r}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"study: --time-limit must be > 0 minutes, got {minutes!r}")
    cores = usable_cores()
    log(f"probe: the reference arm (batch {protocol.batch_size}, depth {protocol.depth}) on "
        f"{backend}, K processes side by side, each timed over the same {seconds:g} s")
    # One run: every epoch trains on the training images and evaluates the test images, a
    # forward pass that costs about a third of a training step per image.
    train = protocol.train_subset or TRAIN_IMAGES
    test = QUICK["test_subset"] if protocol.quick else TEST_IMAGES
    images_per_run = protocol.epochs * (train + test / 3)
    rows = []
    for k in ks:
        spec = {"backend": backend, "protocol": protocol.as_dict(), "seconds": seconds}
        row = _probe_k(k, spec, None if backend == "cupy" else max(1, cores // k))
        rows.append(row)
        if row["error"]:
            log(f"{k:>4} at once: failed: {row['error']}")
            break
        row["run_minutes"] = images_per_run / row["per_run"] / 60
        log(f"{k:>4} at once: {row['per_run']:9.1f} images/s per run, {row['total']:9.1f} in "
            f"all; a run of {protocol.epochs} epoch{'s' if protocol.epochs != 1 else ''} takes "
            f"about {row['run_minutes']:.1f} min")
    good = [r for r in rows if not r["error"]]
    if good:
        fit = [r for r in good if minutes is None or r["run_minutes"] <= minutes]
        if fit:
            best = max(fit, key=lambda r: r["total"])
            within = "" if minutes is None else f" among runs that end within {minutes:g} min"
        else:
            best = max(good, key=lambda r: r["per_run"])
            within = f" (no run ends within {minutes:g} min; the fastest single run)"
        log(f"most images per second in all{within}: --jobs {best['jobs']}")
    return rows


def _probe_k(k: int, spec: dict, threads) -> dict:
    env = worker_env(threads)
    with tempfile.TemporaryDirectory() as tmp:
        logs = [open(Path(tmp) / f"{i}.log", "w+", encoding="utf-8") for i in range(k)]
        procs = [subprocess.Popen([sys.executable, "-m", "npse.study", "--probe-worker",
                                   json.dumps({**spec, "threads": threads})], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=log, text=True, env=env)
                 for log in logs]
        try:
            error = None
            if not all(p.stdout.readline().strip() == "ready" for p in procs):
                error = "a process stopped during its warm-up"
            else:
                for p in procs:
                    p.stdin.write("go\n")
                    p.stdin.flush()
                rates = [json.loads(p.stdout.readline() or "{}").get("images_per_s")
                         for p in procs]
                if None in rates:
                    error = "a process stopped while it was timed"
            if error:
                for p in procs:
                    p.kill()
            for p in procs:
                p.wait()
            if error:
                error += f" ({_last_line(logs) or 'no message'})"
                return {"jobs": k, "per_run": None, "total": None, "error": error}
            return {"jobs": k, "per_run": sum(rates) / k, "total": sum(rates), "error": None}
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()


def _last_line(logs) -> str:
    for log in logs:
        log.flush()
        log.seek(0)
        lines = [line.strip() for line in log.read().splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""
