"""Cases of a careless or hostile user (issue 21) that once gave a wrong answer, an unbounded
allocation or a misleading message; each now ends in a one-line error or the right result."""
import os
import pathlib

import numpy as np
import pytest

from npse.commands.evaluate import data_dir_for
from npse.data import cifar
from npse.data.cifar import load_cifar10
from npse.nn import BatchNorm2d, Linear, ReLU
from npse.optim import SGD

RECORD = 1 + 3072


def _sparse(path: pathlib.Path, size: int) -> None:
    """A file of ``size`` zero bytes that takes no disk space (and reads as label 0 images)."""
    with open(path, "wb") as f:
        f.truncate(size)


def _official_folder(root: pathlib.Path, test_records=10000) -> pathlib.Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _sparse(folder / f"data_batch_{i}.bin", 10000 * RECORD)
    _sparse(folder / "test_batch.bin", test_records * RECORD)
    return folder


def test_a_test_file_cut_at_a_record_boundary_is_refused(tmp_path):
    _official_folder(tmp_path, test_records=5000)
    with pytest.raises(ValueError, match=r"test_batch\.bin: 5000 records .* official file holds "
                                         r"10000 .* truncated"):
        load_cifar10(tmp_path, download=False)


def test_files_of_the_official_size_load(tmp_path):
    _official_folder(tmp_path)
    data = load_cifar10(tmp_path, download=False)
    assert data.x_train.shape == (50000, 3, 32, 32) and len(data.y_test) == 10000


def test_a_huge_sparse_file_is_refused_before_it_is_read(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        _sparse(folder / name, 3 * RECORD)
    _sparse(folder / "data_batch_1.bin", 30 * 2**30)          # 30 GiB, no disk used
    with pytest.raises(ValueError, match=r"data_batch_1\.bin: size 32212254720 bytes is more "
                                         r"than the 50000 records"):
        load_cifar10(tmp_path, download=False)


def test_a_data_directory_that_is_a_file_is_named(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setenv("NPSE_DATA", str(afile))
    with pytest.raises(NotADirectoryError, match=rf"{afile} \(from NPSE_DATA\) is a file"):
        cifar.make_data_dir(afile)


def test_evaluate_prefers_the_users_choices_to_the_checkpoints(tmp_path, monkeypatch):
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    monkeypatch.delenv("NPSE_DATA", raising=False)
    assert data_dir_for("given", str(recorded)) == "given"
    assert data_dir_for(None, str(recorded)) == str(recorded)
    assert data_dir_for(None, str(tmp_path / "gone")) is None      # the default, not created
    monkeypatch.setenv("NPSE_DATA", str(tmp_path))
    assert data_dir_for(None, str(recorded)) is None                # the loader reads NPSE_DATA
    assert data_dir_for("given", str(recorded)) == "given"


def test_a_refused_dy_stays_refused():
    relu = ReLU()
    relu(np.ones((2, 4), np.float32))
    for _ in range(2):
        with pytest.raises(ValueError, match=r"dy has shape \(1, 4\)"):
            relu.backward(np.ones((1, 4), np.float32))
    assert relu.backward(np.ones((2, 4), np.float32)).shape == (2, 4)


@pytest.mark.parametrize("option", ["lr", "weight_decay"])
def test_sgd_refuses_infinite_hyper_parameters(option):
    with pytest.raises(ValueError, match=f"{option} must be finite, got inf"):
        SGD(Linear(2, 2).named_parameters(), **{option: float("inf")})
    opt = SGD(Linear(2, 2).named_parameters())
    with pytest.raises(ValueError, match="lr must be finite"):
        opt.lr = float("inf")


def test_load_state_dict_refuses_what_the_cast_would_change():
    bn = BatchNorm2d(2)
    before = {k: np.array(v) for k, v in bn.state_dict().items()}
    state = dict(before, num_batches_tracked=np.array(3.7))
    with pytest.raises(ValueError, match="'num_batches_tracked' holds non-integer values"):
        bn.load_state_dict(state)
    state = dict(before, weight=np.array([1e40, 1.0]))
    with pytest.raises(ValueError, match=r"'weight' holds 1e\+40, beyond the largest float32"):
        bn.load_state_dict(state)
    assert all(np.array_equal(bn.state_dict()[k], v) for k, v in before.items())
    bn.load_state_dict(dict(before, num_batches_tracked=np.array(3.0)))   # a whole float is fine
    assert int(bn.state_dict()["num_batches_tracked"]) == 3


# ----------------------------------------------------------------------------- npse plot

RECORD_LINE = ('{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, '
               '"test_acc": 0.5, "lr": 0.1, "seconds": 1.0, "images_per_s": 10.0}\n')


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(RECORD_LINE)
    return folder


def _one_line_error(capsys, argv):
    from npse.cli import main
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("npse: error: ")
    return err


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe", "not UTF-8 text"),
    (b"[" * 70000, "longer than 65536 characters"),
    (b"[" * 60000 + b"\n", "nested too deeply"),
    (b'{"epoch": "1"}\n', "lacks train_loss"),
    (RECORD_LINE.replace('"lr": 0.1', '"lr": null').encode(), "lr must be a finite number"),
    (RECORD_LINE.replace('"lr": 0.1', '"lr": "0.1"').encode(), "lr must be a finite number"),
])
def test_plot_names_the_file_and_what_is_wrong(run, capsys, content, message):
    (run / "metrics.jsonl").write_bytes(content)
    err = _one_line_error(capsys, ["plot", str(run)])
    assert str(run / "metrics.jsonl") in err and message in err


