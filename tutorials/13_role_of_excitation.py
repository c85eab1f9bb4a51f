# %% [markdown]
# # Tutorial 13: the role of excitation
#
# The companion of [chapter 13](../docs/13-role-of-excitation.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Works on the SE-ResNet-20 trained with the full 40-epoch recipe, shipped in
# weights/se_resnet20-40ep/, and on its committed analysis (excitation/gates.npz, written by
# `npse excitation`): checks the file, recomputes the chapter's numbers (eta^2, the effective ranks)
# from the per-class gate statistics and histograms, checks the chapter's statements and verdicts
# about them and the probe's intervals, uses the gate API (.gate, fix_gate) on the shipped network,
# and counts what the last stage's SE blocks cost. Last, it puts the analysis beside that of the
# network trained for 10 epochs (weights/se_resnet20-10ep/). Where the CIFAR-10 test set is present
# ($NPSE_DATA or ~/.cache/npse; CI has none), it also measures the accuracy again and runs one probe
# on part of the test set (about a minute).
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
from npse.excitation.compare import compare, comparison_markdown, read_report
from npse.nn import Conv2d
from npse.train import evaluate, load_model_for_inference

# The repository's weights/ folder: found from the working directory (a notebook has no
# __file__) or, failing that, next to the installed npse package (pip install -e .).
FOLDER = next((base / "weights" / "se_resnet20-40ep" for base in [Path.cwd(), *Path.cwd().parents,
                                                               Path(npse.__file__).resolve().parent.parent]
               if (base / "weights" / "se_resnet20-40ep").is_dir()), None)
assert FOLDER is not None, "weights/se_resnet20-40ep not found: run from inside the repository"
WEIGHTS = FOLDER / "se_resnet20.npz"
ANALYSIS = FOLDER / "excitation"
EARLIER = FOLDER.parent / "se_resnet20-10ep"      # the 10-epoch network, compared with in section 7


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
    # A block whose classes do not differ at all has none (0/0: NaN, as in excitation.json).
    deviation = s.class_mean - s.class_mean.mean(axis=0)
    sv2 = np.linalg.svd(deviation, compute_uv=False) ** 2
    with np.errstate(invalid="ignore"):
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
        assert np.isclose(report["blocks"][name][key], value, rtol=0, atol=1e-9, equal_nan=True), \
            (name, key)
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

# Hidden width 1 in stage 1 (16 channels, reduction 16): the classes move a block's 16 gates in one
# direction, so its channels share one eta^2 and count as one measurement, not sixteen.
for name in ("SE_1_1", "SE_1_2"):
    assert rows[name]["hidden"] == 1 and rows[name]["first_share"] > 0.999
    q25, q75 = np.nanpercentile(stats[name].eta2(), [25, 75])
    assert q75 - q25 < 0.005, name
# SE_1_3, the third block of width 1, has no class differences left to share: after 40 epochs its
# gates are the same for every image (one histogram bin per channel), a constant scale. It has no
# direction (effective rank NaN) and its eta^2 is 0, or 0/0 (NaN) where the gate never moves.
s = stats["SE_1_3"]
assert rows["SE_1_3"]["hidden"] == 1
assert rows["SE_1_3"]["between_class_sd"] < 1e-6 and rows["SE_1_3"]["within_class_sd"] < 1e-6
assert ((s.hist > 0).sum(axis=1) == 1).all()
assert np.isnan(rows["SE_1_3"]["participation_ratio"]) and np.isnan(rows["SE_1_3"]["first_share"])
assert np.all(np.isnan(s.eta2()) | (s.eta2() == 0)) and rows["SE_1_3"]["eta2_median"] == 0
# SE_2_2 and SE_2_3 are nearly as constant: their gates move by less than 1e-4 between classes and
# within one. Their eta^2 (0.08, 0.16) is a ratio of two tiny variances: read it beside the sd.
for name in ("SE_2_2", "SE_2_3"):
    assert rows[name]["within_class_sd"] < 1e-4 and rows[name]["between_class_sd"] < 1e-4, name


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
# The chapter's statements, as bounds. Gates near 1/2 in every block but the last, never above
# 0.95 there; the last block, SE_3_3, opened: a mean gate above 0.9, yet fewer than half of its
# gates above 0.95 (the paper's "saturates: most of its gates" misses, narrowly); no gate anywhere
# below 0.05.
assert all(0.4 < r["mean_gate"] < 0.6 and r["saturated_high"] == 0
           for name, r in rows.items() if name != "SE_3_3")
assert rows["SE_3_3"]["mean_gate"] > 0.9 and 0.4 < rows["SE_3_3"]["saturated_high"] < 0.5
assert all(r["saturated_low"] == 0 for r in rows.values())
# eta^2 rises by stage but not block by block: five blocks of stages 2 and 3 are below SE_1_2;
# highest in the last block. Small spreads: no class moves a gate by 0.03 or more on average.
assert stage_eta["1"] < stage_eta["2"] < stage_eta["3"]
assert max(rows, key=lambda n: rows[n]["eta2_median"]) == "SE_3_3"
assert {n for n in rows if stage_of(n) != "1"
        and rows[n]["eta2_median"] < rows["SE_1_2"]["eta2_median"]} == \
    {"SE_2_1", "SE_2_2", "SE_2_3", "SE_3_1", "SE_3_2"}
