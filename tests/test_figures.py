"""The book's figures: PNGs only from docs/figures/make_figures.py, drawn from numbers the chapters
still quote. (Drawing needs matplotlib, which CI does not install; these checks do not.)"""
import importlib.util
from pathlib import Path

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
