# %% [markdown]
# # Tutorial 13: the role of excitation
#
# The companion of [chapter 13](../docs/13-role-of-excitation.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Works on the SE-ResNet-20 shipped in weights/se_resnet20-10ep/ and on its committed analysis
# (excitation/gates.npz, written by `npse excitation`): checks the file, recomputes the chapter's
# numbers (eta^2, the effective ranks) from the per-class gate statistics and histograms, checks the
# chapter's statements and verdicts about them and the probe's intervals, uses the
# gate API (.gate, fix_gate) on the shipped network, and counts what the last stage's SE blocks
# cost. Where the CIFAR-10 test set is present ($NPSE_DATA or ~/.cache/npse; CI has none), it also
# measures the accuracy again and runs one probe on part of the test set (about a minute).
#
# Run it as a script, `python tutorials/13_role_of_excitation.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import json
import os
from pathlib import Path

import numpy as np

import npse
from npse import nn
from npse.checkpoint import load_checkpoint
from npse.data import iterate_batches, load_cifar10
from npse.excitation import find_se_blocks, judge_claims, read_gates, sha256_of, stage_of
from npse.nn import Conv2d
from npse.train import evaluate, load_model_for_inference

# The repository's weights/ folder: found from the working directory (a notebook has no
# __file__) or, failing that, next to the installed npse package (pip install -e .).
FOLDER = next((base / "weights" / "se_resnet20-10ep" for base in [Path.cwd(), *Path.cwd().parents,
                                                               Path(npse.__file__).resolve().parent.parent]
               if (base / "weights" / "se_resnet20-10ep").is_dir()), None)
assert FOLDER is not None, "weights/se_resnet20-10ep not found: run from inside the repository"
WEIGHTS = FOLDER / "se_resnet20.npz"
ANALYSIS = FOLDER / "excitation"


# %% [markdown]
# ## 1. The shipped weights: checksum, metadata, weights only
#
# Explained in [chapter 13](../docs/13-role-of-excitation.md).

# %%
sums = dict(reversed(line.split()) for line in (FOLDER / "SHA256SUMS").read_text().splitlines())
assert sha256_of(WEIGHTS) == sums[WEIGHTS.name], "the weights file does not match SHA256SUMS"
arrays, meta = load_checkpoint(WEIGHTS)
assert all(k.startswith("model.") for k in arrays) and meta["weights_only"]
model, meta = load_model_for_inference(WEIGHTS)
last = meta["metrics"][-1]
print(f"{WEIGHTS.name}: {meta['config']['model']}, epoch {meta['epoch']} of "
      f"{meta['config']['epochs']}, {len(arrays)} arrays, {WEIGHTS.stat().st_size:,} bytes, "
      f"SHA-256 ok; test accuracy when trained {100 * last['test_acc']:.2f}% "
      "(a JPEG re-encoding of CIFAR-10)")


# %% [markdown]
# ## 2. The per-class gate statistics and the numbers computed from them
#
# Explained in [chapter 13](../docs/13-role-of-excitation.md).

# %%
stats, gates_meta = read_gates(ANALYSIS / "gates.npz")
report = json.loads((ANALYSIS / "excitation.json").read_text())
classes = gates_meta["classes"]
print(f"\ngates.npz: {len(stats)} blocks, {int(stats['SE_1_1'].count.sum())} test images, "
      f"classes {classes}")
print(f"{'block':<8}{'C':>4}{'h':>3}{'mean gate':>11}{'eta2 median':>13}{'>0.95':>8}{'<0.05':>8}"
      f"{'sd within':>11}{'sd between':>12}{'PR':>6}{'s1 share':>10}")
