"""npse study --scheduler (issue #20): a study's runs as tasks of a Dask distributed cluster give
the metrics of a local study, survive a worker that dies mid-run (the retry resumes from the
checkpoint; nothing trains twice), and a scheduler or worker that cannot serve says so in one
line before any run starts. The cluster is a real LocalCluster on 127.0.0.1: two worker
processes of one thread each."""
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from distributed import Client, LocalCluster

from npse import cli, study
from npse import train as T
from npse.study import cluster as C

ROOT = Path(__file__).resolve().parent.parent
# Two epochs of 200 images: a run can be caught between its epochs (the worker-death test waits
# for that), and each of the studies here ends in a few seconds a run.
PROTOCOL = ["--quick", "--epochs", "2", "--train-subset", "200", "--threads", "1"]
WALL_CLOCK = ("seconds", "images_per_s")


@pytest.fixture(scope="module")
def env():
    """The environment of the workers and the study processes: npse importable from here."""
    with mock.patch.dict(os.environ, {"PYTHONPATH": str(ROOT) + os.pathsep
                                      + os.environ.get("PYTHONPATH", "")}):
        yield dict(os.environ)


@pytest.fixture(scope="module")
def dask_cluster(env):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as found:
        yield found


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return study.write_synthetic_cifar10(tmp_path_factory.mktemp("data"), n_train=600,
                                         n_test=100).parent


def command(out, data, *more):
    return [sys.executable, "-m", "npse", "study", "squeeze", *PROTOCOL, "--data-dir", str(data),
            "--out", str(out), *more]


@pytest.fixture(scope="module")
def local_study(tmp_path_factory, data, env):
    """The same study on this machine, the runs two at a time: what the cluster must equal."""
    out = tmp_path_factory.mktemp("local") / "s"
    subprocess.run(command(out, data, "--jobs", "2"), env=env, check=True, capture_output=True)
    return out


