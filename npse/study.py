"""``npse study NAME``: the paper's ablations, each arm x seed an ordinary ``train()`` run.

Chapter: docs/13-studies.md. The studies follow Hu et al., *Squeeze-and-Excitation Networks*
(TPAMI version, arXiv:1709.01507 v4, section 6), scaled down to CIFAR ResNets.

A study is a named list of *arms*; an arm is a set of :class:`npse.train.TrainConfig` overrides.
Every run of arm ``a`` with seed ``s`` lives in ``OUT/<a>/seed-<s>/`` and is what ``npse train``
would write there. Its state is read from the files alone, so that a fresh checkout holding only
the committed ``config.json`` and ``metrics.jsonl`` knows what is done:

    finished     config.json + metrics.jsonl with one line per epoch, epochs 1..E
    failed       failed.json (the error; shown in the table, not retried unless --retry-failed)
    interrupted  checkpoint.npz without a complete metrics file: resumed from the checkpoint
    absent       anything else: started (again) from scratch

``OUT/study.json`` holds the protocol (epochs, batch size, subset, depth, widths); a folder that
holds another protocol, or files that are not a study's, is refused. Several studies with one
protocol may share a folder: an arm they share (baseline, reference) is trained once.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import train as T

STUDY_FORMAT = "npse-study"
RUN_RECORD = "run.json"        # git commit, wall time, threads: written by the worker
FAILED = "failed.json"         # why a run failed
LOG = "train.log"              # the worker's output (git-ignored)

# ----------------------------------------------------------------------------- the arms

@dataclasses.dataclass(frozen=True)
class Arm:
    """One variant of the network. ``overrides`` are TrainConfig fields; ``paper`` the TPAMI
    ImageNet top-1 error (%) of the matching ResNet-50 variant, ``paper_note`` what it is."""
    name: str
    label: str
    overrides: dict
    network: str = "basic"         # "basic": ResNet-20 family; "bottleneck": depth-29 Bottleneck
    reference: str = "reference"   # the arm its difference is taken against
    paper: float | None = None
    paper_note: str = ""


def _se(**kw):
    # The paper's ablations use excitation FC layers without biases (TPAMI, section 6).
    return {"model": "se_resnet20", "se_bias": False, **kw}


ARMS = {a.name: a for a in [
    Arm("baseline", "ResNet (no SE)", {"model": "resnet20"}, paper=23.30,
        paper_note="ResNet-50"),
    Arm("reference", "SE, r=16, avg, sigmoid, all stages", _se(), paper=22.28,
        paper_note="SE-ResNet-50"),
    Arm("squeeze-max", "squeeze: max pooling", _se(se_squeeze="max"), paper=22.57,
        paper_note="max squeeze"),
    Arm("excitation-tanh", "excitation: tanh", _se(se_excitation="tanh"), paper=23.00,
        paper_note="tanh"),
    Arm("excitation-relu", "excitation: ReLU", _se(se_excitation="relu"), paper=23.47,
        paper_note="ReLU"),
    Arm("stages-1", "SE in stage 1 only", _se(se_stages=(1,)), paper=23.03,
        paper_note="SE_Stage_2 (the first stage)"),
    Arm("stages-2", "SE in stage 2 only", _se(se_stages=(2,)), paper=23.04,
        paper_note="SE_Stage_3 (a middle stage; SE_Stage_4: 22.68)"),
    Arm("stages-3", "SE in stage 3 (last) only", _se(se_stages=(3,)),
        paper_note="not tested: the paper never put SE in its last stage (5) alone"),
    Arm("stages-1-2", "SE in stages 1-2 (drop the last stage)", _se(se_stages=(1, 2)),
        paper_note="no table: a remark of section 4 on dropping the last stage's SE"),
    Arm("integration-pre", "SE-PRE", _se(se="pre"), paper=22.23, paper_note="SE-PRE"),
    Arm("integration-post", "SE-POST", _se(se="post"), paper=22.78, paper_note="SE-POST"),
    Arm("integration-identity", "SE-Identity", _se(se="identity"), paper=22.20,
        paper_note="SE-Identity"),
    Arm("nosqueeze", "NoSqueeze (1x1 convs, no pooling)", _se(se="nosqueeze"), paper=22.93,
        paper_note="NoSqueeze"),
    Arm("reduction-2", "r = 2", _se(se_reduction=2), paper=22.29, paper_note="r = 2"),
    Arm("reduction-4", "r = 4", _se(se_reduction=4), paper=22.25, paper_note="r = 4"),
    Arm("reduction-8", "r = 8", _se(se_reduction=8), paper=22.26, paper_note="r = 8"),
    Arm("reduction-32", "r = 32", _se(se_reduction=32), paper=22.72, paper_note="r = 32"),
    Arm("bottleneck-plain", "Bottleneck ResNet-29 (no SE)", {"model": "resnet29"},
        network="bottleneck", reference="bottleneck-standard", paper=23.30,
        paper_note="ResNet-50"),
    Arm("bottleneck-standard", "Bottleneck SE-ResNet-29, standard SE",
        {"model": "se_resnet29", "se_bias": False}, network="bottleneck",
        reference="bottleneck-standard", paper=22.28, paper_note="SE-ResNet-50 (28.1M params)"),
    Arm("bottleneck-3x3", "Bottleneck SE-ResNet-29, SE_3x3",
        {"model": "se_resnet29", "se": "3x3", "se_bias": False}, network="bottleneck",
        reference="bottleneck-standard", paper=22.48, paper_note="SE_3x3 (25.8M params)"),
]}

#: Each study: its arms, in table order. The first two are its baseline and its reference.
STUDIES = {
    "squeeze": ("baseline", "reference", "squeeze-max"),
    "excitation": ("baseline", "reference", "excitation-tanh", "excitation-relu"),
    "stages": ("baseline", "reference", "stages-1", "stages-2", "stages-3", "stages-1-2"),
    "integration": ("baseline", "reference", "integration-pre", "integration-post",
                    "integration-identity"),
    "nosqueeze": ("baseline", "reference", "nosqueeze"),
    "se3x3": ("bottleneck-plain", "bottleneck-standard", "bottleneck-3x3"),
    "reduction": ("baseline", "reduction-2", "reduction-4", "reduction-8", "reference",
                  "reduction-32"),
}
STUDIES["all"] = tuple(dict.fromkeys(a for arms in STUDIES.values() for a in arms))
MIN_SEEDS = 3   # the reference and the baseline always get at least this many seeds
PRIMARY = ("baseline", "reference")

# --quick: the machinery in about a minute, not a result.
QUICK = dict(epochs=1, train_subset=500, batch_size=50, depth=8, bottleneck_depth=11,
             widths=(8, 16, 32), test_subset=1000)


def study_arms(names: str) -> tuple:
    """The arms of ``names`` (a study name or a comma-separated list of them), in order."""
    parts = [n.strip() for n in str(names).split(",")]
    unknown = [n for n in parts if n not in STUDIES]
    if not parts or unknown:
        raise ValueError(f"unknown study {', '.join(map(repr, unknown or [names]))}; choose from "
                         f"{', '.join(STUDIES)} (or a comma-separated list)")
    return tuple(dict.fromkeys(a for n in parts for a in STUDIES[n]))


# ----------------------------------------------------------------------------- the protocol

@dataclasses.dataclass
class Protocol:
    """What every run of a study folder shares. Stored in ``OUT/study.json``."""
    epochs: int = 5
    batch_size: int = 128
    train_subset: int | None = None
    depth: int = 20                # BasicBlock arms
    bottleneck_depth: int = 29     # the se3x3 study's arms
    widths: tuple | None = None    # None: (16, 32, 64)
    quick: bool = False

    def validate(self):
        for name in ("epochs", "batch_size", "depth", "bottleneck_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"study: {name} must be an integer >= 1, got {v!r}")
        if (self.depth - 2) % 6 or self.depth < 8:
            raise ValueError(f"study: --depth must be 6n+2 (8, 14, 20, ...) for the BasicBlock "
                             f"arms, got {self.depth}")
        if (self.bottleneck_depth - 2) % 9 or self.bottleneck_depth < 11:
            raise ValueError(f"study: the Bottleneck depth must be 9n+2 (11, 29, ...), got "
                             f"{self.bottleneck_depth}")

    def as_dict(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def train_config(self, arm: Arm, seed: int, out: Path, **runtime) -> T.TrainConfig:
        kw = dict(arm.overrides)
        kw.update(epochs=self.epochs, batch_size=self.batch_size, train_subset=self.train_subset,
                  seed=seed, depth=self.bottleneck_depth if arm.network == "bottleneck"
                  else self.depth, quiet=True)
        if self.widths is not None:
            kw["widths"] = tuple(self.widths)
        config = T.TrainConfig(out=str(out), **kw, **runtime)
        if self.quick:
            # One epoch is too short for a warm-up; a tenth of the test set is enough to show
            # the machinery.
            config.warmup_epochs, config.test_subset = 0.0, QUICK["test_subset"]
        return config


def seeds_for(arm: str, seeds: int) -> list:
    return list(range(max(seeds, MIN_SEEDS) if arm in PRIMARY else seeds))


# ----------------------------------------------------------------------------- run state

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
    T._write_text_atomic(Path(path), json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- one run (worker)

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


# ----------------------------------------------------------------------------- the study

@dataclasses.dataclass
class Job:
    arm: str
    seed: int
    directory: Path
    state: str
    config: T.TrainConfig


def plan(names: str, out: Path, protocol: Protocol, seeds: int, retry_failed=False,
         **runtime) -> list:
    """Every arm x seed of the study with its state, in the order they will run: the first
    seeds of everything first, then the extra seeds of the baseline and the reference."""
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
    jobs.sort(key=lambda j: (j.seed >= seeds, order[ARMS[j.arm].network] if j.seed < seeds
                             else 0, j.seed))
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
    elif job.state == "absent" and T.holds_run(job.directory):
        config["overwrite"] = True   # a partial run without a checkpoint starts again
    elif job.state == "absent" and (job.directory / T.CONFIG).exists():
        config["overwrite"] = True
    return {"arm": job.arm, "config": config, "threads": threads, "command": command}


def run_study(names: str, out, protocol: Protocol, seeds: int = 1, jobs: int = 1,
              retry_failed: bool = False, log=print, command: str = "", threads=None,
              **runtime) -> dict:
    """Run every unfinished arm x seed of the study ``names`` in ``out``, ``jobs`` at a time,
    then write the report. Returns the results dict (see :func:`aggregate`)."""
    protocol.validate()
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"study: --seeds must be an integer >= 1, got {seeds!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"study: --jobs must be an integer >= 1, got {jobs!r}")
    out = Path(out)
    study_arms(names)
    all_jobs = plan(names, out, protocol, seeds, retry_failed, **runtime)  # checks the runs
    open_study_folder(out, protocol, names)
    todo = [j for j in all_jobs if j.state in ("absent", "interrupted")]
    done = len(all_jobs) - len(todo)
    cores = os.cpu_count() or 1
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"study: --threads must be an integer >= 1, got {threads!r}")
    if runtime.get("backend", "numpy") != "numpy":
        threads = None      # on CuPy the runs share the GPU; BLAS threads do not matter
    elif threads is None:
        threads = max(1, cores // jobs)
    log(f"study {names} in {out}: {len(all_jobs)} runs, {done} already finished or failed, "
        f"{len(todo)} to run, {min(jobs, max(1, len(todo)))} at a time"
        + (f" ({threads} BLAS thread{'s' if threads > 1 else ''} each)" if threads else ""))
    running: list = []
    finished = 0
    try:
        while todo or running:
            while todo and len(running) < jobs:
                job = todo.pop(0)
                running.append((job, _start(job, _spec(job, threads, command),
                                            threads), time.time()))
            time.sleep(0.2)
            for item in list(running):
                job, proc, t0 = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                finished += 1
                log(_progress_line(job, proc.returncode, time.time() - t0,
                                   f"[{done + finished}/{len(all_jobs)}]"))
                if proc.returncode == 130:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        for job, proc, _ in running:
            proc.send_signal(signal.SIGTERM)      # each worker keeps its last checkpoint
        for job, proc, _ in running:
            proc.wait()
        raise
    results = aggregate(names, out, protocol, seeds)
    write_report(results, out, names, log=log)
    return results


def _start(job: Job, spec: dict, threads) -> subprocess.Popen:
    job.directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
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


# ----------------------------------------------------------------------------- statistics

def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)).

    Found by bisection on the CDF, itself Simpson's rule over the density, to about 1e-9:
    enough for an interval, and no SciPy needed."""
    if not (0.5 < p < 1) or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x):
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf(t, n=4000):
        h = t / n
        s = density(0) + density(t) + sum((4 if i % 2 else 2) * density(i * h)
                                          for i in range(1, n))
        return 0.5 + s * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def arm_stats(accs: list) -> dict:
    """n, mean and sample sd (None, never 0, for one seed) of a list of accuracies."""
    n = len(accs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None}
    mean = sum(accs) / n
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd}


