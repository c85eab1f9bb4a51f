"""npse study as a careless or hostile user runs it (issue #19): runs that nothing can lose or
train twice. Run folders and study folders have one owner (flock), workers die with their
study, damaged runs are reported and left alone, finished runs are never retrained unless
--rerun says so, and --report draws the folder's whole table."""
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from npse import cli, study
from npse import train as T
from npse.study import runs

QUICK = study.QUICK
# The protocol npse study --quick --epochs 2 asks for, so that the command line reads the
# folders these tests fake.
PROTOCOL = study.Protocol(epochs=2, batch_size=QUICK["batch_size"],
                          train_subset=QUICK["train_subset"], depth=QUICK["depth"],
                          bottleneck_depth=QUICK["bottleneck_depth"], widths=QUICK["widths"],
                          quick=True)
CLI_PROTOCOL = ["--quick", "--epochs", "2"]
ROOT = Path(__file__).resolve().parent.parent


def fake_run(out, arm, seed, accs, protocol=PROTOCOL):
    """What a finished run leaves in a committed study folder: config, metrics, run.json."""
    d = study.run_dir(out, arm, seed)
    d.mkdir(parents=True, exist_ok=True)
    config = protocol.train_config(study.ARMS[arm], seed, d)
    (d / T.CONFIG).write_text(json.dumps({"config": config.training_dict()}, indent=2))
    lines = [{"epoch": e, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": a,
              "lr": 0.1, "seconds": 10.0, "images_per_s": 4.0} for e, a in enumerate(accs, 1)]
    (d / T.METRICS).write_text("".join(json.dumps(m) + "\n" for m in lines))
    (d / study.RUN_RECORD).write_text(json.dumps({"arm": arm, "seed": seed, "wall_seconds": 20.0,
                                                  "test_acc": accs[-1]}))
    return d


def finished_squeeze(out, protocol=PROTOCOL):
    """A finished 'squeeze' study folder, as committed: study.json and seven runs."""
    study.open_study_folder(out, protocol, "squeeze")
    for arm, seeds in (("baseline", 3), ("reference", 3), ("squeeze-max", 1)):
        for s in range(seeds):
            fake_run(out, arm, s, [0.1, 0.5 + 0.01 * s + 0.05 * (arm == "reference")], protocol)
    return out


def hashes(folder, skip=()) -> dict:
    """Every file and link under ``folder`` (links as their targets), by path."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if name in skip:
                continue
            if p.is_symlink():
                found[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


# What npse study writes into a folder besides the runs: the table and its (blank) lock.
WRITTEN_BY_THE_STUDY = ("results.json", "results.md", "results.png", "study.lock")


def hashes_but(found: dict, names) -> dict:
    return {k: v for k, v in found.items() if Path(k).name not in names}


def cli_main(args) -> tuple:
    """``(exit code, stdout, stderr)`` of npse's command line, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue().strip()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic CIFAR-10 for --quick (so that it writes no _data folder into a study)."""
    return study.write_synthetic_cifar10(tmp_path_factory.mktemp("data"), n_train=600,
                                         n_test=100).parent


# ----------------------------------------------------------------------------- 2. the locks

def _take_study_lock(folders, start, done, results):
    for i, folder in enumerate(folders):
        start.wait()
        try:
            with study.study_lock(folder):
                results.put((i, True))
                done.wait()                    # held until the other has tried
        except ValueError:
            results.put((i, False))
            done.wait()


def _take_run_lock(folders, start, done, results):
    for i, folder in enumerate(folders):
        start.wait()
        fd = study.try_lock(Path(folder) / study.RUN_LOCK)
        results.put((i, fd is not None))
        done.wait()
        if fd is not None:
            os.close(fd)


