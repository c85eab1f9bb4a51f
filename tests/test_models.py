"""CIFAR (SE-)ResNets: every SE variant and both blocks build, run and pass a float64 gradient check;
parameter counts match He et al. and Hu et al.; state_dict names follow the PyTorch CIFAR ResNet."""
import numpy as np
import pytest

from npse import models
from npse.fast import FAST, REFERENCE
from npse.gradcheck import gradcheck
from npse.models import SE_VARIANTS, cifar_resnet, count_parameters

TOL = 1e-6
TINY = dict(widths=(4, 8, 8), se_reduction=2, dtype="float64")
# Every whole-model test runs under the fast policy (the models' default) and the reference one.
policies = pytest.mark.parametrize("policy", [FAST, REFERENCE], ids=["fast", "reference"])


@pytest.mark.parametrize("block,depth", [("basic", 8), ("bottleneck", 11)])
@pytest.mark.parametrize("se", SE_VARIANTS)
@pytest.mark.parametrize("shortcut", ["A", "B"])
@policies
def test_every_variant_passes_a_gradient_check(block, depth, se, shortcut, policy):
    model = cifar_resnet(depth=depth, block=block, se=se, shortcut=shortcut, seed=1, **TINY)
    model.use_policy(policy)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    logits = model(x)
    assert logits.shape == (2, 10) and np.isfinite(logits).all()
    # Random directions for the input and every parameter; BN runs in training mode.
    result = gradcheck(model, x, seed=3, max_entries=0, num_directions=3)
    assert not result.crossed_kink, result.kinks[:3]
    assert result.max_error <= TOL, {k: v for k, v in result.errors.items() if v > TOL}


@policies
def test_se_max_squeeze_and_other_gates_build_and_check(policy):
    for squeeze, gate in [("max", "sigmoid"), ("avg", "tanh"), ("avg", "relu")]:
        model = cifar_resnet(depth=8, se="standard", se_squeeze=squeeze, se_excitation=gate, seed=2, **TINY)
        model.use_policy(policy)
        x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
        result = gradcheck(model, x, seed=4, max_entries=0, num_directions=2)
        if not result.crossed_kink:
            assert result.max_error <= TOL, (squeeze, gate, result.errors)


def test_parameter_counts():
    assert count_parameters(models.resnet20()) == 269_722
    assert count_parameters(models.resnet20(shortcut="B")) == 272_474
    assert count_parameters(models.se_resnet20()) - count_parameters(models.resnet20()) == 2_373
    se = models.se_resnet20()
    assert [m.hidden for _, m in se.se_blocks()] == [1] * 3 + [2] * 3 + [4] * 3
    # The paper's tip: dropping the last stage's SE blocks saves most of their parameters.
    no_last = cifar_resnet(depth=20, se="standard", se_stages=(1, 2))
    assert count_parameters(no_last) - count_parameters(models.resnet20()) == 2_373 - 3 * 580


def test_state_dict_names_follow_pytorch_cifar_resnet():
    keys = list(models.se_resnet20(shortcut="B").state_dict())
    assert keys[:7] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked", "layer1.0.conv1.weight"]
    for k in ["layer1.0.bn2.running_var", "layer1.0.se.fc1.weight", "layer1.0.se.fc2.bias",
              "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.running_mean", "layer3.2.conv2.weight",
              "fc.weight", "fc.bias"]:
        assert k in keys, k
    assert "layer1.0.shortcut.0.weight" not in keys          # identity where the shape is unchanged
    bottleneck = list(models.se_resnet164().state_dict())
    assert "layer1.0.conv3.weight" in bottleneck and "layer1.0.bn3.weight" in bottleneck
    ns = models.cifar_resnet(depth=20, se="nosqueeze").state_dict()
    assert ns["layer1.0.se.fc1.weight"].shape == (1, 16, 1, 1) and ns["layer1.0.se.fc2.weight"].shape == (16, 1, 1, 1)


def test_forward_shapes_config_round_trip_and_summary():
    model = models.se_resnet20(seed=5)
    again = models.from_config(model.config)       # same architecture and, from the seed, weights
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    x = np.zeros((2, 3, 32, 32), np.float32)
    assert model(x).shape == (2, 10) and model(x).dtype == np.float32
    text = models.summary(model)
    assert "total parameters: 272,095" in text and "layer3.2.se " in text and "40,553,056" in text
    c100 = models.se_resnet20(num_classes=100)
    assert c100(x).shape == (2, 100)


def test_se_block_positions():
    """pre acts on the block input, identity on the shortcut, 3x3 inside the branch."""
    pre = cifar_resnet(depth=20, se="pre")
    assert pre.layer2[0].se.channels == 16          # the input of the first stage-2 block
    b3 = cifar_resnet(depth=29, block="bottleneck", se="3x3")
    assert b3.layer1[0].se.channels == 16 and b3.layer1[0].branch.index("se") == 6
    std = cifar_resnet(depth=29, block="bottleneck", se="standard")
    assert std.layer1[0].se.channels == 64
    assert count_parameters(b3) < count_parameters(std)   # fewer channels at the 3x3 conv


def test_model_errors():
    with pytest.raises(ValueError, match=r"cifar_resnet: depth for block='basic' must be 6n\+2 with n >= 1 .* got 21"):
        cifar_resnet(depth=21)
    with pytest.raises(ValueError, match=r"cifar_resnet: se must be one of"):
        cifar_resnet(se="squeeze")
    with pytest.raises(ValueError, match=r"se='nosqueeze' has no squeeze, so se_squeeze must stay 'avg', got 'max'"):
        cifar_resnet(se="nosqueeze", se_squeeze="max")
    with pytest.raises(ValueError, match=r"se_stages must be a subset of \(1, 2, 3\)"):
        cifar_resnet(se="standard", se_stages=(4,))
    with pytest.raises(ValueError, match=r"unknown model 'resnet21'"):
        models.build_model("resnet21")
    with pytest.raises(ValueError, match=r"CifarResNet: input has 1 channels .* expected 3"):
        models.resnet20()(np.zeros((1, 1, 32, 32), np.float32))


@policies
def test_backward_without_the_input_gradient_gives_the_same_parameter_gradients(policy):
    grads = []
    for input_grad in (True, False):
        model = cifar_resnet(depth=8, se="standard", seed=4, **TINY).use_policy(policy)
        x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
        model(x)
        dx = model.backward(np.ones((2, 10)), input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        grads.append([p.grad.copy() for _, p in model.named_parameters()])
    for a, b in zip(*grads):
        assert np.array_equal(a, b)
