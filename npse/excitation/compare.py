"""Two analyses of the same architecture side by side: how the gates change with training.

``npse excitation CHECKPOINT --compare DIR`` puts the new analysis beside the one in
``DIR/excitation.json`` (an earlier checkpoint of the same network, say) and writes
``OUT/comparison.md``. Chapter: docs/13-role-of-excitation.md, "Over training".

Nothing here is measured again: the numbers are those of the two ``excitation.json`` files. Each
analysis is one trained network, so a change between them mixes the effect of training longer
with the differences between two runs; the table says how many blocks moved which way rather
than calling a change significant.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .stats import stage_of

# (key in a block's summary, column title, format of one value)
MEASURES = (
    ("eta2_median", "eta^2 median", "{:.3f}"),
    ("between_class_sd", "between-class sd", "{:.4f}"),
    ("within_class_sd", "within-class sd", "{:.4f}"),
    ("participation_ratio", "PR", "{:.2f}"),
    ("mean_gate", "mean gate", "{:.3f}"),
    ("saturated_high", "> 0.95", "{:.1%}"),
    ("saturated_low", "< 0.05", "{:.1%}"),
)

GROWTH_RULE = ("grows: higher in every block (of the stage, or of the network); mostly grows: "
               "higher in at least two thirds of the blocks and higher on average; falls and "
               "mostly falls likewise; else no consistent change (a stage of one block has only "
               "grows or falls)")


def read_report(folder) -> dict:
    """``folder/excitation.json`` (or the file itself) as a dict; a clear error when absent."""
    path = Path(folder)
    if path.is_dir():
        path = path / "excitation.json"
    if not path.is_file():
        raise FileNotFoundError(f"--compare {folder}: no excitation.json there (run npse "
                                f"excitation on the other checkpoint first, with --out {folder})")
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--compare {path}: not readable as JSON ({e})") from None
    if not isinstance(report, dict) or not isinstance(report.get("blocks"), dict):
        raise ValueError(f"--compare {path}: not an excitation.json written by npse excitation")
    missing = [k for k in ("checkpoint", "epoch", "accuracy", "claims") if k not in report]
    missing += sorted({key for s in report["blocks"].values() for key, _, _ in MEASURES
                       if not isinstance(s, dict) or key not in s})
    if missing:
        raise ValueError(f"--compare {path}: lacks {', '.join(missing)} (written by an older "
                         f"npse? run npse excitation on its checkpoint again)")
    return report


def check_same_blocks(before: dict, names, what: str) -> None:
    """Refuse to compare analyses of different SE blocks (``names``: the other side's)."""
    if list(before["blocks"]) != list(names):
        raise ValueError(f"--compare: {what} has the SE blocks {list(names)}, the earlier "
                         f"analysis {list(before['blocks'])}; compare checkpoints of one "
                         f"architecture")


def labels_of(before: dict, after: dict) -> tuple[str, str]:
    """"epoch 10", "epoch 40"; with the file names as well when the epochs are the same."""
    a, b = f"epoch {before['epoch']}", f"epoch {after['epoch']}"
    if a == b:
        a += f" ({Path(before['checkpoint']).name})"
        b += f" ({Path(after['checkpoint']).name})"
    return a, b


def growth_verdict(changes: dict) -> str:
    """The direction of ``changes`` ({block: after - before}) in words: see :data:`GROWTH_RULE`;
    "not measurable" when a change is not finite (NaN: too few images in a class)."""
    values = list(changes.values())
    if not values or not all(math.isfinite(v) for v in values):
        return "not measurable"
    up = sum(v > 0 for v in values)
    down = sum(v < 0 for v in values)
    mean = sum(values) / len(values)
    if up == len(values):
        return "grows"
    if down == len(values):
        return "falls"
    if up >= 2 * len(values) / 3 and mean > 0:
        return "mostly grows"
    if down >= 2 * len(values) / 3 and mean < 0:
        return "mostly falls"
    return "no consistent change"


def compare(before: dict, after: dict) -> dict:
    """Per block and measure ``(before, after, change)``; per measure the direction of the
    changes (:func:`growth_verdict`) overall and per stage; the probe rows paired by stage and
    replacement; the paper's claims' verdicts side by side."""
    names = list(after["blocks"])
    check_same_blocks(before, names, "this analysis")
    blocks = {}
    for name in names:
        b, a = before["blocks"][name], after["blocks"][name]
        blocks[name] = {key: (b[key], a[key], a[key] - b[key]) for key, _, _ in MEASURES}
    directions = {}
    for key, _, _ in MEASURES[:3]:
        changes = {n: blocks[n][key][2] for n in names}
        stages = {}
        for n, v in changes.items():
            stages.setdefault(stage_of(n), {})[n] = v
        directions[key] = {
            "all": {"verdict": growth_verdict(changes),
                    "higher": sum(v > 0 for v in changes.values()), "blocks": len(changes),
                    "mean_change": sum(changes.values()) / len(changes)},
            **{f"stage {s}": {"verdict": growth_verdict(c),
                              "higher": sum(v > 0 for v in c.values()), "blocks": len(c),
                              "mean_change": sum(c.values()) / len(c)}
               for s, c in stages.items()}}
    probe = []
    earlier = {(p["stage"], p["replacement"]): p for p in before.get("probe") or []}
    for p in after.get("probe") or []:
        q = earlier.get((p["stage"], p["replacement"]))
        if q is not None:
            probe.append({"stage": p["stage"], "replacement": p["replacement"],
                          "before": (q["change_points"], q["interval_points"]),
                          "after": (p["change_points"], p["interval_points"])})
    # Paired by the claim's words, not by position: an analysis that could not judge the claims
    # has one entry ("every claim"), and a claim on one side only shows "-" on the other.
    was = {x["claim"]: x["verdict"] for x in before["claims"]}
    now = {x["claim"]: x["verdict"] for x in after["claims"]}
    claims = [{"claim": k, "before": was.get(k, "-"), "after": now.get(k, "-")}
              for k in list(now) + [k for k in was if k not in now]]
    level = (after.get("probe_setup") or {}).get("level", 0.95)
    first, second = labels_of(before, after)
    return {"before": {"label": first, "checkpoint": before["checkpoint"],
                       "accuracy": before["accuracy"]},
            "after": {"label": second, "checkpoint": after["checkpoint"],
                      "accuracy": after["accuracy"]}, "level": level,
            "blocks": blocks, "directions": directions, "rule": GROWTH_RULE,
            "probe": probe, "claims": claims}


def comparison_markdown(c: dict) -> str:
    """:func:`compare`'s result as the Markdown tables chapter 13 quotes."""
    b, a = c["before"]["label"], c["after"]["label"]
    lines = [f"# Excitation at {b} and at {a}", "",
             f"`{c['before']['checkpoint']}` (test accuracy {100 * c['before']['accuracy']:.2f}%) "
             f"and `{c['after']['checkpoint']}` ({100 * c['after']['accuracy']:.2f}%); each cell "
             f"reads {b} -> {a}.", ""]
    titles = [title for _, title, _ in MEASURES]
    lines += ["| block | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for name, row in c["blocks"].items():
        cells = [f"{fmt.format(row[key][0])} -> {fmt.format(row[key][1])}"
                 for key, _, fmt in MEASURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| measure | where | higher at " + a + " | mean change | direction |",
              "|---|---|---|---|---|"]
    for key, title, fmt in MEASURES[:3]:
        for where, d in c["directions"][key].items():
            lines.append(f"| {title} | {where} | {d['higher']} of {d['blocks']} blocks | "
                         f"{d['mean_change']:+.4f} | {d['verdict']} |")
    lines += ["", f"Direction: {c['rule']}. One trained network at each length: a change mixes "
              "longer training with the difference between two runs, which was not measured."]
    if c["probe"]:
        lines += ["", f"| gates fixed in stage | to | change at {b} | change at {a} |",
                  "|---|---|---|---|"]
        for p in c["probe"]:
            to = "class-agnostic mean" if p["replacement"] == "mean" else "1"
            cells = [f"{ch:+.2f} [{lo:+.2f}, {hi:+.2f}]" for ch, (lo, hi) in (p["before"], p["after"])]
            lines.append(f"| {p['stage']} | {to} | {cells[0]} | {cells[1]} |")
        lines += ["", f"Changes in accuracy points with each analysis's paired bootstrap "
                  f"{100 * c['level']:.0f}% interval (each network scored against itself)."]
    if c["claims"]:
        lines += ["", f"| the paper's claim | {b} | {a} |", "|---|---|---|"]
        lines += [f"| {x['claim']} | {x['before']} | {x['after']} |" for x in c["claims"]]
    return "\n".join(lines) + "\n"
