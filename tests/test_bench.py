"""`npse bench` runs end to end on a tiny setting and prints every section (no timing asserted);
its profile sorts a step's time as it always did."""
import cProfile
import os
import pstats

import pytest

from npse.cli import main


def test_bench_prints_its_tables(capsys):
    status = main(["bench", "--models", "se_resnet8", "--batch-sizes", "4,8", "--repeats", "1",
                   "--no-torch"])
    out = capsys.readouterr().out
    assert status == 0
    assert "train img/s" in out and "peak MB" in out
    assert "se_resnet8         4" in out and "se_resnet8         8" in out
    assert "per layer, se_resnet8" in out and "layer1.0.se" in out and "layer1.0.conv1" in out
    assert "profile of one training step" in out and "Python overhead" in out
    assert "activations stored channels last (--memory-format auto)" in out
    assert "execution policy 'fast': activations channels last on NumPy" in out


def test_bench_reference_option(capsys):
    from npse import backend
    before = backend.get_backend()
    status = main(["bench", "--models", "se_resnet8", "--batch-sizes", "4", "--repeats", "1",
                   "--no-torch", "--no-memory", "--reference"])
    out = capsys.readouterr().out
    assert status == 0 and "execution policy 'reference'" in out and "activations stored contiguous" in out
    assert backend.get_backend() == before


def test_bench_memory_format_option(capsys):
    status = main(["bench", "--models", "se_resnet8", "--batch-sizes", "4", "--repeats", "1",
                   "--no-torch", "--no-layers", "--no-profile", "--no-memory",
                   "--memory-format", "contiguous"])
    assert status == 0
    assert "activations stored contiguous (--memory-format contiguous)" in capsys.readouterr().out


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--models", "resnet21", "--no-torch"]) == 1
    assert "unknown model 'resnet21'" in capsys.readouterr().err


def test_the_gemm_floor_counts_the_products_of_each_convolution(monkeypatch):
    """conv_gemm_floor times, for every Conv2d, its forward, weight-gradient and input-gradient
    products at the shapes and in the formulation the network gives them (checked here by counting
    the shapes; the stem convolution has no input gradient in training)."""
    from npse import bench
    from npse.fast import FAST
    seen = []
    monkeypatch.setattr(bench, "_median_time", lambda fn, repeats, xp: seen.append(fn()) or 0.25)
    # Channels last (NumPy's default). Stride-1 convolutions with <= 16 channels by kernel rows:
    # 3 products each for y and dW (and dx); the others one product each.
    setup = bench.Setup("se_resnet8", 4, FAST)
    # stem 2 x 3, layer1's two convs 3 x 3 each, then four convs 3 x 1
    assert bench.conv_gemm_floor(setup, repeats=1) == 0.25 * (2 * 3 + 2 * 3 * 3 + 4 * 3)
    # the stem (3 -> 16 channels, 32x32, by kernel rows): y per image, dW per image, no dx
    assert [a.shape for a in seen[:2]] == [(4, 32 * 32, 16), (4, 16, 3 * 3)]
    # the last convolution (64 -> 64 channels, 8x8 outputs): one patch row per output pixel
    assert [a.shape for a in seen[-3:]] == [(4 * 8 * 8, 64), (64, 576), (4 * 8 * 8, 64)]
    # Contiguous: one product per image at 32x32 and 16x16, one for the batch at 8x8.
    seen.clear()
    setup = bench.Setup("se_resnet8", 4, FAST.replace(memory_format="contiguous"))
    assert bench.conv_gemm_floor(setup, repeats=1) == 0.25 * (2 + 6 * 3)
    assert [a.shape for a in seen[:2]] == [(4, 16, 32 * 32), (4, 16, 27)]
    assert [a.shape for a in seen[-3:]] == [(64, 4 * 8 * 8), (64, 576), (64, 4 * 8 * 8)]


def test_interleaved_times_takes_turns_and_returns_medians():
    from npse import bench
    calls = []
    steps = [(lambda: calls.append("a"), lambda: None), (lambda: calls.append("b"), lambda: None)]
    times = bench.interleaved_times(steps, repeats=3, warmup=1)
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert calls == ["a", "b"] + ["a", "b"] * 3        # warm-up of each, then one of each per round


