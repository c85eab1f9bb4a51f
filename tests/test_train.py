"""The training loop (npse.train): resume = uninterrupted, crash safety, refusals, overfitting.

Everything runs on tiny CIFAR-10 files generated into tmp_path in the official binary layout,
with a toy SE-ResNet-8, so the whole file takes seconds.
"""
import json
import math

import numpy as np
import pytest

import npse.train as T
from npse.checkpoint import load_checkpoint
from npse.data import load_cifar10
from npse.nn import grad_enabled
from npse.train import TrainConfig, evaluate, train

# A toy model and batch sizes small enough that an epoch of 100 images takes a fraction of a second.
TINY = dict(model="se_resnet8", widths=(4, 8, 8), se_reduction=2, batch_size=16,
            eval_batch_size=50)


def write_cifar10(root, per_file=20, n_test=40, seed=0, random_labels=False):
    """Generated CIFAR-10 binary files in ``root/cifar-10-batches-bin`` (1 label + 3072 bytes).

    Images are a class template plus noise (learnable), or pure noise with random labels when
    ``random_labels`` (only memorisable). ``per_file``: an int, or five ints for the five files.
    """
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, (10, 3072))

    def write(name, n):
        y = rng.integers(0, 10, n)
        if random_labels:
            x = rng.integers(0, 256, (n, 3072))
        else:
            x = templates[y] // 2 + rng.integers(0, 128, (n, 3072))
        np.concatenate([y[:, None], x], axis=1).astype(np.uint8).tofile(folder / name)

    counts = [per_file] * 5 if isinstance(per_file, int) else list(per_file)
    for i, n in enumerate(counts, start=1):
        write(f"data_batch_{i}.bin", n)
    write("test_batch.bin", n_test)
    return root


@pytest.fixture
def data_dir(tmp_path):
    return write_cifar10(tmp_path / "data")


def tiny(tmp_path, data_dir, name="run", **kw):
    args = dict(TINY, epochs=2, out=str(tmp_path / name), data_dir=str(data_dir),
                download=False, quiet=True)
    args.update(kw)
    return TrainConfig(**args)


def without_timing(metrics):
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_s")}
            for m in metrics]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_file_has_one_line_per_epoch(tmp_path, data_dir):
    final = train(tiny(tmp_path, data_dir), log=None)
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert set(m) == set(T.METRIC_KEYS)
        assert all(isinstance(m[k], (int, float)) and math.isfinite(m[k]) for k in m)
        assert 0 <= m["train_acc"] <= 1 and 0 <= m["test_acc"] <= 1
    assert final["test_acc"] == lines[-1]["test_acc"]
    assert len(final["per_class_acc"]) == 10 and len(final["classes"]) == 10
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert meta["epoch"] == 2 and meta["iteration"] == 2 * 7  # 100 images / 16 = 7 batches
    assert meta["metrics"] == lines
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3
    assert meta["model_config"]["widths"] == [4, 8, 8]


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n} threads")
def n_threads(request):
    from npse.fast.threads import set_num_threads
    set_num_threads(request.param)
    yield request.param
    set_num_threads(1)


def test_resume_equals_uninterrupted(tmp_path, data_dir, monkeypatch, n_threads):
    """Interrupt in the middle of epoch 2, resume, and match the uninterrupted run bit for bit,
    at one thread and at two (npse.fast.threads: slices and sums in a fixed order)."""
    train(tiny(tmp_path, data_dir, "straight"), log=None)

    real = T.iterate_batches

    def interrupting(*args, **kw):
        for i, batch in enumerate(real(*args, **kw)):
            if kw.get("epoch") == 1 and i == 3:  # Ctrl-C during the fourth batch of epoch 2
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(T, "iterate_batches", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, data_dir, "resumed"), log=None)
    monkeypatch.setattr(T, "iterate_batches", real)
    resumed = tmp_path / "resumed"
    _, meta = load_checkpoint(resumed / "checkpoint.npz")
    assert meta["epoch"] == 1
    # Simulate a crash between checkpoint and metrics line: a stale, doubled line on disk.
    (resumed / "metrics.jsonl").write_text((resumed / "metrics.jsonl").read_text() * 2)

    train(tiny(tmp_path, data_dir, "resumed", resume=True), log=None)

    a = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    b = read_jsonl(resumed / "metrics.jsonl")
    assert without_timing(a) == without_timing(b)  # floats compared with ==
    arrays_a, meta_a = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    arrays_b, meta_b = load_checkpoint(resumed / "checkpoint.npz")
    assert sorted(arrays_a) == sorted(arrays_b)
    assert any(k.startswith("optim.momentum_buffer.") for k in arrays_a)
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)
    assert meta_a["iteration"] == meta_b["iteration"]
    assert meta_a["threads"] == meta_b["threads"] == n_threads


