"""The committed CPU-protocol study (studies/cpu-5ep/) and chapter 12's copy of its table.

Every number of results.json must be the final test accuracy of a committed run (its
metrics.jsonl), every statistic must follow from those numbers, results.md must be what the
report writes from results.json, and the chapter must quote results.md's table unchanged. Runs
that finished after the report was drawn are not in it yet, and that is allowed: the check is
that what the table says is true, not that it is the newest.
"""
import json
import math
from pathlib import Path

import pytest

from npse import study

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "cpu-5ep"
CHAPTER = ROOT / "docs" / "12-studies.md"
BEGIN, END = "<!-- study-table: studies/cpu-5ep/results.md -->", "<!-- /study-table -->"


@pytest.fixture(scope="module")
def results():
    return json.loads((STUDY / "results.json").read_text(encoding="utf-8"))


def test_every_accuracy_in_the_table_is_a_committed_run(results):
    epochs = results["protocol"]["epochs"]
    for arm in results["arms"]:
        assert len(arm["seeds"]) == len(arm["test_acc"]) == arm["n"]
        for seed, acc in zip(arm["seeds"], arm["test_acc"]):
            metrics = study.read_metrics(study.run_dir(STUDY, arm["arm"], seed) / "metrics.jsonl")
            assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1)), (arm["arm"], seed)
            assert metrics[-1]["test_acc"] == acc, (arm["arm"], seed)


def test_the_statistics_follow_from_the_accuracies(results):
    accs = {a["arm"]: a["test_acc"] for a in results["arms"]}
    s_p, df = study.pooled_sd(list(accs.values()))
    assert (results["pooled_sd"], results["pooled_df"]) == (s_p, df)
    for arm in results["arms"]:
        stats = study.arm_stats(arm["test_acc"])
        assert (arm["mean"], arm["sd"]) == (stats["mean"], stats["sd"])
        v = arm["vs_reference"]
        if v is None:
            continue
        expected = study.difference(arm["test_acc"], accs[v["reference"]], s_p, df)
        for key, value in expected.items():
            assert v[key] == value or math.isclose(v[key], value, rel_tol=1e-12), (arm["arm"], key)


def test_results_md_is_what_the_report_writes(results):
    assert (STUDY / "results.md").read_text(encoding="utf-8") == study.markdown(results)


def results_table() -> list:
    """The lines of results.md's table."""
    return [line for line in (STUDY / "results.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("|")]


def test_chapter_12_quotes_the_committed_table():
    text = CHAPTER.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"{CHAPTER.name}: markers missing"
    quoted = [line for line in text.split(BEGIN)[1].split(END)[0].splitlines() if line.strip()]
    table = results_table()
    assert quoted == table, "refresh it: python tests/test_study_results.py"


def refresh_chapter_table() -> None:
    """``python tests/test_study_results.py``: copy results.md's table into chapter 12."""
    text = CHAPTER.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    table = results_table()
    CHAPTER.write_text(head + BEGIN + "\n" + "\n".join(table) + "\n" + END + tail,
                       encoding="utf-8")
    print(f"{CHAPTER.relative_to(ROOT)}: {len(table)} table lines from "
          f"{(STUDY / 'results.md').relative_to(ROOT)}")


if __name__ == "__main__":
    refresh_chapter_table()