rows = {}
for name, s in stats.items():
    eta2 = s.eta2()
    # The effective rank by hand: singular values of the class means minus their mean over classes.
    deviation = s.class_mean - s.class_mean.mean(axis=0)
    sv2 = np.linalg.svd(deviation, compute_uv=False) ** 2
    rows[name] = row = dict(channels=s.sum.shape[1], hidden=gates_meta["hidden"][name],
               mean_gate=s.mean.mean(), eta2_median=np.nanmedian(eta2),
               saturated_high=s.high.sum() / s.high.size / s.count.mean(),
               saturated_low=s.low.sum() / s.low.size / s.count.mean(),
               within_class_sd=np.sqrt(s.class_var.mean()),
               between_class_sd=np.sqrt(s.class_mean.var(axis=0).mean()),
               participation_ratio=sv2.sum() ** 2 / (sv2 ** 2).sum(),
               first_share=sv2.max() / sv2.sum())
    print(f"{name:<8}{row['channels']:>4}{row['hidden']:>3}{row['mean_gate']:>11.3f}"
          f"{row['eta2_median']:>13.3f}"
          f"{100 * row['saturated_high']:>7.1f}%{100 * row['saturated_low']:>7.1f}%"
          f"{row['within_class_sd']:>11.3f}{row['between_class_sd']:>12.3f}"
          f"{row['participation_ratio']:>6.2f}{100 * row['first_share']:>9.2f}%")
    for key, value in row.items():       # the same numbers as excitation.json, from the arrays
        assert abs(report["blocks"][name][key] - value) <= 1e-9, (name, key)
    # The histograms count every gate: each channel's row sums to the 10,000 test images.
    assert (s.hist.sum(axis=1) == s.count.sum()).all()

# eta^2 of one channel by hand: between-class variance of the class means over that plus the mean
# within-class variance.
s = stats["SE_3_1"]
m, v = s.class_mean[:, 0], s.class_var[:, 0]
print(f"\nSE_3_1, channel 0: class means {np.round(m, 3)}")
print(f"  between-class variance {m.var():.2e}, mean within-class variance {v.mean():.2e}, "
      f"eta^2 = {m.var() / (m.var() + v.mean()):.3f}")
assert np.isclose(m.var() / (m.var() + v.mean()), s.eta2()[0])

# Hidden width 1 in stage 1 (16 channels, reduction 16): the classes move its 16 gates in one
# direction, so its channels share one eta^2 and count as one measurement, not sixteen.
for name in ("SE_1_1", "SE_1_2", "SE_1_3"):
    assert rows[name]["hidden"] == 1 and rows[name]["first_share"] > 0.999
    q25, q75 = np.nanpercentile(stats[name].eta2(), [25, 75])
    assert q75 - q25 < 0.005, name


# %% [markdown]
# ## 3. The paper's claims, as the chapter states them
#
# Explained in [chapter 13](../docs/13-role-of-excitation.md).

# %%
stage_eta = {}
for name, s in stats.items():
    stage_eta.setdefault(stage_of(name), []).append(np.nanmedian(s.eta2()))
stage_eta = {k: float(np.mean(v)) for k, v in stage_eta.items()}
print("\nmean over each stage's blocks of the median eta^2:",
      {k: round(v, 3) for k, v in stage_eta.items()})
verdicts = {c["claim"]: c["verdict"] for c in judge_claims(rows)}    # from the arrays above
for claim, verdict in verdicts.items():
    print(f"  {verdict:>20}: {claim}")
assert verdicts == {c["claim"]: c["verdict"] for c in report["claims"]}
# The chapter's statements, as bounds: gates near 1/2 and never saturated; eta^2 rising by stage
# but not block by block (SE_2_3 below SE_1_2), highest in the last block; small spreads: no
# class moves a gate by 0.035 or more on average.
assert all(0.4 < r["mean_gate"] < 0.6 and r["saturated_high"] == 0 and r["saturated_low"] < 1e-4
           for r in rows.values())
