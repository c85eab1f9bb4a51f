# %% [markdown]
# # Tutorial B: the fast formulations beside the reference, and the policy that picks them
#
# The companion of [appendix B](../docs/B-speed.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Run it as a script, `python tutorials/B_speed.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import time

import numpy as np

from npse import models, nn
from npse.fast import FAST, FORMULATIONS, REFERENCE, UPDATES, SharedWorkspaces, patches
from npse.fast.batchnorm2d import BatchNorm2dFormulations
from npse.fast.conv2d import Conv2dFormulations
from npse.fast.reductions import channel_sum
from npse.gradcheck import relative_error
from npse.fast.layout import is_channels_last, nhwc, to_channels_last

rng = np.random.default_rng(0)


# %% [markdown]
# ## 1. One policy says how; the layers say what
#
# Explained in [appendix B](../docs/B-speed.md).

# %%
print(FAST.describe())
print(REFERENCE.describe())
model = models.cifar_resnet(depth=8, se="standard", widths=(4, 8, 8), se_reduction=2, dtype="float64")
x = rng.standard_normal((2, 3, 8, 8))
assert model.policy is REFERENCE              # built, a model runs the reference; its caller chooses
reference_logits = model(x)
fast_logits = model.use_policy(FAST)(x)
print("\nsame model, fast policy vs reference policy: relative difference of the logits",
      f"{relative_error(fast_logits, reference_logits):.1e}")
assert relative_error(fast_logits, reference_logits) <= 1e-12
assert "policy" not in model.config and not any("policy" in k for k in model.state_dict())


# %% [markdown]
# ## 2. The convolution: four orders of the same products
#
# Explained in [appendix B](../docs/B-speed.md).

# %%
x = rng.standard_normal((2, 3, 5, 5))
w = rng.standard_normal((4, 3, 3, 3))
y_ref, cache_ref = nn.conv2d_forward(x, w, None, 1, 1)              # one im2col product, the reference
dy = rng.standard_normal(y_ref.shape)
dx_ref, dw_ref, _ = nn.conv2d_backward(dy, cache_ref)
print("\nreference: im2col", nn.im2col(x, (3, 3), padding=(1, 1)).shape, "-> y", y_ref.shape)
# One patch matrix per image: W2 @ cols[n] is image n's output, already in (N, O, OH*OW) order.
grouped = patches.columns_per_image(x, (3, 3), padding=(1, 1))
print("columns per image", grouped.shape, "| image 1 holds im2col's columns 25..49:",
      np.array_equal(grouped[1], nn.im2col(x, (3, 3), padding=(1, 1))[:, 25:50]))
assert grouped.shape == (2, 27, 25)
# Stored channels last, the same values make one patch *row* per output pixel.
x_cl = to_channels_last(x)
rows = patches.patch_rows(nhwc(x_cl), (3, 3), padding=(1, 1))
print("same values:", np.array_equal(x_cl, x), "| stored channels last:", is_channels_last(x_cl),
      "| patch rows", rows.shape)
assert rows.shape == (50, 27) and is_channels_last(x_cl)
for layout in ("batch", "per_image", "patch_rows", "kernel_rows"):
    for route in ("convolution", "col2im"):
        conv = Conv2dFormulations(FAST.replace(input_gradient=route), SharedWorkspaces(), layout=layout)
        y, cache = conv.forward(x_cl if layout in ("patch_rows", "kernel_rows") else x, w, None, 1, 1)
        dx, dw, _ = conv.backward(dy, cache)
        err = max(relative_error(y, y_ref), relative_error(dx, dx_ref), relative_error(dw, dw_ref))
        print(f"  {layout:<12} dx by {route:<12} y stored channels last: {is_channels_last(y)!s:<5}"
              f"  largest relative difference from the reference {err:.1e}")
        assert err <= 1e-12


# %% [markdown]
# ## 3. BatchNorm: sums as products, folded factors
#
# Explained in [appendix B](../docs/B-speed.md).