def test_plot_refuses_an_oversized_metrics_file_before_reading_it(run, capsys):
    with open(run / "metrics.jsonl", "ab") as f:
        f.truncate(65 * 2**20)                  # sparse: no disk, no reading needed to refuse
    assert "more than the 64 MiB" in _one_line_error(capsys, ["plot", str(run)])


def test_plot_output_is_the_file_it_says(run, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from npse.cli import main
    monkeypatch.chdir(tmp_path)
    assert "ending in .png, .svg, .pdf" in _one_line_error(capsys, ["plot", "run", "--output",
                                                                    "noext"])
    assert "no such folder" in _one_line_error(capsys, ["plot", "run", "--output", "new/"])
    assert not (tmp_path / "noext.png").exists() and not (tmp_path / "new.png").exists()
    (tmp_path / "figs").mkdir()
    for output, written in (("figs", "figs/curves.png"), ("figs/", "figs/curves.png"),
                            ("c.svg", "c.svg")):
        assert main(["plot", "run", "--output", output]) == 0
        assert capsys.readouterr().out == f"wrote {written}\n"
        assert (tmp_path / written).stat().st_size > 1000


def test_a_run_folder_that_is_not_utf8_is_plotted_and_printed(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from npse.cli import main
    folder = os.fsencode(tmp_path) + b"/r\xff"
    os.mkdir(folder)
    with open(folder + b"/metrics.jsonl", "w") as f:
        f.write(RECORD_LINE)
    assert main(["plot", os.fsdecode(folder)]) == 0
    assert os.path.exists(folder + b"/curves.png")


# ----------------------------------------------------------------------------- npse excitation

@pytest.mark.parametrize("labels", [[3], [3, 3, 3], [1, 2, 3, 4]])
def test_excitation_refuses_a_test_set_too_small_for_its_statistics(labels):
    from npse.excitation.report import check_enough_images
    with pytest.raises(ValueError, match="need at least two classes with two images each"):
        check_enough_images(np.array(labels), 10)
    check_enough_images(np.array(labels + [0, 0, labels[0]]), 10)


def test_no_claim_is_judged_on_nan():
    from npse.excitation.stats import judge_claims
    block = {"eta2_median": float("nan"), "within_class_sd": 0.1, "saturated_high": 0.0}
    claims = judge_claims({"layer1.0.se": block, "layer3.2.se": dict(block, eta2_median=0.5)})
    assert [c["verdict"] for c in claims] == ["not measurable"]


# ----------------------------------------------------------------------------- npse study

def test_study_options_are_bounded(capsys):
    from npse.cli import main
    for argv, message in ((["--seeds", "1000000000", "--list"], "expected at most 1000 seeds"),
                          (["--seeds", "99999999999999999999", "--list"], "at most 1000 seeds"),
                          (["--jobs", "0", "--list"], "--jobs: expected an integer >= 1"),
                          (["--time-limit", "inf"], "--time-limit: expected a finite number > 0"),
                          (["--epochs", "-1"], "--epochs: expected an integer >= 1")):
        assert main(["study", "squeeze", *argv]) == 2
        assert message in capsys.readouterr().err


def test_jobs_are_capped_by_cores_and_memory(monkeypatch):
    from npse import memory
    from npse.study import runs
    from npse.study.arms import Protocol
    said = []
    monkeypatch.setattr(runs.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**30)
    assert runs.cap_jobs(64, "squeeze", Protocol(), "numpy", said.append) == 2
    assert said == ["study: --jobs 64 capped to 2: 2 cores to share"]
    monkeypatch.setattr(memory, "available_memory", lambda: 3 * 2**30)
    need = runs.run_memory(Protocol(), runs.ARMS["reference"])
    assert runs.cap_jobs(2, "squeeze", Protocol(), "numpy", said.append) == min(2, 3 * 2**30 // need)
    assert runs.cap_jobs(64, "squeeze", Protocol(), "cupy", said.append) == 64   # the GPU's own


@pytest.fixture
def study_copy(tmp_path):
    import shutil
    committed = pathlib.Path(__file__).resolve().parent.parent / "studies" / "cpu-5ep"
    out = tmp_path / "study"
    shutil.copytree(committed, out, ignore=shutil.ignore_patterns("*.npz", "*.log", "*.lock"))
    return out


@pytest.mark.parametrize("protocol", ["[]", "{}", '{"epochs": 5}', "1", "null"])
def test_a_study_json_without_a_whole_protocol_is_refused(study_copy, capsys, protocol):
    (study_copy / "study.json").write_text(
        '{"format": "npse-study", "protocol": %s, "studies": ["squeeze"]}' % protocol)
    err = _one_line_error(capsys, ["study", "squeeze", "--report", str(study_copy)])
    assert "study.json: not a study description" in err


def test_excitation_study_with_a_bad_config_is_one_line(study_copy, capsys):
    weights = pathlib.Path(__file__).resolve().parent.parent / "weights" / "se_resnet20-10ep"
    (study_copy / "reference" / "seed-0" / "config.json").write_text('{"config": [1]}')
    err = _one_line_error(capsys, ["excitation", str(weights / "se_resnet20.npz"), "--study",
                                   str(study_copy), "--no-probe", "--out",
                                   str(study_copy.parent / "gates")])
    assert "reference/seed-0/config.json: not an npse run configuration" in err


def test_quick_study_refuses_a_folder_before_writing_its_data(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    err = _one_line_error(capsys, ["study", "squeeze", "--quick", "--out", str(tmp_path)])
    assert "is not empty and holds no study.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------- garbage in readers

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12)
METRIC_LINE = st.fixed_dictionaries({}, optional={
    k: JSON_VALUES | st.floats() for k in ("epoch", "train_loss", "train_acc", "test_loss",
                                           "test_acc", "lr", "seconds", "images_per_s")})
GARBAGE = st.one_of(
    st.binary(max_size=600),
    st.lists(METRIC_LINE.map(lambda d: __import__("json").dumps(d)), max_size=4)
    .map(lambda lines: "\n".join(lines).encode()),
    JSON_VALUES.map(lambda v: __import__("json").dumps(v).encode()))
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line_about(error: Exception, path) -> None:
    text = str(error)
    assert "\n" not in text and str(path) in text, text


@FUZZ
@given(content=GARBAGE)
def test_read_metrics_gives_records_or_one_line_errors(tmp_path, content):
    from npse.config import METRIC_KEYS
    from npse.rundir import read_metrics
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    try:
        records = read_metrics(path)
    except ValueError as e:
        _one_line_about(e, path)
        return
    for r in records:
        assert all(isinstance(r[k], (int, float)) and np.isfinite(r[k]) for k in METRIC_KEYS)


@FUZZ
@given(content=GARBAGE)
def test_read_protocol_gives_a_protocol_or_one_line_errors(tmp_path, content):
    from npse.study.arms import Protocol
    from npse.study.folder import read_protocol
    (tmp_path / "study.json").write_bytes(content)
    try:
        protocol, studies = read_protocol(tmp_path)
    except ValueError as e:
        _one_line_about(e, tmp_path / "study.json")
        return
    assert isinstance(protocol, Protocol) and all(isinstance(n, str) for n in studies)


@FUZZ
@given(content=st.binary(max_size=3 * RECORD + 7), label_bytes=st.sampled_from([1, 2]))
def test_read_records_gives_images_or_one_line_errors(tmp_path, content, label_bytes):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(content)
    try:
        x, labels = cifar.read_records(path, label_bytes, (10, 100)[:label_bytes], "CIFAR")
    except ValueError as e:
        _one_line_about(e, path)
        return
    assert x.shape == (len(content) // (label_bytes + 3072), 3, 32, 32) and x.dtype == np.uint8


SOURCE_GARBAGE = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b"raise KeyboardInterrupt\n", b"raise SystemExit('bye')\n",
                     b"raise ValueError('two\\nlines')\n", b"import sys; sys.exit()\n",
                     b"def linear_forward(:\n", b"x = 1 / 0\n", b"\x00\x01",
                     b"raise BaseException('odd')\n", b"linear_forward = 3\n"]))


@FUZZ
@given(source=SOURCE_GARBAGE)
def test_loading_a_student_file_gives_a_module_or_one_line_errors(tmp_path, source):
    from npse.exercises import exercises
    from npse.exercises.checker import load_student
    path = tmp_path / "student.py"
    path.write_bytes(source)
    try:
        load_student(path, exercises()["linear"], time_limit_s=5)
    except (ValueError, FileNotFoundError) as e:
        _one_line_about(e, path)


def test_git_commit_sees_changes_to_npse(tmp_path):
    import subprocess
    from npse.study.runs import git_commit

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    (tmp_path / "npse").mkdir()
    (tmp_path / "npse" / "x.py").write_text("a = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    clean = git_commit(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "npse" / "x.py").write_text("a = 2\n")
    assert git_commit(tmp_path)["dirty"] is True
    assert git_commit(tmp_path / "npse")["commit"] == clean["commit"]   # any folder inside