assert stage_eta["1"] < stage_eta["2"] < stage_eta["3"]
assert rows["SE_2_3"]["eta2_median"] < rows["SE_1_2"]["eta2_median"]
assert max(rows, key=lambda n: rows[n]["eta2_median"]) == "SE_3_3"
assert all(r["within_class_sd"] < 0.05 and r["between_class_sd"] < 0.035 for r in rows.values())
chapter = {"early blocks are shared across classes; deeper ones are class-specific":
           "weakly, not monotone",
           "the very last block is nearly class-agnostic": "does not hold",
           "the spread within a class grows with depth": "no clear trend",
           "a block of the last stage saturates: most of its gates are close to 1": "does not hold"}
assert verdicts == chapter, verdicts

# The probe (excitation.json, measured with the test set, the means from 5,000 training images):
# the input-dependent part is worth little, nothing measurable in the last stage; the learned scale
# (gates near 1/2 instead of 1) is worth far more.
assert report["probe_setup"]["mean_from"] == "training images"
assert report["probe_setup"]["images"] == 5000
change = {(p["stage"], p["replacement"]): p["accuracy"] - report["accuracy"] for p in report["probe"]}
interval = {(p["stage"], p["replacement"]): p["interval_points"] for p in report["probe"]}
print("\nprobe (change in test accuracy, points, and its 95% paired bootstrap interval):")
for key, value in change.items():
    print(f"  {key[0]:>3} {key[1]:<4} {100 * value:+6.2f}  [{interval[key][0]:+.2f}, "
          f"{interval[key][1]:+.2f}]")
assert all(-0.02 < change[(s, "mean")] <= 0.005 for s in ("1", "2", "3", "all"))
assert abs(change[("3", "mean")]) < min(abs(change[("1", "mean")]), abs(change[("2", "mean")]))
assert interval[("3", "mean")][0] < 0 < interval[("3", "mean")][1]           # within the noise
assert all(interval[(s, "mean")][1] < 0 for s in ("1", "2", "all"))          # a loss, if small
assert change[("1", "one")] < change[("2", "one")] < change[("3", "one")] < change[("3", "mean")]


# %% [markdown]
# ## 4. The gate API on the shipped network
#
# Explained in [chapter 13](../docs/13-role-of-excitation.md).

# %%
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (8, 3, 32, 32)).astype(np.uint8)     # any uint8 images will do
xb, _ = next(iterate_batches(images, np.zeros(8, int), 8, meta["mean"], meta["std"],
                             shuffle=False, dtype=model.dtype))
model.eval()
blocks = dict(find_se_blocks(model))
with nn.no_grad():
    logits = model(xb)
    print(f"\nafter a forward pass, SE_3_3.gate has shape {blocks['SE_3_3'].gate.shape}")
    means = gates_meta["probe_mean"]                     # over 5,000 training images
    for name in ("SE_3_1", "SE_3_2", "SE_3_3"):
        blocks[name].fix_gate(means[name])               # the class-agnostic mean, (64,)
    fixed = model(xb)
    assert np.allclose(blocks["SE_3_3"].gate, means["SE_3_3"][None, :], atol=1e-6)
    for name in ("SE_3_1", "SE_3_2", "SE_3_3"):
        blocks[name].fix_gate(None)
    again = model(xb)
print("largest change of a logit with stage 3's gates fixed at their means:",
      f"{float(np.abs(fixed - logits).max()):.3f}; released: {float(np.abs(again - logits).max())}")
assert np.array_equal(again, logits)


# %% [markdown]
# ## 5. What the last stage's SE blocks cost: parameters, not arithmetic
#
# Explained in [chapter 13](../docs/13-role-of-excitation.md).

# %%
print(f"\n{'stage':<6}{'SE params':>10}{'share':>8}{'SE ops/image':>14}{'share':>8}"
      f"{'conv MACs/image':>17}{'SE/conv':>9}")
rows = {}
for stage in ("1", "2", "3"):
    side = 32 >> (int(stage) - 1)                      # 32, 16, 8 pixels
    layer = getattr(model, f"layer{stage}")
    se_params = sum(p.data.size for n, b in find_se_blocks(layer) for p in b.parameters())
    # pooling adds C*H*W, the scale multiplies C*H*W, fc1 and fc2 multiply-add 2*C*h
    se_ops = sum(2 * b.channels * side * side + 2 * b.channels * b.hidden
                 for _, b in find_se_blocks(layer))
    conv_macs = sum(m.weight.data.size * side * side for _, m in layer.named_modules()
                    if isinstance(m, Conv2d))
    rows[stage] = (se_params, se_ops, conv_macs)
