"""`npse bench`: how fast is a training step, where does its time go, and how does it compare?

Prints, for each model and batch size: training-step and evaluation images/s, milliseconds per
step and the peak memory of a training step; the scaling ratios (batch 512 vs 128, SE-ResNet-56 vs
-20); a per-layer table of forward and backward times; and a profile that sorts the step's time
into im2col, GEMM, col2im, BatchNorm, element-wise work, the optimizer and Python overhead.
When PyTorch is installed, the same network runs in PyTorch in the same process with the same
number of threads, and the ratios are printed.  Timings are medians over repeats, npse's and
PyTorch's steps timed in turns (:func:`interleaved_times`); absolute numbers vary between runs on
shared machines, ratios measured side by side are what to compare.
Chapter: docs/B-speed.md.
"""
from __future__ import annotations

import cProfile
import os
import platform
import pstats
import statistics
import sys
import time
import tracemalloc

import numpy

from . import backend
from .fast.policy import ExecutionPolicy, policy_from_memory_format
from .fast.registry import CATEGORIES, profile_category
from .fast.threads import get_num_threads, set_num_threads, usable_cores, using as using_threads
from .step import Setup


def _sync(xp):
    if xp.__name__.startswith("cupy"):
        xp.cuda.Device().synchronize()


def _median_time(fn, repeats, xp, warmup=2):
    if xp.__name__.startswith("cupy"):
        warmup = max(warmup, 5)     # kernel compilation, the memory pool, the GPU clock ramping up
    for _ in range(warmup):
        fn()
    _sync(xp)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _torch_steps(config, batch, device):
    """(train_step, eval_step, sync) of the same network in PyTorch, on random data."""
    import torch
    from .torch_reference import build_torch_model
    model = build_torch_model(dict(config, dtype="float32")).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def evaluate():
        model.eval()
        with torch.no_grad():
            model(x)

    return train, evaluate, sync


def interleaved_times(steps, repeats, warmup=2, pause=0.0):
    """Median seconds of each ``(fn, sync)`` or ``(fn, sync, before)`` in ``steps``, timed in
    turns: one run of each per round, ``repeats`` rounds; ``before()``, untimed, precedes each
    run (the bench sets the step's thread count there). On a shared machine speed drifts over
    seconds; taking turns lets every step see the same drift, so their ratios hold better than
    those of back-to-back medians.

    ``pause`` seconds of sleep before each timed run: BLAS and OpenMP worker threads keep spinning
    for a while after their library's last call (Intel's OpenMP for 200 ms by default), and can
    otherwise take a core from the next step when it belongs to the other library.
    """
    steps = [tuple(step) + (lambda: None,) * (3 - len(step)) for step in steps]
    for fn, sync, before in steps:
        before()
        for _ in range(warmup):
            fn()
        sync()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for (fn, sync, before), kept in zip(steps, times):
            before()
            time.sleep(pause)
            t = time.perf_counter()
            fn()
            sync()
            kept.append(time.perf_counter() - t)
    return [statistics.median(kept) for kept in times]


def _peak_step_memory(name, batch, policy):
    """Peak bytes held during model set-up plus two training steps.

    NumPy: the peak that tracemalloc saw. CuPy: what its memory pool holds afterwards; the pool
    keeps every block it once needed, so this is the peak (plus rounding of block sizes).
    """
    xp = backend.module()
    if xp.__name__.startswith("cupy"):
        pool = xp.get_default_memory_pool()
        pool.free_all_blocks()
        setup = Setup(name, batch, policy)
        setup.train_step()
        setup.train_step()
        _sync(xp)
        held = pool.total_bytes()
        del setup
        pool.free_all_blocks()
        return held
    tracemalloc.start()
    try:
        setup = Setup(name, batch, policy)
        setup.train_step()
        setup.train_step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _layer_inputs(setup, layers):
    """{name: a copy of the input each of ``layers`` ((name, module) pairs) receives in one
    training-mode forward pass of the whole network on the setup's batch}, recorded by forward
    hooks (:meth:`npse.nn.Module.register_forward_hook`)."""
    inputs = {}
    handles = [m.register_forward_hook(
        lambda m, x, y, _name=name: inputs.setdefault(_name, x.copy(order="K")))   # stored as received
        for name, m in layers]
    try:
        setup.model.train()
        setup.model(setup.x)
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def conv_gemm_floor(setup, repeats=3):
    """Seconds per training step that the convolutions' matrix products alone take.

    For every Conv2d of the model, at the input shape and memory format it sees in the network,
    the products it runs there (:func:`npse.fast.cost.conv_products`, by the formulation in
    force) are timed on their own, on random arrays with kept outputs. Their sum is what a step
    built on these products cannot go below, however lean everything around them is.
    """
    from .fast.cost import conv_products
    from .fast.layout import is_channels_last
    from .models.summary import leaf_modules
    from .nn import Conv2d
    xp = setup.xp
    convs = [(n, m) for n, m in leaf_modules(setup.model) if isinstance(m, Conv2d)]
    inputs = _layer_inputs(setup, convs)
    rng = numpy.random.default_rng(0)

    def rand(shape):
        return xp.asarray(rng.standard_normal(shape, dtype=numpy.float32))
    total = 0.0
    for i, (name, m) in enumerate(convs):
        x = inputs[name]
        # the first convolution (the stem) needs no input gradient in training
        for a_shape, b_shape, times in conv_products(m, x.shape, is_channels_last(x), input_grad=i > 0):
            a, b = rand(a_shape), rand(b_shape)
            out = xp.matmul(a, b)                # the kept output, made once outside the timing
            total += times * _median_time(lambda: xp.matmul(a, b, out=out), repeats, xp)
    return total