def test_resume_with_other_threads_says_the_numbers_agree_to_rounding(tmp_path, data_dir):
    from npse.fast.threads import set_num_threads
    train(tiny(tmp_path, data_dir, epochs=1), log=None)
    lines = []
    set_num_threads(2)
    try:
        train(tiny(tmp_path, data_dir, epochs=1, resume=True), log=lines.append)
    finally:
        set_num_threads(1)
    assert "2 threads (npse.fast.threads)" in lines
    assert any("the run so far used 1 threads" in line and "not bit for bit" in line
               for line in lines), lines


def test_resume_refuses_a_different_configuration(tmp_path, data_dir):
    train(tiny(tmp_path, data_dir, epochs=1), log=None)
    with pytest.raises(ValueError, match="lr=0.5"):
        train(tiny(tmp_path, data_dir, epochs=1, lr=0.5, resume=True), log=None)
    with pytest.raises(ValueError, match="lr=0.5"):
        T.resume_config(tmp_path / "run", lr=0.5)
    config = T.resume_config(tmp_path / "run", backend="numpy", quiet=True)
    assert config.resume and config.lr == 0.1 and config.widths == (4, 8, 8)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        T.resume_config(tmp_path / "elsewhere")


def test_resume_keeps_the_runs_data_dir_and_eval_batch_size(tmp_path, data_dir):
    """Run-time options not given again come from the run, not from the defaults."""
    train(tiny(tmp_path, data_dir, epochs=1, eval_batch_size=7), log=None)
    config = T.resume_config(tmp_path / "run")
    assert config.data_dir == str(data_dir) and config.eval_batch_size == 7
    config = T.resume_config(tmp_path / "run", eval_batch_size=9)
    assert config.eval_batch_size == 9


def test_existing_run_is_refused_and_left_intact(tmp_path, data_dir):
    train(tiny(tmp_path, data_dir, epochs=1), log=None)
    out = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(tmp_path, data_dir, epochs=1), log=None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_removes_only_npse_files(tmp_path, data_dir):
    train(tiny(tmp_path, data_dir, epochs=1), log=None)
    out = tmp_path / "run"
    (out / "notes.txt").write_text("mine")
    (out / "metrics.jsonl").write_text('{"junk": 1}\n' * 5)
    train(tiny(tmp_path, data_dir, epochs=1, overwrite=True), log=None)
    assert (out / "notes.txt").read_text() == "mine"
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir,
                                                                  monkeypatch):
    class BreaksInEpoch2(T.CrossEntropyLoss):
        calls = 0

        def forward(self, logits, targets):
            loss = super().forward(logits, targets)
            if not grad_enabled():  # evaluation, not a training step
                return loss
            BreaksInEpoch2.calls += 1
            return float("nan") if BreaksInEpoch2.calls == 7 + 3 else loss

    monkeypatch.setattr(T, "CrossEntropyLoss", BreaksInEpoch2)
    with pytest.raises(T.NonFiniteLossError, match=r"epoch 2, iteration 3/7"):
        train(tiny(tmp_path, data_dir), log=None)
    out = tmp_path / "run"
    _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["epoch"] == 1
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


def test_huge_learning_rate_is_caught(tmp_path, data_dir):
    with pytest.raises(T.NonFiniteLossError, match="became"):
        train(tiny(tmp_path, data_dir, lr=1e12, epochs=3, schedule="constant"), log=None)