def pooled_sd(groups: list) -> tuple:
    """``(s_p, df)``: the sd pooled over the groups of at least two values (equal variances
    assumed); ``(None, 0)`` when there is none."""
    ss, df = 0.0, 0
    for accs in groups:
        if len(accs) >= 2:
            m = sum(accs) / len(accs)
            ss += sum((a - m) ** 2 for a in accs)
            df += len(accs) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def difference(arm: list, ref: list, s_p, df) -> dict:
    """``d = mean(arm) - mean(ref)`` with its 95% interval ``d ± t(0.975, df) s_p
    sqrt(1/n_arm + 1/n_ref)``, and the verdict: "within noise" when the interval holds 0."""
    if not arm or not ref:
        return {"d": None, "low": None, "high": None, "verdict": "not run"}
    d = sum(arm) / len(arm) - sum(ref) / len(ref)
    if s_p is None:
        return {"d": d, "low": None, "high": None, "verdict": "no interval (no arm has 2 seeds)"}
    half = t_quantile(0.975, df) * s_p * math.sqrt(1 / len(arm) + 1 / len(ref))
    low, high = d - half, d + half
    verdict = "within noise" if low <= 0 <= high else ("better" if low > 0 else "worse")
    return {"d": d, "low": low, "high": high, "verdict": verdict}


