# %% [markdown]
# # Tutorial 8: batch normalisation
#
# The companion of [chapter 8](../docs/08-batchnorm2d.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Run it as a script, `python tutorials/08_batchnorm2d.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import nn
from npse.gradcheck import gradcheck

rng = np.random.default_rng(0)
x = 3.0 + 2.0 * rng.standard_normal((4, 3, 5, 5))     # mean ~3, std ~2 in every channel
N, C, H, W = x.shape
M = N * H * W                                          # values per channel


# %% [markdown]
# ## 1. Training mode: normalise with the batch's own statistics
#
# Explained in [chapter 8](../docs/08-batchnorm2d.md).

# %%
bn = nn.BatchNorm2d(C, dtype="float64")
y = bn(x)
print("per-channel mean of y:", np.abs(y.mean(axis=(0, 2, 3))).round(12))
print("per-channel (biased) variance of y:", np.round(y.var(axis=(0, 2, 3)), 6), "(1 - tiny, because of eps)")
assert np.abs(y.mean(axis=(0, 2, 3))).max() < 1e-12
assert np.all(y.var(axis=(0, 2, 3)) < 1) and np.allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-5)


# %% [markdown]
# ## 2. Running statistics: biased variance to normalise, unbiased one to remember
#
# Explained in [chapter 8](../docs/08-batchnorm2d.md).

# %%
mu = x.mean(axis=(0, 2, 3))
var_biased = x.var(axis=(0, 2, 3))                    # divides by M
var_unbiased = x.var(axis=(0, 2, 3), ddof=1)          # divides by M - 1
print("\nrunning_mean = 0.9 * 0 + 0.1 * mu:          ", np.allclose(bn.running_mean, 0.1 * mu))
print("running_var  = 0.9 * 1 + 0.1 * var*M/(M-1):", np.allclose(bn.running_var, 0.9 + 0.1 * var_unbiased))
print("  (with the biased variance it would differ by", f"{np.abs(0.1 * (var_unbiased - var_biased)).max():.1e})")
print("num_batches_tracked:", int(bn.num_batches_tracked))
assert np.allclose(bn.running_mean, 0.1 * mu) and np.allclose(bn.running_var, 0.9 + 0.1 * var_unbiased)
assert not np.allclose(bn.running_var, 0.9 + 0.1 * var_biased) and int(bn.num_batches_tracked) == 1


# %% [markdown]
# ## 3. Evaluation mode: a fixed affine map
#
# Explained in [chapter 8](../docs/08-batchnorm2d.md).

# %%
bn.eval()
y_eval = bn(x)
expected = (x - bn.running_mean[None, :, None, None]) / np.sqrt(bn.running_var[None, :, None, None] + bn.eps)
print("\neval output uses the running estimates:", np.allclose(y_eval, expected))
dy = rng.standard_normal(x.shape)
dx = bn.backward(dy)
print("eval backward is dy * gamma / sqrt(running_var + eps):",
      np.allclose(dx, dy / np.sqrt(bn.running_var[None, :, None, None] + bn.eps)))
assert np.allclose(y_eval, expected) and np.allclose(dx, dy / np.sqrt(bn.running_var[None, :, None, None] + bn.eps))
bn.train()


# %% [markdown]
# ## 4. Training-mode backward: the batch statistics depend on x too
#
# dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat)), means per channel. The
# two subtracted terms are the gradient through mu and var; forgetting them is the classic bug.
#
# Explained in [chapter 8](../docs/08-batchnorm2d.md).

# %%
bn = nn.BatchNorm2d(C, dtype="float64")
bn.weight.data[:] = [0.5, 1.0, 2.0]
bn.bias.data[:] = [0.0, 1.0, -1.0]
for mode in ("train", "eval"):
    getattr(bn, mode)()
    r = gradcheck(bn, x, seed=1)
    print(f"gradcheck ({mode:5s} mode):", {k: f"{v:.1e}" for k, v in r.errors.items()})
    assert r.max_error <= 1e-6
print("running statistics untouched by the many forward passes of gradcheck:",
      np.allclose(bn.running_mean, 0) and np.allclose(bn.running_var, 1), "| num_batches_tracked:",
      int(bn.num_batches_tracked))
assert np.allclose(bn.running_mean, 0) and np.allclose(bn.running_var, 1) and int(bn.num_batches_tracked) == 0


# %% [markdown]
# ## 5. A trap when checking BatchNorm: an upstream gradient that looks like x
#
# The training-mode dx removes from dy, per channel, its constant part and its part along xhat. If
# dy is itself an affine function of x per channel -- e.g. drawn by the same seeded generator that
# drew x, so dy == x -- the exact dx is almost zero (exactly zero if eps were 0; eps leaves a
# residue of order eps / var), and a *relative* error against an almost-zero gradient is noise.
#
# Explained in [chapter 8](../docs/08-batchnorm2d.md).

# %%
bn = nn.BatchNorm2d(C, dtype="float64")
x0 = np.random.default_rng(7).standard_normal((2, C, 3, 3))
r = gradcheck(bn, x0, seed=7)                          # gradcheck draws dy from default_rng(7) too
bn(x0)
dx = bn.backward(np.random.default_rng(7).standard_normal(x0.shape))
print("\nx and dy from the same seed: |dx| max =", f"{np.abs(dx).max():.1e}",
      "-> 'relative error'", f"{r.errors['input']:.1e} (meaningless)")
clean = gradcheck(bn, x0, seed=8).errors["input"]
print("with a different seed for dy:", f"{clean:.1e}")
# chapter 8 quotes 1.7e-5 (above the tests' bound of 1e-6) against 5e-11 with another seed; the
# noise depends on rounding, so each is asserted within a band, not to its digits
assert np.abs(dx).max() < 1e-3 and 1e-12 <= clean <= 1e-9
assert 1e-6 < r.errors["input"] < 1e-3 and r.errors["input"] > 1e4 * clean


# %% [markdown]
# ## 6. The trap made certain: dy constant in each channel
#
# Then dL/dx and dL/dweight are exactly 0 (the backward pass removes each channel's constant part
# and its part along xhat), the numerical gradient is rounding noise, and the relative error is
# about 1 -- a "failure" with nothing wrong. The bias gradient, sum(dy), is not zero and checks
# fine.
#
# Explained in [chapter 8](../docs/08-batchnorm2d.md).

# %%
bn = nn.BatchNorm2d(3, dtype="float64")
x_bn = np.random.default_rng(3).standard_normal((4, 3, 5, 5))
dy_bn = np.ones((4, 3, 5, 5)) * np.array([1.0, -2.0, 0.5]).reshape(1, 3, 1, 1)
trap = gradcheck(bn, x_bn, dy=dy_bn)
bn(x_bn)
dx_bn = bn.backward(dy_bn)
print("\ndy constant per channel: relative errors", {k: f"{v:.1e}" for k, v in trap.errors.items()},
      "| max |dx| =", f"{np.abs(dx_bn).max():.1e}")
assert 0.5 < trap.errors["input"] < 2 and 0.5 < trap.errors["weight"] < 2      # "fails" ...
assert np.abs(dx_bn).max() < 1e-12                                            # ... on a zero gradient
assert trap.errors["bias"] <= 1e-6
