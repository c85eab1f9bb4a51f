"""The committed CPU-protocol study (studies/cpu-5ep/) and chapter 12's copy of its table.

Every number of results.json must be the final test accuracy of a committed run (its
metrics.jsonl), every statistic must follow from those numbers (recomputed here from their
definitions, with this file's own Student t and Holm, not npse's), results.md must be what the
report writes from results.json and show those numbers, and the chapter must quote results.md's
table unchanged, and its prose (and chapter 13's stages row) only comparisons the table holds. Runs
that finished after the report was drawn are not in it yet, and that is allowed: the check is
that what the table says is true, not that it is the newest. An arm of the folder with no finished
run yet stands in the table as "not run" and counts in the family as a p of 1. Chapter 12's check
of its verdicts without the reference's lowest run is recomputed here the same way, from the
accuracies with that run left out.
"""
import copy
import json
import math
import re
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


# ------------------------------------------------------------------ the statistics, recomputed
# Written here from their definitions, by other methods than npse/study/stats.py (which
# integrates the t density by Simpson's rule): Student's t through the regularized incomplete
# beta function, evaluated by its continued fraction (modified Lentz).

def incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), regularized."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):                      # the fraction converges fast below this
        return 1 - incomplete_beta(1 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1 - c * d) < 1e-15:
            return front * (f - 1)
    raise AssertionError("the continued fraction did not converge")


def p_two_sided(t: float, df: int) -> float:
    return incomplete_beta(df / (df + t * t), df / 2, 0.5)


def critical_t(alpha: float, df: int) -> float:
    """The t whose two-sided p is alpha, by bisection on p_two_sided."""
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_two_sided(mid, df) > alpha else (lo, mid)
    return (lo + hi) / 2


def holm_adjusted(p: dict, m: int) -> dict:
    """Holm from its definition: the k-th smallest p times (m - k + 1), then the running
    maximum in that order, capped at 1."""
    ranked = sorted(p.items(), key=lambda kv: kv[1])
    return {key: min(1.0, max((m - j) * ranked[j][1] for j in range(k + 1)))
            for k, (key, _) in enumerate(ranked)}


def expected_statistics(results) -> dict:
    """Every comparison of the table, from the accuracies alone."""
    accs = {a["arm"]: a["test_acc"] for a in results["arms"]}
    family_of = {a["arm"]: a["network"] for a in results["arms"]}
    noise = {}
    for family in set(family_of.values()):
        groups = [v for k, v in accs.items() if family_of[k] == family and len(v) > 1]
        ss = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in groups)
        df = sum(len(g) - 1 for g in groups)
        noise[family] = (math.sqrt(ss / df) if df else None, df,
                         {study.ARMS[k].name: len(v) for k, v in accs.items()
                          if family_of[k] == family and len(v) > 1})
    compared = {a["arm"]: study.ARMS[a["arm"]].reference for a in results["arms"]
                if study.ARMS[a["arm"]].reference != a["arm"]}
    m, out = len(compared), {}
    for arm, ref in compared.items():
        s_p, df, _ = noise[family_of[arm]]
        mine, theirs = accs[arm], accs[ref]
        if not mine:             # not run yet: it counts in m (as a p of 1) but has no d
            out[arm] = {}
            continue
        e = {"d": sum(mine) / len(mine) - sum(theirs) / len(theirs)}
        if s_p is not None:
            se = s_p * math.sqrt(1 / len(mine) + 1 / len(theirs))
            e.update(t=e["d"] / se, p=p_two_sided(e["d"] / se, df),
                     half=critical_t(0.05, df) * se, half_sim=critical_t(0.05 / m, df) * se)
        out[arm] = e
    tested = {k: v["p"] for k, v in out.items() if "p" in v}
    for arm, p_holm in holm_adjusted({**tested, **{k: 1.0 for k in out if k not in tested}},
                                     m).items():
        if arm in tested:
            out[arm]["p_holm"] = p_holm
    # Welch's test: each side's own variance, the Welch-Satterthwaite df (fractional).
    for arm, ref in compared.items():
        mine, theirs = accs[arm], accs[ref]
        if len(mine) > 1 and len(theirs) > 1:
            va, vr = (sum((x - sum(g) / len(g)) ** 2 for x in g) / (len(g) - 1) / len(g)
                      for g in (mine, theirs))
            t = out[arm]["d"] / math.sqrt(va + vr)
            df = (va + vr) ** 2 / (va ** 2 / (len(mine) - 1) + vr ** 2 / (len(theirs) - 1))
            out[arm]["welch"] = {"t": t, "df": df, "p": p_two_sided(t, df)}
    welch_p = {k: v["welch"]["p"] for k, v in out.items() if "welch" in v}
    for arm, p_holm in holm_adjusted({**welch_p, **{k: 1.0 for k in out if k not in welch_p}},
                                     m).items():
        if arm in welch_p:
            out[arm]["welch"]["p_holm"] = p_holm
    # The reference's own spread, and the pooled sd of the other arms of its network.
    for family in noise:
        ref = next(k for k in accs if family_of[k] == family and study.ARMS[k].reference == k)
        others = [v for k, v in accs.items() if family_of[k] == family and k != ref and len(v) > 1]
        ss = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in others)
        dfo = sum(len(g) - 1 for g in others)
        r = accs[ref]
        if len(r) > 1 and dfo:
            noise[family] += ({"reference": ref,
                               "reference_sd": math.sqrt(sum((x - sum(r) / len(r)) ** 2
                                                             for x in r) / (len(r) - 1)),
                               "others_pooled_sd": math.sqrt(ss / dfo), "others_pooled_df": dfo},)
    return {"noise": noise, "m": m, "comparisons": out}