def layer_times(setup, repeats=3):
    """[(name, type, input shape, forward ms, backward ms)] for every leaf module, each timed alone
    on the input it receives inside the network."""
    from .models.summary import leaf_modules
    leaves = [(n, m) for n, m in leaf_modules(setup.model) if n]
    inputs = _layer_inputs(setup, leaves)
    rows = []
    for name, m in leaves:
        x = inputs.get(name)
        if x is None:
            continue
        y = m(x)
        dy = setup.xp.ones_like(y)
        fwd = _median_time(lambda: m(x), repeats, setup.xp)

        def fwd_bwd():
            m(x)
            m.backward(dy)
        both = _median_time(fwd_bwd, repeats, setup.xp)
        rows.append((name, type(m).__name__, "x".join(map(str, x.shape)), fwd * 1e3, max(both - fwd, 0.0) * 1e3))
    return rows


def npse_modules() -> dict:
    """{real path of a loaded npse module's file: the module's name}."""
    return {os.path.realpath(m.__file__): name for name, m in list(sys.modules.items())
            if (name == "npse" or name.startswith("npse.")) and getattr(m, "__file__", None)}


def _category(filename, funcname, modules):
    """The profile category of an npse function (None: Python overhead, or not npse's), as the
    registry of npse.fast declares it for the function's module (``modules``: npse_modules())."""
    module = modules.get(os.path.realpath(filename)) if filename != "~" else None
    return None if module is None else profile_category(module, funcname)


def profile_step(setup, steps=2):
    """{category: seconds per step}: cProfile's own-time of each npse function, with the time of
    the NumPy/CuPy built-ins it calls charged to it; whatever is left is Python overhead."""
    setup.train_step()
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.enable()
    for _ in range(steps):
        setup.train_step()
    profiler.disable()
    _sync(setup.xp)
    total = (time.perf_counter() - t) / steps
    stats = pstats.Stats(profiler).stats
    modules = npse_modules()
    spent = dict.fromkeys(CATEGORIES, 0.0)
    for (filename, _, funcname), (_, _, own, _, callers) in stats.items():
        cat = _category(filename, funcname, modules)
        if cat is not None:
            spent[cat] += own / steps
        elif filename == "~" or "numpy" in filename or "cupy" in filename:
            for (cfile, _, cfunc), edge in callers.items():   # built-ins: charge the caller
                ccat = _category(cfile, cfunc, modules)
                if ccat is not None:
                    spent[ccat] += edge[2] / steps
    spent["Python overhead"] = max(0.0, total - sum(v for k, v in spent.items() if k != "Python overhead"))
    return total, spent


def host_and_device_time(setup, repeats=3):
    """(host, whole) seconds per training step on the GPU: the time Python takes to issue one
    step (the call returns before the GPU finishes), and the time until the GPU is done.
    host close to whole means the step is launch-bound."""
    xp = setup.xp
    setup.train_step()
    _sync(xp)
    hosts, wholes = [], []
    for _ in range(max(repeats, 3)):
        t = time.perf_counter()
        setup.train_step()
        hosts.append(time.perf_counter() - t)
        _sync(xp)
        wholes.append(time.perf_counter() - t)
    return statistics.median(hosts), statistics.median(wholes)


def machine_description():
    blas = ""
    try:
        cfg = numpy.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "")
    except Exception:
        pass
    gpu = ""
    if backend.get_backend() == "cupy":
        import cupy
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        gpu = f", {name.decode() if isinstance(name, bytes) else name}, CuPy {cupy.__version__}"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"NumPy {numpy.__version__}{' (' + blas + ')' if blas else ''}, backend {backend.get_backend()}{gpu}")


def policy_of(args) -> ExecutionPolicy:
    """The execution policy that ``--memory-format``, ``--no-fused`` and ``--reference`` name."""
    return policy_from_memory_format(args.memory_format, fused=not args.no_fused,
                                     reference=args.reference)


