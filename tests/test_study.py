"""npse study: the bookkeeping of arms x seeds, the statistics, the report, bad input.

The runs themselves are ordinary ``train()`` runs (tested in test_train.py); here they are
either faked on disk (a config.json and a metrics.jsonl, which is all a committed study holds)
or real but tiny (synthetic data, a few dozen images).
"""
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npse import cli, study
from npse import train as T

PROTOCOL = study.Protocol(epochs=2, batch_size=16, train_subset=40, depth=8,
                          bottleneck_depth=11, widths=(4, 8, 16), quick=True)


def fake_run(out, arm, seed, accs, protocol=PROTOCOL, checkpoint=False):
    """Write what a finished (or, with fewer epochs, an interrupted) run leaves on disk."""
    d = study.run_dir(out, arm, seed)
    d.mkdir(parents=True, exist_ok=True)
    config = protocol.train_config(study.ARMS[arm], seed, d)
    (d / T.CONFIG).write_text(json.dumps({"config": config.training_dict()}))
    lines = [{"epoch": e, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": a,
              "lr": 0.1, "seconds": 10.0, "images_per_s": 4.0} for e, a in enumerate(accs, 1)]
    (d / T.METRICS).write_text("".join(json.dumps(m) + "\n" for m in lines))
    if checkpoint:
        (d / T.CHECKPOINT).write_bytes(b"stands for a checkpoint")
    return d


# ----------------------------------------------------------------------------- statistics

@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764),
                                          (10, 2.2281), (30, 2.0423)])
def test_t_quantile_matches_the_tables(df, expected):
    assert study.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_arm_stats_sd_is_none_for_one_seed_never_zero():
    assert study.arm_stats([0.8]) == {"n": 1, "mean": 0.8, "sd": None}
    s = study.arm_stats([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["sd"] == pytest.approx(0.1)


def test_pooled_sd_and_interval_on_known_inputs():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.71, 0.72]      # sample variances 4e-4 and 1e-4
    s_p, df = study.pooled_sd([a, b, [0.5]])            # one-seed groups add nothing
    assert df == 4 and s_p == pytest.approx(math.sqrt((8e-4 + 2e-4) / 4))
    d = study.difference([0.85], a, s_p, df)
    half = study.t_quantile(0.975, 4) * s_p * math.sqrt(1 + 1 / 3)    # 0.0507
    assert d["d"] == pytest.approx(0.03)
    assert (d["low"], d["high"]) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))
    assert d["verdict"] == "within noise"
    far = study.difference([0.99, 0.99], b, s_p, df)
    assert far["verdict"] == "better"
    assert study.difference([0.1], a, s_p, df)["verdict"] == "worse"
    assert study.difference([0.9], a, None, 0)["low"] is None


@pytest.mark.parametrize("p, df, expected", [(0.975, 6, 2.447), (0.975, 10, 2.228),
                                             (0.995, 6, 3.707), (0.995, 1, 63.657),
                                             (0.999, 4, 7.173), (0.95, 20, 1.725)])
def test_t_quantile_matches_published_tables(p, df, expected):
    assert study.t_quantile(p, df) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 8.6, 40.0, -3.0])
def test_two_sided_p_matches_the_closed_forms_of_df_1_and_2(t):
    # df = 1 is the Cauchy distribution; df = 2 has the CDF 1/2 + t / (2 sqrt(2 + t^2)).
    assert study.t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(abs(t)) / math.pi,
                                                      rel=1e-9, abs=1e-12)
    assert study.t_two_sided_p(t, 2) == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t),
                                                      rel=1e-9, abs=1e-12)


def test_t_cdf_is_symmetric_and_inverts_the_quantile():
    assert study.t_cdf(0.0, 5) == pytest.approx(0.5, abs=1e-12)
    for df in (1, 3, 6, 30):
        assert study.t_cdf(-1.7, df) == pytest.approx(1 - study.t_cdf(1.7, df), abs=1e-12)
        for p in (0.9, 0.975, 1 - 0.05 / 28):
            assert study.t_cdf(study.t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)
    # The tail of the ReLU arm's t (8.6 on 6 df) keeps its relative precision.
    assert study.t_two_sided_p(8.6, 6) == pytest.approx(2 * (1 - study.t_cdf(8.6, 6)), rel=1e-6)
    with pytest.raises(ValueError):
        study.t_cdf(1.0, 0)


