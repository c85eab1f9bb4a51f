# %% [markdown]
# # Tutorial 2: the Module contract and gradient checking
#
# The companion of [chapter 2](../docs/02-module.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Shows: forward keeps a cache, backward returns dL/dx and *adds* dL/dparam into param.grad,
# parameter and state_dict names as in PyTorch, no_grad, train/eval, and gradcheck.
#
# Run it as a script, `python tutorials/02_module.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import nn
from npse.gradcheck import gradcheck

rng = np.random.default_rng(0)


# %% [markdown]
# ## 1. A small network, built like a torch.nn one
#
# Explained in [chapter 2](../docs/02-module.md).

# %%
net = nn.Sequential(
    nn.Conv2d(3, 4, 3, padding=1, dtype="float64", rng=1),
    nn.BatchNorm2d(4, dtype="float64"),
    nn.ReLU(dtype="float64"),
    nn.GlobalAvgPool2d(dtype="float64"),
    nn.Linear(4, 2, dtype="float64", rng=2),
    dtype="float64",
)
print(net)
print("\nparameters (registration order):")
for name, p in net.named_parameters():
    print(f"  {name:12s} {p}")
print("state_dict keys:", list(net.state_dict()))   # parameters and buffers, PyTorch's names
assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias",
                                                  "4.weight", "4.bias"]
assert "1.running_mean" in net.state_dict() and "1.num_batches_tracked" in net.state_dict()


# %% [markdown]
# ## 2. forward, then backward
#
# Explained in [chapter 2](../docs/02-module.md).

# %%
x = rng.standard_normal((2, 3, 5, 5))
y = net(x)                               # every child keeps the cache its backward needs
dy = rng.standard_normal(y.shape)        # an upstream gradient dL/dy
dy_before = dy.copy()
dx = net.backward(dy)                    # runs the children in reverse order
print("\nx", x.shape, "-> y", y.shape, "| dx", dx.shape)
print("dy unchanged by backward:", np.array_equal(dy, dy_before))
assert y.shape == (2, 2) and dx.shape == x.shape and np.array_equal(dy, dy_before)


# %% [markdown]
# ## 3. Gradients accumulate
#
# backward *adds* into .grad (a layer used twice, or a gradient split over micro-batches, needs
# this); the optimiser's caller zeroes them between steps.
#
# Explained in [chapter 2](../docs/02-module.md).

# %%
g1 = net[4].weight.grad.copy()
net(x)
net.backward(dy)
print("second backward doubled the grad:", np.allclose(net[4].weight.grad, 2 * g1))
assert np.allclose(net[4].weight.grad, 2 * g1)
net.zero_grad()
print("after zero_grad, |grad| =", float(np.abs(net[4].weight.grad).sum()))
assert not np.abs(net[4].weight.grad).any()


# %% [markdown]
# ## 4. The cache is used once
#
# Explained in [chapter 2](../docs/02-module.md).

# %%
try:
    net.backward(dy)                      # the caches were consumed by the backward above
except RuntimeError as e:
    print("\nbackward twice: RuntimeError:", str(e)[:70], "...")
else:
    raise AssertionError("a second backward must be refused")

with nn.no_grad():                        # evaluation without keeping caches
    net(x)
try:
    net.backward(dy)
except RuntimeError as e:
    print("backward after no_grad: RuntimeError (no cache kept)")
else:
    raise AssertionError("backward after a no_grad forward must be refused")


# %% [markdown]
# ## 5. train() / eval()
#
# Only BatchNorm behaves differently: batch statistics in training, running estimates in eval.
#
# Explained in [chapter 2](../docs/02-module.md).

# %%
bn = net[1]
before = bn.running_mean.copy()
net(x)                                    # training mode: running statistics move
print("\ntraining forward moved running_mean:", not np.array_equal(before, bn.running_mean))
assert not np.array_equal(before, bn.running_mean)
net.eval()
before = bn.running_mean.copy()
net(x)
print("eval forward left it alone:        ", np.array_equal(before, bn.running_mean))
assert np.array_equal(before, bn.running_mean)
net.train()


# %% [markdown]
# ## 6. Writing a module of your own
#
# Explained in [chapter 2](../docs/02-module.md).

# %%
class Scale(nn.Module):
    """y = x * alpha, one learnable scalar; a minimal example of the contract."""

    def __init__(self, dtype=None):
        super().__init__(dtype=dtype)
        self.alpha = nn.Parameter(np.array([1.5], dtype=self.dtype))  # registered by assignment
        self.saved = None

    def forward(self, x):
        self.saved = x if nn.grad_enabled() else None  # the cache: what backward will need
        return x * self.alpha.data

    def backward(self, dy):
        x, self.saved = self.saved, None
        self.alpha.grad += (dy * x).sum(keepdims=True).reshape(1)   # accumulate, never assign
        return dy * self.alpha.data                                # a new array: dy untouched