@pytest.fixture(scope="module")
def expected(results):
    return expected_statistics(results)


def test_the_independent_t_distribution_is_right():
    # Published table values, and the closed forms of df = 1 (Cauchy) and df = 2.
    for alpha, df, t in ((0.05, 6, 2.447), (0.05, 10, 2.228), (0.01, 6, 3.707)):
        assert abs(critical_t(alpha, df) - t) < 1e-3
    for t in (0.2, 1.0, 3.0, 30.0):
        assert math.isclose(p_two_sided(t, 1), 1 - 2 * math.atan(t) / math.pi, rel_tol=1e-10)
        assert math.isclose(p_two_sided(t, 2), 1 - t / math.sqrt(2 + t * t), rel_tol=1e-10)
    assert holm_adjusted({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}, 4) == \
        pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})


def test_the_statistics_follow_from_the_accuracies(results, expected):
    close = dict(rel_tol=1e-7, abs_tol=1e-12)
    for arm in results["arms"]:
        accs = arm["test_acc"]
        if not accs:                                   # not run yet
            assert arm["mean"] is None and arm["sd"] is None and arm["n"] == 0, arm["arm"]
            continue
        assert math.isclose(arm["mean"], sum(accs) / len(accs), **close), arm["arm"]
        if len(accs) > 1:
            sd = math.sqrt(sum((a - arm["mean"]) ** 2 for a in accs) / (len(accs) - 1))
            assert math.isclose(arm["sd"], sd, **close), arm["arm"]
    for family, (s_p, df, arms, *spread) in expected["noise"].items():
        got = results["noise"][family]
        assert got["pooled_df"] == df and got["arms"] == arms, family
        for key, want in (spread[0] if spread else {}).items():
            assert (got[key] == want if isinstance(want, (str, int)) else
                    math.isclose(got[key], want, rel_tol=1e-9)), (family, key)
        assert bool(spread) == ("reference_sd" in got), family
        assert (got["pooled_sd"] is None) == (s_p is None), family
        if s_p is not None:
            assert math.isclose(got["pooled_sd"], s_p, **close), family
    basic = results["noise"]["basic"]                 # the top-level keys: the first family's
    assert (results["pooled_sd"], results["pooled_df"]) == (basic["pooled_sd"], basic["pooled_df"])
    assert results["family_size"] == expected["m"]
    rows = {a["arm"]: a["vs_reference"] for a in results["arms"] if a["vs_reference"]}
    assert set(rows) == set(expected["comparisons"])
    for arm, e in expected["comparisons"].items():
        v = rows[arm]
        if "d" not in e:                               # not run yet: no d, no p, no verdict
            assert v["d"] is None and v["low"] is None and "p" not in v, arm
            assert v["verdict"] == "not run", arm
            continue
        assert math.isclose(v["d"], e["d"], **close), arm
        if "p" not in e:
            assert v["low"] is None and "p" not in v and "no noise estimate" in v["verdict"], arm
            continue
        assert math.isclose(v["t"], e["t"], **close), arm
        for key, want in (("p", e["p"]), ("p_holm", e["p_holm"]),
                          ("low", e["d"] - e["half"]), ("high", e["d"] + e["half"]),
                          ("low_simultaneous", e["d"] - e["half_sim"]),
                          ("high_simultaneous", e["d"] + e["half_sim"])):
            assert math.isclose(v[key], want, rel_tol=1e-6, abs_tol=1e-9), (arm, key)
        assert v["verdict"] == ("within noise" if e["p_holm"] >= 0.05 else
                                "better" if e["d"] > 0 else "worse"), arm
    for arm, e in expected["comparisons"].items():
        got = rows[arm].get("welch")
        assert (got is None) == ("welch" not in e), arm
        for key, want in (e.get("welch") or {}).items():
            # p through the incomplete beta here, Simpson's rule in npse: fractional df too
            assert math.isclose(got[key], want, rel_tol=1e-6, abs_tol=1e-12), (arm, key)