def model_facts(arm: Arm, protocol: Protocol) -> dict:
    """Parameters, multiply-adds per image and the SE hidden width per stage of an arm."""
    from .models import build_model, model_costs
    config = protocol.train_config(arm, 0, Path("."))
    model = build_model(config.model, **config.model_overrides())
    params, madds = model_costs(model)
    hidden = {}
    for name, block in model.se_blocks():
        hidden.setdefault(name.split(".")[0].replace("layer", "stage "), block.hidden)
    return {"parameters": params, "multiply_adds": madds, "hidden": hidden}


def aggregate(names: str, out, protocol: Protocol, seeds: int) -> dict:
    """Read every run of the study from disk and compute the table (JSON-ready)."""
    out = Path(out)
    arms = study_arms(names)
    finals, rows = {}, []
    for arm in arms:
        accs, failed, walls, missing = [], [], [], []
        for s in seeds_for(arm, seeds):
            d = run_dir(out, arm, s)
            state, metrics = run_state(d, protocol.train_config(ARMS[arm], s, d).training_dict())
            if state == "finished":
                accs.append(metrics[-1]["test_acc"])
                walls.append(_wall_seconds(d, metrics))
            elif state == "failed":
                failed.append({"seed": s, "error": json.loads(
                    (d / FAILED).read_text(encoding="utf-8")).get("error")})
            else:
                missing.append(s)
        finals[arm] = accs
        rows.append((arm, accs, failed, walls, missing))
    # Pooled over every arm of the folder's basic network with >= 2 seeds.
    s_p, df = pooled_sd([a for a in finals.values()])
    table = []
    for arm, accs, failed, walls, missing in rows:
        a = ARMS[arm]
        entry = {"arm": arm, "label": a.label, "network": a.network, **model_facts(a, protocol),
                 "seeds": [s for s in seeds_for(arm, seeds) if s not in missing
                           and s not in [f["seed"] for f in failed]],
                 "test_acc": accs, **arm_stats(accs), "failed": failed, "missing": missing,
                 "wall_seconds": sum(walls) if walls else None,
                 "paper_top1_error": a.paper, "paper_note": a.paper_note}
        entry["vs_reference"] = (None if arm == a.reference else
                                 {"reference": a.reference,
                                  **difference(accs, finals.get(a.reference, []), s_p, df)})
        table.append(entry)
    return {"format": STUDY_FORMAT, "study": names, "protocol": protocol.as_dict(),
            "seeds": seeds, "pooled_sd": s_p, "pooled_df": df,
            "t_975": t_quantile(0.975, df) if df else None, "arms": table}


