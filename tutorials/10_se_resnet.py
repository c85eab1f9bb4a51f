# %% [markdown]
# # Tutorial 10: the CIFAR SE-ResNet
#
# The companion of [chapter 10](../docs/10-se-resnet.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Run it as a script, `python tutorials/10_se_resnet.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import models
from npse.gradcheck import gradcheck
from npse.models import SE_VARIANTS, cifar_resnet, count_parameters


# %% [markdown]
# ## 1. SE-ResNet-20: the summary table
#
# Explained in [chapter 10](../docs/10-se-resnet.md).

# %%
net = models.se_resnet20()
table = models.summary(net).splitlines()
print("summary(se_resnet20()), header and last block of stage 3:")
print("\n".join(table[:2]))
print("  ...")
print("\n".join(table[-14:]))
assert table[-1].split()[:3] == ["total", "parameters:", "272,095"] and "40,553,056" in table[-1]


# %% [markdown]
# ## 2. Parameter counts: the plain network, shortcut B, and the SE variants
#
# Explained in [chapter 10](../docs/10-se-resnet.md).

# %%
plain = count_parameters(models.resnet20())
print(f"\nResNet-20, shortcut A: {plain:,} parameters")
print(f"ResNet-20, shortcut B: {count_parameters(models.resnet20(shortcut='B')):,} parameters "
      "(two 1x1 projections with BatchNorm)")
print("hidden widths of the nine SE blocks (r = 16):", [m.hidden for _, m in net.se_blocks()])
print("per block: 2*C*h + h + C  ->  C=16: 49, C=32: 162, C=64: 580;  3*(49 + 162 + 580) =",
      3 * (49 + 162 + 580))
print(f"\n{'se=':<12}{'parameters':>12}{'added by SE':>14}")
for se in SE_VARIANTS:
    n = count_parameters(cifar_resnet(depth=20, se=se))
    print(f"{se!s:<12}{n:>12,}{n - plain:>14,}")
print("('3x3' adds as much as 'standard' in BasicBlocks: both positions have the block's width.)")
assert plain == 269_722 and count_parameters(models.resnet20(shortcut="B")) == 272_474
assert [m.hidden for _, m in net.se_blocks()] == [1] * 3 + [2] * 3 + [4] * 3
assert {se: count_parameters(cifar_resnet(depth=20, se=se)) - plain for se in SE_VARIANTS} == {
    None: 0, "standard": 2373, "pre": 1842, "post": 2373, "identity": 2373, "3x3": 2373, "nosqueeze": 2373}
bottleneck = {se: count_parameters(cifar_resnet(depth=29, block="bottleneck", se=se))
              for se in (None, "standard", "3x3")}
print("ResNet-29 with Bottlenecks: SE standard adds "
      f"{bottleneck['standard'] - bottleneck[None]:,}, SE 3x3 adds {bottleneck['3x3'] - bottleneck[None]:,}")
assert (bottleneck["standard"] - bottleneck[None], bottleneck["3x3"] - bottleneck[None]) == (33_684, 2_373)


# %% [markdown]
# ## 3. One forward and backward pass of a tiny network
#
# Explained in [chapter 10](../docs/10-se-resnet.md).

# %%
tiny = cifar_resnet(depth=8, widths=(4, 8, 8), se="standard", se_reduction=2, seed=0)
print("\n", tiny.layer2, sep="")
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
logits = tiny(x)
print("\nx", x.shape, "-> logits", logits.shape, logits.dtype)
dlogits = rng.standard_normal(logits.shape).astype(np.float32)
tiny.zero_grad()
dx = tiny.backward(dlogits)
print("dx", dx.shape, "| gradients of", sum(1 for _ in tiny.parameters()), "parameters, e.g.",
      "layer2.0.se.fc2.weight", tiny.layer2[0].se.fc2.weight.grad.shape)
for name, block in tiny.se_blocks():
    print(f"  {name}: gate {block.gate.shape}, mean excitation {float(block.gate.mean()):.3f}")
assert logits.shape == (4, 10) and logits.dtype == np.float32 and dx.shape == x.shape
assert all(p.grad.shape == p.data.shape for p in tiny.parameters())

# The shortcut A of the first stage-2 block: subsample, then zero channels on both sides.
sc = tiny.layer2[0].shortcut
y = sc(x[:, :1].repeat(4, axis=1))                 # 4 channels in, 8 out
print("\nShortcutA", sc.extra_repr(), ": output", y.shape, "; channels that are all zero:",
      [c for c in range(8) if not y[:, c].any()])
assert y.shape == (4, 8, 8, 8) and [c for c in range(8) if not y[:, c].any()] == [0, 1, 6, 7]


# %% [markdown]
# ## 4. Gradient check of a tiny SE-ResNet (float64, random directions)
#
# Explained in [chapter 10](../docs/10-se-resnet.md).

# %%
x64 = rng.standard_normal((2, 3, 8, 8))
for se, shortcut in [("standard", "A"), ("pre", "B"), ("post", "A"), ("identity", "B")]:
    model = cifar_resnet(depth=8, widths=(4, 8, 8), se=se, shortcut=shortcut, se_reduction=2,
                         dtype="float64", seed=1)
    r = gradcheck(model, x64, seed=3, max_entries=0, num_directions=3)
    worst = max(r.errors, key=r.errors.get)
    print(f"gradcheck se={se:9s} shortcut {shortcut}: {len(r.errors)} tensors, "
          f"max relative error {r.max_error:.1e} ({worst}), crossed a kink: {r.crossed_kink}")
    assert r.max_error <= 1e-6 and not r.crossed_kink
