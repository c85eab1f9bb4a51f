"""npse excitation: the gate API, the statistics on hand-set gates, the probe, the command; the
effective rank, the paired bootstrap, the histograms, the probe's training means, the verdicts
computed from the numbers and the figures drawn from gates.npz alone (issue 22)."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npse import nn
from npse.checkpoint import load_checkpoint, save_checkpoint
from npse.cli import main
from npse.excitation import (BINS, GateStats, block_name, collect_gates, effective_rank,
                             find_se_blocks, histogram_rows, paired_bootstrap, probe, probe_subset,
                             read_gates, record_gates, save_weights_only, stage_of,
                             study_side_by_side)
from npse.gradcheck import gradcheck
from npse.models import SEBlockNoSqueeze, cifar_resnet
from npse.train import CHECKPOINT_FORMAT, METRIC_KEYS, TrainConfig, evaluate
from strategies import batch, normal, seeds
from test_cli import TOY, assert_one_line_error, run_cli
from test_train import write_cifar10

TOL = 1e-6


# ----------------------------------------------------------------------------- fix_gate

@given(n=batch, c=st.integers(1, 6), hw=st.integers(1, 4), nosqueeze=st.booleans(),
       per_channel=st.booleans(), seed=seeds)
def test_a_fixed_gate_scales_by_the_constant_and_passes_gradcheck(n, c, hw, nosqueeze,
                                                                  per_channel, seed):
    rng = np.random.default_rng(seed)
    block = (SEBlockNoSqueeze(c, 2, dtype="float64", rng=rng) if nosqueeze
             else nn.SEBlock(c, 2, dtype="float64", rng=rng))
    value = rng.uniform(0.1, 2.0, c) if per_channel else float(rng.uniform(0.1, 2.0))
    block.fix_gate(value)
    x = normal(rng, (n, c, hw, hw))
    expected = x * np.broadcast_to(value, (c,))[None, :, None, None]
    np.testing.assert_array_equal(block(x), expected)
    assert np.shape(block.gate)[:2] == (n, c)
    result = gradcheck(block, x, seed=seed)
    assert result.max_error <= TOL, result.errors
    # The output does not depend on fc1 and fc2 while the gate is fixed: their gradients stay 0.
    assert all(not np.any(p.grad) for p in block.parameters())
    block.fix_gate(None)
    assert block.fixed_gate is None
    assert not np.array_equal(block(x), expected)


def test_fixing_one_block_in_a_network_passes_gradcheck():
    model = cifar_resnet(8, widths=(4, 8, 8), se="standard", se_reduction=2, dtype="float64",
                         seed=1)
    find_se_blocks(model)[1][1].fix_gate(np.linspace(0.2, 1.4, 8))
    x = normal(np.random.default_rng(2), (2, 3, 8, 8))
    result = gradcheck(model, x, seed=3, max_entries=0, num_directions=3)
    assert result.max_error <= TOL, result.errors


def test_fix_gate_errors():
    block = nn.SEBlock(4, 2)
    for bad, words in [(np.ones(3), "shape (4,)"), (np.ones((2, 4)), "shape (4,)"),
                       (np.array([0.5, np.nan, 1, 1]), "finite"), ("1", "dtype")]:
        with pytest.raises(ValueError, match=r"SEBlock\.fix_gate") as e:
            block.fix_gate(bad)
        assert words in str(e.value)
    assert block.fixed_gate is None


# ----------------------------------------------------------------------------- names

def test_block_and_stage_names():
    assert block_name("layer3.0.se") == "SE_3_1"
    assert block_name("layer1.2.se") == "SE_1_3"
    assert block_name("se") == "se"
    assert stage_of("SE_2_5") == "2" and stage_of("se") == "se"
    model = cifar_resnet(20, se="standard", se_stages=(2, 3))
    names = [n for n, _ in find_se_blocks(model)]
    assert names == [f"SE_{s}_{b}" for s in (2, 3) for b in (1, 2, 3)]
    with pytest.raises(ValueError, match="no SE blocks"):
        find_se_blocks(cifar_resnet(8, widths=(4, 8, 8)))


# ----------------------------------------------------------------------------- statistics

@given(k=st.integers(2, 5), c=st.integers(1, 6), per_class=st.integers(2, 9),
       batch_size=st.integers(1, 7), seed=seeds)
def test_gate_stats_match_the_definitions(k, c, per_class, batch_size, seed):
    """Per-class mean and sd, eta^2 as sums of squares (equal class sizes), saturation shares,
    fed in batches of any size."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(k), per_class))
    gates = rng.uniform(0, 1, (len(labels), c)) ** rng.uniform(0.2, 5, c)   # some near 0 and 1
    stats = GateStats(k, c)
    for i in range(0, len(labels), batch_size):
        stats.add(gates[i:i + batch_size], labels[i:i + batch_size])
    groups = [gates[labels == j] for j in range(k)]
    np.testing.assert_allclose(stats.class_mean, [g.mean(0) for g in groups], rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(stats.class_var), [g.std(0) for g in groups],
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(stats.mean, gates.mean(0), rtol=1e-12)
    grand = gates.mean(0)
    ss_between = sum(len(g) * (g.mean(0) - grand) ** 2 for g in groups)
    ss_total = ((gates - grand) ** 2).sum(0)
    np.testing.assert_allclose(stats.eta2(), ss_between / ss_total, rtol=1e-9)
    s = stats.summary()
    assert s["saturated_high"] == pytest.approx((gates > 0.95).mean())
    assert s["saturated_low"] == pytest.approx((gates < 0.05).mean())
    assert s["eta2_median"] == pytest.approx(np.median(ss_between / ss_total))
    back = GateStats.from_arrays(stats.count, **{key: v for key, v in stats.arrays().items()
                                                 if key != "mean"})
    np.testing.assert_allclose(back.eta2(), stats.eta2(), rtol=1e-9)


class HandSet(nn.Module):
    """A 'network' whose one SE block gates channel c of an image by (its pixel value) / 255:
    constant images, normalised with mean 0 and std 1 (after the loader's division by 255),
    squeezed, then fc1 = fc2 = identity and a ReLU gate."""

    def __init__(self):
        super().__init__(dtype="float64")
        self.se = nn.SEBlock(3, 1, excitation="relu", dtype="float64")
        self.se.fc1.weight.data[...] = np.eye(3)
        self.se.fc2.weight.data[...] = np.eye(3)
        self.se.fc1.bias.data[...] = self.se.fc2.bias.data[...] = 0
        self.pool = nn.GlobalAvgPool2d(dtype="float64")
        self.fc = nn.Linear(3, 2, dtype="float64", rng=0)

    def forward(self, x):
        return self.fc(self.pool(self.se(x)))


def test_gates_recorded_from_a_network_with_hand_set_gates():
    # Channel 0: one value per class, both saturated (eta^2 = 1); channel 1: the same two values
    # in both classes (eta^2 = 0); channel 2: class means 25.5 apart around within-class sd 25.5,
    # so between-class and within-class variance are equal (eta^2 = 1/2).
    pixels = {0: [(5, 51, 26), (5, 153, 77)] * 2, 1: [(250, 51, 77), (250, 153, 128)] * 2}
    labels = np.repeat([0, 1], 4)
    x = np.stack([np.broadcast_to(np.array(pixels[k][i], np.uint8)[:, None, None], (3, 4, 4))
                  for k in (0, 1) for i in range(4)])
    stats, _ = collect_gates(HandSet(), x, labels, [0, 0, 0], [1, 1, 1], 2, batch_size=3)
    s = stats["se"]
    np.testing.assert_allclose(s.class_mean * 255, [[5, 102, 51.5], [250, 102, 102.5]])
    np.testing.assert_allclose(np.sqrt(s.class_var) * 255, [[0, 51, 25.5], [0, 51, 25.5]],
                               atol=1e-6)
    np.testing.assert_allclose(s.eta2(), [1, 0, 0.5], atol=1e-12)
    summary = s.summary()
    assert summary["eta2_median"] == pytest.approx(0.5)
    assert summary["saturated_high"] == pytest.approx(4 / 24)     # channel 0 of class 1
    assert summary["saturated_low"] == pytest.approx(4 / 24)      # channel 0 of class 0
    assert summary["within_class_sd"] == pytest.approx(np.sqrt((51**2 + 25.5**2) / 3) / 255)


# ----------------------------------------------------------------------------- the probe

@pytest.fixture
def toy():
    model = cifar_resnet(8, widths=(4, 8, 8), se="standard", se_reduction=2, dtype="float64",
                         seed=5)
    rng = np.random.default_rng(6)
    for _, block in find_se_blocks(model):    # larger SE weights spread the gates away from 1/2
        for fc in (block.fc1, block.fc2):
            fc.weight.data[...] = rng.normal(0, 1.5, fc.weight.shape)
    x = rng.integers(0, 256, (30, 3, 8, 8)).astype(np.uint8)
    y = rng.integers(0, 10, 30)
    return model, x, y, [120.0, 110.0, 100.0], [60.0, 60.0, 60.0]


def gates_of(model, x, mean, std):
    from npse.data import iterate_batches
    xb, _ = next(iterate_batches(x, np.zeros(len(x), int), len(x), mean, std, shuffle=False,
                                 dtype=model.dtype))
    model.eval()
    with nn.no_grad():
        logits = model(xb)
    return {name: np.array(b.gate) for name, b in find_se_blocks(model)}, logits


def test_fixing_a_stage_changes_that_stage_and_what_follows_only(toy):
    model, x, y, mean, std = toy
    stats, _ = collect_gates(model, x, y, mean, std, 10)
    before, _ = gates_of(model, x, mean, std)
    model.layer2[0].se.fix_gate(stats["SE_2_1"].mean)
    after, _ = gates_of(model, x, mean, std)
    np.testing.assert_array_equal(after["SE_1_1"], before["SE_1_1"])
    np.testing.assert_allclose(after["SE_2_1"], np.broadcast_to(stats["SE_2_1"].mean, (30, 8)))
    assert not np.allclose(after["SE_3_1"], before["SE_3_1"])


def test_probe_results_match_fixing_by_hand_and_release_every_gate(toy):
    model, x, y, mean, std = toy
    stats, acc = collect_gates(model, x, y, mean, std, 10)
    results = probe(model, x, y, mean, std, {n: s.mean for n, s in stats.items()}, batch_size=7)
    assert [(r["stage"], r["replacement"]) for r in results] == [
        (s, r) for s in ("1", "2", "3", "all") for r in ("mean", "one")]
    assert all(b.fixed_gate is None for _, b in find_se_blocks(model))
    assert evaluate(model, x, y, mean, std)[1] == acc
    model.layer3[0].se.fix_gate(1.0)
    loss, acc3, _ = evaluate(model, x, y, mean, std, batch_size=7)
    model.layer3[0].se.fix_gate(None)
    r = results[5]
    assert (r["stage"], r["replacement"]) == ("3", "one")
    assert (r["loss"], r["accuracy"]) == (loss, acc3)


def test_gates_fixed_at_one_everywhere_equal_the_network_without_se(toy):
    model, x, y, mean, std = toy
    plain = cifar_resnet(8, widths=(4, 8, 8), dtype="float64")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".se." not in k})
    for _, block in find_se_blocks(model):
        block.fix_gate(1)
    _, with_fixed = gates_of(model, x, mean, std)
    plain.eval()
    with nn.no_grad():
        from npse.data import iterate_batches
        xb, _ = next(iterate_batches(x, y, len(x), mean, std, shuffle=False, dtype="float64"))
        np.testing.assert_allclose(with_fixed, plain(xb), rtol=1e-12, atol=1e-12)