total_params, total_ops = (sum(r[i] for r in rows.values()) for i in (0, 1))
for stage, (p, o, c) in rows.items():
    print(f"{stage:<6}{p:>10,}{100 * p / total_params:>7.0f}%{o:>14,}{100 * o / total_ops:>7.0f}%"
          f"{c:>17,}{100 * o / c:>8.2f}%")
assert total_params == 2373 and rows["3"][0] / total_params > 0.7 and rows["3"][1] / total_ops < 0.2


# %% [markdown]
# ## 6. Where the test set is present: the accuracy again, and one probe
#
# Explained in [chapter 13](../docs/13-role-of-excitation.md).

# %%
data_dir = Path(os.environ.get("NPSE_DATA") or Path.home() / ".cache" / "npse")
if (data_dir / "cifar-10-batches-bin" / "test_batch.bin").exists():
    data = load_cifar10(data_dir, download=False)
    _, acc, _ = evaluate(model, data.x_test, data.y_test, meta["mean"], meta["std"], 250)
    print(f"\ntest accuracy now: {100 * acc:.2f}% (excitation.json: {100 * report['accuracy']:.2f}%)")
    assert abs(acc - report["accuracy"]) < 2e-3      # other BLAS builds round differently
    part = slice(0, 2000)
    base = evaluate(model, data.x_test[part], data.y_test[part], meta["mean"], meta["std"])[1]
    for name in ("SE_3_1", "SE_3_2", "SE_3_3"):
        blocks[name].fix_gate(gates_meta["probe_mean"][name])
    probed = evaluate(model, data.x_test[part], data.y_test[part], meta["mean"], meta["std"])[1]
    for name in ("SE_3_1", "SE_3_2", "SE_3_3"):
        blocks[name].fix_gate(None)
    print(f"first 2000 test images: {100 * base:.2f}%, with stage 3's gates fixed at their "
          f"means {100 * probed:.2f}%")
else:
    print(f"\nno CIFAR-10 test set under {data_dir}: the accuracy is not measured again "
          "(set NPSE_DATA to a folder holding cifar-10-batches-bin/)")


# %% [markdown]
# ## 7. 10 epochs and 40
#
# Explained in [chapter 13](../docs/13-role-of-excitation.md#10-epochs-and-40): the same analysis
# of the network trained with the full recipe (weights/se_resnet20-40ep/), beside this one.

# %%
from npse.excitation.compare import compare, comparison_markdown, read_report

LONGER = FOLDER.parent / "se_resnet20-40ep" / "excitation"
side_by_side = compare(read_report(FOLDER / "excitation"), read_report(LONGER))
# The committed comparison.md is what the code writes from the two committed excitation.json files.
assert (LONGER / "comparison.md").read_text(encoding="utf-8") == comparison_markdown(side_by_side)
print(f"\ntest accuracy {100 * side_by_side['before']['accuracy']:.2f}% after 10 epochs, "
      f"{100 * side_by_side['after']['accuracy']:.2f}% after 40")
for key, what in (("eta2_median", "eta^2 median"), ("between_class_sd", "between-class sd"),
                  ("within_class_sd", "within-class sd")):
    d = side_by_side["directions"][key]["all"]
    print(f"{what:<17} higher after 40 epochs in {d['higher']} of {d['blocks']} blocks, mean "
          f"change {d['mean_change']:+.4f}: {d['verdict']}")
# The chapter's reading: class-specificity fell in all but one block, and the last block opened.
assert side_by_side["directions"]["eta2_median"]["all"]["higher"] == 1
assert side_by_side["blocks"]["SE_3_3"]["saturated_high"][1] > 0.4