def test_holm_on_hand_made_families():
    # Sorted 0.005, 0.01, 0.03, 0.04, multiplied by 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04, and the
    # last is raised to the 0.06 before it (the adjusted values never fall).
    assert study.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # A missing p counts in m: 0.01 * 3 = 0.03, 0.5 * 2 = 1.0 (capped at 1).
    assert study.holm([0.01, None, 0.5]) == [pytest.approx(0.03), None, 1.0]
    assert study.holm([0.2]) == [0.2] and study.holm([]) == []
    # Ties: the first gets 3 * 0.02, the second 2 * 0.02 raised to that 0.06; the third 0.5.
    assert study.holm([0.02, 0.5, 0.02]) == pytest.approx([0.06, 0.5, 0.06])


def test_difference_p_agrees_with_its_interval_and_holm_sets_the_verdict():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.71, 0.72]
    s_p, df = study.pooled_sd([a, b])
    one = study.difference([0.78], a, s_p, df)                 # a family of one
    se = s_p * math.sqrt(1 + 1 / 3)
    assert one["t"] == pytest.approx(-0.04 / se) and one["df"] == 4
    assert one["p"] == pytest.approx(study.t_two_sided_p(-0.04 / se, 4))
    assert (one["low_simultaneous"], one["high_simultaneous"]) == (one["low"], one["high"])
    for arm in ([0.85], [0.9], [0.1], [0.99, 0.99]):
        v = study.difference(arm, a, s_p, df)
        assert (v["p"] < 0.05) == (not v["low"] <= 0 <= v["high"])
    # In a family of 3 the simultaneous interval is wider, and Holm can undo a raw verdict.
    family = [study.difference(x, a, s_p, df, family_size=3) for x in ([0.9], [0.1], [0.81])]
    assert family[0]["high_simultaneous"] - family[0]["low_simultaneous"] > \
        family[0]["high"] - family[0]["low"]
    raw = [v["verdict"] for v in family]
    study.judge(family)
    assert [v["p_holm"] for v in family] == pytest.approx(study.holm([v["p"] for v in family]))
    for v in family:
        assert v["verdict"] == ("within noise" if v["p_holm"] >= 0.05 else
                                "better" if v["d"] > 0 else "worse")
    assert raw[1] == "worse"
    no_noise = study.difference([0.9], a, None, 0, family="bottleneck")
    assert no_noise["low"] is None and "bottleneck family" in no_noise["verdict"]


def test_fractional_df_lies_between_its_whole_neighbours():
    # Welch's df is fractional. For a fixed t > 0 the tail falls as df grows (heavier tails at
    # small df), so p at df 1.5 lies strictly between p at 1 and at 2, and so on; df = 1 + tiny
    # is Cauchy's closed form to within the step.
    for t in (0.5, 2.5, 9.0):
        grid = [1, 1.1, 1.5, 1.9, 2, 2.5, 3, 4.7, 6]
        ps = [study.t_two_sided_p(t, df) for df in grid]
        assert all(a > b for a, b in zip(ps, ps[1:])), (t, ps)
        assert study.t_two_sided_p(t, 1 + 1e-9) == pytest.approx(
            1 - 2 * math.atan(t) / math.pi, rel=1e-7)
    for bad in (0.5, 0, math.inf, True, "3"):
        with pytest.raises(ValueError):
            study.t_two_sided_p(1.0, bad)