def test_the_mean_probe_changes_nothing_when_the_gates_ignore_the_input(toy):
    model, x, y, mean, std = toy
    for _, block in find_se_blocks(model):     # gate = sigmoid(b2), the same for every image
        block.fc2.weight.data[...] = 0
    stats, acc = collect_gates(model, x, y, mean, std, 10)
    base_loss = evaluate(model, x, y, mean, std)[0]
    for r in probe(model, x, y, mean, std, {n: s.mean for n, s in stats.items()}):
        if r["replacement"] == "mean":
            assert r["accuracy"] == acc and r["loss"] == pytest.approx(base_loss, rel=1e-12)
        else:                                # gate 1 instead of sigmoid(b2): the scale changes
            assert r["loss"] != pytest.approx(base_loss, rel=1e-6)
    assert max(s.summary()["between_class_sd"] for s in stats.values()) < 1e-12


# ----------------------------------------------------------------------------- the stages study

def write_study_run(folder, arm, seed, accuracies, epochs):
    run = folder / arm / f"seed-{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"epochs": epochs}}))
    lines = [json.dumps(dict({k: 0.0 for k in METRIC_KEYS}, epoch=i + 1, test_acc=a))
             for i, a in enumerate(accuracies)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_study_side_by_side_averages_finished_seeds_only(tmp_path):
    write_study_run(tmp_path, "reference", 0, [0.5, 0.80], 2)
    write_study_run(tmp_path, "reference", 1, [0.5, 0.84], 2)
    write_study_run(tmp_path, "stages-1-2", 0, [0.5, 0.81], 2)
    write_study_run(tmp_path, "stages-1-2", 1, [0.9], 2)           # still running: left out
    got = study_side_by_side(tmp_path)
    assert got["reference"] == {"accuracy": pytest.approx(0.82), "seeds": 2, "epochs": [2]}
    assert got["stages-1-2"]["seeds"] == 1
    assert got["difference"] == pytest.approx(0.81 - 0.82)
    with pytest.raises(ValueError, match="no finished run of the arm 'reference'"):
        study_side_by_side(tmp_path / "elsewhere")


def test_study_side_by_side_reads_the_committed_cpu_protocol():
    # The real files of npse study, not a fake of them: the committed runs of studies/cpu-5ep.
    folder = Path(__file__).resolve().parents[1] / "studies" / "cpu-5ep"
    results = json.loads((folder / "results.json").read_text())
    arms = {a["arm"]: a for a in results["arms"]}
    if not arms["stages-1-2"]["n"]:
        pytest.skip("the stages-1-2 arm of studies/cpu-5ep has not run")
    got = study_side_by_side(folder)
    for arm in ("reference", "stages-1-2"):
        assert got[arm]["seeds"] == arms[arm]["n"] and got[arm]["epochs"] == [5]
        assert got[arm]["accuracy"] == pytest.approx(arms[arm]["mean"], abs=1e-12)


# ----------------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy SE-ResNet-8 trained for one epoch on generated data, and its weights-only export."""
    root = tmp_path_factory.mktemp("excitation")
    data = ["--data-dir", str(write_cifar10(root / "data", n_test=60)), "--no-download"]
    rc = main([str(a) for a in ["train", *TOY, "--epochs", "1", *data, "--out", root / "run",
                                "--quiet"]])
    assert rc == 0
    weights = root / "weights.npz"
    save_weights_only(root / "run" / "checkpoint.npz", weights)
    return root, data, weights


def test_weights_only_export_evaluates_like_the_checkpoint(trained, capsys):
    root, data, weights = trained
    arrays, meta = load_checkpoint(weights)
    full, full_meta = load_checkpoint(root / "run" / "checkpoint.npz")
    assert set(arrays) == {k for k in full if k.startswith("model.")} and arrays
    assert meta["weights_only"] is True and meta["data_dir"] is None
    assert {k: v for k, v in meta.items() if k not in ("weights_only", "data_dir")} == \
        {k: v for k, v in full_meta.items() if k != "data_dir"}
    outputs = []
    for path in (root / "run", weights):
        rc, out, _ = run_cli(capsys, "evaluate", path, *data)
        assert rc == 0
        outputs.append(out.splitlines()[1:])
    assert outputs[0] == outputs[1]


def test_excitation_command_writes_gates_report_and_plots(trained, capsys):
    root, data, weights = trained
    study = root / "study"
    for arm, acc in (("reference", 0.6), ("stages-1-2", 0.55)):
        write_study_run(study, arm, 0, [acc], 1)
    rc, out, err = run_cli(capsys, "excitation", weights, *data, "--classes", "cat,dog",
                           "--study", study)
    assert rc == 0, err
    folder = root / "excitation"
    stats, meta = read_gates(folder / "gates.npz")
    assert meta["blocks"] == ["SE_1_1", "SE_2_1", "SE_3_1"] and meta["classes"][3] == "cat"
    assert stats["SE_2_1"].count.sum() == 60
    report = json.loads((folder / "excitation.json").read_text())
    assert report["images"] == 60 and len(report["probe"]) == 8 and len(report["claims"]) == 4
    for name, s in stats.items():
        assert report["blocks"][name]["eta2_median"] == pytest.approx(
            np.nanmedian(s.eta2()), rel=1e-9)
    assert report["study"]["difference"] == pytest.approx(-0.05)
    assert "-5.00 points" in (folder / "excitation.md").read_text()
    assert "| SE_3_1 |" in (folder / "excitation.md").read_text() and "SE_3_1" in out
    if importlib.util.find_spec("matplotlib") is not None:
        assert (folder / "fig6_class_means.png").stat().st_size > 0
        assert (folder / "fig7_within_class.png").stat().st_size > 0


def test_excitation_without_matplotlib_writes_the_numbers_and_says_so(trained, capsys,
                                                                       monkeypatch, tmp_path):
    _, data, weights = trained
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--no-probe", "--out", tmp_path)
    assert rc == 0 and "pip install 'npse[plot]'" in err
    assert (tmp_path / "gates.npz").exists() and not list(tmp_path.glob("*.png"))
    assert json.loads((tmp_path / "excitation.json").read_text())["probe"] == []


def test_excitation_bad_input_is_one_line(trained, tmp_path, capsys):
    _, data, weights = trained
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.npz"
    save_checkpoint(other, {"w": np.zeros(3)}, {"hello": 1})
    plain = cifar_resnet(8, widths=(4, 8, 8))
    no_se = tmp_path / "no_se.npz"
    _, meta = load_checkpoint(weights)
    save_checkpoint(no_se, {f"model.{k}": v for k, v in plain.state_dict().items()},
                    dict(meta, model_config=plain.config,
                         config=dict(TrainConfig(model="resnet8").training_dict())))
    assert meta["format"] == CHECKPOINT_FORMAT
    for path, words in [(tmp_path / "nope.npz", "not found"), (junk, "not an .npz"),
                        (other, "not an npse training checkpoint"), (no_se, "no SE blocks")]:
        rc, _, err = run_cli(capsys, "excitation", path, *data, "--out", tmp_path / "o")
        assert_one_line_error(rc, err)
        assert words in err and str(path.name) in err
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--classes", "cat,unicorn",
                         "--out", tmp_path / "o")        # not the default, an earlier test's
    assert_one_line_error(rc, err)
    assert "unicorn" in err
    assert not (tmp_path / "o").exists()


