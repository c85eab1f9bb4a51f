# %% [markdown]
# # Tutorial 7: max, average and global pooling
#
# The companion of [chapter 7](../docs/07-pooling.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Run it as a script, `python tutorials/07_pooling.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import nn
from npse.gradcheck import gradcheck


# %% [markdown]
# ## 1. Max pooling and where its gradient goes
#
# Explained in [chapter 7](../docs/07-pooling.md).

# %%
x = np.array([[[[1., 1., 0., 2.],
                [1., 1., 2., 0.],
                [3., 0., 5., 5.],
                [0., 3., 5., 5.]]]])
pool = nn.MaxPool2d(2, dtype="float64")           # stride defaults to the kernel size
y = pool(x)
print("x =\n", x[0, 0], "\nMaxPool2d(2)(x) =\n", y[0, 0])
dx = pool.backward(np.array([[[[10., 20.], [30., 40.]]]]))
# Every window above has a tie. The whole gradient goes to the *first* maximum in row-major order
# (as PyTorch does), never split between the tied entries.
print("gradient of dy = [[10, 20], [30, 40]] ->\n", dx[0, 0])
assert np.array_equal(y[0, 0], [[1, 2], [3, 5]])
assert np.array_equal(dx[0, 0], [[10, 0, 0, 20], [0, 0, 0, 0], [30, 0, 40, 0], [0, 0, 0, 0]])

# Overlapping windows: a pixel that wins several windows receives the sum of their gradients.
x = np.zeros((1, 1, 3, 3))
x[0, 0, 1, 1] = 9.0
pool = nn.MaxPool2d(2, stride=1, dtype="float64")
pool(x)
centre = pool.backward(np.ones((1, 1, 2, 2)))[0, 0, 1, 1]
print("\ncentre pixel wins all four 2x2 windows; its gradient:", centre)
assert centre == 4.0

# Padding with -inf, not 0: for a negative image, zero padding would win the border windows.
x = -np.ones((1, 1, 2, 2))
padded = nn.MaxPool2d(2, 1, 1, dtype="float64")(x)
print("MaxPool2d(2, stride=1, padding=1) of an all -1 image:\n", padded[0, 0])
assert np.array_equal(padded, -np.ones((1, 1, 3, 3)))


# %% [markdown]
# ## 2. Average pooling counts the padding
#
# Explained in [chapter 7](../docs/07-pooling.md).

# %%
y = nn.AvgPool2d(3, stride=1, padding=1, dtype="float64")(np.ones((1, 1, 3, 3)))
print("\nAvgPool2d(3, 1, 1) of ones (padding counted in the divisor 9, as PyTorch's default):\n", y[0, 0])
assert np.allclose(y[0, 0], np.outer([2, 3, 2], [2, 3, 2]) / 9)


# %% [markdown]
# ## 3. Global pooling: the SE block's squeeze
#
# Explained in [chapter 7](../docs/07-pooling.md).

# %%
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 4, 4))
gap, gmp = nn.GlobalAvgPool2d(dtype="float64"), nn.GlobalMaxPool2d(dtype="float64")
print("\nGlobalAvgPool2d:", x.shape, "->", gap(x).shape, "| equals x.mean((2, 3)):", np.allclose(gap(x), x.mean((2, 3))))
print("GlobalMaxPool2d:", x.shape, "->", gmp(x).shape, "| equals x.max((2, 3)): ", np.allclose(gmp(x), x.max((2, 3))))
d = gap.backward(np.ones((2, 3)))
print("GlobalAvgPool2d backward spreads dz / (H*W) = 1/16 over every pixel:", np.unique(d))
assert np.allclose(gap(x), x.mean((2, 3))) and np.array_equal(gmp(x), x.max((2, 3)))
assert np.array_equal(np.unique(d), [1 / 16])


# %% [markdown]
# ## 4. Gradient checks
#
# Max pooling is only differentiable where no window has a tie, so the input is a permutation of
# evenly spaced values: all distinct, at least 1/size apart, far more than the step h = 1e-5
# (gradcheck's default).
#
# Explained in [chapter 7](../docs/07-pooling.md).

# %%
shape = (2, 2, 7, 6)
x = (rng.permutation(np.prod(shape)) / np.prod(shape) * 4 - 2).reshape(shape)
for layer in (nn.MaxPool2d(3, stride=2, padding=1, dtype="float64"),
              nn.AvgPool2d((3, 2), stride=(1, 2), padding=(1, 0), dtype="float64"),
              nn.GlobalAvgPool2d(dtype="float64"), nn.GlobalMaxPool2d(dtype="float64")):
    r = gradcheck(layer, x, seed=1)
    print(f"\ngradcheck {type(layer).__name__:16s} input error {r.errors['input']:.1e}, crossed a tie: {r.crossed_kink}", end="")
    assert r.max_error <= 1e-6 and not r.crossed_kink

# On tied values the check notices that a step changed a window's winner, and says so.
r = gradcheck(nn.MaxPool2d(2, dtype="float64"), np.ones((1, 1, 2, 2)))
print("\n\nall-equal window: crossed a tie:", r.crossed_kink, "| first reports:", r.kinks[:2])
assert r.crossed_kink