# The file-path rules npse bench sorted its profile by before its categories came from the
# registry of npse.fast (with layout.py and the fused SGD kernel at their places under fast/ now).
OLD_RULES = [
    ("fast/patches.py", None, "im2col"),
    ("nn/im2col.py", ("im2col", "windows", "pad2d"), "im2col"),
    ("nn/im2col.py", ("col2im",), "col2im"),
    ("fast/conv2d.py", None, "GEMM + layout copies"),
    ("nn/conv2d.py", ("conv2d_forward", "conv2d_backward"), "GEMM + layout copies"),
    ("fast/layout.py", None, "GEMM + layout copies"),
    ("nn/batchnorm2d.py", None, "BatchNorm"),
    ("fast/batchnorm2d.py", None, "BatchNorm"),
    ("fast/fused.py", None, "BatchNorm"),
    ("fast/reductions.py", ("channel_sum", "channel_dot"), "BatchNorm"),
    ("fast/reductions.py", ("spatial_dot", "spatial_mean"), "element-wise (ReLU, SE, pool, add, fc)"),
    ("fast/squeeze.py", None, "element-wise (ReLU, SE, pool, add, fc)"),
    ("nn/loss.py", None, "loss"),
    ("optim/sgd.py", None, "optimizer"),
    ("fast/sgd.py", None, "optimizer"),
    # added since those rules: the threads' slices (npse/fast/threads.py) and the ReLU and
    # residual sum by slices
    ("fast/elementwise.py", None, "element-wise (ReLU, SE, pool, add, fc)"),
    ("fast/threads.py", None, "threads (handing out slices, waiting)"),
]
OLD_ELEMENTWISE_FILES = ("nn/activations.py", "nn/se_block.py", "nn/pooling.py", "nn/linear.py",
                         "nn/shortcut.py", "nn/se_no_squeeze.py")


def old_category(filename, funcname):
    """The category the file-path rules gave a function (None: Python overhead)."""
    path = filename.replace(os.sep, "/")
    if "npse/" not in path:
        return None
    if path.endswith("fast/patches.py") and funcname in ("patch_rows_adjoint", "add_patch_rows"):
        return "col2im"
    for file, names, category in OLD_RULES:
        if path.endswith(file) and (funcname in names if names else funcname not in ("forward", "backward")
                                    or file.startswith("fast/")):
            return category
    if path.endswith(OLD_ELEMENTWISE_FILES) and funcname.endswith(("_forward", "_backward")):
        return "element-wise (ReLU, SE, pool, add, fc)"
    if path.endswith("models/resnet.py") and funcname in ("forward", "backward"):
        return "element-wise (ReLU, SE, pool, add, fc)"
    return None


@pytest.mark.parametrize("policy", ["fast", "reference"])
def test_the_profile_sorts_by_the_registry_as_the_file_rules_did(policy):
    """The profile of a tiny model's training step has the same category names as before, each
    but Python overhead gets time, and every function of the step lands where the old
    file-path rules put it (the registry now says where: npse.fast.registry.charge)."""
    from npse import bench
    from npse.fast import FAST, REFERENCE
    setup = bench.Setup("se_resnet8", 4, FAST if policy == "fast" else REFERENCE)
    total, spent = bench.profile_step(setup, steps=1)
    assert tuple(spent) == bench.CATEGORIES == (
        "im2col", "GEMM + layout copies", "col2im", "BatchNorm", "element-wise (ReLU, SE, pool, add, fc)",
        "loss", "optimizer", "threads (handing out slices, waiting)", "Python overhead")
    # at one thread nothing is handed out (the threads' category is tested in test_threads.py)
    timed = [c for c in bench.CATEGORIES[:-1] if not c.startswith("threads")]
    assert all(spent[c] > 0 for c in timed), spent
    profiler = cProfile.Profile()
    profiler.enable()
    setup.train_step()
    profiler.disable()
    modules = bench.npse_modules()
    found = {}
    for (filename, _, funcname) in pstats.Stats(profiler).stats:
        new = bench._category(filename, funcname, modules)
        assert new == old_category(filename, funcname), (filename, funcname)
        found[new] = found.get(new, 0) + 1
    assert set(found) - {"threads (handing out slices, waiting)"} == set(timed) | {None}


def test_bench_times_each_thread_count_and_prints_the_scaling(capsys):
    from npse.fast.threads import get_num_threads
    before = get_num_threads()
    status = main(["bench", "--models", "se_resnet8", "--batch-sizes", "4", "--repeats", "1",
                   "--no-torch", "--no-layers", "--no-memory", "--threads", "1,2"])
    out = capsys.readouterr().out
    assert status == 0
    assert "se_resnet8         4       1" in out and "se_resnet8         4       2" in out
    assert "se_resnet8, batch 4: 1 -> 2 threads: training x" in out
    assert "profile of one training step, se_resnet8, batch 4, 2 threads" in out
    assert "threads (handing out slices, waiting)" in out
    assert get_num_threads() == before                  # the setting is given back


@pytest.mark.parametrize("argv, message", [
    (["bench", "--threads", "0"], "expected comma-separated thread counts >= 1"),
    (["bench", "--threads", "1,x"], "expected comma-separated thread counts >= 1"),
    (["train", "--threads", "0"], "expected an integer >= 1"),
    (["evaluate", "run", "--threads", "-2"], "expected an integer >= 1"),
])
def test_threads_options_refuse_bad_counts_in_one_line(argv, message, capsys):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