def test_excitation_refuses_an_out_that_holds_an_analysis_before_running_it(trained, tmp_path,
                                                                           capsys, monkeypatch):
    _, data, weights = trained
    out = tmp_path / "ex"
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--no-probe", "--no-plots",
                         "--out", out)
    assert rc == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # The check comes first: an analysis that would be refused is never started.
    import npse.excitation.report as report
    monkeypatch.setattr(report, "analyse", lambda *a, **k: pytest.fail("analysis started"))
    monkeypatch.setattr(report, "plot_gates", lambda *a, **k: pytest.fail("plots drawn"))
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--no-probe", "--out", out)
    assert_one_line_error(rc, err)
    assert "already holds gates.npz, excitation.json, excitation.md" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "file").write_text("not a folder")
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--out", tmp_path / "file")
    assert_one_line_error(rc, err)
    assert "is a file" in err
    monkeypatch.undo()
    (out / "excitation.md").write_text("an old report")
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--no-probe", "--no-plots",
                         "--out", out, "--overwrite")
    assert rc == 0, err
    assert {p.name: p.read_bytes() for p in out.iterdir()}["excitation.json"] == \
        before["excitation.json"]                   # the same analysis, written again
    assert (out / "excitation.md").read_bytes() == before["excitation.md"]


# ----------------------------------------------------------------------------- issue 22: ranks, bootstrap, histograms

