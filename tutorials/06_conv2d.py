# %% [markdown]
# # Tutorial 6: im2col, col2im and Conv2d
#
# The companion of [chapter 6](../docs/06-conv2d.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Run it as a script, `python tutorials/06_conv2d.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import nn
from npse.gradcheck import gradcheck
from npse.nn import col2im, im2col

np.set_printoptions(linewidth=110)


# %% [markdown]
# ## 1. im2col on a tiny input
#
# One image, one channel, 3x4 pixels numbered 0..11; a 2x2 kernel with stride 1 and no padding.
#
# Explained in [chapter 6](../docs/06-conv2d.md).

# %%
x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
print("x[0, 0] =\n", x[0, 0])
cols = im2col(x, (2, 2), (1, 1), (0, 0))
# OH = (3 - 2)//1 + 1 = 2, OW = (4 - 2)//1 + 1 = 3: six patches, each a column of C*KH*KW = 4 rows.
print("\nim2col(x), shape", cols.shape, "(rows: ky,kx = 00 01 10 11; columns: oy,ox in C order)\n", cols)
assert cols.shape == (4, 6) and list(cols[:, 0]) == [0, 1, 4, 5]      # column 0: the top-left patch

# With two images and two channels the rows run over (c, ky, kx) and the columns over (n, oy, ox).
x2 = np.arange(2 * 2 * 3 * 3, dtype=np.float64).reshape(2, 2, 3, 3)
cols2 = im2col(x2, (2, 2), (1, 1), (0, 0))
print("\nN=2, C=2, 3x3 input, 2x2 kernel -> cols shape", cols2.shape, "= (C*KH*KW, N*OH*OW) = (8, 2*2*2)")
print("column 4 (n=1, oy=0, ox=0) is image 1's top-left patch of both channels:", cols2[:, 4])
assert cols2.shape == (8, 8)
assert np.array_equal(cols2[:, 4], np.concatenate([x2[1, c, 0:2, 0:2].ravel() for c in range(2)]))

# Padding and stride change OH, OW through floor((H + 2P - K) / S) + 1:
for h, k, s, p in [(32, 3, 1, 1), (32, 3, 2, 1), (7, 3, 2, 0), (8, 1, 2, 0)]:
    oh = im2col(np.zeros((1, 1, h, h)), (k, k), (s, s), (p, p)).shape[1] ** 0.5
    print(f"H={h:2d} K={k} S={s} P={p}: OH = ({h} + 2*{p} - {k})//{s} + 1 = {(h + 2*p - k)//s + 1}"
          f"  (im2col gave {int(oh)})")
    assert int(oh) == (h + 2*p - k)//s + 1


# %% [markdown]
# ## 2. The convolution is one matrix product
#
# Explained in [chapter 6](../docs/06-conv2d.md).

# %%
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 7, 6))
conv = nn.Conv2d(3, 4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dtype="float64", rng=0)
y = conv(x)
W, b = conv.weight.data, conv.bias.data

# The textbook definition, with explicit loops (cross-correlation: the kernel is not flipped).
xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
ref = np.zeros_like(y)
for n in range(2):
    for o in range(4):
        for oy in range(y.shape[2]):
            for ox in range(y.shape[3]):
                patch = xpad[n, :, oy * 2:oy * 2 + 3, ox:ox + 2]
                ref[n, o, oy, ox] = (patch * W[o]).sum() + b[o]
print("\nConv2d output", y.shape, "| max |im2col result - loop result| =", f"{np.abs(y - ref).max():.1e}")
assert y.shape == (2, 4, 4, 5) and np.abs(y - ref).max() < 1e-12


# %% [markdown]
# ## 3. col2im is the adjoint of im2col, not its inverse
#
# Explained in [chapter 6](../docs/06-conv2d.md).

# %%
x = rng.standard_normal((1, 1, 4, 4))
c = rng.standard_normal(im2col(x, (3, 3)).shape)
lhs = (im2col(x, (3, 3)) * c).sum()
rhs = (x * col2im(c, x.shape, (3, 3))).sum()
print("\n<im2col(x), c> =", f"{lhs:.12f}", "  <x, col2im(c)> =", f"{rhs:.12f}")
assert abs(lhs - rhs) < 1e-12
# col2im(im2col(x)) multiplies each pixel by the number of patches it sits in:
counts = col2im(im2col(np.ones((1, 1, 4, 4)), (3, 3)), (1, 1, 4, 4), (3, 3))
print("how many 3x3 patches hold each pixel of a 4x4 image (= col2im(im2col(ones))):\n", counts[0, 0])
assert np.array_equal(counts[0, 0], np.outer([1, 2, 2, 1], [1, 2, 2, 1]))

# (Faster orders of the same products, one per image, patch rows of a channels-last input, kernel
# rows, are the speed chapter's: tutorials/B_speed.py.)


# %% [markdown]
# ## 4. Gradient check
#
# Explained in [chapter 6](../docs/06-conv2d.md).

# %%
x = rng.standard_normal((2, 3, 6, 5))
conv = nn.Conv2d(3, 2, 3, stride=2, padding=1, dtype="float64", rng=1)
result = gradcheck(conv, x, seed=1)
print("\ngradcheck relative errors:", {k: f"{v:.1e}" for k, v in result.errors.items()})
print("all <= 1e-6:", result.max_error <= 1e-6)
assert result.max_error <= 1e-6 and not result.crossed_kink


# %% [markdown]
# ## 5. A bias before BatchNorm: a gradient that is exactly zero
#
# BatchNorm in training mode (chapter 8) subtracts each channel's mean, so a per-channel constant
# -- a convolution bias -- never reaches the loss. The bias's exact gradient is 0; backward
# returns rounding residue, and its relative error is tiny (relative_error's fallback to the
# absolute error) or about 1 (against rounding noise), depending on the rounding. Neither means
# anything.
#
# Explained in [chapter 6](../docs/06-conv2d.md).

# %%
pair = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True, dtype="float64", rng=1),
                     nn.BatchNorm2d(4, dtype="float64"), dtype="float64")
x = rng.standard_normal((2, 3, 5, 5))
bias_errors = []
for seed in range(6):
    pair.zero_grad()
    check = gradcheck(pair, x, seed=seed)
    bias_errors.append(check.errors["0.bias"])
    assert np.abs(pair[0].bias.grad).max() < 1e-12                        # zero up to rounding
    assert all(e <= 1e-6 for name, e in check.errors.items() if name != "0.bias")
print("\nConv2d(bias=True) before BatchNorm2d: |0.bias.grad| < 1e-12; its 'relative error' over 6 seeds:",
      [f"{e:.0e}" for e in bias_errors])
assert all(e < 1e-6 or e > 0.1 for e in bias_errors)
# That is why the convolutions in ResNets have bias=False.
