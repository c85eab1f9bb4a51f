"""NumPy against CuPy: the same network, seed and batch give the same numbers on both backends.

Skipped where CuPy or a GPU is absent (CI has neither). The layer tests of every other file also
run on CuPy there, through the ``backend_name`` fixture.
"""
import numpy as np
import pytest

from npse import backend, models, nn
from npse.gradcheck import relative_error
from npse.optim import SGD
from npse.step import train_step

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not backend.cupy_available(), reason="CuPy with a GPU is not available")]


def _step(model, x, y):
    loss_fn = nn.CrossEntropyLoss()
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    logits, loss, dx = train_step(model, loss_fn, opt, x, y, input_grad=True)
    grads = {name: backend.to_host(p.grad).copy() for name, p in model.named_parameters()}
    return backend.to_host(logits), loss, backend.to_host(dx), grads


@pytest.mark.parametrize("name", ["se_resnet20", "resnet20"])
def test_numpy_and_cupy_agree_on_a_training_step_in_float64(name):
    """Every number of a step, gradients included, to float64 rounding."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32))
    y = rng.integers(0, 10, 8)
    on_cpu = models.build_model(name, seed=3, dtype="float64")
    on_gpu = models.build_model(name, seed=3, dtype="float64").to("cupy")   # same initial weights
    cpu = _step(on_cpu, x, y)
    gpu = _step(on_gpu, backend.to_device(x, "cupy"), backend.to_device(y, "cupy"))
    assert relative_error(gpu[0], cpu[0]) <= 1e-10                # logits
    assert float(gpu[1]) == pytest.approx(float(cpu[1]), rel=1e-10)  # loss (0-d on the GPU)
    assert relative_error(gpu[2], cpu[2]) <= 1e-9                  # dL/dx, through 20 layers
    for key in cpu[3]:
        assert relative_error(gpu[3][key], cpu[3][key]) <= 1e-9, key
    for (k, a), b in zip(on_cpu.state_dict().items(), on_gpu.state_dict().values()):
        assert relative_error(backend.to_host(b), a) <= 1e-10, k  # weights and BN statistics after SGD


@pytest.mark.parametrize("name", ["se_resnet20", "resnet20"])
def test_numpy_and_cupy_agree_on_a_training_step_in_float32(name):
    """The forward numbers: logits, loss and BatchNorm running statistics. (Gradients, and the
    weights after a step, are compared in float64 above: in float32 a pre-activation within
    rounding of 0 can switch a ReLU on one backend and not on the other, which moved dL/dx by
    5e-3 and conv1.weight after the step by 1.6e-4 in runs on an H200, with no bug behind it.)"""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    on_cpu = models.build_model(name, seed=3)
    on_gpu = models.build_model(name, seed=3).to("cupy")
    cpu = _step(on_cpu, x, y)
    gpu = _step(on_gpu, backend.to_device(x, "cupy"), backend.to_device(y, "cupy"))
    assert relative_error(gpu[0], cpu[0]) <= 1e-5                 # logits
    assert float(gpu[1]) == pytest.approx(float(cpu[1]), rel=1e-5)
    gpu_state = on_gpu.state_dict()
    buffers = [k for k in on_cpu.state_dict() if "running_" in k]
    assert len(buffers) == 2 * 19                                  # 19 BatchNorm layers
    for k in buffers:
        assert relative_error(backend.to_host(gpu_state[k]), on_cpu.state_dict()[k]) <= 1e-5, k


def test_evaluation_agrees_and_stays_on_the_gpu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    on_cpu = models.se_resnet20(seed=5).eval()
    on_gpu = models.se_resnet20(seed=5).to("cupy").eval()
    with nn.no_grad():
        a = on_cpu(x)
        b = on_gpu(backend.to_device(x, "cupy"))
    assert backend.backend_of(b) == "cupy"
    assert relative_error(backend.to_host(b), a) <= 1e-5


def _sgd_steps(start, grads, nesterov, fused):
    """Three SGD steps (the first-step rule, then momentum) on CuPy parameters from ``start``."""
    import cupy
    ps = [nn.Parameter(cupy.asarray(a)) for a in start]
    opt = SGD(list(enumerate(ps)), lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=5e-4,
              decay_filter=lambda name, p: p.data.ndim > 1, fused=fused)
    for step_grads in grads:
        for p, g in zip(ps, step_grads):
            p.grad[...] = cupy.asarray(g)
        opt.step()
    return [backend.to_host(p.data) for p in ps], opt.state_dict()


@pytest.mark.parametrize("nesterov", [True, False])
def test_fused_sgd_kernel_matches_the_plain_update(nesterov):
    rng = np.random.default_rng(2)
    shapes = [(16, 3, 3, 3), (16,), (10, 64)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    plain, plain_state = _sgd_steps(start, grads, nesterov, fused=False)
    fused, fused_state = _sgd_steps(start, grads, nesterov, fused=True)
    for a, b in zip(plain, fused):
        assert relative_error(b, a) <= 1e-6
    assert sorted(fused_state) == sorted(plain_state)
    for key in plain_state:
        assert relative_error(np.asarray(fused_state[key], dtype=np.float64),
                              np.asarray(plain_state[key], dtype=np.float64)) <= 1e-6, key


def test_a_short_training_run_on_cupy_matches_numpy(tmp_path):
    from test_train import tiny, write_cifar10
    from npse.train import train
    data = write_cifar10(tmp_path / "data")
    cpu = train(tiny(tmp_path, data, "cpu"), log=None)
    gpu = train(tiny(tmp_path, data, "gpu", backend="cupy"), log=None)
    for key in ("train_loss", "test_loss"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-3), key
    assert abs(gpu["test_acc"] - cpu["test_acc"]) <= 0.05


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
# (With 2 values per channel dx is 0 up to rounding, and a relative error means nothing: 3 is the least.)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (8, 16, 32, 32), (1, 4, 1, 3)])
def test_fused_batchnorm_matches_the_plain_formulas(shape, dtype, tol):
    """Training forward and backward (running statistics too), evaluation with and without a
    backward to follow; in float32 too (tests/test_formulations.py compares in float64)."""
    import cupy
    from npse.fast import fused as F
    from npse.nn import batchnorm2d as B
    rng = np.random.default_rng(3)
    c = shape[1]
    x = cupy.asarray(rng.standard_normal(shape) * 3 + 1, dtype=dtype)
    dy = cupy.asarray(rng.standard_normal(shape), dtype=dtype)
    gamma = cupy.asarray(rng.standard_normal(c) + 1, dtype=dtype)
    beta = cupy.asarray(rng.standard_normal(c), dtype=dtype)
    stats = [cupy.asarray(rng.random(c), dtype=dtype), cupy.asarray(rng.random(c) + 0.5, dtype=dtype)]

    def run(fused, training, grad=True):
        rm, rv = stats[0].copy(), stats[1].copy()
        if fused:
            y, cache = F.batchnorm2d_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5, keep=grad)
            grads = F.batchnorm2d_backward(dy, cache) if grad else ()
        else:
            y, cache = B.batchnorm2d_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5)
            grads = B.batchnorm2d_backward(dy, cache) if grad else ()
        return [backend.to_host(a) for a in (y, rm, rv, *grads)]

    for training, grad in ((True, True), (False, True), (False, False)):
        plain, fused = run(False, training, grad), run(True, training, grad)
        for name, a, b in zip(("y", "running_mean", "running_var", "dx", "dgamma", "dbeta"), plain, fused):
            assert relative_error(b, a) <= tol, (name, training, grad)