def test_results_md_shows_the_recomputed_numbers(expected):
    """results.md's cells against the recomputed statistics, read back from the text."""
    text = (STUDY / "results.md").read_text(encoding="utf-8")
    header, *rows = [[c.strip() for c in line.strip("|").split("|")]
                     for line in results_table() if not line.startswith("|---")]
    col = {name: i for i, name in enumerate(header)}
    d_col = "d vs ref, points [95% CI]"
    sim_col = f"simultaneous 95% CI ({expected['m']} comparisons)"
    assert d_col in col and sim_col in col

    def pts(x):
        return f"{100 * x:+.2f}"

    for cells in rows:
        e = expected["comparisons"].get(cells[col["arm"]])
        if e is None:
            continue
        ci, sim = cells[col[d_col]], cells[col[sim_col]]
        if "d" not in e:
            assert (ci, sim, cells[col["verdict"]]) == ("–", "–", "not run"), cells[0]
            continue
        if "p" not in e:
            assert ci == pts(e["d"]) and sim == "–"
            assert "no noise estimate" in cells[col["verdict"]]
            continue
        assert ci == f"{pts(e['d'])} [{pts(e['d'] - e['half'])}, {pts(e['d'] + e['half'])}]"
        assert sim == f"[{pts(e['d'] - e['half_sim'])}, {pts(e['d'] + e['half_sim'])}]"
        for name, want in (("p", e["p"]), ("p (Holm)", e["p_holm"])):
            shown = cells[col[name]]
            assert (want < 1e-4 if shown == "<0.0001" else
                    math.isclose(float(shown), want, rel_tol=0.05, abs_tol=5e-4)), (cells[0], name)
    for family, (s_p, df, arms, *_) in expected["noise"].items():
        if s_p is not None:
            pooled = ", ".join(f"{a} ({k} seeds)" for a, k in arms.items())
            assert f"pooled over {pooled}" in text
            assert f"s_p = {100 * s_p:.2f} points (df = {df}, " in text


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


# ------------------------------------------------------------------ chapter 12's prose
# The prose quotes comparisons as "d [low, high], p = P, Holm H" and simultaneous intervals as
# "simultaneous ... [low, high]", in points. When seeds join the folder every one of them moves;
# this check makes a stale quote fail instead of lingering.

QUOTE = re.compile(r"([+-]?\d+\.\d+) \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]"
                   r"(?:,? (?:points,? )?(?:p = |p )(\d\.\d+))?(?:,? Holm (?:p )?(\d(?:\.\d+)?))?")
SIMULTANEOUS = re.compile(r"simultaneous[^\[\].]{0,40}?\[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]")