assert all(r["within_class_sd"] < 0.03 and r["between_class_sd"] < 0.03 for r in rows.values())
# SE_3_3's classes move its 64 gates in one direction: some classes push most gates above 0.95,
# others leave them lower.
s = stats["SE_3_3"]
high_share = s.high.sum(axis=1) / (s.count * s.high.shape[1])      # per class: gates above 0.95
print("SE_3_3, share of gates above 0.95 by class:",
      ", ".join(f"{c} {100 * h:.0f}%" for c, h in zip(classes, high_share)))
assert rows["SE_3_3"]["first_share"] > 0.99
share = dict(zip(classes, high_share))
assert all(share[c] > 0.5 for c in ("airplane", "bird", "cat", "frog", "ship"))
assert all(share[c] < 0.25 for c in ("automobile", "dog", "horse", "truck"))
chapter = {"early blocks are shared across classes; deeper ones are class-specific":
           "weakly, not monotone",
           "the very last block is nearly class-agnostic": "does not hold",
           "the spread within a class grows with depth": "no clear trend",
           "a block of the last stage saturates: most of its gates are close to 1": "does not hold"}
assert verdicts == chapter, verdicts

# The probe (excitation.json, measured with the test set, the means from 5,000 training images):
# the input-dependent part is worth little, under a point, nothing measurable in stages 2 and 3; the
# learned scale (gates near 1/2 instead of 1) is worth far more, most in stage 2.
assert report["probe_setup"]["mean_from"] == "training images"
assert report["probe_setup"]["images"] == 5000
change = {(p["stage"], p["replacement"]): p["accuracy"] - report["accuracy"] for p in report["probe"]}
interval = {(p["stage"], p["replacement"]): p["interval_points"] for p in report["probe"]}
# change is a fraction; the file's change and its interval are in points
assert all(np.isclose(100 * change[(p["stage"], p["replacement"])], p["change_points"])
           for p in report["probe"])
print("\nprobe (change in test accuracy, points, and its 95% paired bootstrap interval):")
for key, value in change.items():
    print(f"  {key[0]:>3} {key[1]:<4} {100 * value:+6.2f}  [{interval[key][0]:+.2f}, "
          f"{interval[key][1]:+.2f}]")
assert all(-0.01 < change[(s, "mean")] < 0.005 for s in ("1", "2", "3", "all"))
assert abs(change[("3", "mean")]) < min(abs(change[("1", "mean")]), abs(change[("2", "mean")]))
assert all(interval[(s, "mean")][0] < 0 < interval[(s, "mean")][1] for s in ("2", "3"))  # noise
assert all(interval[(s, "mean")][1] < 0 for s in ("1", "all"))               # a loss, if small
assert change[("2", "one")] < change[("1", "one")] < change[("3", "one")] < change[("3", "mean")]


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
# ## 7. What longer training changed: 10 epochs and 40
#
# Explained in [chapter 13](../docs/13-role-of-excitation.md#what-longer-training-changed-10-epochs-and-40):
# the same analysis of the network trained for 10 epochs (weights/se_resnet20-10ep/), beside this one.

# %%
side_by_side = compare(read_report(EARLIER / "excitation"), read_report(ANALYSIS))
# The committed comparison.md is what the code writes from the two committed excitation.json files.
assert (ANALYSIS / "comparison.md").read_text(encoding="utf-8") == comparison_markdown(side_by_side)
print(f"\ntest accuracy {100 * side_by_side['before']['accuracy']:.2f}% after 10 epochs, "
      f"{100 * side_by_side['after']['accuracy']:.2f}% after 40")
for key, what in (("eta2_median", "eta^2 median"), ("between_class_sd", "between-class sd"),
                  ("within_class_sd", "within-class sd")):
    d = side_by_side["directions"][key]["all"]
    print(f"{what:<17} higher after 40 epochs in {d['higher']} of {d['blocks']} blocks, mean "
          f"change {d['mean_change']:+.4f}: {d['verdict']}")
probe_all = next(p for p in side_by_side["probe"] if (p["stage"], p["replacement"]) == ("all", "mean"))
print(f"all gates fixed at their means: {probe_all['before'][0]:+.2f} points after 10 epochs, "
      f"{probe_all['after'][0]:+.2f} after 40")
# The chapter's reading: class-specificity fell in all but one block (by eta^2 and by the
# between-class sd alike), SE_1_3 became a constant scale, and the last block opened; the
# input-dependent part of the gates is worth less than it was.
assert side_by_side["directions"]["eta2_median"]["all"]["higher"] == 1
assert side_by_side["directions"]["between_class_sd"]["all"]["higher"] == 1
assert side_by_side["blocks"]["SE_1_3"]["between_class_sd"][0] > 1e-4
assert side_by_side["blocks"]["SE_1_3"]["between_class_sd"][1] < 1e-6
assert side_by_side["blocks"]["SE_3_3"]["saturated_high"][1] > 0.4
assert abs(probe_all["after"][0]) < abs(probe_all["before"][0])