def run_benchmarks(args, policy: ExecutionPolicy | None = None) -> int:
    """Everything ``npse bench`` prints, for its parsed options ``args``; ``policy`` (default:
    the one the options name) is what every model timed here runs under. The active backend is
    restored afterwards."""
    policy = policy_of(args) if policy is None else policy
    with backend.using(args.backend or backend.get_backend()), using_threads(get_num_threads()):
        model_names, batches, repeats = _request(args)
        counts = list(getattr(args, "threads", None) or [usable_cores()])
        if backend.get_backend() == "cupy":
            counts = counts[:1]            # the GPU runs each operation whole: threads do not apply
        use_torch = not args.no_torch and _torch_found()
        print(f"machine: {machine_description()}")
        print(policy.describe())
        xp = backend.module()
        print(f"activations stored {'channels last' if policy.stores_channels_last(xp) else 'contiguous'}"
              f" (--memory-format {args.memory_format}); threads: {', '.join(map(str, counts))}\n")
        results, torch_train = _throughput_table(model_names, batches, repeats, policy,
                                                 use_torch, not args.no_memory, counts)
        _scaling_lines(model_names, batches, results, counts)
        first, batch = model_names[0], (128 if 128 in batches else batches[0])
        if not args.no_layers:
            set_num_threads(counts[0])
            _layer_table(Setup(first, batch, policy), first, batch, repeats)
        if not args.no_profile:
            for n in counts:
                set_num_threads(n)
                _profile_report(first, batch, batches, repeats, policy,
                                torch_train.get((first, n)), n)
    return 0


def _request(args):
    """``(model names, batch sizes, repeats)`` the options ask for, checked."""
    from . import models
    model_names = ["se_resnet20"] if args.quick else list(args.models)
    batches = [128] if args.quick else list(args.batch_sizes)
    repeats = 2 if args.quick else args.repeats
    for m in model_names:
        if m not in models.MODELS:
            raise ValueError(f"unknown model {m!r}; choose from {', '.join(models.MODELS)}")
    if any(b < 2 for b in batches) or repeats < 1:
        raise ValueError("batch sizes must be >= 2 and --repeats >= 1")
    return model_names, batches, repeats


def _torch_found() -> bool:
    """Whether PyTorch can run the comparison (at each of the bench's thread counts)."""
    try:
        import torch
    except ImportError:
        print("PyTorch not installed: no comparison (it is never needed by npse)")
        return False
    print(f"PyTorch {torch.__version__} found: running the same network in it, at the same "
          f"thread counts")
    return True


def _with_threads(n, torch=False):
    """The untimed ``before`` of a step at ``n`` threads: npse's setting, or PyTorch's."""
    if torch:
        import torch as _torch
        return lambda: _torch.set_num_threads(n)
    return lambda: set_num_threads(n)


def _throughput_table(model_names, batches, repeats, policy, use_torch, memory, counts=(1,)):
    """Print images/s (and peak memory, and PyTorch's) of every model x batch size x thread
    count, the thread counts timed in turns; return ``({(name, batch, threads): (seconds per
    training step, per evaluation step, PyTorch's two or None)}, {(name, threads): PyTorch's
    training img/s at batch 128})``."""
    from . import models
    xp = backend.module()
    on_gpu = backend.get_backend() == "cupy"
    header = f"{'model':<14}{'batch':>6}{'threads':>8}{'train img/s':>13}{'eval img/s':>12}{'ms/step':>10}"
    header += f"{'peak MB':>9}" if memory else ""
    header += f"{'torch train':>13}{'torch eval':>12}{'train x':>9}{'eval x':>8}" if use_torch else ""
    print(header)
    results, torch_train = {}, {}
    for name in model_names:
        for batch in batches:
            setup = Setup(name, batch, policy)
            sync = (lambda: _sync(xp))
            steps = []
            for n in counts:
                steps += [(setup.train_step, sync, _with_threads(n)),
                          (setup.eval_step, sync, _with_threads(n))]
            if use_torch:
                t_train, t_eval, t_sync = _torch_steps(models.build_model(name).config, batch,
                                                       "cuda" if on_gpu else "cpu")
                for n in counts:
                    steps += [(t_train, t_sync, _with_threads(n, torch=True)),
                              (t_eval, t_sync, _with_threads(n, torch=True))]
            times = interleaved_times(steps, repeats, warmup=5 if on_gpu else 2,
                                      pause=0.5 if use_torch and not on_gpu else 0.0)
            for i, n in enumerate(counts):
                step, ev = times[2 * i:2 * i + 2]
                ours = batch / step, batch / ev
                theirs = times[2 * len(counts) + 2 * i:2 * len(counts) + 2 * i + 2] if use_torch else None
                results[(name, batch, n)] = (step, ev) + (tuple(theirs) if theirs else (None, None))
                line = (f"{name:<14}{batch:>6}{n:>8}{ours[0]:>13.1f}{ours[1]:>12.1f}"
                        f"{step * 1e3:>10.0f}")
                if memory:
                    set_num_threads(n)
                    line += f"{_peak_step_memory(name, batch, policy) / 2**20:>9.0f}"
                if theirs:
                    if batch == (128 if 128 in batches else batches[0]):
                        torch_train[(name, n)] = batch / theirs[0]
                    line += (f"{batch / theirs[0]:>13.1f}{batch / theirs[1]:>12.1f}"
                             f"{theirs[0] / step:>9.2f}{theirs[1] / ev:>8.2f}")
                print(line, flush=True)
            del setup, steps
    print()
    return results, torch_train