def test_effective_rank_of_constructed_matrices():
    rng = np.random.default_rng(0)
    ratio, first = effective_rank(np.outer(rng.normal(size=10), rng.normal(size=16)))
    assert ratio == pytest.approx(1) and first == pytest.approx(1)
    for k in (2, 3, 5):
        # k orthogonal rows of equal length, then rotated: k equal singular values.
        rows = np.eye(k, 16) @ np.linalg.qr(rng.normal(size=(16, 16)))[0]
        ratio, first = effective_rank(rows)
        assert ratio == pytest.approx(k) and first == pytest.approx(1 / k)
    ratio, first = effective_rank(np.diag([2.0, 1.0]))                 # s^2 = 4, 1
    assert ratio == pytest.approx(25 / 17) and first == pytest.approx(4 / 5)
    assert all(np.isnan(effective_rank(np.zeros((3, 4)))))


def test_class_rank_is_one_when_one_number_moves_every_channel():
    # A hidden width of 1, made linear: gate = b + a * t(image), t varying by class and image.
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), 20)
    t = rng.normal(size=5)[labels] + 0.3 * rng.normal(size=100)
    a, b = rng.normal(0, 0.02, 8), rng.uniform(0.4, 0.6, 8)
    stats = GateStats(5, 8)
    stats.add(b + np.outer(t, a), labels)
    ratio, first = stats.class_rank()
    assert ratio == pytest.approx(1) and first == pytest.approx(1)
    np.testing.assert_allclose(stats.eta2(), stats.eta2()[0], rtol=1e-9)   # one eta^2 for all
    s = stats.summary()
    assert (s["participation_ratio"], s["first_share"]) == (ratio, first)
    free = GateStats(5, 8)                   # class means drawn channel by channel: 4 directions
    free.add(rng.uniform(0.3, 0.7, (5, 8))[labels] + 0.01 * rng.normal(size=(100, 8)), labels)
    assert 2.5 < free.class_rank()[0] <= 4 and free.class_rank()[1] < 0.6