@pytest.mark.parametrize("change, message", [
    (dict(epochs=0), "epochs"),
    (dict(batch_size=-1), "batch_size"),
    (dict(train_subset=0), "train_subset"),
    (dict(lr=float("nan")), "lr"),
    (dict(schedule="linear"), "schedule"),
    (dict(dataset="mnist"), "dataset"),
    (dict(warmup_epochs=5), "warmup_epochs"),
    (dict(momentum=0.0), "Nesterov"),
    (dict(widths=(4, 0, 8)), "widths"),
    (dict(resume=True, overwrite=True), "exclude"),
])
def test_bad_configurations_are_refused_before_anything_is_written(tmp_path, data_dir, change,
                                                                    message):
    with pytest.raises(ValueError, match=message):
        train(tiny(tmp_path, data_dir, **change), log=None)
    assert not (tmp_path / "run").exists()


def test_unknown_model_and_missing_data_write_nothing(tmp_path, data_dir):
    with pytest.raises(ValueError, match="unknown model"):
        train(tiny(tmp_path, data_dir, model="vgg11"), log=None)
    with pytest.raises(FileNotFoundError, match="CIFAR data not found"):
        train(tiny(tmp_path, tmp_path / "empty"), log=None)
    assert not (tmp_path / "run").exists()


def test_evaluate_per_class_and_mode(tmp_path, data_dir):
    from npse.models import build_model

    model = build_model("resnet8", widths=(4, 8, 8))
    data = load_cifar10(data_dir, download=False)
    x, y = data.x_test[data.y_test != 3], data.y_test[data.y_test != 3]  # no class 3
    model.train()
    loss, acc, per_class = evaluate(model, x, y, (0.5,) * 3, (0.25,) * 3, batch_size=7)
    assert model.training  # restored
    assert math.isfinite(loss) and 0 <= acc <= 1
    assert per_class.shape == (10,) and np.isnan(per_class[3])
    present = ~np.isnan(per_class)
    counts = np.bincount(y, minlength=10)[present]
    assert np.isclose((per_class[present] * counts).sum() / counts.sum(), acc)
    # The batch size does not change the answer beyond rounding.
    loss2, acc2, _ = evaluate(model, x, y, (0.5,) * 3, (0.25,) * 3, batch_size=500)
    assert acc2 == acc and np.isclose(loss2, loss, rtol=1e-5)


def test_overfits_256_random_images(tmp_path):
    """256 noise images with random labels can only be memorised: the loop must get there."""
    data = write_cifar10(tmp_path / "noise", per_file=(52, 51, 51, 51, 51), n_test=20,
                         random_labels=True)
    config = TrainConfig(out=str(tmp_path / "run"), model="se_resnet8", widths=(8, 16, 16),
                         se_reduction=4, epochs=25, batch_size=16, lr=0.2, weight_decay=0.0,
                         warmup_epochs=0, augment=False, data_dir=str(data), download=False,
                         quiet=True)
    final = train(config, log=None)
    assert final["train_acc"] >= 0.95, final


# ----------------------------------------------------------------------------- the loop's wiring
# What the loop records is checked against values the test computes itself: a wrong argument in
# the loop (mean and std swapped, warm-up epochs used as steps) changes every number it records
# and nothing else would notice.

def read_cifar_bin(path):
    """(uint8 images (N, 3, 32, 32), int64 labels) read with plain NumPy: 1 label + 3072 bytes."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def keep_every_checkpoint(monkeypatch):
    """Make the loop leave a copy of each epoch's checkpoint, OUT/epoch-<e>.npz."""
    import shutil
    real = T.write_epoch

    def write_and_keep(out, model, optimizer, config, record, meta, metrics):
        real(out, model, optimizer, config, record, meta, metrics)
        shutil.copyfile(out / "checkpoint.npz", out / f"epoch-{record['epoch']}.npz")

    monkeypatch.setattr(T, "write_epoch", write_and_keep)


