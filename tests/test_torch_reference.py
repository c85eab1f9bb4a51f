"""Optional: npse against PyTorch (skipped when torch is not installed; it is never a dependency).

The same weights go into both (state_dict names and layouts are PyTorch's), so forward outputs,
input gradients, parameter gradients and BatchNorm running statistics must agree in float64.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npse import models, nn  # noqa: E402
from npse.gradcheck import relative_error  # noqa: E402
from npse.torch_reference import build_torch_model, load_npse_state  # noqa: E402

TOL = 1e-10


@pytest.mark.parametrize("se", [None, "standard", "pre", "post", "identity"])
@pytest.mark.parametrize("shortcut,block,depth", [("A", "basic", 8), ("B", "basic", 8), ("B", "bottleneck", 11)])
def test_whole_network_matches_pytorch(se, shortcut, block, depth):
    model = models.cifar_resnet(depth=depth, block=block, shortcut=shortcut, se=se, widths=(4, 8, 16),
                                se_reduction=2, dtype="float64", seed=0)
    reference = load_npse_state(build_torch_model(model.config), model.state_dict())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 16, 16))
    dlogits = rng.standard_normal((3, 10))
    xt = torch.tensor(x, requires_grad=True)
    yt = reference(xt)
    yt.backward(torch.tensor(dlogits))
    y = model(x)
    dx = model.backward(dlogits)
    assert relative_error(y, yt.detach().numpy()) <= TOL
    assert relative_error(dx, xt.grad.numpy()) <= TOL
    torch_params = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert relative_error(p.grad, torch_params[name].grad.numpy()) <= 1e-9, name
    torch_state = reference.state_dict()
    for name, value in model.state_dict().items():      # running statistics after one step
        np.testing.assert_allclose(value, torch_state[name].numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("stride,padding,kernel", [(1, 0, 1), (2, 1, 3), (3, 2, 5), ((2, 1), (0, 1), (2, 3))])
def test_conv2d_matches_pytorch(stride, padding, kernel):
    conv = nn.Conv2d(3, 4, kernel, stride, padding, dtype="float64", rng=0)
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8))
    y = conv(x)
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(conv.weight.data), torch.tensor(conv.bias.data),
                                     stride, padding)
    assert relative_error(y, ref.numpy()) <= TOL


def test_pooling_matches_pytorch_including_ties():
    x = np.round(np.random.default_rng(2).standard_normal((2, 3, 9, 8)), 1)   # many ties
    dy_shape = None
    for ours, theirs in [(nn.MaxPool2d(3, 2, 1, dtype="float64"), lambda t: torch.nn.functional.max_pool2d(t, 3, 2, 1)),
                         (nn.AvgPool2d(3, 2, 1, dtype="float64"), lambda t: torch.nn.functional.avg_pool2d(t, 3, 2, 1))]:
        y = ours(x)
        dy_shape = y.shape
        dy = np.random.default_rng(3).standard_normal(dy_shape)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.tensor(dy))
        assert relative_error(y, yt.detach().numpy()) <= TOL
        assert relative_error(ours.backward(dy), xt.grad.numpy()) <= TOL


def test_cross_entropy_matches_pytorch():
    rng = np.random.default_rng(4)
    logits, targets = rng.standard_normal((5, 7)) * 10, rng.integers(0, 7, 5)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(logits, targets)
    lt = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(lt, torch.tensor(targets))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    assert relative_error(loss_fn.backward(), lt.grad.numpy()) <= TOL