def test_paired_bootstrap_of_constructed_outcomes():
    rng = np.random.default_rng(2)
    base = rng.random(1000) < 0.8
    np.testing.assert_array_equal(paired_bootstrap(base, [base]), [[0, 0]])   # paired: exactly 0
    np.testing.assert_array_equal(paired_bootstrap(np.zeros(50), [np.ones(50)]), [[1, 1]])
    arm = np.ones(1000, bool)
    arm[:100] = False                                  # base all right, the arm wrong on 100
    (low, high), = paired_bootstrap(np.ones(1000, bool), [arm], resamples=4000)
    # the change is minus a binomial share: mean -0.1, sd sqrt(0.1 * 0.9 / 1000) = 0.0095
    assert low < -0.1 < high
    assert (high - low) == pytest.approx(2 * 1.96 * np.sqrt(0.09 / 1000), rel=0.1)
    # The same resamples for every arm, however many are given.
    both = paired_bootstrap(base, [arm, ~base])
    np.testing.assert_array_equal(both[1], paired_bootstrap(base, [~base])[0])


def test_histograms_count_every_gate_of_every_image():
    gates = np.array([[0.0, 0.5], [1.0, 0.999], [0.0049, 0.5049], [-0.1, 1.2]])
    hist = histogram_rows(gates, bins=200)
    assert hist.shape == (2, 200) and (hist.sum(axis=1) == 4).all()
    assert hist[0, 0] == 3 and hist[0, 199] == 1             # 0, 0.0049, -0.1; 1.0 in the last
    assert hist[1, 100] == 2 and hist[1, 199] == 2            # 0.5, 0.5049; 0.999, 1.2


def test_histograms_of_a_network_sum_to_its_images(toy):
    model, x, y, mean, std = toy
    stats, predictions = record_gates(model, x, y, mean, std, 10, batch_size=7)
    for name, s in stats.items():
        assert s.hist.shape == (s.sum.shape[1], BINS)
        assert (s.hist.sum(axis=1) == len(x)).all(), name
    assert predictions.shape == (len(x),)
    assert collect_gates(model, x, y, mean, std, 10)[1] == (predictions == y).mean()