# %%
x = rng.standard_normal((4, 3, 6, 6)) * 2 + 1
print("\nchannel_sum (a matrix-vector product) vs x.sum(axis=(0, 2, 3)):",
      f"{relative_error(channel_sum(x), x.sum(axis=(0, 2, 3))):.1e}")
bn_fast = BatchNorm2dFormulations(FAST)
args = (np.ones(3), np.zeros(3))
for stored in (x, to_channels_last(x)):
    y_ref, cache = nn.batchnorm2d_forward(x, *args, np.zeros(3), np.ones(3))
    y, fast_cache = bn_fast.forward(stored, *args, np.zeros(3), np.ones(3))
    dy = rng.standard_normal(x.shape)
    grads_ref, grads = nn.batchnorm2d_backward(dy, cache), bn_fast.backward(dy, fast_cache)
    err = max(relative_error(a, b) for a, b in zip((y,) + grads, (y_ref,) + grads_ref))
    print(f"  fast BatchNorm on x stored {'channels last' if is_channels_last(stored) else 'contiguous'}:"
          f" largest relative difference from the reference {err:.1e}")
    assert err <= 1e-12


# %% [markdown]
# ## 4. Every registered formulation is checked by one suite
#
# Explained in [appendix B](../docs/B-speed.md).

# %%
print("\nregistered formulations (tests/test_formulations.py runs each against its reference):")
for f in FORMULATIONS:
    print(f"  {f.layer.__name__:<16} {f.name}{'   (the one a policy puts in place)' if f.chosen else ''}")
assert {f.layer for f in FORMULATIONS} == {nn.Conv2d, nn.BatchNorm2d, nn.GlobalAvgPool2d,
                                          nn.SEBlock, nn.ReLU}
# The SGD update is no layer: its fused CuPy kernel is registered as an update formulation.
for u in UPDATES:
    print(f"  {u.optimizer + ' update':<16} {u.name}   (runs on {', '.join(u.backends)}; SGD(fused=True))")
assert [(u.optimizer, u.backends) for u in UPDATES] == [("SGD", ("cupy",))]


# %% [markdown]
# ## 5. What it buys (one look; npse bench measures properly)
#
# Explained in [appendix B](../docs/B-speed.md).

# %%
model = models.se_resnet20(seed=0)
x = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
for policy in (REFERENCE, FAST):
    model.use_policy(policy)
    model.eval()
    with nn.no_grad():
        model(x)                                       # warm-up: buffers, caches
        start = time.perf_counter()
        model(x)
    print(f"SE-ResNet-20, evaluation of 32 images under {policy.name!r}: "
          f"{1000 * (time.perf_counter() - start):.0f} ms (one run on this machine; not asserted)")


# %% [markdown]
# ## 6. Threads: the same step, in slices of the batch
#
# `npse.fast.threads` cuts the batch into one slice per thread; each formulation works on its
# slice (patches and products, BatchNorm's sums, ReLU, the SE block's scale) and partial sums are
# added in slice order, so a step at a fixed thread count repeats bit for bit, and agrees with
# one thread to rounding. Explained in [appendix B](../docs/B-speed.md) (section "Threads").

# %%
from npse.fast import threads  # noqa: E402

print("\nthe slices of a batch of 10 for 1, 2 and 4 threads:",
      [threads.spans(10, n) for n in (1, 2, 4)])
x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
model = models.se_resnet20(seed=0).use_policy(FAST)
model.eval()
outputs = {}
for n in (1, 2, 2):
    with threads.using(n), nn.no_grad():
        outputs.setdefault(n, []).append(model(x))
print("two threads, twice: bit for bit the same:", np.array_equal(*outputs[2]))
print(f"one thread against two: largest relative difference "
      f"{relative_error(outputs[2][0], outputs[1][0]):.1e} (float32 rounding)")
assert np.array_equal(*outputs[2]) and relative_error(outputs[2][0], outputs[1][0]) < 1e-5