def same(quoted: str, value: float) -> bool:
    """A number as quoted (with its decimals) is the value rounded to them."""
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    if "." in quoted and float(quoted) != 0 and abs(float(quoted)) < 1:
        # p-values are quoted to two significant digits (0.00013) or to fixed decimals (0.070)
        return abs(float(quoted) - value) <= 0.5 * 10 ** -decimals + 1e-12
    return round(value, decimals) == round(float(quoted), decimals)


def chapter_prose() -> str:
    text = CHAPTER.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN)
    return " ".join((head + rest.split(END)[1]).replace("\u2212", "-").split())


def test_chapter_12_prose_quotes_numbers_of_the_table(results):
    comparisons = [a["vs_reference"] for a in results["arms"] if a.get("vs_reference")
                   and a["vs_reference"].get("low") is not None]
    prose = chapter_prose()
    quotes = list(QUOTE.finditer(prose))
    assert len(quotes) >= 10, "the pattern no longer finds the chapter's quotes"
    for m in quotes:
        d, low, high, p, holm = m.groups()
        fits = [c for c in comparisons
                if same(d, 100 * c["d"]) and same(low, 100 * c["low"]) and same(high, 100 * c["high"])
                and (p is None or same(p, c["p"])) and (holm is None or same(holm, c["p_holm"]))]
        assert fits, f"{CHAPTER.name} quotes '{m.group(0)}', which is no comparison of results.json"
    for m in SIMULTANEOUS.finditer(prose):
        low, high = m.groups()
        assert any(same(low, 100 * c["low_simultaneous"]) and same(high, 100 * c["high_simultaneous"])
                   for c in comparisons), \
            f"{CHAPTER.name} quotes '{m.group(0)}', which is no simultaneous interval of results.json"


NOISE = re.compile(r"(Bottleneck network's )?\$s_p\$ = (\d\.\d+) points \(df = (\d+)\)")
HALF_WIDTHS = re.compile(r"d ± (\d\.\d+) points \(95%\) with three seeds, ± (\d\.\d+) with two "
                         r"and ± (\d\.\d+) with one \(simultaneous over (\d+): ± (\d\.\d+), "
                         r"± (\d\.\d+), ± (\d\.\d+)\)")


def test_chapter_12_quotes_the_table_s_noise_and_interval_widths(results):
    """The results section's s_p, df and half-widths (against a three-seed reference) are the
    table's: they move with every seed added, and a stale one must fail."""
    basic = results["noise"]["basic"]
    s_p, df, m = basic["pooled_sd"], basic["pooled_df"], results["family_size"]
    prose = chapter_prose()
    quoted = NOISE.findall(prose)
    assert quoted, "the pattern no longer finds the chapter's s_p"
    for bottleneck, sp_q, df_q in quoted:    # "Bottleneck network's $s_p$ = ..." is that family's
        family = results["noise"]["bottleneck" if bottleneck else "basic"]
        assert family["pooled_sd"] is not None, f"{CHAPTER.name} quotes an s_p its family lacks"
        assert same(sp_q, 100 * family["pooled_sd"]) and int(df_q) == family["pooled_df"], \
            (bottleneck, sp_q, df_q, 100 * family["pooled_sd"], family["pooled_df"])
    widths = HALF_WIDTHS.findall(prose)
    assert widths, "the pattern no longer finds the chapter's interval half-widths"
    for h3, h2, h1, m_q, s3, s2, s1 in widths:
        assert int(m_q) == m
        for n, h, sim in ((3, h3, s3), (2, h2, s2), (1, h1, s1)):
            se = s_p * math.sqrt(1 / n + 1 / 3)
            assert same(h, 100 * critical_t(0.05, df) * se), (n, h)
            assert same(sim, 100 * critical_t(0.05 / m, df) * se), (n, sim)


WELCH = re.compile(r"Welch p (\d\.\d+) \(df (\d+\.\d)\),? Holm (\d(?:\.\d+)?)")


