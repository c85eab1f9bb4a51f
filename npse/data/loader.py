"""A shuffling batch iterator, reproducible from (seed, epoch).

All randomness of an epoch -- the shuffle and the augmentation -- comes from one host generator
``epoch_rng(seed, epoch)``. A run resumed at epoch e therefore draws exactly what the
uninterrupted run drew at epoch e, and a NumPy run and a CuPy run draw the same numbers.
"""
from __future__ import annotations

import numpy

from npse import backend
from npse.data.transforms import draw_augmentation, normalize, random_crop_flip


def epoch_rng(seed: int, epoch: int) -> numpy.random.Generator:
    """The host generator for epoch ``epoch`` of a run seeded with ``seed``."""
    return numpy.random.default_rng(numpy.random.SeedSequence([int(seed), int(epoch)]))


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches iterate_batches yields for ``n`` samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(x_uint8, y, batch_size: int, mean, std, *, shuffle: bool = True,
                    augment: bool = False, seed: int = 0, epoch: int = 0,
                    drop_last: bool = False, dtype=None, pad: int = 4):
    """Yield (xb, yb) batches for one epoch.

    x_uint8: (N, C, H, W) uint8, normally on the host.  y: (N,) integer labels.
    xb: (B, C, H, W) float (dtype, default float32) on the active backend, normalised with
    mean/std and, if ``augment``, zero-padded by ``pad`` (zero = the mean colour after
    normalisation), randomly cropped and flipped.  yb: (B,) int64 on the active backend.

    From ``epoch_rng(seed, epoch)`` the permutation is drawn first (if ``shuffle``), then the
    crop offsets and flips for all N positions of the epoch (if ``augment``), so the draws do
    not depend on batch_size. The last short batch is dropped if ``drop_last``.
    """
    n = len(y)
    if x_uint8.shape[0] != n:
        raise ValueError(f"iterate_batches: {x_uint8.shape[0]} images but {n} labels")
    count = num_batches(n, batch_size, drop_last)
    xp = backend.module()
    rng = epoch_rng(seed, epoch)
    order = rng.permutation(n) if shuffle else numpy.arange(n)
    if augment:
        offsets_y, offsets_x, flips = draw_augmentation(rng, n, pad)
    y_host = backend.to_host(y)
    on_device = backend.backend_of(x_uint8) == "cupy"
    for b in range(count):
        idx = order[b * batch_size:(b + 1) * batch_size]
        # Gather the uint8 batch where the data lives; normalize then moves only these bytes.
        xb = x_uint8[backend.to_device(idx, "cupy") if on_device else idx]
        xb = normalize(xb, mean, std, dtype=dtype, xp=xp)
        if augment:
            sl = slice(b * batch_size, b * batch_size + len(idx))
            xb = random_crop_flip(xb, offsets_y[sl], offsets_x[sl], flips[sl], pad=pad)
        yb = xp.asarray(y_host[idx].astype(numpy.int64))
        yield xb, yb


def subset(x, y, n, seed: int = 0):
    """A fixed, class-balanced subset of ``n`` samples (for ``--train-subset N``).

    Samples are taken round-robin over the classes in a seeded random order: each class gives
    n // K or n // K + 1 samples (K classes present); a class that runs out leaves its share to
    the others. The chosen samples keep their original order. ``n`` None or >= len(y) gives
    (x, y) unchanged. Returns (x_sub, y_sub) on the host.
    """
    y = backend.to_host(y)
    if n is None or n >= len(y):
        return x, y
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    rng = numpy.random.default_rng(int(seed))
    perm = rng.permutation(len(y))
    labels = y[perm]
    # rank[j] = how many samples of the same class come before perm[j] in the random order.
    by_class = numpy.argsort(labels, kind="stable")
    sorted_labels = labels[by_class]
    starts = numpy.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = numpy.empty(len(y), dtype=numpy.int64)
    rank[by_class] = numpy.arange(len(y)) - starts
    # Smallest ranks first = one of each class, then a second of each, ...
    chosen = numpy.sort(perm[numpy.argsort(rank, kind="stable")[:n]])
    return x[chosen], y[chosen]
