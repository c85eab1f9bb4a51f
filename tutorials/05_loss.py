# %% [markdown]
# # Tutorial 5: softmax cross-entropy
#
# The companion of [chapter 5](../docs/05-loss.md): each step below runs what the chapter explains
# and asserts what it claims.
#
# Run it as a script, `python tutorials/05_loss.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import nn
from npse.gradcheck import numerical_gradient, relative_error

loss_fn = nn.CrossEntropyLoss()


# %% [markdown]
# ## 1. Value and gradient
#
# Explained in [chapter 5](../docs/05-loss.md).

# %%
logits = np.zeros((3, 4))                                   # N = 3 samples, K = 4 classes
targets = np.array([0, 1, 3])
loss = loss_fn(logits, targets)
print("uniform logits: loss =", loss, "= log 4 =", np.log(4))
d = loss_fn.backward()
print("dlogits = (softmax - onehot) / N =\n", d)
print("each row sums to 0:", np.allclose(d.sum(axis=1), 0))
assert isinstance(loss, np.generic) and np.ndim(loss) == 0   # a NumPy scalar (0-d CuPy array on a GPU)
assert abs(float(loss) - np.log(4)) < 1e-15
assert np.allclose(d, (np.full((3, 4), 0.25) - np.eye(4)[targets]) / 3) and np.abs(d.sum(1)).max() < 1e-15


# %% [markdown]
# ## 2. Large logits: the row maximum is subtracted first
#
# Explained in [chapter 5](../docs/05-loss.md).

# %%
z = np.array([[1000.0, -1000.0], [0.0, 1e4]], dtype=np.float32)
with np.errstate(over="raise", invalid="raise", divide="raise"):
    loss = loss_fn(z, np.array([1, 1]))
print("\nlogits with |z| up to 1e4 (float32): loss =", loss, "(= (2000 + 0) / 2), no overflow")
print("gradient finite:", np.isfinite(loss_fn.backward()).all())
assert float(loss) == 1000.0


# %% [markdown]
# ## 3. Why log1p and expm1
#
# A confident, correct prediction: p_t = 1 / (1 + e^-40), loss = log(1 + e^-40) ~ 4.2e-18.
#
# Explained in [chapter 5](../docs/05-loss.md).

# %%
z = np.array([[40.0, 0.0]])
t = np.array([0])
shifted = z - z.max()
naive_loss = -(shifted - np.log(np.exp(shifted).sum()))[0, 0]
print("\nloss of logits [40, 0], class 0:")
print("  log(sum exp)     :", abs(naive_loss), " <- 1 + 4e-18 rounds to 1, the loss vanishes")
print("  npse (log1p)     :", loss_fn(z, t))
print("  exact            :", np.log1p(np.exp(-40.0)))
g = loss_fn.backward()
print("dlogits[0, 0] = p_t - 1:")
print("  exp(log p_t) - 1 :", np.exp(-np.log1p(np.exp(-40.0))) - 1)
print("  npse (expm1)     :", g[0, 0])
assert naive_loss == 0 and abs(float(loss_fn(z, t)) / np.log1p(np.exp(-40.0)) - 1) < 1e-12
assert np.exp(-np.log1p(np.exp(-40.0))) - 1 == 0 and abs(g[0, 0] / -np.log1p(np.exp(-40.0)) - 1) < 1e-12


# %% [markdown]
# ## 4. Gradient check against central differences
#
# Explained in [chapter 5](../docs/05-loss.md).

# %%
rng = np.random.default_rng(0)
z = rng.standard_normal((5, 6)) * 5
t = rng.integers(0, 6, 5)
loss_fn(z, t)
analytic = loss_fn.backward()
numeric = numerical_gradient(lambda: loss_fn(z, t), z)
print("\nrelative error of dlogits vs central differences:", f"{relative_error(analytic, numeric):.1e}")
assert relative_error(analytic, numeric) <= 1e-6


# %% [markdown]
# ## 5. Errors are explicit
#
# Explained in [chapter 5](../docs/05-loss.md).

# %%
try:
    loss_fn(np.zeros((2, 3)), np.array([0, 3]))
except ValueError as e:
    print("\nValueError:", e)
else:
    raise AssertionError("a target out of range must be refused")