def test_probe_rows_carry_the_change_and_its_interval(toy):
    model, x, y, mean, std = toy
    stats, base = record_gates(model, x, y, mean, std, 10)
    rows = probe(model, x, y, mean, std, {n: s.mean for n, s in stats.items()}, base=base,
                 resamples=200)
    for r in rows:
        assert r["change_points"] == pytest.approx(100 * (r["accuracy"] - (base == y).mean()))
        low, high = r["interval_points"]
        assert low <= r["change_points"] <= high


def test_the_probe_takes_its_means_from_the_training_images(toy, tmp_path):
    from types import SimpleNamespace
    from npse.excitation.report import analyse
    model, x, y, mean, std = toy
    rng = np.random.default_rng(7)
    x_train = rng.integers(0, 128, (40, 3, 8, 8)).astype(np.uint8)    # darker than the test set
    y_train = rng.integers(0, 10, 40)
    data = SimpleNamespace(x_train=x_train, y_train=y_train, x_test=x, y_test=y)
    meta = {"classes": [str(k) for k in range(10)], "mean": mean, "std": std,
            "config": {"model": "toy"}, "epoch": 1}
    (tmp_path / "ckpt.npz").write_bytes(b"any bytes: only hashed")
    report = analyse(model, meta, data, tmp_path / "out", tmp_path / "ckpt.npz")
    assert report["probe_setup"]["images"] == 40 and report["probe_setup"]["of"] == 40
    stats, gates_meta = read_gates(tmp_path / "out" / "gates.npz")
    train, _ = record_gates(model, x_train, y_train, mean, std, 10)
    for name, s in stats.items():
        np.testing.assert_array_equal(gates_meta["probe_mean"][name], train[name].mean)
        assert not np.allclose(gates_meta["probe_mean"][name], s.mean)   # not the test images'
    assert gates_meta["hidden"] == {"SE_1_1": 2, "SE_2_1": 4, "SE_3_1": 4}
    assert report["blocks"]["SE_1_1"]["hidden"] == 2
    # The rows are those of the probe given the training means, scored on the test images.
    again = probe(model, x, y, mean, std, {n: train[n].mean for n in stats})
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in report["probe"]]
    chosen = probe_subset(50000)
    assert len(chosen) == 5000 and (np.diff(chosen) > 0).all()
    np.testing.assert_array_equal(chosen, probe_subset(50000))


def summaries(eta, between, within):
    """Block summaries for judge_claims: stage 1, 2, 3 of three blocks each."""
    names = [f"SE_{s}_{b}" for s in (1, 2, 3) for b in (1, 2, 3)]
    return {n: {"eta2_median": e, "between_class_sd": bt, "within_class_sd": w,
                "saturated_high": 0.0} for n, e, bt, w in zip(names, eta, between, within)}


def test_claim_verdicts_follow_the_numbers():
    from npse.excitation import judge_claims
    # The 10-epoch network's numbers: eta^2 rises by stage but SE_2_3 is below two stage-1
    # blocks, and no class moves a gate by 0.035 or more; the within-class sd has no trend.
    shipped = summaries([0.119, 0.213, 0.258, 0.355, 0.431, 0.189, 0.465, 0.503, 0.623],
                        [0.003, 0.020, 0.001, 0.021, 0.004, 0.010, 0.012, 0.012, 0.035],
                        [0.008, 0.038, 0.001, 0.030, 0.004, 0.020, 0.012, 0.012, 0.026])
    claims = {c["claim"].split()[1]: c for c in judge_claims(shipped)}
    first = claims["blocks"]
    assert first["verdict"] == "weakly, not monotone"
    assert first["numbers"]["below an earlier stage's block"] == \
        ["SE_2_3 (0.189) < SE_1_2 (0.213), SE_1_3 (0.258)"]
    assert claims["spread"]["verdict"] == "no clear trend"
    assert claims["very"]["verdict"] == "does not hold"
    strong = summaries(np.repeat([0.1, 0.4, 0.8], 3) + np.tile([0, 0.01, 0.02], 3), [0.1] * 9,
                       np.repeat([0.01, 0.05, 0.1], 3))
    verdicts = [c["verdict"] for c in judge_claims(strong)]
    assert verdicts[0] == "holds" and verdicts[2] == "holds"
    falling = summaries(np.repeat([0.8, 0.4, 0.1], 3), [0.1] * 9, np.repeat([0.1, 0.05, 0.01], 3))
    verdicts = [c["verdict"] for c in judge_claims(falling)]
    assert verdicts[0] == "does not hold" and verdicts[2] == "does not hold"