def test_chapter_12_prose_quotes_welch_tests_of_the_table(results):
    """The prose quotes Welch's test as results.md does: "Welch p P (df D), Holm H"."""
    tests = [a["vs_reference"]["welch"] for a in results["arms"]
             if (a.get("vs_reference") or {}).get("welch")]
    quotes = list(WELCH.finditer(chapter_prose()))
    assert quotes, "the pattern no longer finds the chapter's Welch quotes"
    for m in quotes:
        p, df, holm = m.groups()
        assert any(same(p, w["p"]) and same(df, w["df"]) and same(holm, w["p_holm"])
                   for w in tests), \
            f"{CHAPTER.name} quotes '{m.group(0)}', which is no Welch test of results.json"


def test_chapter_13_quotes_the_stages_comparison_of_the_table(results):
    """Chapter 13 sets `stages-1-2` against `reference` beside its probe; its numbers are the
    table's (the probe's own intervals there are another thing and are not checked here)."""
    (arm,) = [a for a in results["arms"] if a["arm"] == "stages-1-2"]
    c, ref = arm["vs_reference"], [a for a in results["arms"] if a["arm"] == "reference"][0]
    text = " ".join((ROOT / "docs" / "13-role-of-excitation.md").read_text(encoding="utf-8").split())
    row = (f"(`stages-1-2`, {arm['n']} seed{'s' * (arm['n'] != 1)}, against `reference`, "
           f"{ref['n']} seeds) | the stages study | {100 * c['d']:+.2f}, 95% interval "
           f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}], simultaneous "
           f"[{100 * c['low_simultaneous']:+.2f}, {100 * c['high_simultaneous']:+.2f}], Holm p "
           f"{c['p_holm']:.2g}")
    assert row in text, f"13-role-of-excitation.md should quote: {row}"
    for m in SIMULTANEOUS.finditer(text):
        low, high = m.groups()
        assert same(low, 100 * c["low_simultaneous"]) and same(high, 100 * c["high_simultaneous"]), \
            m.group(0)


LOW_RUN = re.compile(r'none of the three "better" verdicts survives Holm\'s adjustment \(Holm p (\S+) '
                     r'for `stages-1-2`, (\S+) for `stages-2`, (\S+) for SE-PRE\), while the "worse" '
                     r'ones grow firmer \(Holm (\S+) for `stages-3`, (\S+) for SE-POST, (\S+) for '
                     r'SE-Identity\)')


def test_chapter_12_s_check_without_the_lowest_reference_run(results):
    """Chapter 12 weighs the verdicts by dropping the reference's lowest run and recomputing the
    table (s_p, df, Holm over the same family); chapter 13 quotes stages-1-2's figure from it.
    Both must be that recomputation's: they move whenever the table does."""
    trimmed = copy.deepcopy(results)
    (ref,) = [a for a in trimmed["arms"] if a["arm"] == "reference"]
    full = list(ref["test_acc"])
    ref["test_acc"] = sorted(full)[1:]
    e = expected_statistics(trimmed)["comparisons"]
    prose = chapter_prose()
    quoted = LOW_RUN.search(prose)
    assert quoted, "the pattern no longer finds the chapter's check without the lowest run"
    arms = ("stages-1-2", "stages-2", "integration-pre", "stages-3", "integration-post",
            "integration-identity")
    for q, arm in zip(quoted.groups(), arms):
        assert same(q, e[arm]["p_holm"]), (arm, q, e[arm]["p_holm"])
    # and the words around them: no "better" verdict survives, every "worse" one does
    assert all(e[a]["p_holm"] >= 0.05 for a in arms[:3])
    assert all(e[a]["p_holm"] < 0.05 for a in arms[3:])
    shift = sum(ref["test_acc"]) / len(ref["test_acc"]) - sum(full) / len(full)
    assert f"every difference would fall by {100 * shift:.3f} points" in prose
    better = [100 * e[a]["d"] for a in ("stages-1-2", "stages-2", "integration-pre")]
    assert f"would be {min(better):.2f}-{max(better):.2f} points above it" in prose
    ch13 = " ".join((ROOT / "docs" / "13-role-of-excitation.md").read_text(encoding="utf-8").split())
    assert (f"{100 * e['stages-1-2']['d']:+.2f} points, would not survive Holm's adjustment "
            f"(Holm p {e['stages-1-2']['p_holm']:.2g})") in ch13


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
