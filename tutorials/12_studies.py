# %% [markdown]
# # Tutorial 12: the paper's studies with `npse study`
#
# The companion of [chapter 12](../docs/12-studies.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Runs the `squeeze` study with the --quick protocol (tiny networks, 500 synthetic images, one
# epoch: seven runs, well under a minute on two cores), then takes its bookkeeping and its
# statistics apart: what is on disk, what a second invocation skips, how the interval of a
# difference is computed, and why dropping the last stage's SE saves parameters, not computation.
#
# What --quick prints shows the machinery, not a result.
#
# Run it as a script, `python tutorials/12_studies.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import json
import math
import tempfile
from pathlib import Path

from npse import cli, study
from npse.models import model_costs, se_resnet20

work = Path(tempfile.mkdtemp(prefix="npse-study-"))
out = work / "squeeze"
empty = work / "no-cifar"          # an empty data folder: --quick writes synthetic images
empty.mkdir()


# %% [markdown]
# ## 1. The arms of a study
#
# Explained in [chapter 12](../docs/12-studies.md).

# %%
print("the studies:", ", ".join(study.STUDIES))
print("squeeze arms:", study.STUDIES["squeeze"])
for name in study.STUDIES["squeeze"]:
    arm = study.ARMS[name]
    print(f"  {name:12s} {arm.overrides}  (paper: {arm.paper} % top-1 error, {arm.paper_note})")
assert study.ARMS["reference"].overrides["se_bias"] is False   # the paper's ablation setting


# %% [markdown]
# ## 2. Run it
#
# Explained in [chapter 12](../docs/12-studies.md).

# %%
args = ["study", "squeeze", "--quick", "--out", str(out), "--data-dir", str(empty), "--jobs", "2"]
print("\n$ npse", " ".join(args))
assert cli.main(args) == 0

# Every arm x seed is an ordinary training run in OUT/<arm>/seed-<s>/.
runs = sorted(str(p.relative_to(out)) for p in out.glob("*/seed-*"))
print("\nrun folders:", runs)
assert len(runs) == 7            # baseline and reference get 3 seeds, squeeze-max 1
print("one run holds:", sorted(p.name for p in (out / "squeeze-max" / "seed-0").iterdir()))
record = json.loads((out / "squeeze-max" / "seed-0" / "run.json").read_text())
print("run.json records the commit it ran:", {k: record[k] for k in ("commit", "dirty")})


# %% [markdown]
# ## 3. A second invocation skips what is finished
#
# Explained in [chapter 12](../docs/12-studies.md).

# %%
print("\n$ npse", " ".join(args + ["--list"]))
assert cli.main(args + ["--list"]) == 0
states = {j.state for j in study.plan("squeeze", out, study.read_protocol(out)[0], seeds=1)}
assert states == {"finished"}


# %% [markdown]
# ## 4. The statistics, by hand
#
# Explained in [chapter 12](../docs/12-studies.md).

# %%
results = json.loads((out / "results.json").read_text())
rows = {a["arm"]: a for a in results["arms"]}
ref, arm = rows["reference"], rows["squeeze-max"]
s_p, df = results["pooled_sd"], results["pooled_df"]
assert df == 4                  # (3 - 1) + (3 - 1): only arms with 2+ seeds estimate the noise
t = study.t_quantile(0.975, df)
half = t * s_p * math.sqrt(1 / arm["n"] + 1 / ref["n"])
print(f"\ns_p = {100 * s_p:.2f} points, t(0.975, {df}) = {t:.3f}, "
      f"half-width for 1 seed vs 3 = {100 * half:.2f} points = {half / s_p:.2f} s_p")
assert abs(half / s_p - 2.776 * math.sqrt(4 / 3)) < 1e-3      # about 3.2 s_p, as chapter 12 says
d = arm["vs_reference"]
assert abs(d["d"] - (arm["mean"] - ref["mean"])) < 1e-12
assert abs((d["high"] - d["low"]) / 2 - half) < 1e-12
print(f"d(squeeze-max) = {100 * d['d']:+.2f} points, 95% interval "
      f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]: {d['verdict']}")

# Welch's test drops the equal-variance assumption: baseline and reference have 3 seeds each,
# so each brings its own variance, and the df is fractional.
base = rows["baseline"]
v_b, v_r = base["sd"] ** 2 / base["n"], ref["sd"] ** 2 / ref["n"]
t_w = (base["mean"] - ref["mean"]) / math.sqrt(v_b + v_r)
df_w = (v_b + v_r) ** 2 / (v_b ** 2 / (base["n"] - 1) + v_r ** 2 / (ref["n"] - 1))
w = base["vs_reference"]["welch"]
print(f"Welch, baseline vs reference: t = {t_w:.2f}, df = {df_w:.2f} (pooled: {df}), "
      f"p = {study.t_two_sided_p(t_w, df_w):.3f}")
assert abs(w["t"] - t_w) < 1e-9 and abs(w["df"] - df_w) < 1e-9 and 2 <= df_w <= 4
assert rows["squeeze-max"]["vs_reference"]["welch"] is None      # one seed: no own variance
print("\n" + (out / "results.md").read_text().split("\n\n")[3])   # the table


# %% [markdown]
# ## 5. Dropping the last stage's SE: parameters, not computation
#
# Explained in [chapter 12](../docs/12-studies.md).

# %%
full, dropped = se_resnet20(), se_resnet20(se_stages=(1, 2))
(p_full, m_full), (p_drop, m_drop) = model_costs(full), model_costs(dropped)
se_params = [sum(int(p.data.size) for p in b.parameters()) for _, b in full.se_blocks()]
last_stage = sum(s for (name, _), s in zip(full.se_blocks(), se_params)
                 if name.startswith("layer3"))
print(f"\nSE parameters: {sum(se_params):,}, of which the last stage holds {last_stage:,} "
      f"({100 * last_stage / sum(se_params):.0f}%)")
print(f"parameters {p_full:,} -> {p_drop:,}; multiply-adds {m_full:,} -> {m_drop:,} "
      f"({100 * (m_full - m_drop) / m_full:.4f}% fewer)")
assert (sum(se_params), sum(se_params) - last_stage) == (2373, 633)
assert (m_full, m_drop) == (40553056, 40551520)
print(f"\nthe files are in {out}; the whole union of studies: npse study all --quick")
