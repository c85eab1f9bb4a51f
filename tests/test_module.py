"""The module contract every layer follows: caches, accumulation, dy untouched, state_dict, no_grad."""
import numpy as np
import pytest

from npse import nn
from strategies import away_from_zero, distinct, normal

F64 = "float64"


def layer_cases():
    """(name, module, input) for every layer in npse.nn, in float64."""
    rng = np.random.default_rng(0)
    x4 = normal(rng, (2, 4, 5, 6))
    return [
        ("Conv2d", nn.Conv2d(4, 3, 3, stride=2, padding=1, dtype=F64, rng=0), x4),
        ("MaxPool2d", nn.MaxPool2d(3, 2, 1, dtype=F64), distinct(rng, (2, 4, 5, 6))),
        ("AvgPool2d", nn.AvgPool2d(2, dtype=F64), x4),
        ("GlobalAvgPool2d", nn.GlobalAvgPool2d(dtype=F64), x4),
        ("GlobalMaxPool2d", nn.GlobalMaxPool2d(dtype=F64), distinct(rng, (2, 4, 5, 6))),
        ("Linear", nn.Linear(6, 3, dtype=F64, rng=0), normal(rng, (2, 6))),
        ("Flatten", nn.Flatten(dtype=F64), x4),
        ("BatchNorm2d", nn.BatchNorm2d(4, dtype=F64), x4),
        ("ReLU", nn.ReLU(dtype=F64), away_from_zero(rng, (2, 4, 5, 6))),
        ("Sigmoid", nn.Sigmoid(dtype=F64), x4),
        ("Tanh", nn.Tanh(dtype=F64), x4),
        ("SEBlock", nn.SEBlock(4, 2, dtype=F64, rng=0), x4),
        ("Sequential", nn.Sequential(nn.Conv2d(4, 2, 1, dtype=F64, rng=0), nn.ReLU(dtype=F64),
                                     nn.BatchNorm2d(2, dtype=F64), dtype=F64), x4),
    ]


@pytest.mark.parametrize("name,module,x", layer_cases(), ids=[c[0] for c in layer_cases()])
def test_backward_leaves_dy_alone_and_accumulates(name, module, x):
    y = module(x)
    dy = normal(np.random.default_rng(1), y.shape)
    dy_before = dy.copy()
    x_before = x.copy()
    module.zero_grad()
    dx1 = module.backward(dy)
    assert dx1.shape == x.shape and dx1.dtype == x.dtype
    assert (dy == dy_before).all(), f"{name}.backward modified dy in place"
    assert (x == x_before).all(), f"{name} modified its input"
    grads1 = [p.grad.copy() for p in module.parameters()]
    module(x)
    module.backward(dy)
    for g1, p in zip(grads1, module.parameters()):
        np.testing.assert_allclose(p.grad, 2 * g1, rtol=1e-12, atol=1e-300)   # accumulates
    module.zero_grad()
    assert all((p.grad == 0).all() for p in module.parameters())


@pytest.mark.parametrize("name,module,x", layer_cases(), ids=[c[0] for c in layer_cases()])
def test_no_grad_keeps_no_cache(name, module, x):
    with nn.no_grad():
        module(x)
    assert all(m._cache is None for _, m in module.named_modules())
    with pytest.raises(RuntimeError, match=r"backward called without a forward pass"):
        module.backward(_output_like(module, x))
    assert nn.grad_enabled()


def _output_like(module, x):
    with nn.no_grad():
        return np.zeros_like(module(x))


def test_named_parameters_order_and_state_dict_names():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.GlobalAvgPool2d(), nn.Linear(4, 2, rng=0))
    assert [n for n, _ in net.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert list(net.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "4.weight", "4.bias"]
    assert len(list(net.parameters())) == 6
    assert net.state_dict()["0.weight"].shape == (4, 3, 3, 3)


def test_load_state_dict_round_trip_and_errors():
    a = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.BatchNorm2d(4))
    b = nn.Sequential(nn.Conv2d(3, 4, 3, rng=1), nn.BatchNorm2d(4))
    a[1].running_mean[...] = 5
    b.load_state_dict({k: v.astype(np.float64) for k, v in a.state_dict().items()})
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert (va == vb).all() and vb.dtype == va.dtype, k
    state = dict(a.state_dict())
    del state["1.running_var"]
    with pytest.raises(ValueError, match=r"Sequential.load_state_dict: missing keys \['1.running_var'\], unexpected keys \[\]"):
        b.load_state_dict(state)
    state = dict(a.state_dict(), extra=np.zeros(1))
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        b.load_state_dict(state)
    state = dict(a.state_dict())
    state["0.weight"] = np.zeros((4, 3, 5, 5))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 3, 5, 5\), expected \(4, 3, 3, 3\)"):
        b.load_state_dict(state)


def test_train_eval_and_dtype():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert all(m.training for _, m in net.named_modules())
    net.eval()
    assert not any(m.training for _, m in net.named_modules())
    assert nn.Conv2d(1, 1, 1).weight.dtype == np.float32
    assert nn.Conv2d(1, 1, 1, dtype=F64).weight.dtype == np.float64
    with pytest.raises(TypeError, match=r"Linear: dtype must be float32 or float64, got float16"):
        nn.Linear(2, 2, dtype="float16")


def test_to_numpy_is_a_no_op_and_cupy_errors_clearly_without_a_gpu():
    from npse import backend
    net = nn.Linear(2, 2, rng=0)
    w = net.weight.data.copy()
    net.to("numpy")
    assert (net.weight.data == w).all()
    if not backend.cupy_available():
        with pytest.raises(RuntimeError, match=r"npse backend 'cupy' was asked for, but CuPy"):
            net.to("cupy")
    with pytest.raises(ValueError, match=r"npse backend must be one of"):
        net.to("torch")
