# %% [markdown]
# # Tutorial 3: the fully-connected layer
#
# The companion of [chapter 3](../docs/03-linear.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Run it as a script, `python tutorials/03_linear.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import nn
from npse.gradcheck import gradcheck, numerical_gradient, relative_error

rng = np.random.default_rng(0)


# %% [markdown]
# ## 1. Forward: y = x @ W^T + b, weight stored as (out, in) like torch.nn.Linear
#
# Explained in [chapter 3](../docs/03-linear.md).

# %%
fc = nn.Linear(4, 3, dtype="float64", rng=0)
print(fc, "| weight", fc.weight.shape, "bias", fc.bias.shape)
bound = 1 / np.sqrt(4)
print(f"initial values inside U(-1/sqrt(in), 1/sqrt(in)) = U(-{bound}, {bound}):",
      bool(np.abs(fc.weight.data).max() <= bound and np.abs(fc.bias.data).max() <= bound))
x = rng.standard_normal((5, 4))                  # N = 5 rows of I = 4 features
y = fc(x)
print("x", x.shape, "-> y", y.shape, "| equals x @ W.T + b:", np.allclose(y, x @ fc.weight.data.T + fc.bias.data))
assert fc.weight.shape == (3, 4) and fc.bias.shape == (3,)
assert np.abs(fc.weight.data).max() <= bound and np.abs(fc.bias.data).max() <= bound
assert y.shape == (5, 3) and np.allclose(y, x @ fc.weight.data.T + fc.bias.data)


# %% [markdown]
# ## 2. Backward by hand, against numerical derivatives
#
# With L = sum(y * dy):  dx = dy @ W,  dW = dy^T @ x,  db = dy summed over the batch.
#
# Explained in [chapter 3](../docs/03-linear.md).

# %%
dy = rng.standard_normal(y.shape)
y, cache = nn.linear_forward(x, fc.weight.data, fc.bias.data)
dx, dW, db = nn.linear_backward(dy, cache)
print("\nshapes: dx", dx.shape, "dW", dW.shape, "db", db.shape)

W, b = fc.weight.data.copy(), fc.bias.data.copy()
loss = lambda: float((nn.linear_forward(x, W, b)[0] * dy).sum())
for name, analytic, t in (("dx", dx, x), ("dW", dW, W), ("db", db, b)):
    error = relative_error(analytic, numerical_gradient(loss, t))
    print(f"{name}: relative error vs central differences = {error:.1e}")
    assert analytic.shape == t.shape and error <= 1e-6


# %% [markdown]
# ## 3. The module adds into .grad
#
# Explained in [chapter 3](../docs/03-linear.md).

# %%
fc.zero_grad()
fc(x)
fc.backward(dy)
print("\nfc.weight.grad equals dy.T @ x:", np.allclose(fc.weight.grad, dy.T @ x))
assert np.allclose(fc.weight.grad, dy.T @ x) and np.allclose(fc.bias.grad, dy.sum(0))


# %% [markdown]
# ## 4. gradcheck, with and without a bias, and behind a Flatten
#
# Explained in [chapter 3](../docs/03-linear.md).

# %%
for bias in (True, False):
    r = gradcheck(nn.Linear(6, 2, bias=bias, dtype="float64", rng=1), rng.standard_normal((3, 6)), seed=1)
    print(f"gradcheck Linear(6, 2, bias={bias}):", {k: f"{v:.1e}" for k, v in r.errors.items()})
    assert r.max_error <= 1e-6 and ("bias" in r.errors) == bias

net = nn.Sequential(nn.Flatten(dtype="float64"), nn.Linear(2 * 3 * 3, 5, dtype="float64", rng=2), dtype="float64")
r = gradcheck(net, rng.standard_normal((2, 2, 3, 3)), seed=2)
print("gradcheck Flatten -> Linear: max error", f"{r.max_error:.1e}")
assert r.max_error <= 1e-6