def test_fractional_df_p_agrees_with_the_incomplete_beta():
    # An independent route (the regularized incomplete beta by its continued fraction, as the
    # committed table's test computes it): Simpson's rule below df 2 needs its change of
    # variable to get within 1e-8 here.
    from test_study_results import p_two_sided
    for df in (1.05, 1.2, 1.5, 1.9, 2.5, 3.7):
        for t in (0.1, 1.0, 2.5, 8.0, 1e4):
            assert study.t_two_sided_p(t, df) == pytest.approx(p_two_sided(t, df), rel=1e-8)
    # Large t keeps its relative precision (no 1 - (almost 1) in the angle): Cauchy's tail.
    assert study.t_two_sided_p(1e12, 1) == pytest.approx(2 / (math.pi * 1e12), rel=1e-9)


def test_noise_sets_the_reference_sd_beside_the_others():
    finals = {"reference": [0.80, 0.84], "baseline": [0.79, 0.80], "squeeze-max": [0.70],
              "bottleneck-standard": [0.75, 0.77], "bottleneck-3x3": [0.76]}
    got = study.noise(finals)
    basic = got["basic"]
    assert basic["reference"] == "reference" and basic["others_pooled_df"] == 1
    assert basic["reference_sd"] == pytest.approx(0.04 / math.sqrt(2))
    assert basic["others_pooled_sd"] == pytest.approx(0.01 / math.sqrt(2))   # baseline alone
    # The Bottleneck reference has two seeds but no other arm has: nothing to set it beside.
    assert "reference_sd" not in got["bottleneck"]
    assert got["bottleneck"]["pooled_sd"] == pytest.approx(0.02 / math.sqrt(2))


def test_welch_is_the_pooled_test_when_both_sides_vary_alike():
    # Same n and the same sample variance on both sides: Welch's df is 2(n - 1) and its t the
    # pooled t, since then s_arm^2/n + s_ref^2/n = s_p^2 (1/n + 1/n).
    arm = [0.80, 0.83, 0.81]
    ref = [x - 0.02 for x in reversed(arm)]
    w = study.welch(arm, ref)
    s_p, df = study.pooled_sd([arm, ref])
    pooled = study.difference(arm, ref, s_p, df)
    assert w["df"] == pytest.approx(4) and w["t"] == pytest.approx(pooled["t"])
    assert w["p"] == pytest.approx(pooled["p"], rel=1e-9)


def test_welch_df_falls_to_one_when_one_side_does_not_vary():
    # Two seeds each, the reference's equal: df = (v_a + 0)^2 / (v_a^2 / 1) = 1 (Cauchy), and
    # with equal variances it is 2 (the closed form of df 2): Welch's df spans [1, 2] here.
    w = study.welch([0.70, 0.74], [0.80, 0.80])
    assert w["df"] == pytest.approx(1) and w["d"] == pytest.approx(-0.08)
    assert w["p"] == pytest.approx(1 - 2 * math.atan(abs(w["t"])) / math.pi, rel=1e-9)
    w2 = study.welch([0.70, 0.74], [0.80, 0.84])
    assert w2["df"] == pytest.approx(2)
    assert w2["p"] == pytest.approx(1 - abs(w2["t"]) / math.sqrt(2 + w2["t"] ** 2), rel=1e-9)
    assert study.welch([0.7], [0.8, 0.81]) is None and study.welch([0.7, 0.71], [0.8]) is None
    flat = study.welch([0.7, 0.7], [0.8, 0.8])
    assert flat["p"] == 0.0 and flat["t"] == -math.inf


def test_judge_applies_holm_to_the_welch_p_over_the_same_family():
    a = [0.80, 0.82, 0.84]
    s_p, df = study.pooled_sd([a, [0.85, 0.86], [0.70, 0.74]])
    family = [dict(study.difference(x, a, s_p, df, family_size=3), welch=study.welch(x, a))
              for x in ([0.85, 0.86], [0.70, 0.74], [0.79])]
    study.judge(family)
    assert family[2]["welch"] is None
    welch_p = [f["welch"]["p"] for f in family[:2]] + [None]
    assert [f["welch"]["p_holm"] for f in family[:2]] == pytest.approx(study.holm(welch_p)[:2])
    assert family[1]["welch"]["p_holm"] == pytest.approx(min(1, 3 * family[1]["welch"]["p"]))


