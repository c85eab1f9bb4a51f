# %% [markdown]
# # Tutorial 9: the Squeeze-and-Excitation block
#
# The companion of [chapter 9](../docs/09-se-block.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Run it as a script, `python tutorials/09_se_block.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import nn
from npse.gradcheck import gradcheck, numerical_gradient, relative_error

rng = np.random.default_rng(0)


# %% [markdown]
# ## 1. Shapes: squeeze, excitation, scale
#
# Explained in [chapter 9](../docs/09-se-block.md).

# %%
se = nn.SEBlock(16, reduction=4, dtype="float64", rng=0)
print(se)
print("hidden width h = max(1, C // reduction) = max(1, 16 // 4) =", se.hidden)
print("a very narrow block: SEBlock(3, reduction=16).hidden =", nn.SEBlock(3, 16).hidden, "(never 0)")
print("state_dict keys:", list(se.state_dict()))
assert se.hidden == 4 and nn.SEBlock(3, 16).hidden == 1
assert list(se.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]

x = rng.standard_normal((2, 16, 6, 6))
y = se(x)
s = se.gate                                         # the excitations s, kept after each forward
print("\nx", x.shape, "-> z (squeeze)", x.mean((2, 3)).shape, "-> s (gate)", s.shape, "-> y", y.shape)
print("gates of image 0, first 8 channels:", np.round(s[0, :8], 3), "(sigmoid: all in (0, 1))")
print("y is x with each channel scaled by its gate:", np.allclose(y, x * s[:, :, None, None]))
assert s.shape == (2, 16) and y.shape == x.shape and np.all((s > 0) & (s < 1))
assert np.allclose(y, x * s[:, :, None, None])


# %% [markdown]
# ## 2. The same block, written out with the layer functions
#
# Explained in [chapter 9](../docs/09-se-block.md).

# %%
z = x.mean(axis=(2, 3))                                               # squeeze      (N, C)
a = z @ se.fc1.weight.data.T + se.fc1.bias.data                       # fc1          (N, h)
r = np.maximum(a, 0)                                                  # ReLU         (N, h)
u = r @ se.fc2.weight.data.T + se.fc2.bias.data                       # fc2          (N, C)
print("gate recomputed by hand matches .gate:", np.allclose(1 / (1 + np.exp(-u)), s))
assert np.allclose(1 / (1 + np.exp(-u)), s)


# %% [markdown]
# ## 3. Gradient checks for every squeeze / gate combination of the paper's ablations
#
# Explained in [chapter 9](../docs/09-se-block.md).

# %%
x = rng.standard_normal((2, 8, 4, 5))
for squeeze in ("avg", "max"):
    for gate in ("sigmoid", "tanh", "relu"):
        blk = nn.SEBlock(8, reduction=2, squeeze=squeeze, excitation=gate, dtype="float64", rng=1)
        result = gradcheck(blk, x, seed=2)
        print(f"gradcheck squeeze={squeeze:3s} excitation={gate:7s}: max relative error "
              f"{result.max_error:.1e}, crossed a kink: {result.crossed_kink}")
        assert result.max_error <= 1e-6 and not result.crossed_kink


# %% [markdown]
# ## 4. The gradient through the squeeze
#
# x reaches y along two paths: directly (y = x * s) and through z -> s. Keeping only the first
# gives dx = dy * s -- a plausible-looking but wrong gradient.
#
# Explained in [chapter 9](../docs/09-se-block.md).

# %%
blk = nn.SEBlock(8, reduction=2, dtype="float64", rng=1)
dy = rng.standard_normal(x.shape)
blk(x)
dx_full = blk.backward(dy)
y, cache = nn.se_block_forward(x, blk.fc1.weight.data, blk.fc1.bias.data, blk.fc2.weight.data, blk.fc2.bias.data)
dx_direct_only = dy * cache["gate"][:, :, None, None]

# A numerical reference for dx, one entry at a time (central differences, h = 1e-5):
numeric = numerical_gradient(lambda: (blk(x) * dy).sum(), x)
print("\nrelative error of dx, full backward         :", f"{relative_error(dx_full, numeric):.1e}")
print("relative error of dx, squeeze path forgotten:", f"{relative_error(dx_direct_only, numeric):.1e}")
# chapter 9 quotes "about 1e-10" and "about 3e-2": each asserted within a factor of ten or so
assert 1e-12 <= relative_error(dx_full, numeric) <= 1e-8
assert 1e-2 <= relative_error(dx_direct_only, numeric) <= 1e-1
# The missing term is pool_backward(dz) = dz / (H*W) on every pixel: small per pixel for large
# maps, which is why the bug survives eyeballing -- but a gradient check at 1e-6 catches it at once.


# %% [markdown]
# ## 5. Zero fc2 weights: the block starts as a constant rescaling
#
# Explained in [chapter 9](../docs/09-se-block.md).

# %%
blk = nn.SEBlock(8, reduction=2, dtype="float64", rng=1)
blk.fc2.weight.data[...] = 0
blk.fc2.bias.data[...] = 0
y = blk(x)
print("\nfc2 weight and bias zero -> every gate is sigmoid(0) =", np.unique(blk.gate), "and y = x / 2:", np.allclose(y, x / 2))
blk.backward(dy)
print("fc1 then receives no gradient (dr = du @ W2 = 0): |fc1.weight.grad| =", np.abs(blk.fc1.weight.grad).max())
print("but fc2 does, so training can move away from it: |fc2.weight.grad| =",
      f"{np.abs(blk.fc2.weight.grad).max():.2e}")
assert np.array_equal(np.unique(blk.gate), [0.5]) and np.allclose(y, x / 2)
assert not blk.fc1.weight.grad.any() and np.abs(blk.fc2.weight.grad).max() > 0


# %% [markdown]
# ## 6. Reading the excitations: .gate for analysis
#
# Two kinds of inputs: energy in channels 0-3 or in channels 4-7. Average the gates per kind, as
# the paper does per class and per stage to see how channel importance depends on the input.
#
# Explained in [chapter 9](../docs/09-se-block.md).

# %%
blk = nn.SEBlock(8, reduction=2, dtype="float64", rng=3)
kind_a = rng.standard_normal((16, 8, 4, 4)) + np.r_[np.full(4, 2.0), np.zeros(4)][None, :, None, None]
kind_b = rng.standard_normal((16, 8, 4, 4)) + np.r_[np.zeros(4), np.full(4, 2.0)][None, :, None, None]
with nn.no_grad():                                      # no caches kept; .gate is still set
    blk(kind_a)
    mean_a = blk.gate.mean(axis=0)
    blk(kind_b)
    mean_b = blk.gate.mean(axis=0)
print("\nmean gate per channel, inputs of kind A:", np.round(mean_a, 3))
print("mean gate per channel, inputs of kind B:", np.round(mean_b, 3))
assert mean_a.shape == (8,) and not np.allclose(mean_a, mean_b)
print("(an untrained block already responds to the input; training makes the difference purposeful)")