def _scaling_lines(model_names, batches, results, counts=(1,)) -> None:
    """The gain from more threads (each count against the first), PyTorch's beside it; then
    the cost of a bigger batch and of the deeper network, at the first thread count."""
    for (name, batch, n), (step, ev, t_step, t_ev) in results.items():
        if n == counts[0]:
            continue
        step1, ev1, t_step1, t_ev1 = results[(name, batch, counts[0])]
        line = (f"{name}, batch {batch}: {counts[0]} -> {n} threads: training x{step1 / step:.2f}, "
                f"evaluation x{ev1 / ev:.2f}")
        if t_step is not None:
            line += f" (PyTorch x{t_step1 / t_step:.2f}, x{t_ev1 / t_ev:.2f})"
        print(line)
    n = counts[0]
    for name in model_names:
        if (name, 128, n) in results and (name, 512, n) in results:
            print(f"{name}: one step at batch 512 costs "
                  f"{results[(name, 512, n)][0] / results[(name, 128, n)][0]:.2f}x "
                  f"one at batch 128 (4x the work)")
    for batch in batches:
        if ("se_resnet56", batch, n) in results and ("se_resnet20", batch, n) in results:
            print(f"batch {batch}: SE-ResNet-56 step costs "
                  f"{results[('se_resnet56', batch, n)][0] / results[('se_resnet20', batch, n)][0]:.2f}x "
                  f"SE-ResNet-20's (about 2.8x the work)")


def _layer_table(setup, name, batch, repeats) -> None:
    print(f"\nper layer, {name}, batch {batch} (each layer timed alone; ms)")
    print(f"{'layer':<26}{'type':<18}{'input':<16}{'forward':>9}{'backward':>10}")
    rows = layer_times(setup, repeats)
    for n, t, shape, f, b in rows:
        print(f"{n:<26}{t:<18}{shape:<16}{f:>9.2f}{b:>10.2f}")
    print(f"{'sum':<60}{sum(r[3] for r in rows):>9.1f}{sum(r[4] for r in rows):>10.1f}")


def _profile_report(first, batch, batches, repeats, policy, torch_img_s, threads=1) -> None:
    """The host/device split (GPU), the convolutions' GEMM floor and the profile by category."""
    xp = backend.module()
    on_gpu = backend.get_backend() == "cupy"
    setup = Setup(first, batch, policy)
    if on_gpu:
        for b in sorted(set(batches)):
            host, whole = host_and_device_time(Setup(first, b, policy), repeats)
            print(f"\n{first}, batch {b}: the host issues a training step in {host * 1e3:.1f} ms; "
                  f"the step takes {whole * 1e3:.1f} ms until the GPU is done"
                  + (" (launch-bound: the GPU waits for Python)" if host > 0.8 * whole else ""))
    floor = conv_gemm_floor(setup, repeats) / threads      # BLAS on one core, shared out evenly
    step = _median_time(setup.train_step, repeats, xp)
    shared = f", shared evenly across {threads} threads" if threads > 1 else ""
    print(f"\n{first}, batch {batch}: the convolutions' matrix products alone (each timed on its own{shared}) "
          f"take {floor * 1e3:.0f} ms of a {step * 1e3:.0f} ms training step ({100 * floor / step:.0f}%); "
          f"with nothing else, a step would run at {batch / floor:.0f} img/s"
          + (f" ({batch / floor / torch_img_s:.2f}x PyTorch)" if torch_img_s else ""))
    total, spent = profile_step(setup)
    print(f"\nprofile of one training step, {first}, batch {batch}"
          + (f", {threads} thread{'s' if threads > 1 else ''}" if not on_gpu else "") + f": {total * 1e3:.0f} ms (under cProfile)"
          + ("; on the GPU these are host-side times (issuing the work), not kernel times" if on_gpu else "")
          + ("; the calling thread's view: its own slices, and its wait for the others'"
             if threads > 1 and not on_gpu else ""))
    for cat in CATEGORIES:
        print(f"  {cat:<42}{spent[cat] * 1e3:>8.1f} ms  {100 * spent[cat] / total:>5.1f}%")