# ----------------------------------------------------------------------------- bookkeeping

def test_every_study_holds_its_baseline_and_reference():
    for name, arms in study.STUDIES.items():
        if name in ("all", "se3x3"):
            continue
        assert "baseline" in arms and "reference" in arms, name
    assert set(study.STUDIES["all"]) == set(study.ARMS)
    for arm in study.ARMS.values():
        if arm.name not in ("baseline", "bottleneck-plain"):
            assert arm.overrides.get("se_bias") is False, arm.name    # the paper's setting


def test_plan_skips_finished_resumes_interrupted_restarts_partial(tmp_path):
    fake_run(tmp_path, "baseline", 0, [0.3, 0.4])                     # finished
    fake_run(tmp_path, "reference", 0, [0.3], checkpoint=True)        # stopped after epoch 1
    fake_run(tmp_path, "squeeze-max", 0, [0.3])                       # partial, no checkpoint
    jobs = {(j.arm, j.seed): j for j in study.plan("squeeze", tmp_path, PROTOCOL, seeds=1)}
    assert len(jobs) == 7                               # 3 + 3 seeds, plus one
    assert jobs["baseline", 0].state == "finished"
    assert jobs["reference", 0].state == "interrupted"
    assert jobs["squeeze-max", 0].state == "absent"
    assert study.worker_spec(jobs["reference", 0], 1, "")["config"]["resume"] is True
    assert study.worker_spec(jobs["squeeze-max", 0], 1, "")["config"]["overwrite"] is True
    assert study.worker_spec(jobs["baseline", 1], 1, "")["config"]["overwrite"] is False


def test_a_run_of_another_configuration_is_refused(tmp_path):
    other = study.Protocol(**{**PROTOCOL.as_dict(), "widths": (8, 8, 8)})
    fake_run(tmp_path, "baseline", 0, [0.3, 0.4], protocol=other)
    with pytest.raises(ValueError, match="another configuration"):
        study.plan("squeeze", tmp_path, PROTOCOL, seeds=1)


def test_the_plan_runs_the_noise_estimate_first_and_the_bottleneck_last(tmp_path):
    order = [(j.arm, j.seed) for j in study.plan("squeeze,se3x3", tmp_path, PROTOCOL, seeds=2)]
    primary = [(a, s) for s in range(3) for a in ("baseline", "reference")]
    assert order[:6] == primary                    # every interval needs their repeated seeds
    assert order[6:8] == [("squeeze-max", 0), ("squeeze-max", 1)]
    bottleneck = order[8:]
    assert {study.ARMS[a].network for a, _ in bottleneck} == {"bottleneck"}
    assert [s for _, s in bottleneck] == [0, 0, 0, 1, 1, 1]   # first seeds before second ones


def test_aggregate_and_report_from_disk(tmp_path):
    study.open_study_folder(tmp_path, PROTOCOL, "squeeze")
    for s, acc in enumerate([0.60, 0.62, 0.64]):
        fake_run(tmp_path, "baseline", s, [0.1, acc])
    for s, acc in enumerate([0.70, 0.71, 0.72]):
        fake_run(tmp_path, "reference", s, [0.1, acc])
    fake_run(tmp_path, "squeeze-max", 0, [0.1, 0.69])
    results = study.report("squeeze", tmp_path, log=lambda line: None)
    rows = {a["arm"]: a for a in results["arms"]}
    assert rows["baseline"]["mean"] == pytest.approx(0.62)
    assert rows["reference"]["sd"] == pytest.approx(0.01)
    assert rows["squeeze-max"]["sd"] is None and rows["squeeze-max"]["n"] == 1
    assert results["pooled_df"] == 4
    assert results["pooled_sd"] == pytest.approx(math.sqrt((8e-4 + 2e-4) / 4))
    v = rows["baseline"]["vs_reference"]
    assert v["d"] == pytest.approx(-0.09) and v["verdict"] == "worse"
    assert rows["squeeze-max"]["vs_reference"]["verdict"] == "within noise"
    assert rows["reference"]["hidden"] == {"stage 1": 1, "stage 2": 1, "stage 3": 1}
    assert rows["reference"]["parameters"] > rows["baseline"]["parameters"]
    assert rows["squeeze-max"]["paper_top1_error"] == 22.57
    text = (tmp_path / "results.md").read_text()
    assert "machinery, not a result" in text and "| squeeze-max |" in text
    assert json.loads((tmp_path / "results.json").read_text())["arms"][2]["arm"] == "squeeze-max"


