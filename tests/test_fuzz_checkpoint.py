"""Property-based fuzzing of the checkpoint loader and of the command line.

Hypothesis damages a real training checkpoint (truncations, bit flips, lying .npy headers,
extra, missing and misshapen entries, metadata of odd types) and draws argument lists. Every
outcome must be a success or a one-line error: never a traceback, never an exception other than
the loader's CheckpointError, never a file written outside npse's own. Memory stays bounded by
construction (no entry read is larger than the file); a subprocess under an address-space limit
checks that for two crafted files whose headers claim gigabytes.

``HYPOTHESIS_PROFILE=thorough`` draws many more examples than the default run.
"""
import io
import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import npse.train as T
from npse.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from npse.cli import main
from test_cli import TOY
from test_train import write_cifar10

# The command-line properties run whole (tiny) commands: fewer examples than the profile's.
FEW = settings(max_examples=max(5, settings.default.max_examples // 4),
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SOME = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished toy run: {"out", "data", "bytes" (the checkpoint's), "arrays", "meta"}."""
    root = tmp_path_factory.mktemp("fuzz")
    data = write_cifar10(root / "data")
    out = root / "run"
    assert main(["train", *TOY, "--data-dir", str(data), "--no-download", "--out", str(out),
                 "--quiet"]) == 0
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    return {"out": out, "data": data, "bytes": (out / "checkpoint.npz").read_bytes(),
            "arrays": arrays, "meta": meta}


def outcome(path):
    """"ok", or the loader's message: for evaluation, then for a resume of the run."""
    try:
        T.load_model_for_inference(path)
        reader, meta, config = T.open_run_checkpoint(path, resume=True)
        reader.close()
        config.out, config.resume = str(path.parent), True
        T.read_for_resume(path.parent, config)
        return "ok"
    except CheckpointError as e:
        message = str(e)
    except (ValueError, FileNotFoundError) as e:   # a config that differs, as resume reports it
        message = str(e)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def place(tmp_path, blob, name="case"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "checkpoint.npz").write_bytes(blob)
    return d / "checkpoint.npz"


def members(blob):
    """[(name, bytes)] of a zip archive, in order."""
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def rezip(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries:
            z.writestr(name, data)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- damaged files

@SOME
@given(keep=st.floats(0, 1, exclude_max=True))
def test_truncated_files_are_refused(tmp_path, run, keep):
    blob = run["bytes"]
    path = place(tmp_path, blob[:int(len(blob) * keep)])
    assert outcome(path) != "ok"
    with pytest.raises(CheckpointError, match="checkpoint.npz"):
        load_checkpoint(path)


@SOME
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                      min_size=1, max_size=4),
       near_end=st.booleans())
def test_bit_flips_give_an_error_or_the_same_model(tmp_path, run, flips, near_end):
    blob = bytearray(run["bytes"])
    # Half the flips land in the last 4 KiB: the zip directory and the metadata live there.
    start = len(blob) - 4096 if near_end else 0
    for where, bit in flips:
        blob[start + int(where * (len(blob) - start))] ^= 1 << bit
    path = place(tmp_path, bytes(blob))
    result = outcome(path)
    if result == "ok":     # only bytes nothing depends on changed (a timestamp, a padding space)
        model, meta = T.load_model_for_inference(path)
        for key, value in model.state_dict().items():
            np.testing.assert_array_equal(value, run["arrays"]["model." + key], err_msg=key)


NPY_DTYPES = ["<f4", "<f8", ">f4", "<i8", "|u1", "|b1", "|O", "|V8", "<U3", "<c8",
              "[('a', '<f4')]", "(<f4, (2,))", "bogus"]


def npy_header(shape, descr):
    text = "{'descr': %s, 'fortran_order': False, 'shape': %s, }" % (
        descr if descr.startswith(("[", "(")) else repr(descr), shape)
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


shapes = st.one_of(
    st.lists(st.integers(0, 2**62), max_size=4).map(lambda s: repr(tuple(s))),
    st.sampled_from(["(-1,)", "(1.5,)", "'x'", "None", "(2**40,)", "()", "(" + "1," * 40 + ")"]))


@SOME
@given(which=st.integers(0, 10**6), shape=shapes, descr=st.sampled_from(NPY_DTYPES),
       keep_data=st.booleans())
def test_lying_npy_headers_are_refused(tmp_path, run, which, shape, descr, keep_data):
    entries = members(run["bytes"])
    name, data = entries[which % len(entries)]
    header_end = 10 + int.from_bytes(data[8:10], "little")
    fake = npy_header(shape, descr) + (data[header_end:] if keep_data else b"\0" * 16)
    assume(fake != data)
    entries[which % len(entries)] = (name, fake)
    result = outcome(place(tmp_path, rezip(entries)))
    # Only a header that says exactly what the old one said (in other words) may load.
    if result == "ok":
        assert keep_data and descr in ("<f4", "<i8", "|u1")


arrays_drawn = st.tuples(
    st.lists(st.integers(0, 5), max_size=4),
    st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]))
keys_drawn = st.one_of(st.sampled_from(["model.fc.weight", "model.fc.bias", "optim.step",
                                        "model.bn1.running_var", "model.conv1.weight",
                                        "optim.momentum_buffer.fc.weight"]),
                       st.text("abcdefgh.", min_size=1, max_size=12),
                       st.text(min_size=1, max_size=8).map(lambda t: "model." + t))


@SOME
@given(drop=st.lists(st.integers(0, 10**6), max_size=2),
       add=st.lists(st.tuples(keys_drawn, arrays_drawn), max_size=2))
def test_extra_missing_and_misshapen_entries(tmp_path, run, drop, add):
    arrays = dict(run["arrays"])
    for i in drop:
        if arrays:
            arrays.pop(sorted(arrays)[i % len(arrays)])
    for key, (shape, dtype) in add:
        if key in ("__meta__", "file", "allow_pickle"):
            continue
        arrays[key] = np.ones(shape, dtype=dtype)
    assume(sorted(arrays) != sorted(run["arrays"]) or add)
    path = tmp_path / "case" / "checkpoint.npz"
    path.parent.mkdir(exist_ok=True)
    save_checkpoint(path, arrays, run["meta"])
    result = outcome(path)
    if result == "ok":       # the drawn arrays happened to be exactly what the model expects
        model, _ = T.load_model_for_inference(path)
        assert set("model." + k for k in model.state_dict()) <= set(arrays)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
META_PLACES = ["format", "version", "config", "model_config", "epoch", "iteration", "mean", "std",
               "classes", "metrics", "data", "data_dir", "eval_batch_size"]
CONFIG_KEYS = ["epochs", "batch_size", "lr", "momentum", "widths", "model", "dataset", "depth",
               "se", "dtype", "seed", "train_subset"]
MODEL_KEYS = ["depth", "num_classes", "block", "shortcut", "widths", "se", "se_reduction",
              "se_squeeze", "se_excitation", "se_stages", "se_bias", "dtype", "seed"]
places = st.one_of(st.tuples(st.sampled_from(META_PLACES + ["new"])),
                   st.tuples(st.just("config"), st.sampled_from(CONFIG_KEYS)),
                   st.tuples(st.just("model_config"), st.sampled_from(MODEL_KEYS)),
                   st.tuples(st.just("metrics"), st.integers(0, 1)),
                   st.tuples(st.just("data"), st.sampled_from(["n_train", "fingerprint"])))


@SOME
@given(changes=st.lists(st.tuples(places, json_values, st.booleans()), min_size=1, max_size=3))
def test_metadata_of_odd_types(tmp_path, run, changes, capsys):
    meta = json.loads(json.dumps(run["meta"]))
    for place_, value, delete in changes:
        holder = meta
        for step in place_[:-1]:
            holder = holder.get(step) if isinstance(holder, dict) else None
        key = place_[-1]
        fits = (isinstance(holder, dict) and isinstance(key, str)) or \
            (isinstance(holder, list) and isinstance(key, int) and key < len(holder))
        if not fits:
            continue
        if delete and isinstance(holder, dict):
            holder.pop(key, None)
        else:
            holder[key] = value
    path = tmp_path / "case" / "checkpoint.npz"
    path.parent.mkdir(exist_ok=True)
    save_checkpoint(path, run["arrays"], meta)
    outcome(path)
    # And through the command line, in-process: an answer or one line.
    rc = main(["evaluate", str(path), "--data-dir", str(run["data"]), "--no-download"])
    out, err = capsys.readouterr()
    assert rc in (0, 1) and "Traceback" not in err
    assert (rc == 0 and "test accuracy" in out) or (rc == 1 and err.count("\n") == 1)


# ----------------------------------------------------------------------------- argument lists

VALUES = ["", "0", "-1", "1", "2", "16", "100000", "1e12", "nan", "inf", "-inf", "abc", "0.5",
          "4,8,8", "8,4,2", "0,1,2", "1,2", ",", "se_resnet8", "resnet8", "vgg", "none", "A",
          "cifar10", "cifar100", "float64", "float16", "cosine", "avg", "max", "relu"]
TRAIN_OPTIONS = ["--epochs", "--batch-size", "--eval-batch-size", "--lr", "--momentum",
                 "--weight-decay", "--schedule", "--warmup-epochs", "--seed", "--train-subset",
                 "--model", "--dtype", "--depth", "--widths", "--shortcut", "--se",
                 "--se-reduction", "--se-squeeze", "--se-excitation", "--se-stages", "--dataset"]
FLAGS = ["--resume", "--overwrite", "--full", "--no-augment", "--no-nesterov", "--quiet",
         "--no-se-bias", "--no-decay-bn-bias", "--frobnicate", "-x"]
# Options whose values could make a valid run long are drawn from values that keep it short.
SHORT = {"--epochs": ["0", "1", "2", "-1", "x"], "--depth": ["8", "9", "0", "abc"],
         "--model": ["se_resnet8", "resnet8", "vgg", ""],
         "--widths": ["4,8,8", "8,4,2", "0,1,2", "abc", ""], "--dataset": ["cifar10", "cifar100"],
         "--train-subset": ["1", "50", "1000", "0", "x"]}


BENCH = {"--models": ["", ",", " ", "vgg", "se_resnet8", "resnet8,", "se_resnet8,,resnet8"],
         "--batch-sizes": ["", ",", "0", "1", "2", "abc", "nan", "2,x", "-2", "1e3"],
         "--repeats": ["0", "1", "x", "-1", ""], "--backend": ["numpy", "cupy", "torch", ""],
         "--memory-format": ["auto", "contiguous", "channels_last", "x"]}


def options(names, flags, pools=SHORT):
    pair = st.sampled_from(names).flatmap(
        lambda o: st.tuples(st.just(o), st.sampled_from(pools.get(o, VALUES))))
    item = st.one_of(pair.map(list), st.sampled_from(flags).map(lambda f: [f]))
    return st.lists(item, max_size=5).map(lambda items: [a for i in items for a in i])


def assert_answer_or_one_line(rc, out, err):
    assert rc in (0, 1, 2), rc
    assert "Traceback" not in err
    if rc:
        lines = [line for line in err.splitlines() if not line.startswith("npse: warning")]
        assert len(lines) == 1 and "error" in lines[0], err


def files_under(root):
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


@FEW
@given(argv=options(TRAIN_OPTIONS, FLAGS))
def test_train_argument_lists(tmp_path, run, argv, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    before = files_under(work)
    out = work / "out"
    rc = main(["train", *TOY, *argv, "--data-dir", str(run["data"]), "--no-download",
               "--out", str(out), "--quiet"])
    assert_answer_or_one_line(rc, *capsys.readouterr())
    written = files_under(work) - before
    assert all(p.parent == out.relative_to(work) and p.name in T.OWN_FILES for p in written), \
        written
    for p in written:                 # the next example starts from an empty directory
        (work / p).unlink()


@FEW
@given(target=st.sampled_from(["run", "checkpoint", "missing", "junk", "data"]),
       argv=options(["--batch-size", "--backend"], ["--no-download", "--frobnicate"]))
def test_evaluate_argument_lists(tmp_path, run, target, argv, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 and nothing else")
    path = {"run": run["out"], "checkpoint": run["out"] / "checkpoint.npz",
            "missing": tmp_path / "nope.npz", "junk": junk, "data": run["data"]}[target]
    rc = main(["evaluate", str(path), *argv, "--data-dir", str(run["data"]), "--no-download"])
    assert_answer_or_one_line(rc, *capsys.readouterr())


@FEW
@given(argv=options(list(BENCH), ["--frobnicate", "--no-torch"], BENCH))
def test_bench_argument_lists(argv, capsys):
    # A tiny model at batch 2 first: a valid list runs for about a second.
    rc = main(["bench", "--models", "se_resnet8", "--batch-sizes", "2", "--repeats", "1",
               "--no-torch", "--no-layers", "--no-profile", "--no-memory", *argv])
    assert_answer_or_one_line(rc, *capsys.readouterr())


# ----------------------------------------------------------------------------- bounded memory

def _zip_with_unused_entry(path, arrays, meta, size):
    """A real checkpoint plus an unused deflated entry of ``size`` zero bytes (a small file)."""
    save_checkpoint(path, arrays, meta)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("model.unused.npy", "w", force_zip64=True) as f:
            f.write(npy_header(repr((size,)), "|u1"))
            block = bytes(2**24)
            for _ in range(size // len(block)):
                f.write(block)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux-specific")
def test_crafted_huge_entries_stay_within_an_address_space_limit(tmp_path, run):
    lying = tmp_path / "lying.npz"
    save_checkpoint(lying, run["arrays"], run["meta"])
    with zipfile.ZipFile(lying, "a") as z:             # a few bytes that claim 4 TiB
        z.writestr("model.unused.npy", npy_header("(1099511627776,)", "<f4") + bytes(64))
    bomb = tmp_path / "bomb.npz"
    _zip_with_unused_entry(bomb, run["arrays"], run["meta"], 2**29)   # 512 MiB in about 2 MiB
    assert bomb.stat().st_size < 4 * 2**20
    script = textwrap.dedent(f"""
        import resource, sys, zipfile
        import numpy as np
        import npse.train as T
        from npse.checkpoint import CheckpointError, load_checkpoint
        # The limit: what the interpreter holds now plus 256 MiB, below the 512 MiB entry.
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 2**28, resource.getrlimit(resource.RLIMIT_AS)[1]))
        for name in ({str(lying)!r}, {str(bomb)!r}):
            for load in (load_checkpoint, T.load_model_for_inference):
                try:
                    load(name)
                    print("LOADED", name)
                except CheckpointError as e:
                    print("REFUSED", e)
        try:                       # the control: reading the entry itself does not fit
            with zipfile.ZipFile({str(bomb)!r}) as z:
                z.read("model.unused.npy")
            print("CONTROL READ")
        except MemoryError:
            print("CONTROL MemoryError")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                            "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "CONTROL MemoryError", done.stdout
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert len(refused) == 4, done.stdout
    assert all("declares shape (1099511627776,)" in line for line in refused[:2])
    assert all("more than the file's" in line for line in refused[2:])
