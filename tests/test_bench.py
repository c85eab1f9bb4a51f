"""`npse bench` runs end to end on a tiny setting and prints every section (no timing asserted)."""
from npse.cli import main


def test_bench_prints_its_tables(capsys):
    status = main(["bench", "--models", "se_resnet8", "--batch-sizes", "4,8", "--repeats", "1",
                   "--no-torch"])
    out = capsys.readouterr().out
    assert status == 0
    assert "train img/s" in out and "peak MB" in out
    assert "se_resnet8         4" in out and "se_resnet8         8" in out
    assert "per layer, se_resnet8" in out and "layer1.0.se" in out and "layer1.0.conv1" in out
    assert "profile of one training step" in out and "Python overhead" in out


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--models", "resnet21", "--no-torch"]) == 1
    assert "unknown model 'resnet21'" in capsys.readouterr().err


def test_the_gemm_floor_counts_three_products_per_convolution(monkeypatch):
    """conv_gemm_floor times, for every Conv2d, its forward, weight-gradient and input-gradient
    products at the shapes the network gives them (here checked by counting the shapes)."""
    from npse import bench
    setup = bench._Setup("se_resnet8", 4)
    seen = []
    monkeypatch.setattr(bench, "_median_time", lambda fn, repeats, xp: seen.append(fn()) or 0.25)
    assert bench.conv_gemm_floor(setup, repeats=1) == 0.25 * 3 * 7      # se_resnet8: 7 convolutions
    # conv1 (3 -> 16 channels, 32x32 outputs: one product per image): y, dW per image, dx
    assert [a.shape for a in seen[:3]] == [(4, 16, 32 * 32), (4, 16, 27), (4, 3, 32 * 32)]
    # the last convolution (64 -> 64 channels, 8x8 outputs: one product for the batch)
    assert [a.shape for a in seen[-3:]] == [(64, 4 * 8 * 8), (64, 576), (64, 4 * 8 * 8)]


def test_interleaved_times_takes_turns_and_returns_medians():
    from npse import bench
    calls = []
    steps = [(lambda: calls.append("a"), lambda: None), (lambda: calls.append("b"), lambda: None)]
    times = bench.interleaved_times(steps, repeats=3, warmup=1)
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert calls == ["a", "b"] + ["a", "b"] * 3        # warm-up of each, then one of each per round
