# %% [markdown]
# # Tutorial 4: ReLU, Sigmoid, Tanh
#
# The companion of [chapter 4](../docs/04-activations.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Run it as a script, `python tutorials/04_activations.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import nn
from npse.gradcheck import gradcheck


# %% [markdown]
# ## 1. The three functions and the cache each keeps
#
# Explained in [chapter 4](../docs/04-activations.md).

# %%
x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
y, mask = nn.relu_forward(x)
print("x          ", x)
print("relu       ", y, "| cache: the mask x > 0 ->", mask)
y, cache = nn.sigmoid_forward(x)
print("sigmoid    ", np.round(y, 4), "| cache: the output itself")
y, cache = nn.tanh_forward(x)
print("tanh       ", np.round(y, 4), "| cache: the output itself")

# The derivatives are written in terms of the cache: sigmoid' = y (1 - y), tanh' = 1 - y^2.
dy = np.ones_like(x)
print("relu'      ", nn.relu_backward(dy, mask), " (0 at x = 0, as PyTorch)")
print("sigmoid'   ", np.round(nn.sigmoid_backward(dy, nn.sigmoid_forward(x)[1]), 4))
print("tanh'      ", np.round(nn.tanh_backward(dy, nn.tanh_forward(x)[1]), 4))
s = nn.sigmoid_forward(x)[0]
assert np.array_equal(mask, x > 0) and np.array_equal(nn.relu_backward(dy, mask), [0, 0, 0, 1, 1])
assert np.allclose(nn.sigmoid_backward(dy, nn.sigmoid_forward(x)[1]), s * (1 - s))
assert np.allclose(nn.tanh_backward(dy, nn.tanh_forward(x)[1]), 1 - np.tanh(x) ** 2)


# %% [markdown]
# ## 2. A sigmoid that cannot overflow
#
# Explained in [chapter 4](../docs/04-activations.md).

# %%
big = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
try:
    with np.errstate(over="raise"):
        1 / (1 + np.exp(-big))                      # the textbook formula needs exp(1000)
except FloatingPointError as e:
    print("\nnaive 1/(1+exp(-x)): FloatingPointError:", e)
else:
    raise AssertionError("the textbook sigmoid was expected to overflow")
with np.errstate(all="raise"):                      # npse's form raises nothing
    stable = nn.Sigmoid()(big)
print("0.5*(1+tanh(x/2))  :", stable)
assert np.array_equal(stable, np.array([0, 0, 0.5, 1, 1], np.float32))
# The price: far in the negative tail the result rounds to exactly 0 (sigmoid(-50) is 1.9e-22).
# The absolute error is below the dtype's epsilon, which is all a gate or a probability needs.


# %% [markdown]
# ## 3. backward never writes into dy
#
# In a residual block the same dy also flows down the shortcut; an in-place `dy *= mask` inside
# ReLU.backward would silently corrupt the shortcut's gradient.
#
# Explained in [chapter 4](../docs/04-activations.md).

# %%
relu = nn.ReLU(dtype="float64")
x = np.array([[-1.0, 2.0, -3.0, 4.0]])
relu(x)
dy = np.ones_like(x)
dx = relu.backward(dy)
print("\nReLU backward: dx =", dx, "| dy afterwards =", dy, "(unchanged)")
assert np.array_equal(dx, [[0, 1, 0, 1]]) and np.array_equal(dy, np.ones_like(x))


# %% [markdown]
# ## 4. gradcheck away from the kink, and at it
#
# Explained in [chapter 4](../docs/04-activations.md).

# %%
rng = np.random.default_rng(0)
v = rng.standard_normal((3, 4, 5))
x = np.sign(v) * (0.05 + np.abs(v)) * 3            # |x| >= 0.15: no ReLU kink within reach of h
for name in ("ReLU", "Sigmoid", "Tanh"):
    r = gradcheck(getattr(nn, name)(dtype="float64"), x, seed=1)
    print(f"gradcheck {name:8s} relative error {r.errors['input']:.1e}, crossed a kink: {r.crossed_kink}")
    assert r.max_error <= 1e-6 and not r.crossed_kink
r = gradcheck(nn.ReLU(dtype="float64"), np.array([[0.0, 1.0, -1.0]]))
print("ReLU at exactly 0 -> kinks reported:", r.kinks)
assert r.kinks == [("input", 0)]