def test_each_network_family_has_its_own_noise_or_none(tmp_path):
    study.open_study_folder(tmp_path, PROTOCOL, "squeeze,se3x3")
    for s, acc in enumerate([0.60, 0.62, 0.64]):
        fake_run(tmp_path, "baseline", s, [0.1, acc])
    for s, acc in enumerate([0.70, 0.71, 0.72]):
        fake_run(tmp_path, "reference", s, [0.1, acc])
    fake_run(tmp_path, "squeeze-max", 0, [0.1, 0.69])
    for arm, acc in (("bottleneck-plain", 0.5), ("bottleneck-standard", 0.6),
                     ("bottleneck-3x3", 0.3)):
        fake_run(tmp_path, arm, 0, [0.1, acc])
    results = study.report("squeeze,se3x3", tmp_path, log=lambda line: None)
    rows = {a["arm"]: a for a in results["arms"]}
    assert results["family_size"] == 4          # baseline, squeeze-max, plain, 3x3
    assert results["noise"]["basic"]["arms"] == {"baseline": 3, "reference": 3}
    assert results["noise"]["bottleneck"]["pooled_sd"] is None
    assert results["pooled_sd"] == results["noise"]["basic"]["pooled_sd"]
    far = rows["bottleneck-3x3"]["vs_reference"]     # 30 points below, but no noise estimate
    assert far["d"] == pytest.approx(-0.3) and far["low"] is None and "p" not in far
    assert far["verdict"] == "no noise estimate for the bottleneck family: run a second seed"
    base = rows["baseline"]["vs_reference"]
    assert base["p_holm"] == pytest.approx(min(1, 4 * base["p"]))   # the smallest of the family
    assert base["low_simultaneous"] < base["low"]
    text = (tmp_path / "results.md").read_text()
    assert "simultaneous 95% CI (4 comparisons)" in text and "no noise estimate" in text
    assert "pooled over baseline (3 seeds), reference (3 seeds)" in text

    # A second seed of one Bottleneck arm gives that network its own s_p, which moves no
    # interval of the other network.
    fake_run(tmp_path, "bottleneck-standard", 1, [0.1, 0.64])
    again = study.report("squeeze,se3x3", tmp_path, log=lambda line: None)
    assert again["noise"]["bottleneck"]["pooled_sd"] == pytest.approx(math.sqrt(0.0008))
    assert again["noise"]["bottleneck"]["pooled_df"] == 1
    assert again["noise"]["basic"] == results["noise"]["basic"]
    rows = {a["arm"]: a for a in again["arms"]}
    assert rows["bottleneck-3x3"]["vs_reference"]["low"] is not None
    assert rows["squeeze-max"]["vs_reference"]["low"] == \
        results["arms"][2]["vs_reference"]["low"]


def test_failed_runs_are_recorded_shown_and_not_retried(tmp_path):
    """A run whose data cannot be found fails in its worker: failed.json, the table says so."""
    empty = tmp_path / "nodata"
    empty.mkdir()
    out = tmp_path / "s"
    lines = []
    results = study.run_study("nosqueeze", out, PROTOCOL, seeds=1, jobs=2, log=lines.append,
                              data_dir=str(empty), download=False)
    assert sum("FAILED" in line for line in lines) == 7
    assert all(a["failed"] and a["n"] == 0 for a in results["arms"])
    assert "failed" in (out / "results.md").read_text()
    jobs = study.plan("nosqueeze", out, PROTOCOL, seeds=1)
    assert {j.state for j in jobs} == {"failed"}
    failed = json.loads((study.run_dir(out, "nosqueeze", 0) / study.FAILED).read_text())
    assert "FileNotFoundError" in failed["error"] and "commit" in failed
    again = study.plan("nosqueeze", out, PROTOCOL, seeds=1, retry_failed=True)
    assert {j.state for j in again} == {"absent"}


