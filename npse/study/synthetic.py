"""--quick without CIFAR-10: a small synthetic data set in the official binary layout."""
from __future__ import annotations

from pathlib import Path


def ensure_quick_data(data_dir, out: Path, log=print):
    """--quick: the CIFAR-10 found as npse's loader would find it, else tiny synthetic data
    written in the official binary layout under ``OUT/_data`` (and say so)."""
    from ..data.cifar import CIFAR10_DIR, CIFAR10_TEST_FILES, CIFAR10_TRAIN_FILES, \
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