def test_figures_draw_from_gates_npz_alone(trained, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import shutil
    from npse.excitation import draw_figures
    root, data, weights = trained
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--no-probe", "--no-plots",
                         "--out", tmp_path / "analysis")
    assert rc == 0, err
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "analysis" / "gates.npz", alone)      # no network, no data
    paths = draw_figures(alone / "gates.npz", show=["cat", "dog", "ship"])
    assert sorted(p.name for p in paths) == ["fig6_class_means.png", "fig7_within_class.png",
                                             "gate_histograms.png"]
    assert all(p.parent == alone and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    stats, meta = read_gates(alone / "gates.npz")
    assert all((s.hist.sum(axis=1) == 60).all() for s in stats.values())
    # A gates file of version 1 has no histograms: read, but no figures from it.
    arrays, meta = load_checkpoint(alone / "gates.npz")
    save_checkpoint(alone / "v1.npz", {k: v for k, v in arrays.items() if not k.endswith(".hist")},
                    dict(meta, version=1))
    assert not any(s.hist.any() for s in read_gates(alone / "v1.npz")[0].values())
    with pytest.raises(ValueError, match="no histograms"):
        draw_figures(alone / "v1.npz")


# ----------------------------------------------------------------------------- over training

def _report(eta, between, epoch, acc=0.8, probe_change=-1.0):
    """A minimal excitation.json with the blocks SE_1_1, SE_1_2, SE_2_1 and given eta^2 and sds."""
    names = ["SE_1_1", "SE_1_2", "SE_2_1"]
    blocks = {n: {"eta2_median": e, "between_class_sd": b, "within_class_sd": 0.02,
                  "participation_ratio": 1.0, "mean_gate": 0.5, "saturated_high": 0.0,
                  "saturated_low": 0.0} for n, e, b in zip(names, eta, between)}
    return {"checkpoint": f"w{epoch}.npz", "epoch": epoch, "accuracy": acc, "blocks": blocks,
            "probe": [{"stage": "1", "replacement": "mean", "change_points": probe_change,
                       "interval_points": [probe_change - 0.3, probe_change + 0.3]}],
            "claims": [{"claim": "c", "verdict": "weakly"}, {"claim": "d", "verdict": "holds"}],
            "probe_setup": {"level": 0.95}}


def test_growth_verdicts_count_the_blocks_that_moved():
    from npse.excitation.compare import growth_verdict
    assert growth_verdict({"a": 0.1, "b": 0.2, "c": 0.01}) == "grows"
    assert growth_verdict({"a": -0.1, "b": -0.2, "c": -0.01}) == "falls"
    assert growth_verdict({"a": 0.1, "b": 0.2, "c": -0.01}) == "mostly grows"
    assert growth_verdict({"a": 0.01, "b": 0.02, "c": -0.5}) == "no consistent change"
    assert growth_verdict({"a": -0.1, "b": -0.2, "c": 0.01}) == "mostly falls"
    assert growth_verdict({"a": 0.1, "b": -0.1}) == "no consistent change"


def test_compare_pairs_blocks_probe_and_claims():
    from npse.excitation.compare import compare, comparison_markdown
    before = _report([0.1, 0.2, 0.3], [0.01, 0.02, 0.03], 10)
    after = _report([0.2, 0.1, 0.5], [0.02, 0.03, 0.05], 40, acc=0.88, probe_change=-2.0)
    after["claims"] = [{"claim": "d", "verdict": "does not hold"}, {"claim": "c", "verdict": "holds"}]
    before["probe"].append({"stage": "2", "replacement": "one", "change_points": -5.0,
                            "interval_points": [-6.0, -4.0]})
    after["probe"].insert(0, {"stage": "2", "replacement": "one", "change_points": -7.0,
                              "interval_points": [-8.0, -6.0]})
    c = compare(before, after)
    assert c["blocks"]["SE_2_1"]["eta2_median"] == pytest.approx((0.3, 0.5, 0.2))
    eta = c["directions"]["eta2_median"]
    assert eta["all"]["higher"] == 2 and eta["all"]["mean_change"] == pytest.approx(0.2 / 3)
    assert eta["all"]["verdict"] == "mostly grows" and eta["stage 1"]["verdict"] == "no consistent change"
    assert c["directions"]["between_class_sd"]["all"]["verdict"] == "grows"
    assert c["probe"][1]["before"][0] == -1.0 and c["probe"][1]["after"][0] == -2.0
    assert c["probe"][0]["before"][0] == -5.0 and c["probe"][0]["after"][0] == -7.0
    assert c["claims"] == [{"claim": "d", "before": "holds", "after": "does not hold"},
                           {"claim": "c", "before": "weakly", "after": "holds"}]
    assert c["before"]["accuracy"] == 0.8 and c["after"]["accuracy"] == 0.88
    text = comparison_markdown(c)
    assert "| SE_2_1 | 0.300 -> 0.500 |" in text and "epoch 10 -> epoch 40" in text
    assert "| eta^2 median | all | 2 of 3 blocks | +0.0667 | mostly grows |" in text
    assert "-1.00 [-1.30, -0.70] | -2.00 [-2.30, -1.70]" in text


def test_compare_says_not_measurable_and_names_same_epoch_files():
    from npse.excitation.compare import compare, comparison_markdown
    before = _report([0.1, 0.2, float("nan")], [0.01, 0.02, 0.03], 10)
    after = _report([0.2, 0.3, 0.4], [0.02, 0.03, 0.05], 10)
    after["checkpoint"] = "other.npz"
    after["claims"] = [{"claim": "every claim", "verdict": "not measurable"}]
    c = compare(before, after)
    assert c["directions"]["eta2_median"]["all"]["verdict"] == "not measurable"
    assert c["directions"]["eta2_median"]["stage 1"]["verdict"] == "grows"
    assert {x["claim"]: (x["before"], x["after"]) for x in c["claims"]} == {
        "every claim": ("-", "not measurable"), "c": ("weakly", "-"), "d": ("holds", "-")}
    assert "epoch 10 (w10.npz) -> epoch 10 (other.npz)" in comparison_markdown(c)


def test_compare_refuses_other_architectures_and_missing_reports(tmp_path):
    from npse.excitation.compare import compare, read_report
    before = _report([0.1, 0.2, 0.3], [0.01, 0.02, 0.03], 10)
    after = _report([0.1, 0.2, 0.3], [0.01, 0.02, 0.03], 40)
    after["blocks"]["SE_3_1"] = after["blocks"].pop("SE_2_1")
    with pytest.raises(ValueError, match="compare checkpoints of one architecture"):
        compare(before, after)
    with pytest.raises(FileNotFoundError, match="no excitation.json"):
        read_report(tmp_path)
    (tmp_path / "excitation.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an excitation.json"):
        read_report(tmp_path)
    (tmp_path / "excitation.json").write_text("{oops")
    with pytest.raises(ValueError, match="excitation.json: not readable as JSON"):
        read_report(tmp_path)
    old = _report([0.1, 0.2, 0.3], [0.01, 0.02, 0.03], 10)
    del old["blocks"]["SE_1_2"]["participation_ratio"]
    (tmp_path / "excitation.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="lacks participation_ratio"):
        read_report(tmp_path)


def test_excitation_command_compares_with_an_earlier_analysis(trained, tmp_path, capsys):
    _, data, weights = trained
    first, second = tmp_path / "first", tmp_path / "second"
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--no-plots", "--no-probe",
                         "--out", first)
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--out", second,
                         "--compare", tmp_path)                # no analysis there: refused first
    assert_one_line_error(rc, err)
    assert "no excitation.json" in err and not second.exists()
    other = json.loads((first / "excitation.json").read_text())
    other["blocks"] = {"SE_9_1": other["blocks"]["SE_1_1"]}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "excitation.json").write_text(json.dumps(other))
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--out", second,
                         "--compare", tmp_path / "other")      # other blocks: refused before the work
    assert_one_line_error(rc, err)
    assert "SE_9_1" in err and not second.exists()
    rc, out, err = run_cli(capsys, "excitation", weights, *data, "--no-plots", "--no-probe",
                           "--out", second, "--compare", first)
    assert rc == 0, err
    text = (second / "comparison.md").read_text()
    assert "| SE_3_1 |" in text and text in out
    # the same weights twice: nothing changed, so no block is higher
    assert "| eta^2 median | all | 0 of 3 blocks | +0.0000 | no consistent change |" in text
    # the earlier analysis is the left side: change its accuracy and see it there
    earlier = json.loads((first / "excitation.json").read_text())
    earlier["accuracy"] = 0.0123
    (first / "excitation.json").write_text(json.dumps(earlier))
    rc, _, err = run_cli(capsys, "excitation", weights, *data, "--no-plots", "--no-probe",
                         "--out", second, "--compare", first, "--overwrite")
    assert rc == 0, err
    assert "(test accuracy 1.23%) and" in (second / "comparison.md").read_text()
    assert json.loads((second / "excitation.json").read_text())["command"].endswith(
        f"--compare {first}")


def test_excitation_at_two_threads_agrees_with_one_and_restores_the_setting(trained, tmp_path,
                                                                           capsys):
    import npse.excitation.report as report_module     # run() imports analyse from here
    from npse.fast.threads import get_num_threads
    _, data, weights = trained
    before = get_num_threads()
    seen = []
    original = report_module.analyse

    def spy(*args, **kwargs):
        seen.append(get_num_threads())
        return original(*args, **kwargs)
    reports = []
    for n in (1, 2):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(report_module, "analyse", spy)
            rc, _, err = run_cli(capsys, "excitation", weights, *data, "--no-plots", "--threads",
                                 str(n), "--out", tmp_path / str(n))
        assert rc == 0, err
        reports.append(json.loads((tmp_path / str(n) / "excitation.json").read_text()))
    assert seen == [1, 2] and get_num_threads() == before
    assert reports[1]["command"].endswith("--threads 2")
    for name, s in reports[0]["blocks"].items():
        for key, value in s.items():
            assert reports[1]["blocks"][name][key] == pytest.approx(value, rel=1e-4, abs=1e-6), \
                (name, key)
