# %% [markdown]
# # Tutorial 11: training, evaluating and resuming
#
# The companion of [chapter 11](../docs/11-training.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Everything happens on a small synthetic data set written in the official CIFAR-10 binary layout
# into a temporary directory, so no download is needed and the script takes well under a minute.
#
# Run it as a script, `python tutorials/11_training.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from npse import cli, models
from npse.checkpoint import split_prefixed
from npse.data import channel_stats, iterate_batches, load_cifar10
from npse.optim import WarmupCosine, he_multistep
from npse.train import TrainConfig, evaluate, read_checkpoint_meta, resume_config, train

work = Path(tempfile.mkdtemp(prefix="npse-tutorial-11-"))
data_dir = work / "data"


# %% [markdown]
# ## 1. A synthetic CIFAR-10 in the official binary layout
#
# Class k: a colour of its own and stripes of its own direction and period, plus noise.
#
# Explained in [chapter 11](../docs/11-training.md).

# %%
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [220, 220, 40], [200, 40, 200],
                    [40, 200, 200], [240, 140, 30], [120, 60, 20], [230, 230, 230], [90, 90, 90]])
NAMES = ["red-h2", "green-v2", "blue-h4", "yellow-v4", "magenta-d2", "cyan-d4", "orange-h8",
         "brown-v8", "white-d8", "grey-h3"]
rng = np.random.default_rng(0)
rows, cols = np.mgrid[0:32, 0:32]