def metrics(out) -> dict:
    """{(arm, seed): every epoch record without its wall-clock fields} of a study folder."""
    found = {}
    for path in sorted(Path(out).glob(f"*/seed-*/{T.METRICS}")):
        lines = path.read_text().splitlines()
        found[path.parent.parent.name, path.parent.name] = [
            {k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in lines]
    return found


def assert_same_results(out, local):
    mine, theirs = metrics(out), metrics(local)
    assert len(theirs) == 7 and mine == theirs
    tables = [json.loads((o / "results.json").read_text()) for o in (out, local)]
    assert [(a["arm"], a["seeds"], a["test_acc"]) for a in tables[0]["arms"]] == \
        [(a["arm"], a["seeds"], a["test_acc"]) for a in tables[1]["arms"]]
    protocol, names = study.read_protocol(out)
    for arm in study.study_arms(",".join(names)):
        for s in study.folder.seed_numbers(Path(out) / arm):
            d = study.run_dir(out, arm, s)
            training = protocol.train_config(study.ARMS[arm], s, d).training_dict()
            assert study.inspect_run(d, training).state == "finished", d


def test_a_study_on_the_cluster_writes_the_metrics_of_the_same_study_run_here(
        tmp_path, dask_cluster, data, local_study, env):
    out = tmp_path / "s"
    done = subprocess.run(command(out, data, "--scheduler", dask_cluster.scheduler_address),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "7 to run, on the Dask cluster at tcp://127.0.0.1:" in lines[0]
    assert sorted(line.split("]")[0] for line in lines if line.startswith("[")) == \
        [f"[{k}/7" for k in range(1, 8)]
    assert any(line.startswith("wrote ") and "results.json" in line for line in lines)
    assert_same_results(out, local_study)
    assert not study.lock_is_held(out / study.LOCK)


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _parent(pid) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _wait_for(condition, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _mid_run(out):
    """(run folder, pid of its worker process) of a run whose worker holds its lock and has
    saved its first epoch but not finished: a run caught between its epochs."""
    for lock in Path(out).glob(f"*/seed-*/{study.RUN_LOCK}"):
        pid = lock.read_text().strip()
        d = lock.parent
        if pid.isdigit() and study.lock_is_held(lock) and (d / T.CHECKPOINT).exists() \
                and not (d / study.RUN_RECORD).exists():
            return d, int(pid)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_dask_worker_killed_mid_run_costs_nothing(tmp_path, dask_cluster, data,
                                                      local_study, env):
    out = tmp_path / "s"
    proc = subprocess.Popen(command(out, data, "--scheduler", dask_cluster.scheduler_address),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
            workers = set(client.run(os.getpid).values())
            caught, pid = _wait_for(lambda: _mid_run(out), 120, "a run between two epochs")
            dask_worker = _parent(pid)
            assert dask_worker in workers        # the run's process is a Dask worker's child
            os.kill(dask_worker, signal.SIGKILL)
            # It dies with its Dask worker (and gives its lock back): nothing trains unsupervised.
            _wait_for(lambda: not _alive(pid), 30, "the run's process to die with its worker")
            stdout, stderr = proc.communicate(timeout=300)
            client.wait_for_workers(2, timeout=60)      # the nanny restarts it, for later tests
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert sum(line.startswith("[") for line in stdout.splitlines()) == 7
    log = (caught / study.LOG).read_text()
    assert log.count("npse study: starting on") == 1 and log.count("npse study: resuming on") == 1
    assert f"resuming {caught} after epoch 1/2" in log          # from its checkpoint
    assert_same_results(out, local_study)


def cli_main(args) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue().strip()


def test_no_scheduler_at_the_address_is_one_line_and_quick(tmp_path, data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # a port nothing listens on (once closed)
    started = time.time()
    code, _, err = cli_main(["study", "squeeze", *PROTOCOL, "--data-dir", data, "--out",
                             tmp_path / "s", "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert time.time() - started < 20
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"--scheduler tcp://127.0.0.1:{port}: no Dask scheduler answered" in err
    assert not (tmp_path / "s").exists()                     # nothing written


def test_without_dask_the_error_says_how_to_install_it(tmp_path, data):
    with mock.patch.dict(sys.modules, {"distributed": None}):
        code, _, err = cli_main(["study", "squeeze", *PROTOCOL, "--data-dir", data, "--out",
                                 tmp_path / "s", "--scheduler", "tcp://127.0.0.1:8786"])
    assert code == 1 and len(err.splitlines()) == 1 and "pip install 'npse[cluster]'" in err


def test_each_worker_is_checked_before_any_run(tmp_path, dask_cluster, data):
    """A folder the workers do not see, a copy of it that is not shared, or no data where the
    runs will look: one line naming the worker and the problem."""
    out = tmp_path / "s"
    study.open_study_folder(out, study.Protocol(), "squeeze")
    with Client(dask_cluster.scheduler_address, set_as_default=False) as client, \
            study.study_lock(out):
        C.check_workers(client, out, str(data))                   # all is well
        study_text = (out / study.STUDY_FILE).read_text()
        lock_text = (out / study.LOCK).read_text()
        cases = [((str(tmp_path / "nowhere"), str(data), study_text, lock_text),
                  "does not exist: put it on storage every worker shares"),
                 ((str(out), str(data), study_text, lock_text + " "),
                  "is a copy, not the folder this study runs"),
                 ((str(out), str(tmp_path), study_text, lock_text), "no CIFAR-10 in")]
        for args, words in cases:
            found = client.run(C.worker_problem, *args)
            assert len(found) == 2 and all(words in problem for problem in found.values())
        with pytest.raises(ValueError, match="study: Dask worker tcp://127.0.0.1:.*no CIFAR-10"):
            C.check_workers(client, out, str(tmp_path))
    assert not any(out.glob("*/seed-*"))                          # no run started
