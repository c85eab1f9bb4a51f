# %% [markdown]
# # Tutorial 1: an SE-ResNet from the top
#
# The companion of [chapter 1](../docs/01-overview.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Runs what chapter 1 shows and asserts what it claims: the gates of the hand-set SE block, the
# output shape after every stage of SE-ResNet-20 (the chapter's forward/backward table), and one
# forward and backward pass of a toy SE-ResNet.
#
# Run it as a script, `python tutorials/01_overview.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import models, nn
from npse.models.summary import summary_rows
from npse.nn.se_block import se_block_forward


# %% [markdown]
# ## 1. What an SE block does to a feature map: three channels, weights set by hand
#
# Explained in [chapter 1](../docs/01-overview.md).

# %%
x = np.array([[[[1., 3.], [5., 7.]],        # channel 0: mean 4
               [[0., 0.], [0., 2.]],        # channel 1: mean 0.5
               [[-1., 1.], [-1., 1.]]]])    # channel 2: mean 0
w1 = np.array([[1., 0., 0.], [0., 1., 0.]])           # fc1: hidden unit j copies z[j]
w2 = np.array([[2., 0.], [-2., 0.], [0., -4.]])       # fc2: gates from the hidden units
y, cache = se_block_forward(x, w1, np.zeros(2), w2, np.zeros(3))
z, s = x.mean(axis=(2, 3)), cache["gate"]
print("squeeze z =", z.round(3), "  gates s =", s.round(4))
assert np.allclose(z, [[4, 0.5, 0]])
# the chapter: channel 0 passes almost unchanged (0.9997), channel 1 is switched off (0.0003),
# channel 2 is turned down to 12% -- each gate is sigmoid of a sum the other channels decide
assert np.allclose(s, 1 / (1 + np.exp(-np.array([[8., -8., -2.]]))))
assert abs(s[0, 0] - 0.9997) < 5e-5 and abs(s[0, 1] - 0.0003) < 5e-5 and abs(s[0, 2] - 0.119) < 5e-4
assert y.shape == x.shape and np.allclose(y, x * s[:, :, None, None])


# %% [markdown]
# ## 2. The table: SE-ResNet-20's output shape after every stage, for one 32x32 image
#
# Explained in [chapter 1](../docs/01-overview.md).

# %%
net = models.se_resnet20()
shapes = {name: shape for name, _, shape, _, _ in summary_rows(net)}
table = {"conv1": (16, 32, 32), "relu": (16, 32, 32), "layer1.2.relu_out": (16, 32, 32),
         "layer2.2.relu_out": (32, 16, 16), "layer3.2.relu_out": (64, 8, 8), "pool": (64,), "fc": (10,)}
for name, shape in table.items():
    print(f"{name:18s} (N, {', '.join(map(str, shape))})")
    assert tuple(shapes[name]) == shape, (name, shapes[name])
assert len(net.se_blocks()) == 9                         # one SE block in each of the 9 residual blocks


# %% [markdown]
# ## 3. One forward and backward pass of a toy SE-ResNet (widths 4, 8, 8)
#
# Explained in [chapter 1](../docs/01-overview.md).

# %%
toy = models.cifar_resnet(depth=8, widths=(4, 8, 8), se="standard", dtype="float64", seed=0)
loss_fn = nn.CrossEntropyLoss()
images = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
logits = toy(images)                                     # forward: every layer keeps a cache
loss = loss_fn(logits, np.array([3, 7]))
dimages = toy.backward(loss_fn.backward())               # backward: in reverse, caches used once
print(f"\ntoy network: logits {logits.shape}, loss {float(loss):.3f}, dL/dimages {dimages.shape}")
assert logits.shape == (2, 10) and dimages.shape == images.shape
assert abs(float(loss) - np.log(10)) < 0.3               # an untrained net: close to log(10) = 2.303
assert len(toy.se_blocks()) == 3 and toy.fc.weight.grad.shape == (10, 8) and toy.fc.weight.grad.any()
print("every layer's backward ran; fc's weight gradient has shape", toy.fc.weight.grad.shape)