def test_recorded_test_metrics_are_an_evaluation_of_each_epochs_checkpoint(tmp_path, data_dir,
                                                                           monkeypatch):
    keep_every_checkpoint(monkeypatch)
    train(tiny(tmp_path, data_dir), log=None)
    folder = data_dir / "cifar-10-batches-bin"
    x_train = np.concatenate([read_cifar_bin(folder / f"data_batch_{i}.bin")[0] for i in range(1, 6)])
    x_test, y_test = read_cifar_bin(folder / "test_batch.bin")
    # The recipe's normalisation, from the training images: per channel, in [0, 1] units.
    pixels = x_train.astype(np.float64) / 255
    mean, std = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))
    inputs = ((x_test / 255 - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    from npse.train import load_model_for_inference
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in records] == [1, 2]
    for m in records:
        model, meta = load_model_for_inference(tmp_path / "run" / f"epoch-{m['epoch']}.npz")
        np.testing.assert_allclose(meta["mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(meta["std"], std, rtol=1e-12)
        with T.no_grad():
            logits = np.asarray(model(inputs), dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_p[np.arange(len(y_test)), y_test].mean()
        acc = (logits.argmax(axis=1) == y_test).mean()
        # float32 forward passes whose input differs in the last bits: the loss agrees to ~1e-6.
        assert m["test_loss"] == pytest.approx(loss, rel=1e-4), m
        assert m["test_acc"] == acc, m


def recipe_lr(kind, t, base, steps_per_epoch, epochs, warmup_epochs=0):
    """The recipe's learning rate at step t (0-based), written out from docs/11-training.md."""
    total = steps_per_epoch * epochs
    if kind == "cosine":
        warmup = warmup_epochs * steps_per_epoch          # warm-up is counted in epochs
        if t < warmup:
            return base * (t + 1) / warmup                # linear, reaching base at t = warmup - 1
        return base / 2 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
    if kind == "multistep":                               # / 10 at 50% and at 75% of the steps
        return base * 0.1 ** ((t >= total // 2) + (t >= 3 * total // 4))
    return base


@pytest.mark.parametrize("kind, epochs, warmup", [("cosine", 3, 2), ("multistep", 4, 0)])
def test_every_learning_rate_follows_the_recipe(tmp_path, data_dir, monkeypatch, kind, epochs,
                                                warmup):
    used, seen = [], []      # the lr of each step; (loss * batch, correct, batch) of each step
    real_step = T.train_step

    def step_and_note(model, loss_fn, optimizer, xb, yb):
        used.append(optimizer.lr)
        logits, loss, dx = real_step(model, loss_fn, optimizer, xb, yb)
        hits = int((np.asarray(logits).argmax(axis=1) == np.asarray(yb)).sum())
        seen.append((float(loss) * len(yb), hits, len(yb)))
        return logits, loss, dx

    monkeypatch.setattr(T, "train_step", step_and_note)
    train(tiny(tmp_path, data_dir, epochs=epochs, schedule=kind, warmup_epochs=warmup, lr=0.05),
          log=None)
    steps = 7                                            # 100 images in batches of 16
    want = [recipe_lr(kind, t, 0.05, steps, epochs, warmup) for t in range(steps * epochs)]
    assert used == pytest.approx(want, rel=1e-12, abs=0)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    # Each epoch records the rate of its last step.
    assert [m["lr"] for m in records] == pytest.approx(want[steps - 1::steps], rel=1e-12, abs=0)
    # And the training loss and accuracy of the steps it took (summed here, from the outside).
    for e, m in enumerate(records):
        loss_sum, hits, count = map(sum, zip(*seen[e * steps:(e + 1) * steps]))
        assert count == 100
        assert m["train_acc"] == hits / count
        assert m["train_loss"] == pytest.approx(loss_sum / count, rel=1e-12)


@pytest.mark.parametrize("decay_bn_bias", [True, False])
def test_decay_bn_bias_chooses_which_parameters_decay(tmp_path, data_dir, monkeypatch,
                                                      decay_bn_bias):
    """--decay-bn-bias on: every parameter decays; off: BatchNorm's and the biases' do not."""
    made = []

    class Recording(T.SGD):
        def __init__(self, params, **kw):
            params = list(params)
            made.append((params, kw))
            super().__init__(params, **kw)

    monkeypatch.setattr(T, "SGD", Recording)
    from npse.fast import FAST
    T.prepare_run(tiny(tmp_path, data_dir, decay_bn_bias=decay_bn_bias), tmp_path / "run",
                  lambda line: None, FAST)
    (params, kw), = made
    assert kw["weight_decay"] == 5e-4
    keep = kw["decay_filter"] or (lambda name, p: True)
    decayed = {n for n, p in params if keep(n, p)}
    one_d = {n for n, p in params if p.data.ndim == 1}
    assert one_d and any(n.endswith(".bias") for n in one_d)
    assert decayed == ({n for n, _ in params} - (set() if decay_bn_bias else one_d))