@pytest.mark.parametrize("taker", [_take_study_lock, _take_run_lock])
def test_two_lock_takers_racing_100_times_exactly_one_wins_each_time(tmp_path, taker):
    """Case 2: the old study.lock was created empty and written after; a second taker read it
    as unreadable, called it stale and deleted it (both held it in 63 of 100 trials)."""
    trials = 100
    folders = [str(tmp_path / f"t{i}") for i in range(trials)]
    for f in folders:
        os.mkdir(f)
    ctx = multiprocessing.get_context("fork")
    start, done, results = ctx.Barrier(2), ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=taker, args=(folders, start, done, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in range(2 * trials)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    wins = {i: 0 for i in range(trials)}
    for i, won in got:
        wins[i] += won
    assert set(wins.values()) == {1}
    lock = Path(folders[0]) / (study.LOCK if taker is _take_study_lock else study.RUN_LOCK)
    assert lock.exists() and not study.lock_is_held(lock)   # released, never deleted


def test_an_old_json_lock_is_respected_while_its_process_lives_and_a_new_one_is_not_mistaken(
        tmp_path):
    lock = tmp_path / study.LOCK
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": "then"}))
    with pytest.raises(ValueError, match="older npse"):
        with study.study_lock(tmp_path):
            pass
    assert json.loads(lock.read_text())["pid"] == os.getpid()     # not ours to change
    # What this npse writes names a live process too, but no flock holds it: not a holder.
    lock.write_text(json.dumps({"format": "npse-study-lock/flock", "pid": os.getpid(),
                                "host": socket.gethostname(), "started": "then"}))
    assert study.lock_holder(lock) is None
    with study.study_lock(tmp_path):
        assert "since" in study.lock_holder(lock)
        with pytest.raises(ValueError, match=f"process {os.getpid()} since"):
            with study.study_lock(tmp_path):
                pass
    assert study.lock_holder(lock) is None and lock.exists()


# ----------------------------------------------------------------------------- 1. workers

def test_a_dangling_symlink_run_is_skipped_and_an_error_stops_every_worker(tmp_path, data,
                                                                          monkeypatch):
    """Case 1: a run folder that is a dangling symlink made the scheduler die with "[Errno 17]
    File exists" while the other worker trained on, unsupervised."""
    out = tmp_path / "s"
    protocol = study.Protocol(**{**PROTOCOL.as_dict(), "epochs": 1, "train_subset": 100})
    study.open_study_folder(out, protocol, "squeeze")
    (out / "squeeze-max").mkdir(parents=True)
    (out / "squeeze-max" / "seed-0").symlink_to(tmp_path / "nowhere")
    started, lines = [], []
    real_start = runs._start

    def start_then_fail(job, spec, threads):
        if started:
            raise RuntimeError("the scheduler fails while a worker runs")
        started.append(real_start(job, spec, threads))
        return started[-1]

    monkeypatch.setattr(runs, "_start", start_then_fail)
    with pytest.raises(RuntimeError, match="scheduler fails"):
        study.run_study("squeeze", out, protocol, jobs=2, log=lines.append, data_dir=str(data))
    assert started[0].poll() is not None          # stopped (and waited for) before the raise
    assert not study.lock_is_held(study.run_dir(out, "baseline", 0) / study.RUN_LOCK)
    assert any("skipped squeeze-max seed 0: damaged" in line and "symbolic link" in line
               for line in lines)
    monkeypatch.undo()
    results = study.run_study("squeeze", out, protocol, jobs=2, log=lines.append,
                              data_dir=str(data))
    assert [a["n"] for a in results["arms"]] == [3, 3, 0]
    assert os.readlink(out / "squeeze-max" / "seed-0") == str(tmp_path / "nowhere")


def test_a_worker_refuses_a_run_folder_whose_lock_another_process_holds(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    fd = study.try_lock(d / study.RUN_LOCK)
    try:
        spec = {"config": {"out": str(d)}}
        assert not study.hold_run_lock(spec)
        assert study.inspect_run(d, {"epochs": 2}).state == "running"
    finally:
        os.close(fd)
    assert study.inspect_run(d, {"epochs": 2}).state == "absent"
    assert not study.die_with_parent(os.getpid())       # "my parent is me": already gone


def _workers(out) -> dict:
    """{run lock: worker pid} of the runs whose lock a worker holds now."""
    held = {}
    for lock in Path(out).glob(f"*/seed-*/{study.RUN_LOCK}"):
        text = lock.read_text().strip()
        if study.lock_is_held(lock) and text.isdigit():
            held[lock] = int(text)
    return held


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(condition, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _study_command(out, data):
    # 2 epochs of 200 images: a run is caught between its epochs (the test waits for that),
    # and the three studies of the test still end in well under a minute.
    return [sys.executable, "-m", "npse", "study", "squeeze", *CLI_PROTOCOL, "--train-subset",
            "200", "--jobs", "2", "--data-dir", str(data), "--out", str(out)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_npse_study_leaves_no_worker_and_a_rerun_gives_the_same_table(tmp_path,
                                                                               data):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen(_study_command(killed, data), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pids = {}
    try:
        def mid_run():       # a worker holds its run's lock and has saved an epoch
            held = _workers(killed)
            pids.update(held)
            return [lock for lock in held if (lock.parent / T.CHECKPOINT).exists()
                    and not (lock.parent / study.RUN_RECORD).exists()]
        caught = _wait_for(mid_run, 60, "a worker between two epochs")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _wait_for(lambda: not _workers(killed) and not any(map(_alive, pids.values())), 20,
                  "the workers of the killed study to end")
        assert (caught[0].parent / T.CHECKPOINT).exists()   # the worker kept its checkpoint
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    for out in (killed, whole):
        subprocess.run(_study_command(out, data), env=env, check=True, capture_output=True)
    tables = [json.loads((out / "results.json").read_text()) for out in (killed, whole)]
    assert [(a["arm"], a["seeds"], a["test_acc"]) for a in tables[0]["arms"]] == \
        [(a["arm"], a["seeds"], a["test_acc"]) for a in tables[1]["arms"]]
    assert [a["n"] for a in tables[0]["arms"]] == [3, 3, 1]


# ----------------------------------------------------------------------------- 3. damage

@pytest.mark.parametrize("damage, why", [
    ("duplicate", "epoch 2 appears twice"),
    ("no-config", "config.json missing but metrics.jsonl has 2 epochs"),
    ("short", "run.json says finished but metrics.jsonl stops at epoch 1"),
])
def test_a_damaged_finished_run_is_reported_left_alone_and_rerun_on_request(
        tmp_path, data, damage, why):
    """Case 3: a duplicated last line or a deleted config.json made a finished run 'absent':
    --list said so, --report counted a seed fewer and the next npse study retrained it."""
    out = finished_squeeze(tmp_path / "s")
    d = study.run_dir(out, "reference", 1)
    metrics = (d / T.METRICS).read_text().splitlines(keepends=True)
    if damage == "duplicate":
        (d / T.METRICS).write_text("".join(metrics + metrics[-1:]))
    elif damage == "no-config":
        (d / T.CONFIG).unlink()
    else:
        (d / T.METRICS).write_text(metrics[0])
    before = hashes(out)
    code, listed, err = cli_main(["study", "squeeze", "--out", out, *CLI_PROTOCOL,
                                  "--data-dir", data, "--list"])
    assert code == 0, err
    assert f"reference              seed 1  damaged: {d}" in listed and why in listed
    lines = []
    results = study.report("squeeze", out, log=lines.append)
    reference = results["arms"][1]
    assert reference["seeds"] == [0, 2] and reference["damaged"][0]["seed"] == 1
    assert any(why in line for line in lines)
    assert "(1 damaged, not counted)" in (out / "results.md").read_text()
    lines.clear()
    study.run_study("squeeze", out, PROTOCOL, log=lines.append, data_dir=str(data))
    assert "0 to run" in lines[0] and any(f"skipped reference seed 1: damaged: {d}" in line
                                          and "--rerun reference:1" in line for line in lines)
    assert hashes(out, skip=WRITTEN_BY_THE_STUDY) == hashes_but(before, WRITTEN_BY_THE_STUDY)
    # --rerun moves the old files aside (nothing is deleted) and trains the run again.
    lines.clear()
    results = study.run_study("squeeze", out, PROTOCOL, rerun=["reference:1"], log=lines.append,
                              data_dir=str(data))
    moved = [p for p in (out / "reference").iterdir() if p.name.startswith("seed-1.replaced-")]
    assert len(moved) == 1 and any(f"moved {d} to {moved[0].name}" in line for line in lines)
    assert {p.name for p in moved[0].iterdir()} >= ({T.METRICS, study.RUN_RECORD}
                                                     - ({T.CONFIG} if damage == "no-config"
                                                        else set()))
    assert results["arms"][1]["seeds"] == [0, 1, 2] and "1 to run" in lines[1]


def test_rerun_takes_arm_colon_seed_of_the_study(tmp_path, data):
    for item, words in [("reference", "--rerun takes ARM:SEED"),
                        ("nosqueeze:0", "not an arm of squeeze"),
                        ("squeeze-max:3", "runs seeds 0..0 of squeeze-max")]:
        code, _, err = cli_main(["study", "squeeze", "--out", tmp_path / "o", *CLI_PROTOCOL,
                                 "--data-dir", data, "--rerun", item])
        assert code != 0 and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_finished_run_is_never_retrained(tmp_path, data):
    out = finished_squeeze(tmp_path / "s")
    before = hashes(out)
    lines = []
    study.run_study("squeeze", out, PROTOCOL, log=lines.append, data_dir=str(data))
    assert "7 runs, 7 already finished or failed, 0 to run" in lines[0]
    assert hashes(out, skip=WRITTEN_BY_THE_STUDY) == hashes_but(before, WRITTEN_BY_THE_STUDY)


def test_the_committed_cpu_study_reads_as_finished_everywhere():
    folder = ROOT / "studies" / "cpu-5ep"
    protocol, names = study.read_protocol(folder)
    for arm in study.study_arms(",".join(names)):
        for s in study.folder.seed_numbers(folder / arm):
            d = study.run_dir(folder, arm, s)
            training = protocol.train_config(study.ARMS[arm], s, d).training_dict()
            assert study.inspect_run(d, training).state == "finished", d


# ----------------------------------------------------------------------------- the fuzzer

FILES = [T.CONFIG, T.METRICS, study.RUN_RECORD]


def _mutate_json(text: str, draw_value, lines: bool) -> str:
    """One value of a JSON file (of the last line of a JSON-lines file) replaced by a drawn
    one: a wrong type, NaN, a number out of range."""
    rows = text.splitlines() if lines else [text]
    record = json.loads(rows[-1])
    target = record["config"] if isinstance(record.get("config"), dict) else record
    key = sorted(target)[draw_value[0] % len(target)]
    target[key] = draw_value[1]
    rows[-1] = json.dumps(record)
    return "\n".join(rows) + "\n"


odd_values = st.one_of(st.none(), st.booleans(), st.just(float("nan")), st.just(float("inf")),
                       st.text(max_size=5), st.integers(-10**12, 10**12), st.lists(st.integers(),
                                                                                     max_size=2),
                       st.floats(allow_nan=False, allow_infinity=False))
damages = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.integers(0, 400)),
    st.tuples(st.just("duplicate"), st.sampled_from([T.METRICS]), st.integers(0, 5)),
    st.tuples(st.just("garbage"), st.sampled_from(FILES), st.binary(max_size=30)),
    st.tuples(st.just("value"), st.sampled_from(FILES), st.tuples(st.integers(0, 50), odd_values)),
    st.tuples(st.just("delete"), st.sampled_from(FILES + [study.STUDY_FILE]), st.none()),
    st.tuples(st.just("symlink"), st.sampled_from(FILES + ["."]), st.booleans()),
    st.tuples(st.just("folder"), st.sampled_from(FILES), st.none()),
    st.tuples(st.just("extra"), st.sampled_from(["notes.txt", "seed-999999999", "seed-007",
                                                 "seed-12.replaced-x", "seed-1000"]),
              st.integers(0, 3)),
    st.tuples(st.just("study"), st.sampled_from(["garbage", "studies", "protocol"]),
              odd_values),
)


def _damage(out: Path, d: Path, kind: str, name: str, arg) -> None:
    path = d / name
    if kind == "truncate":
        path.write_bytes(path.read_bytes()[:arg % max(1, path.stat().st_size)])
    elif kind == "duplicate":
        lines = path.read_text().splitlines(keepends=True)
        lines.insert(arg % (len(lines) + 1), lines[arg % len(lines)])
        path.write_text("".join(lines))
    elif kind == "garbage":
        with open(path, "ab") as f:
            f.write(arg + b"\n")
    elif kind == "value":
        path.write_text(_mutate_json(path.read_text(), arg, name == T.METRICS))
    elif kind == "delete":
        (out / name if name == study.STUDY_FILE else path).unlink()
    elif kind == "symlink":
        if name == ".":
            shutil.rmtree(d)
            d.symlink_to(out / "baseline" / "seed-0" if arg else out / "nowhere")
        else:
            path.unlink()
            path.symlink_to(d / T.CONFIG if arg else d / "nowhere")
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "extra":
        target = out / "squeeze-max" / name
        target.mkdir() if name.startswith("seed") else target.write_text("x")
        if name.startswith("seed") and arg:
            (target / T.METRICS).write_text("{" * arg)
    else:
        saved = json.loads((out / study.STUDY_FILE).read_text())
        if name == "garbage":
            (out / study.STUDY_FILE).write_text(str(arg)[:20])
        else:
            saved[name] = arg
            (out / study.STUDY_FILE).write_text(json.dumps(saved))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(damage=damages, arm_seed=st.sampled_from([("reference", 1), ("squeeze-max", 0),
                                                 ("baseline", 2)]))
def test_damaged_study_folders_give_one_line_or_damaged_never_a_traceback(damage, arm_seed,
                                                                          data, tmp_path):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        out = finished_squeeze(Path(tmp) / "s")
        d = study.run_dir(out, *arm_seed)
        _damage(out, d, *damage)
        before = hashes(out)
        code, listed, err = cli_main(["study", "squeeze", "--out", out, *CLI_PROTOCOL,
                                      "--data-dir", data, "--list"])
        assert code == 0 or (": error: " in err and len(err.splitlines()) == 1), err
        if code == 0:
            line = next(x for x in listed.splitlines()
                        if x.startswith(f"{arm_seed[0]} ") and f"seed {arm_seed[1]} " in x)
            state = line.split()[3].rstrip(":")
            # A run whose run.json is intact keeps its evidence of being finished: never
            # planned to train again.
            if damage[1] != study.RUN_RECORD or damage[0] == "extra":
                assert state in ("finished", "damaged"), line
        assert hashes(out) == before
        with mock.patch.dict(sys.modules, {"matplotlib": None}):     # no plot: faster
            code, _, err = cli_main(["study", "squeeze", "--report", out])
        assert code == 0 or (": error: " in err and len(err.splitlines()) == 1), err
        assert {k: v for k, v in hashes(out).items() if "results." not in k} == before