def _wall_seconds(d: Path, metrics: list) -> float:
    try:
        return float(json.loads((d / RUN_RECORD).read_text(encoding="utf-8"))["wall_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return float(sum(m["seconds"] for m in metrics))


# ----------------------------------------------------------------------------- the report

def _pct(x, signed=False):
    return "–" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


def markdown(results: dict) -> str:
    """results.md: the table, the noise and how to read it."""
    p = results["protocol"]
    lines = [f"# npse study `{results['study']}`", ""]
    if p.get("quick"):
        lines += ["**`--quick`: tiny networks on a few hundred images for one epoch. This table "
                  "shows the machinery, not a result.**", ""]
    images = ("all training images" if p["train_subset"] is None
              else f"{p['train_subset']} training images")
    epochs = f"{p['epochs']} epoch" + ("s" if p["epochs"] != 1 else "")
    lines += [f"Protocol: {epochs}, batch {p['batch_size']}, {images}"
              f", BasicBlock depth {p['depth']}, Bottleneck depth {p['bottleneck_depth']}, "
              f"widths {tuple(p['widths']) if p['widths'] else (16, 32, 64)}; SE arms without "
              f"FC biases in the excitation (the paper's ablation setting); seeds 0..{results['seeds'] - 1}"
              f" per arm, at least {MIN_SEEDS} for the baseline and the reference.", "",
              "| arm | params | mult-adds | SE hidden width | seeds | test acc % (mean ± sd) "
              "| d vs ref (95% CI), points | verdict | paper top-1 err % | paper's variant |",
              "|---|---:|---:|---|---:|---|---|---|---:|---|"]
    for a in results["arms"]:
        acc = ("failed" if a["failed"] and not a["n"] else "not run" if not a["n"] else
               f"{_pct(a['mean'])}" + (f" ± {_pct(a['sd'])}" if a["sd"] is not None else
                                       " (1 seed)"))
        if a["failed"]:
            acc += f" ({len(a['failed'])} failed)"
        v = a["vs_reference"]
        if v is None:
            dtext, verdict = "(reference)", ""
        elif v["d"] is None:
            dtext, verdict = "–", v["verdict"]
        elif v["low"] is None:
            dtext, verdict = f"{_pct(v['d'], True)}", v["verdict"]
        else:
            dtext = f"{_pct(v['d'], True)} [{_pct(v['low'], True)}, {_pct(v['high'], True)}]"
            verdict = v["verdict"]
        hidden = ", ".join(f"{v_}" for v_ in a["hidden"].values()) or "–"
        paper = "–" if a["paper_top1_error"] is None else f"{a['paper_top1_error']:.2f}"
        lines.append(f"| {a['arm']} | {a['parameters']:,} | {a['multiply_adds']:,} | {hidden} "
                     f"| {a['n']} | {acc} | {dtext} | {verdict} | {paper} | {a['paper_note']} |")
    s_p = results["pooled_sd"]
    lines += ["", "How to read it:", ""]
    if s_p is None:
        lines.append("- No arm has two finished seeds yet, so there is no estimate of the noise "
                     "and no interval.")
    else:
        lines.append(f"- Noise: the sd between seeds, pooled over every arm with at least 2 "
                     f"seeds (equal variances assumed), is s_p = {100 * s_p:.2f} points "
                     f"(df = {results['pooled_df']}, t(0.975) = {results['t_975']:.3f}). "
                     f"The test set alone adds binomial noise of about "
                     f"{_binomial_points(results):.2f} points.")
    lines += ["- d is the arm's mean minus its reference's (`reference`, or "
              "`bottleneck-standard` for the Bottleneck arms), in accuracy points; higher is "
              "better. Its interval is d ± t(0.975, df) · s_p · sqrt(1/n_arm + 1/n_ref). About "
              "1 interval in 20 misses 0 by chance alone, so one 'better' or 'worse' among many "
              "arms is weak evidence.",
              "- 'within noise': the interval holds 0; the arms are not ranked.",
              "- The paper's numbers are ImageNet top-1 *errors* of ResNet-50 variants (TPAMI "
              "tables); npse's are CIFAR-10 test *accuracies* of networks about 100 times "
              "smaller, trained for a few epochs. Compare directions, not sizes.",
              "- 'SE hidden width' is the excitation's hidden width per stage (C // r); at r = 16 "
              "ResNet-50 has hidden widths 16-128, a regime a 16/32/64-channel network does not "
              "reach (its widths are 1, 2, 4).",
              "- The `stages` arms: npse's stage 3 is its last stage; the paper put SE in its "
              "stages 2, 3 and 4 alone, never in its last stage (5) alone, and mentions "
              "dropping the last stage's SE only in a remark of its section 4."]
    return "\n".join(lines) + "\n"


def _binomial_points(results) -> float:
    accs = [a["mean"] for a in results["arms"] if a["mean"] is not None]
    p = sum(accs) / len(accs) if accs else 0.8
    n = QUICK["test_subset"] if results["protocol"].get("quick") else 10000
    return 100 * math.sqrt(p * (1 - p) / n)


def plot(results: dict, path: Path) -> None:
    """results.png: each arm's seeds as dots, d and its interval as a bar beside the paper."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = results["arms"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(arms) + 1.6))
    for i, a in enumerate(arms):
        y = len(arms) - 1 - i
        ax.scatter([100 * x for x in a["test_acc"]], [y] * len(a["test_acc"]), s=18,
                   color="tab:blue", zorder=3)
        if a["mean"] is not None:
            ax.plot([100 * a["mean"]], [y], marker="|", markersize=14, color="black", zorder=4)
        ref = next((r for r in arms if r["arm"] == (a["vs_reference"] or {}).get("reference")),
                   None)
        v = a["vs_reference"]
        if v and v["low"] is not None and ref and ref["mean"] is not None:
            lo, hi = (100 * (ref["mean"] + v["low"]), 100 * (ref["mean"] + v["high"]))
            ax.plot([lo, hi], [y - 0.18] * 2, color="tab:red" if v["verdict"] != "within noise"
                    else "tab:gray", linewidth=2)
    ax.set_yticks(range(len(arms)))
    ax.set_yticklabels([a["arm"] for a in reversed(arms)])
    ax.set_xlabel("CIFAR-10 test accuracy, % (dots: seeds; tick: mean; bar: reference mean + "
                  "95% CI of d)")
    title = f"npse study {results['study']}"
    if results["protocol"].get("quick"):
        title += " (--quick: machinery only, not a result)"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out, names: str, log=print) -> None:
    out = Path(out)
    _write_json(out / "results.json", results)
    T._write_text_atomic(out / "results.md", markdown(results))
    written = ["results.json", "results.md"]
    try:
        plot(results, out / "results.png")
        written.append("results.png")
    except ImportError:
        log("results.png not drawn: matplotlib is not installed (pip install 'npse[plot]')")
    log(f"wrote {', '.join(str(out / w) for w in written)}")


def report(names: str, out, log=print) -> dict:
    """``npse study NAME --report OUT``: redraw the table and plot from the files in OUT."""
    protocol, _ = read_protocol(out)
    study_arms(names)
    seeds = _seeds_on_disk(Path(out), names)
    results = aggregate(names, out, protocol, seeds)
    write_report(results, out, names, log=log)
    return results


def _seeds_on_disk(out: Path, names: str) -> int:
    """The --seeds a folder was run with: the most seeds of any non-primary arm (>= 1)."""
    most = 1
    for arm in study_arms(names):
        if arm in PRIMARY or not (out / arm).is_dir():
            continue
        found = [int(p.name[5:]) for p in (out / arm).glob("seed-*") if p.name[5:].isdigit()]
        most = max([most] + [s + 1 for s in found])
    return most


# ----------------------------------------------------------------------------- quick data

def ensure_quick_data(data_dir, out: Path, log=print):
    """--quick: the CIFAR-10 found as npse's loader would find it, else tiny synthetic data
    written in the official binary layout under ``OUT/_data`` (and say so)."""
    from .data.cifar import CIFAR10_DIR, CIFAR10_TEST_FILES, CIFAR10_TRAIN_FILES, \
        resolve_data_dir
    root = resolve_data_dir(data_dir)
    if all((root / CIFAR10_DIR / n).is_file() for n in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES):
        return str(root)
    synthetic = out / "_data"
    if not (synthetic / CIFAR10_DIR / "test_batch.bin").exists():
        write_synthetic_cifar10(synthetic)
    log(f"no CIFAR-10 in {root}: --quick uses synthetic images written to {synthetic} "
        f"(the official binary layout; 10 coloured-stripe classes)")
    return str(synthetic)


def write_synthetic_cifar10(root, n_train=600, n_test=1000, seed=0) -> Path:
    """Class k: a colour and a stripe period of its own, a random phase, plus noise. Written
    as the official files (1 label byte + 3072 pixel bytes per record)."""
    import numpy
    rng = numpy.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(30, 226, size=(10, 3))
    rows = numpy.arange(32)[:, None] + numpy.zeros((1, 32), dtype=int)

    def records(n):
        y = rng.integers(0, 10, n)
        phase = rng.integers(0, 8, n)
        stripes = ((rows[None] + phase[:, None, None]) // (y[:, None, None] % 4 + 2)) % 2
        x = colours[y][:, :, None, None] * (0.5 + 0.5 * stripes[:, None])
        x = numpy.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(numpy.uint8)
        return numpy.concatenate([y[:, None].astype(numpy.uint8), x.reshape(n, 3072)], axis=1)

    per_file = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    for i, n in enumerate(per_file, 1):
        records(n).tofile(folder / f"data_batch_{i}.bin")
    records(n_test).tofile(folder / "test_batch.bin")
    (folder / "batches.meta.txt").write_text(
        "\n".join(f"synthetic-{k}" for k in range(10)) + "\n", encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- command line

def add_arguments(p) -> None:
    p.add_argument("name", metavar="NAME",
                   help=f"a study ({', '.join(STUDIES)}) or a comma-separated list of them")
    p.add_argument("--out", metavar="DIR", help="the study folder (default: studies/NAME, or "
                   "studies/quick-NAME with --quick)")
    p.add_argument("--report", metavar="OUT", help="only redraw the table and plot of the "
                   "study folder OUT from its files")
    p.add_argument("--epochs", type=int, help="default: 5 (--quick: 1)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for every arm; the "
                   f"baseline and the reference always get at least {MIN_SEEDS} (default: 1)")
    p.add_argument("--train-subset", type=int, metavar="N", help="train on a fixed "
                   "class-balanced subset of N images (default: all; --quick: 500)")
    p.add_argument("--batch-size", type=int, help="default: 128 (--quick: 50)")
    p.add_argument("--depth", type=int, help="depth of the BasicBlock arms (default: 20; "
                   "--quick: 8); the se3x3 study's Bottleneck arms have depth 29 (--quick: 11)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument("--data-dir", metavar="DIR", help="CIFAR-10 (default: $NPSE_DATA, else "
                   "~/.cache/npse)")
    p.add_argument("--jobs", type=int, default=1, metavar="K", help="K runs at once, each in "
                   "its own process (on the CPU each gets cores/K BLAS threads; default: 1)")
    p.add_argument("--threads", type=int, metavar="T", help="BLAS threads per run on the CPU "
                   "(default: cores/K)")
    p.add_argument("--quick", action="store_true", help="tiny networks, 500 images, 1 epoch: "
                   "shows the machinery in a minute or two, not a result")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--list", action="store_true", help="print the plan (arms, seeds, states) "
                   "and stop")


def main_from_args(args) -> int:
    if args.report:
        report(args.name, args.report)
        return 0
    quick = args.quick
    given = {k: getattr(args, k) for k in ("epochs", "batch_size", "train_subset", "depth")
             if getattr(args, k) is not None}
    for k, v in given.items():
        if v < 1:
            raise ValueError(f"study: --{k.replace('_', '-')} must be >= 1, got {v}")
    protocol = Protocol(
        epochs=given.get("epochs", QUICK["epochs"] if quick else 5),
        batch_size=given.get("batch_size", QUICK["batch_size"] if quick else 128),
        train_subset=given.get("train_subset", QUICK["train_subset"] if quick else None),
        depth=given.get("depth", QUICK["depth"] if quick else 20),
        bottleneck_depth=QUICK["bottleneck_depth"] if quick else 29,
        widths=QUICK["widths"] if quick else None, quick=quick)
    protocol.validate()
    study_arms(args.name)
    out = Path(args.out or os.path.join("studies", ("quick-" if quick else "")
                                        + args.name.replace(",", "+")))
    data_dir = ensure_quick_data(args.data_dir, out) if quick else args.data_dir
    if args.list:
        for j in plan(args.name, out, protocol, args.seeds, backend=args.backend,
                      data_dir=data_dir):
            print(f"{j.arm:22s} seed {j.seed}  {j.state}")
        return 0
    command = "npse study " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    _stop_on_sigterm()
    run_study(args.name, out, protocol, seeds=args.seeds, jobs=args.jobs,
              retry_failed=args.retry_failed, command=command, threads=args.threads,
              backend=args.backend,
              data_dir=data_dir)
    return 0


def _stop_on_sigterm() -> None:
    """Let ``kill PID`` stop a study (or a worker) as Ctrl-C would: a background job started by
    a non-interactive shell ignores SIGINT, so SIGTERM is the signal that reaches it."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


def _worker_main(argv) -> int:
    _stop_on_sigterm()
    spec = json.loads(argv[1])
    return run_one(spec)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[1:]))
    print("usage: npse study NAME ... (this module is run as a worker by npse study)",
          file=sys.stderr)
    sys.exit(2)
