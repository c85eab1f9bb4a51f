"""The book's figures: PNGs only from docs/figures/make_figures.py, drawn from numbers the chapters
still quote and from npse itself. The drawing tests run the script into a temporary folder (they
need matplotlib, which the `test` extra installs) and compare its PNGs with the committed ones."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def load_script():
    spec = importlib.util.spec_from_file_location("make_figures", FIGURES / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_png_is_one_the_script_draws():
    assert sorted(p.name for p in FIGURES.glob("*.png")) == sorted(load_script().OUTPUTS)


def test_the_learning_curves_use_the_numbers_chapter_11_quotes():
    script = load_script()
    script.check_against_chapter()                  # raises SystemExit naming the list that drifted
    assert all(len(v) == 10 for v in script.TEN_EPOCHS.values())


def test_a_changed_number_is_noticed(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setitem(script.TEN_EPOCHS, "ResNet-20", [*script.TEN_EPOCHS["ResNet-20"][:-1], 99.9])
    try:
        script.check_against_chapter()
    except SystemExit as e:
        assert "ResNet-20" in str(e)
    else:
        raise AssertionError("a number the chapter does not quote went unnoticed")


def test_the_se_resnet20_curve_is_the_committed_run():
    """The 10-epoch SE-ResNet-20 run is stored with its weights: the quoted curve is its own."""
    import json
    metrics = FIGURES.parent.parent / "weights" / "se_resnet20-10ep" / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    assert [r["epoch"] for r in records] == list(range(1, 11))
    measured = [round(100 * r["test_acc"], 1) for r in records]
    assert measured == load_script().TEN_EPOCHS["SE-ResNet-20"]


# ------------------------------------------------------------------------- drawing (matplotlib)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def drawn(tmp_path_factory, cache={}):
    """Run the script once into a temporary folder; {name: path}."""
    if "out" not in cache:
        out = tmp_path_factory.mktemp("figures")
        root = FIGURES.parent.parent
        env = {**os.environ, "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        result = subprocess.run([sys.executable, str(FIGURES / "make_figures.py"), "--out", str(out)],
                                capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        cache["out"] = out
    return {name: cache["out"] / name for name in load_script().OUTPUTS}


def test_the_script_draws_every_figure(tmp_path_factory):
    pytest.importorskip("matplotlib")
    import matplotlib.image
    for name, path in drawn(tmp_path_factory).items():
        assert path.exists(), f"make_figures.py did not write {name}"
        assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{name} is not a PNG"
        height, width = matplotlib.image.imread(path).shape[:2]
        assert 300 <= width <= 2000 and 250 <= height <= 1200, f"{name}: {width} x {height} pixels"


def test_the_committed_figures_are_what_the_script_draws(tmp_path_factory):
    """Pixel by pixel, with room for another matplotlib's font rendering: the same size, and the
    mean difference under 1% of the range with fewer than 3% of the pixels visibly different."""
    pytest.importorskip("matplotlib")
    import matplotlib.image
    import numpy as np
    for name, path in drawn(tmp_path_factory).items():
        if path.read_bytes() == (FIGURES / name).read_bytes():
            continue
        new, old = matplotlib.image.imread(path), matplotlib.image.imread(FIGURES / name)
        assert new.shape == old.shape, f"{name}: drawn {new.shape}, committed {old.shape}; rerun make_figures.py"
        difference = np.abs(new[..., :3] - old[..., :3]).max(axis=-1)
        assert difference.mean() < 0.01 and (difference > 0.25).mean() < 0.03, (
            f"{name} differs from what make_figures.py draws: rerun it and commit the result")


def test_every_figure_is_shown_in_a_chapter():
    chapters = " ".join(p.read_text(encoding="utf-8") for p in FIGURES.parent.glob("*.md"))
    for name in load_script().OUTPUTS:
        assert f"figures/{name}" in chapters, f"no chapter shows {name}"
