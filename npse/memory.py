"""How much memory a training step needs, and how much there is: ``npse train`` refuses a batch
size that cannot fit before it starts (docs/11-training.md).

The estimate is measured, not derived: one training step (forward and backward) and one evaluation
pass of a fresh copy of the model at batch 2 and at batch 4. Activations, im2col matrices and
gradients of activations all grow in proportion to the batch, so the two points give a line
``fixed + per_image * batch``.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy

from . import backend
from .models.loading import parameter_bound
from .nn import cross_entropy_backward, cross_entropy_forward, no_grad
from .fast import FAST
from .fast.workspace import clear_all as clear_workspaces


def available_memory() -> int | None:
    """Bytes that new arrays can still get, or None where that is unknown.

    CuPy: the GPU's free memory plus what CuPy's pool holds unused. NumPy: the smaller of the
    kernel's MemAvailable and what the container's memory limit (cgroup v2 or v1) leaves.
    """
    if backend.get_backend() == "cupy":
        import cupy
        free_on_device = cupy.cuda.runtime.memGetInfo()[0]
        return int(free_on_device) + int(cupy.get_default_memory_pool().free_bytes())
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    # cgroup v2, then v1: the limit minus what processes hold (page cache is left out: the
    # kernel reclaims it before it fails an allocation).
    for limit_file, stat_file, key in (("memory.max", "memory.stat", "anon"),
                                       ("memory/memory.limit_in_bytes", "memory/memory.stat",
                                        "total_rss")):
        try:
            limit = int(Path("/sys/fs/cgroup", limit_file).read_text())
            stats = dict(line.split() for line in
                         Path("/sys/fs/cgroup", stat_file).read_text().splitlines())
            found.append(max(0, limit - int(stats[key])))
            break
        except (OSError, ValueError, KeyError):
            continue
    return min(found) if found else None


def _step_peak(model, batch: int, image_shape, training: bool) -> int:
    """Peak bytes newly allocated by one training step (forward and backward) or one evaluation
    forward pass of ``model`` on a batch of ``batch`` images: tracemalloc on the host (NumPy
    reports its arrays to it), CuPy's memory pool on a GPU."""
    xp = backend.module()
    x = xp.zeros((batch,) + tuple(image_shape), dtype=model.dtype)
    y = xp.zeros(batch, dtype=xp.int64)

    def step():
        if training:
            model.train()
            _, cache = cross_entropy_forward(model(x), y)
            model.backward(cross_entropy_backward(cache), input_grad=False)
        else:
            model.eval()
            with no_grad():
                model(x)

    clear_workspaces()
    if xp is not numpy:
        pool = xp.get_default_memory_pool()
        pool.free_all_blocks()
        before = pool.total_bytes()
        step()
        xp.cuda.Device().synchronize()
        peak = pool.total_bytes() - before      # the pool keeps every block the step needed
        pool.free_all_blocks()
        return peak
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def estimate_memory(model_config: dict, image_shape, policy=None) -> dict:
    """A linear model of the memory one step needs, from steps measured at batch 2 and 4 on a
    fresh copy of the model (a fraction of a second): for ``"train"`` and ``"eval"``, the pair
    ``(fixed, per_image)`` in bytes. Activations grow in proportion to the batch: for
    SE-ResNet-20 on NumPy the prediction for batch 128 was within 1% of the measured peak.
    ``policy``: the run's execution policy (default: npse.fast.FAST, what npse train uses)."""
    from .models import from_config   # late: npse's command line must start without it

    probe = from_config(model_config)      # built as train() builds the run's model
    probe.to(backend.get_backend())
    probe.use_policy(FAST if policy is None else policy)
    model = {}
    for name, training in (("train", True), ("eval", False)):
        p2, p4 = (_step_peak(probe, b, image_shape, training) for b in (2, 4))
        per_image = max(0.0, (p4 - p2) / 2)
        model[name] = (max(0.0, p2 - 2 * per_image), per_image)
    clear_workspaces()      # the probe's small buffers are of no use to the run
    return model


def check_memory(model_config: dict, image_shape, batch_size: int, n_train: int,
                 eval_batch_size: int, n_test: int, policy=None) -> None:
    """Refuse (MemoryError) batch sizes whose training step or evaluation pass cannot fit in the
    available memory, with the estimate and the largest batch size that would fit. A batch size
    larger than its data set (``n_train``, ``n_test`` images) means the whole set at once."""
    free = available_memory()
    if free is None:
        return
    estimate = estimate_memory(model_config, image_shape, policy)
    # The optimiser's momentum buffer and two work arrays per parameter come on top.
    itemsize = numpy.dtype(model_config.get("dtype", "float32")).itemsize
    optimiser = 3 * parameter_bound(model_config) * itemsize
    for name, option, batch, n in (("train", "--batch-size", batch_size, n_train),
                                   ("eval", "--eval-batch-size", eval_batch_size, n_test)):
        fixed, per_image = estimate[name]
        fixed += optimiser if name == "train" else 0
        need = fixed + per_image * min(batch, n)
        if need <= free:
            continue
        fits = int((free - fixed) // per_image) if per_image > 0 else 0
        what = "a training step" if name == "train" else "an evaluation pass"
        advice = (f"{option} {fits} or less would fit" if fits >= 1 else
                  "not even a batch of 1 fits; free some memory or choose a smaller model")
        raise MemoryError(
            f"{what} at {option} {batch} needs about {_gib(need)} ({_gib(fixed)} + "
            f"{per_image / 2**20:.1f} MiB per image, measured at batch 2 and 4), but only "
            f"{_gib(free)} is available; {advice}")


def _gib(n) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