def images(labels):
    out = np.empty((len(labels), 3, 32, 32))
    for i, k in enumerate(labels):
        period = int(NAMES[k].split("-")[1][1:])
        coord = {"h": rows, "v": cols, "d": rows + cols}[NAMES[k].split("-")[1][0]]
        stripes = ((coord + rng.integers(period)) // period) % 2          # random phase per image
        out[i] = COLOURS[k][:, None, None] * (0.5 + 0.5 * stripes)
    out += rng.normal(0, 25, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_file(path, n):
    y = rng.integers(0, 10, n)
    record = np.concatenate([y[:, None].astype(np.uint8), images(y).reshape(n, 3072)], axis=1)
    record.tofile(path)                       # n records of 1 label byte + 3072 pixel bytes


folder = data_dir / "cifar-10-batches-bin"
folder.mkdir(parents=True)
for i in range(1, 6):
    write_file(folder / f"data_batch_{i}.bin", 512 // 5 + (i <= 512 % 5))   # 512 training images
write_file(folder / "test_batch.bin", 200)
(folder / "batches.meta.txt").write_text("\n".join(NAMES) + "\n")
print("wrote", sorted(p.name for p in folder.iterdir()), "into", folder)
print("record size:", (folder / "test_batch.bin").stat().st_size // 200, "bytes")
assert (folder / "test_batch.bin").stat().st_size == 200 * 3073      # 1 label byte + 3072 pixels


# %% [markdown]
# ## 2. Reading it back, normalisation, augmentation
#
# Explained in [chapter 11](../docs/11-training.md).

# %%
data = load_cifar10(data_dir, download=False)
print("\nx_train", data.x_train.shape, data.x_train.dtype, "y_train", data.y_train.shape,
      "x_test", data.x_test.shape, "classes", data.classes[:3], "...")
mean, std = channel_stats(data.x_train)
print("training-set mean", np.round(mean, 4), "std", np.round(std, 4))
xb, yb = next(iterate_batches(data.x_train, data.y_train, 8, mean, std, augment=True, seed=0, epoch=0))
again, _ = next(iterate_batches(data.x_train, data.y_train, 8, mean, std, augment=True, seed=0, epoch=0))
other, _ = next(iterate_batches(data.x_train, data.y_train, 8, mean, std, augment=True, seed=0, epoch=1))
print("augmented batch", xb.shape, xb.dtype, "mean %.3f std %.3f" % (xb.mean(), xb.std()),
      "| same (seed, epoch) draws the same:", np.array_equal(xb, again),
      "| next epoch differs:", not np.array_equal(xb, other))
assert data.x_train.shape == (512, 3, 32, 32) and data.x_train.dtype == np.uint8 and data.classes == NAMES
assert np.allclose(mean, data.x_train.mean(axis=(0, 2, 3)) / 255)
assert xb.shape == (8, 3, 32, 32) and xb.dtype == np.float32
assert np.array_equal(xb, again) and not np.array_equal(xb, other)


# %% [markdown]
# ## 3. The learning-rate schedules (per iteration)
#
# Explained in [chapter 11](../docs/11-training.md).

# %%
steps, epochs = 16, 3                        # 512 images / batch 32 = 16 iterations per epoch
cosine = WarmupCosine(0.1, steps * epochs, warmup_steps=steps)
multi = he_multistep(0.1, steps, epochs)
print("\n" + cosine.describe())
print("   t:", " ".join(f"{t:6d}" for t in (0, 7, 15, 16, 24, 32, 47)))
print("  lr:", " ".join(f"{cosine(t):6.4f}" for t in (0, 7, 15, 16, 24, 32, 47)))
print(multi.describe())
assert cosine(0) == 0.1 / steps and cosine(steps - 1) == 0.1 and 0 < cosine(steps * epochs - 1) < 1e-3
assert multi(0) == 0.1 and abs(multi(steps * epochs - 1) - 0.001) < 1e-12


# %% [markdown]
# ## 4. Training
#
# Explained in [chapter 11](../docs/11-training.md).

# %%
config = TrainConfig(out=str(work / "run"), model="se_resnet8", widths=(8, 16, 16), se_reduction=4,
                     epochs=epochs, batch_size=32, eval_batch_size=100, lr=0.1, data_dir=str(data_dir),
                     download=False, quiet=True)
print("\ntraining", config.model, "with widths", config.widths)
final = train(config)
print("returned:", {k: round(final[k], 4) for k in ("train_acc", "test_acc")}, "per class:",
      np.round(final["per_class_acc"], 2))
print("files:", sorted(p.name for p in (work / "run").iterdir()))
for line in (work / "run" / "metrics.jsonl").read_text().splitlines():
    m = json.loads(line)
    print(f"  metrics.jsonl: epoch {m['epoch']} train_acc {m['train_acc']:.3f} test_acc {m['test_acc']:.3f} lr {m['lr']:.4f}")
assert sorted(p.name for p in (work / "run").iterdir()) == ["checkpoint.npz", "config.json", "metrics.jsonl"]
assert m["epoch"] == epochs and final["test_acc"] > 0.5       # ten easy classes: far above chance (0.1)


# %% [markdown]
# ## 5. Evaluating a checkpoint, by hand and through the CLI
#
# Explained in [chapter 11](../docs/11-training.md).

# %%
arrays, meta = read_checkpoint_meta(work / "run" / "checkpoint.npz")
print("\ncheckpoint: epoch", meta["epoch"], "iteration", meta["iteration"], "|",
      sum(k.startswith("model.") for k in arrays), "model arrays,",
      sum(k.startswith("optim.") for k in arrays), "optimiser arrays | mean", np.round(meta["mean"], 4))
model = models.from_config(meta["model_config"])
model.load_state_dict(split_prefixed(arrays, "model"))
loss, acc, _ = evaluate(model, data.x_test, data.y_test, meta["mean"], meta["std"])
print(f"evaluate() on the reloaded model: test accuracy {acc:.4f} (training reported {final['test_acc']:.4f})")
assert meta["epoch"] == epochs and meta["iteration"] == steps * epochs and acc == final["test_acc"]
print("$ npse evaluate RUN --data-dir DATA --no-download")
assert cli.main(["evaluate", str(work / "run"), "--data-dir", str(data_dir), "--no-download"]) == 0


# %% [markdown]
# ## 6. An interrupted run, resumed: the same numbers, bit for bit
#
# Explained in [chapter 11](../docs/11-training.md).

# %%
class Crash(Exception):
    """Stands in for a crash (or Ctrl-C) right after the checkpoint of epoch 2 was written."""


def log_and_crash(line):
    print(" ", line)
    if line.startswith("epoch 2/"):
        raise Crash


try:
    train(TrainConfig(**{**vars(config), "out": str(work / "crashed")}), log=log_and_crash)
except Crash:
    print("  ... the run stopped after epoch 2")
# The training options come from the checkpoint. Of the run-time options, the data directory and
# the evaluation batch size are kept in the checkpoint as well and restored unless given again (a
# different eval_batch_size would change the last bits of test_loss, since the sum over the test
# set is taken in other pieces); download, quiet and backend are not kept: give them again.
resumed = resume_config(work / "crashed", download=False, quiet=True)
print("resuming with", {k: getattr(resumed, k) for k in ("out", "resume", "epochs", "data_dir",
                                                          "eval_batch_size")})
assert resumed.data_dir == str(data_dir) and resumed.eval_batch_size == config.eval_batch_size
train(resumed)
a = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
b = [json.loads(line) for line in (work / "crashed" / "metrics.jsonl").read_text().splitlines()]
strip = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "images_per_s")} for m in ms]  # noqa: E731
print("metrics identical to the uninterrupted run:", strip(a) == strip(b))
w_a, _ = read_checkpoint_meta(work / "run" / "checkpoint.npz")
w_b, _ = read_checkpoint_meta(work / "crashed" / "checkpoint.npz")
print("all", len(w_a), "checkpoint arrays identical:", all(np.array_equal(w_a[k], w_b[k]) for k in w_a))
assert strip(a) == strip(b) and all(np.array_equal(w_a[k], w_b[k]) for k in w_a)
shutil.rmtree(work)
print("\nremoved", work)