def test_a_tiny_study_runs_end_to_end_and_skips_what_is_done(tmp_path):
    data = study.write_synthetic_cifar10(tmp_path / "data", n_train=60, n_test=40).parent
    protocol = study.Protocol(**{**PROTOCOL.as_dict(), "epochs": 1})
    out = tmp_path / "s"
    lines = []
    results = study.run_study("squeeze", out, protocol, seeds=1, jobs=2, log=lines.append,
                              data_dir=str(data))
    assert [a["n"] for a in results["arms"]] == [3, 3, 1]
    record = json.loads((study.run_dir(out, "squeeze-max", 0) / study.RUN_RECORD).read_text())
    assert "commit" in record and record["wall_seconds"] > 0
    lines.clear()
    study.run_study("squeeze", out, protocol, seeds=1, log=lines.append, data_dir=str(data))
    assert "0 to run" in lines[0]


def test_a_run_is_started_only_where_the_runs_so_far_say_it_fits():
    from npse.study.runs import fits_in_time
    job = study.plan("squeeze", Path("/nonexistent/study"), PROTOCOL, seeds=1)[0]
    now = time.time()
    assert fits_in_time(job, {}, None) and fits_in_time(job, {}, now + 1)   # nothing known: it may run
    assert fits_in_time(job, {"basic": [5.0, 20.0]}, now + 60)
    assert not fits_in_time(job, {"basic": [5.0, 20.0]}, now + 10)    # the longest run decides
    assert not fits_in_time(job, {"bottleneck": [30.0]}, now + 10)    # another network's, if need be


def test_the_time_limit_stops_the_runs_and_the_same_command_finishes_them(tmp_path):
    # Runs of 1,000 images (a second or more each) against a limit of 0.05 s: the first two
    # start (nothing is known yet), are stopped at the first look at the clock, and nothing
    # else starts.
    data = study.write_synthetic_cifar10(tmp_path / "data", n_train=1000, n_test=40).parent
    protocol = study.Protocol(**{**PROTOCOL.as_dict(), "epochs": 1, "train_subset": 1000})
    out, lines = tmp_path / "s", []
    results = study.run_study("squeeze", out, protocol, seeds=1, jobs=2, log=lines.append,
                              data_dir=str(data), time_limit=0.05)
    assert any(line.startswith("time limit reached: 2 runs stopped") for line in lines)
    assert any("5 runs not started" in line for line in lines)
    assert (out / "results.md").exists() and all(a["n"] == 0 for a in results["arms"])
    results = study.run_study("squeeze", out, protocol, seeds=1, jobs=2, log=lines.append,
                              data_dir=str(data))
    assert [a["n"] for a in results["arms"]] == [3, 3, 1]


def test_probe_times_k_processes_side_by_side(capsys):
    from npse.study.probe import probe
    rows = probe(PROTOCOL, [1, 2], seconds=0.2)
    assert [r["jobs"] for r in rows] == [1, 2] and not any(r["error"] for r in rows)
    for r in rows:
        assert r["per_run"] > 0 and r["total"] == pytest.approx(r["jobs"] * r["per_run"])
        images = PROTOCOL.epochs * (PROTOCOL.train_subset + study.QUICK["test_subset"] / 3)
        assert r["run_minutes"] == pytest.approx(images / r["per_run"] / 60)
    assert "--jobs" in capsys.readouterr().out.splitlines()[-1]
    rows = probe(PROTOCOL, [1], seconds=0.2, minutes=1e-9)      # no run is that fast
    assert "no run ends within 1e-09 min; the fastest single run): --jobs 1" in \
        capsys.readouterr().out.splitlines()[-1]


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_probe_reports_a_process_that_fails_and_stops_there():
    from npse.study.probe import probe
    rows = probe(PROTOCOL, [1, 2], backend="cupy", seconds=0.2, log=lambda line: None)
    assert len(rows) == 1 and "stopped during its warm-up" in rows[0]["error"]
    assert "cupy" in rows[0]["error"].lower()          # the worker's own last line says why