s = Scale(dtype="float64")
print("\ncustom module parameters:", [n for n, _ in s.named_parameters()])
scale_check = gradcheck(s, rng.standard_normal((3, 4)))
print("gradcheck of Scale:", scale_check.errors)
assert scale_check.max_error <= 1e-6


# %% [markdown]
# ## 7. Gradient checking
#
# L = sum(f(x) * dy) for a random dy; compare backward with central differences in float64.
#
# Explained in [chapter 2](../docs/02-module.md).

# %%
x = rng.standard_normal((2, 3, 5, 5))
result = gradcheck(net, x, seed=3)
print("\ngradcheck of the whole network (relative errors):")
for name, err in result.errors.items():
    print(f"  {name:12s} {err:.2e}")
# 0.bias has a true gradient of exactly 0: the layer after it removes each channel's mean (the
# convolution and that layer are chapters 6 and 8; tutorials/06_conv2d.py shows this case). Its
# relative error is meaningless, so only the other entries are asserted here.
assert all(err <= 1e-6 for name, err in result.errors.items() if name != "0.bias"), result.errors

# The zero-gradient trap with a module of this chapter's kind: add one learnable number b, then
# subtract each row's mean, which takes b away again. b's exact gradient is 0: backward returns
# rounding residue (~1e-16), the central difference either rounding noise (~1e-11) or, when the
# perturbation rounds away completely, exactly 0. relative_error(a, b) = ||a - b|| / ||b|| cannot
# divide by ||b|| = 0, so it then falls back to the absolute error ||a - b||, which is tiny and
# "passes"; against noise it is about 1 and "fails". Which one you see depends on the rounding.
class ShiftThenCentre(nn.Module):
    """y = (x + b) - mean(x + b) over each row, b one learnable number: the mean removes it."""

    def __init__(self, dtype=None):
        super().__init__(dtype=dtype)
        self.b = nn.Parameter(np.array([0.5], dtype=self.dtype))

    def forward(self, x):
        shifted = x + self.b.data
        return shifted - shifted.mean(axis=1, keepdims=True)

    def backward(self, dy):
        dx = dy - dy.mean(axis=1, keepdims=True)
        self.b.grad += dx.sum().reshape(1)
        return dx


centre = ShiftThenCentre(dtype="float64")
x_c = rng.standard_normal((3, 4))
errors_b = []
for seed in range(8):
    centre.zero_grad()
    check = gradcheck(centre, x_c, seed=seed)
    errors_b.append(check.errors["b"])
    assert abs(centre.b.grad[0]) < 1e-12 and check.errors["input"] <= 1e-6
print("\nShiftThenCentre: |b.grad| < 1e-12 every time; b's 'relative error' over 8 seeds:",
      [f"{e:.0e}" for e in errors_b])
assert all(e < 1e-6 or e > 0.1 for e in errors_b)         # tiny (fallback) or about 1 (noise)

# The trap, made certain: dy constant along each row. Then dL/dx and dL/db are exactly 0, the
# numerical gradient is rounding noise, and both relative errors are ~1 -- a "failure" with
# nothing wrong. Lesson: look at the size of a gradient before trusting its relative error.
trap = gradcheck(centre, x_c, dy=np.ones((3, 4)))
print("dy constant along each row: relative errors", {k: f"{v:.1f}" for k, v in trap.errors.items()})
assert 0.5 < trap.errors["input"] < 2 and 0.5 < trap.errors["b"] < 2

net2 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False, dtype="float64", rng=1),
                     nn.BatchNorm2d(4, dtype="float64"), nn.ReLU(dtype="float64"),
                     nn.GlobalAvgPool2d(dtype="float64"), nn.Linear(4, 2, dtype="float64", rng=2),
                     dtype="float64")
result = gradcheck(net2, x, seed=3)
print("same network with Conv2d(bias=False): max error", f"{result.max_error:.1e}",
      "<= 1e-6:", result.max_error <= 1e-6, "| crossed a ReLU kink:", result.crossed_kink)
# chapter 2: with h = 1e-5 in float64 good errors land near 1e-10 to 1e-11, far below the bound 1e-6
assert 1e-13 <= result.max_error <= 1e-8 and not result.crossed_kink
print("BatchNorm's running statistics untouched by the check:",
      np.array_equal(net2[1].running_mean, np.zeros(4)))
assert np.array_equal(net2[1].running_mean, np.zeros(4))

# A step that crosses a kink is reported rather than silently averaged:
r = gradcheck(nn.ReLU(dtype="float64"), np.array([[0.0, 1.0, -1.0]]))
print("ReLU at x = 0: kinks reported", r.kinks)
assert r.kinks == [("input", 0)]

# gradcheck needs float64: a float32 module is refused.
try:
    gradcheck(nn.Linear(2, 2, rng=0), np.ones((1, 2), np.float32))
except TypeError as e:
    print("float32: TypeError:", str(e)[:55], "...")
else:
    raise AssertionError("gradcheck must refuse float32")