def test_a_folder_run_by_another_study_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    study.open_study_folder(tmp_path, PROTOCOL, "squeeze")
    for arm, seeds in (("baseline", 3), ("reference", 3), ("squeeze-max", 1)):
        for s in range(seeds):
            fake_run(tmp_path, arm, s, [0.1, 0.5])
    lock = tmp_path / study.LOCK
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": "then"}))
    with pytest.raises(ValueError, match=f"being run by another npse study \\(process "
                                         f"{os.getpid()} since then\\)"):
        study.run_study("squeeze", tmp_path, PROTOCOL, log=lambda line: None)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    lock.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    lines = []
    study.run_study("squeeze", tmp_path, PROTOCOL, log=lines.append)   # nothing left to run
    # The lock file stays (deleting a flock'd file breaks mutual exclusion), free and blank.
    assert "0 to run" in lines[0] and study.lock_holder(lock) is None
    assert lock.read_text() == ""


def test_the_library_calls_check_their_time_limits(tmp_path):
    from npse.study.probe import probe
    with pytest.raises(ValueError, match="--time-limit must be > 0 minutes, got 0"):
        probe(PROTOCOL, [1], seconds=0.2, minutes=0, log=lambda line: None)
    with pytest.raises(ValueError, match="time_limit must be > 0 seconds, got -5"):
        study.run_study("squeeze", tmp_path, PROTOCOL, time_limit=-5, log=lambda line: None)
    assert not any(tmp_path.iterdir())                  # refused before anything was written


# ----------------------------------------------------------------------------- bad input

def run_cli(args, capsys):
    code = cli.main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("args, message", [
    (["study", "sqeeze"], "unknown study 'sqeeze'"),
    (["study", "squeeze,nope"], "unknown study 'nope'"),
    (["study", "squeeze", "--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["study", "squeeze", "--depth", "9"], "6n+2"),
    (["study", "squeeze", "--jobs", "0"], "--jobs: expected an integer >= 1"),
    (["study", "squeeze", "--seeds", "0"], "--seeds: expected an integer >= 1"),
    (["study", "squeeze", "--time-limit", "0"], "--time-limit: expected a finite number > 0"),
    (["study", "squeeze", "--probe", "1,x"], "--probe takes positive integers"),
    (["study", "squeeze", "--probe", "0"], "--probe takes positive integers"),
    (["study", "squeeze", "--probe", "1", "--time-limit", "-1"], "--time-limit: expected a finite"),
    (["study", "squeeze", "--report", "/nonexistent/npse-study"], "not a study folder"),
])
def test_bad_input_is_one_line(args, message, capsys, tmp_path):
    code, err = run_cli(args + ["--out", str(tmp_path / "o")] if "--report" not in args
                        else args, capsys)
    assert code != 0 and message in err and len(err.splitlines()) == 1


def test_a_folder_of_another_protocol_or_not_a_study_is_refused(tmp_path, capsys):
    study.open_study_folder(tmp_path / "a", PROTOCOL, "squeeze")
    code, err = run_cli(["study", "squeeze", "--out", str(tmp_path / "a"), "--epochs", "3",
                         "--data-dir", str(tmp_path)], capsys)
    assert code == 1 and "another protocol" in err and len(err.splitlines()) == 1
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    code, err = run_cli(["study", "squeeze", "--out", str(tmp_path / "b")], capsys)
    assert code == 1 and "not a study folder" in err
    (tmp_path / "c").write_text("a file")
    code, err = run_cli(["study", "squeeze", "--out", str(tmp_path / "c")], capsys)
    assert code == 1 and "is a file" in err
