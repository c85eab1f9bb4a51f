"""A study's table from the files on disk: results.json, results.md, results.png."""
from __future__ import annotations

import math
from pathlib import Path

from ..rundir import write_text_atomic
from .arms import ARMS, MIN_SEEDS, QUICK, Arm, Protocol, seeds_for, study_arms
from .folder import (RESULTS_JSON, RESULTS_MD, RESULTS_PNG, STUDY_FORMAT, failed_error,
                     folder_studies, inspect_run, read_protocol, run_dir, seeds_on_disk,
                     wall_seconds, write_json)
from .stats import ALPHA, arm_stats, difference, judge, pooled_sd, t_quantile, welch


def model_facts(arm: Arm, protocol: Protocol) -> dict:
    """Parameters, multiply-adds per image and the SE hidden width per stage of an arm."""
    from ..models import build_model, model_costs
    config = protocol.train_config(arm, 0, Path("."))
    model = build_model(config.model, **config.model_overrides())
    params, madds = model_costs(model)
    hidden = {}
    for name, block in model.se_blocks():
        hidden.setdefault(name.split(".")[0].replace("layer", "stage "), block.hidden)
    return {"parameters": params, "multiply_adds": madds, "hidden": hidden}


def _read_arm(out: Path, arm: str, seeds: int, protocol: Protocol) -> tuple:
    """``(accs, failed, walls, missing, damaged)`` of one arm's runs, read from disk; a damaged
    run counts as missing and is listed with why."""
    accs, failed, walls, missing, damaged = [], [], [], [], []
    for s in seeds_for(arm, seeds):
        d = run_dir(out, arm, s)
        found = inspect_run(d, protocol.train_config(ARMS[arm], s, d).training_dict())
        if found.state == "finished":
            accs.append(found.metrics[-1]["test_acc"])
            walls.append(wall_seconds(d, found.metrics))
        elif found.state == "failed":
            failed.append({"seed": s, "error": failed_error(d)})
        else:
            missing.append(s)
            if found.state == "damaged":
                damaged.append({"seed": s, "why": found.why})
    return accs, failed, walls, missing, damaged


def noise(finals: dict) -> dict:
    """Each network family's own noise: the sd pooled over that family's arms with two seeds or
    more (``finals``: arm -> accuracies). A family none of whose arms has two seeds has no
    estimate (``pooled_sd`` None): its arms get no interval, rather than one borrowed from
    another network. Where the family's reference and at least one other arm have two seeds,
    also the reference's own sd and the sd pooled over the other arms (``reference_sd``,
    ``others_pooled_sd``, ``others_pooled_df``): the check on the equal-variance assumption."""
    families = {}
    for arm, accs in finals.items():
        families.setdefault(ARMS[arm].network, {})[arm] = accs
    out = {}
    for family, arms in families.items():
        s_p, df = pooled_sd(list(arms.values()))
        out[family] = {"pooled_sd": s_p, "pooled_df": df,
                       "t_975": t_quantile(0.975, df) if df else None,
                       "arms": {a: len(accs) for a, accs in arms.items() if len(accs) >= 2}}
        # The reference enters every comparison of its network: its own spread beside the
        # others' pooled one says how much the equal-variance assumption carries.
        ref = next((a for a in arms if ARMS[a].reference == a), None)
        others_sd, others_df = pooled_sd([v for a, v in arms.items() if a != ref])
        if ref is not None and len(arms[ref]) >= 2 and others_df:
            out[family].update(reference=ref, reference_sd=arm_stats(arms[ref])["sd"],
                               others_pooled_sd=others_sd, others_pooled_df=others_df)
    return out


def aggregate(names: str, out, protocol: Protocol, seeds: int) -> dict:
    """Read every run of the study from disk and compute the table (JSON-ready)."""
    out = Path(out)
    rows = [(arm, *_read_arm(out, arm, seeds, protocol)) for arm in study_arms(names)]
    finals = {arm: accs for arm, accs, *_ in rows}
    families = noise(finals)
    compared = [arm for arm, *_ in rows if arm != ARMS[arm].reference]
    table = []
    for arm, accs, failed, walls, missing, damaged in rows:
        a = ARMS[arm]
        entry = {"arm": arm, "label": a.label, "network": a.network, **model_facts(a, protocol),
                 "seeds": [s for s in seeds_for(arm, seeds) if s not in missing
                           and s not in [f["seed"] for f in failed]],
                 "test_acc": accs, **arm_stats(accs), "failed": failed, "missing": missing,
                 **({"damaged": damaged} if damaged else {}),
                 "wall_seconds": sum(walls) if walls else None,
                 "paper_top1_error": a.paper, "paper_note": a.paper_note}
        own = families[a.network]
        theirs = finals.get(a.reference, [])
        entry["vs_reference"] = (None if arm not in compared else
                                 {"reference": a.reference,
                                  **difference(accs, theirs, own["pooled_sd"], own["pooled_df"],
                                               family_size=len(compared), family=a.network),
                                  "welch": welch(accs, theirs)})
        table.append(entry)
    judge([e["vs_reference"] for e in table if e["vs_reference"] is not None])
    # The top-level noise keys, kept for older readers: the first family's (the basic
    # network's whenever the study has it); "noise" holds every family's.
    first = families[ARMS[rows[0][0]].network]
    return {"format": STUDY_FORMAT, "study": names, "protocol": protocol.as_dict(),
            "seeds": seeds, "pooled_sd": first["pooled_sd"], "pooled_df": first["pooled_df"],
            "t_975": first["t_975"], "noise": families, "family_size": len(compared),
            "alpha": ALPHA, "arms": table}


def _pct(x, signed=False):
    return "–" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


def _p(x) -> str:
    return "–" if x is None else ("1" if x >= 0.9995 else f"{x:.2g}" if x >= 1e-4 else "<0.0001")


def _row(a: dict) -> str:
    """One arm's line of the table."""
    acc = ("failed" if a["failed"] and not a["n"] else "not run" if not a["n"] else
           f"{_pct(a['mean'])}" + (f" ± {_pct(a['sd'])}" if a["sd"] is not None else " (1 seed)"))
    if a["failed"]:
        acc += f" ({len(a['failed'])} failed)"
    if a.get("damaged"):
        acc += f" ({len(a['damaged'])} damaged, not counted)"
    v = a["vs_reference"]
    if v is None:
        cells = ["(reference)", "", "", "", ""]
    else:
        d = "–" if v["d"] is None else _pct(v["d"], True)
        if v["low"] is not None:
            d += f" [{_pct(v['low'], True)}, {_pct(v['high'], True)}]"
        sim = ("–" if v.get("low_simultaneous") is None else
               f"[{_pct(v['low_simultaneous'], True)}, {_pct(v['high_simultaneous'], True)}]")
        cells = [d, sim, _p(v.get("p")), _p(v.get("p_holm")), v["verdict"]]
    hidden = ", ".join(f"{h}" for h in a["hidden"].values()) or "–"
    paper = "–" if a["paper_top1_error"] is None else f"{a['paper_top1_error']:.2f}"
    return (f"| {a['arm']} | {a['parameters']:,} | {a['multiply_adds']:,} | {hidden} | {a['n']} "
            f"| {acc} | " + " | ".join(cells) + f" | {paper} | {a['paper_note']} |")


def markdown(results: dict) -> str:
    """results.md: the table, the noise and how to read it."""
    p = results["protocol"]
    lines = [f"# npse study `{results['study']}`", ""]
    if p.get("quick"):
        lines += ["**`--quick`: tiny networks on a few hundred images for one epoch. This table "
                  "shows the machinery, not a result.**", ""]
    images = ("all training images" if p["train_subset"] is None
              else f"{p['train_subset']} training images")
    epochs = f"{p['epochs']} epoch" + ("s" if p["epochs"] != 1 else "")
    m = results.get("family_size", 0)
    lines += [f"Protocol: {epochs}, batch {p['batch_size']}, {images}"
              f", BasicBlock depth {p['depth']}, Bottleneck depth {p['bottleneck_depth']}, "
              f"widths {tuple(p['widths']) if p['widths'] else (16, 32, 64)}; SE arms without "
              f"FC biases in the excitation (the paper's ablation setting); {_seed_range(results['seeds'])}"
              f" per arm, at least {MIN_SEEDS} for the baseline and the reference.", "",
              "| arm | params | mult-adds | SE hidden width | seeds | test acc % (mean ± sd) "
              f"| d vs ref, points [95% CI] | simultaneous 95% CI ({m} comparisons) | p "
              "| p (Holm) | verdict | paper top-1 err % | paper's variant |",
              "|---|---:|---:|---|---:|---|---|---|---:|---:|---|---:|---|"]
    lines += [_row(a) for a in results["arms"]]
    lines += (["", "How to read it:", ""] + _noise_lines(results) + _welch_lines(results)
              + _reading_lines(results))
    return "\n".join(lines) + "\n"


def _noise_lines(results: dict) -> list:
    """One line per network family: its s_p, and the arms it pools."""
    names = _network_names(results)
    noise = results.get("noise") or {"basic": {"pooled_sd": results["pooled_sd"],
                                               "pooled_df": results["pooled_df"],
                                               "t_975": results["t_975"], "arms": {}}}
    lines = []
    for family, n in noise.items():
        who = names.get(family, family)
        if n["pooled_sd"] is None:
            lines.append(f"- Noise of the {who}: none of its arms has two finished seeds, so "
                         f"there is no estimate of its noise, and its arms get no interval and "
                         f"no p (run a second seed of one of them). It is not borrowed from the "
                         f"other network: a different network need not vary as much between "
                         f"seeds.")
            continue
        pooled = ", ".join(f"{a} ({k} seeds)" for a, k in n["arms"].items())
        lines.append(f"- Noise of the {who}: the sd between seeds, pooled over {pooled} (equal "
                     f"variances assumed), is s_p = {100 * n['pooled_sd']:.2f} points "
                     f"(df = {n['pooled_df']}, t(0.975) = {n['t_975']:.3f}). Every interval "
                     f"of this network's arms uses it, one-seed arms included.")
    lines.append(f"- The test set alone adds binomial noise of about "
                 f"{_binomial_points(results):.2f} points to each run.")
    return lines


def _network_names(results: dict) -> dict:
    return {"basic": f"BasicBlock network (depth {results['protocol']['depth']})",
            "bottleneck": f"Bottleneck network (depth {results['protocol']['bottleneck_depth']})"}


def _welch_lines(results: dict) -> list:
    """The check on the equal-variance assumption: the reference's own spread, and Welch's test
    for every comparison whose two sides have two seeds or more."""
    lines = []
    arms = {a["arm"]: a for a in results["arms"]}
    for family, n in (results.get("noise") or {}).items():
        if n.get("reference_sd") is None:
            continue
        lines.append(f"- The reference of the {_network_names(results).get(family, family)}, "
                     f"`{n['reference']}`, varies by sd {100 * n['reference_sd']:.2f} points "
                     f"between its seeds (df = {arms[n['reference']]['n'] - 1}); its other "
                     f"arms with two seeds or more pool to {100 * n['others_pooled_sd']:.2f} "
                     f"(df = {n['others_pooled_df']}). Every comparison of the network uses the "
                     f"reference's runs, so its spread weighs on all of them.")
    rows = [a for a in results["arms"] if (a["vs_reference"] or {}).get("welch")]
    if not rows:
        return lines
    m = results.get("family_size", 0)
    tests = "; ".join(f"{a['arm']} p {_p(w['p'])} (df {w['df']:.1f}), Holm {_p(w.get('p_holm'))}"
                      for a in rows for w in [a["vs_reference"]["welch"]])
    judged = [a for a in results["arms"]
              if (a["vs_reference"] or {}).get("verdict") in ("better", "worse")]
    testable = [a["arm"] for a in judged if a["vs_reference"].get("welch")]
    kept = [a for a in testable if arms[a]["vs_reference"]["welch"]["p_holm"] < ALPHA]
    lost = [a for a in testable if a not in kept]
    untestable = [a["arm"] for a in judged if a["arm"] not in testable]
    verdicts = ""
    if testable:
        verdicts = (f"Of the table's verdicts it keeps {len(kept)} of {len(testable)}"
                    + (f" ({', '.join(kept)})" if kept else "")
                    + (f", not {', '.join(lost)}" if lost else "") + ". ")
    if untestable:
        verdicts += f"One-seed arms cannot be tested this way: {', '.join(untestable)}. "
    dfs = [a["vs_reference"]["welch"]["df"] for a in rows]
    need = ", ".join(f"{t_quantile(1 - ALPHA / (2 * m), k):.1f} at df {k}" for k in (2, 3))
    lines.append(f"- Without the equal-variance assumption (Welch's test: each arm's own sd and "
                 f"its reference's, fractional df, only where both have two seeds or more; "
                 f"Holm over the same {m} comparisons): {tests}. {verdicts}Its df here runs "
                 f"from {min(dfs):.1f} to {max(dfs):.1f}, and with Holm over {m} comparisons "
                 f"even the smallest p must be below 0.05/{m}, which needs |t| above {need}: "
                 f"with two or three seeds a side it can hardly keep a verdict, so one that it "
                 f"does not keep is not shown wrong; it rests on the pooled s_p, and more seeds "
                 f"of the arm and of the reference are what would tell.")
    return lines


def _reading_lines(results: dict) -> list:
    m = results.get("family_size", 0)
    lines = [
        "- d is the arm's mean minus its reference's (`reference`, or `bottleneck-standard` for "
        "the Bottleneck arms), in accuracy points; higher is better. t = d / (s_p sqrt(1/n_arm "
        "+ 1/n_ref)) with the df of its network's s_p; p is its two-sided p-value. The 95% CI "
        "is d ± t(0.975, df) s_p sqrt(1/n_arm + 1/n_ref): it excludes 0 exactly when p < 0.05.",
        f"- The table makes {m} comparisons, and about 1 in 20 has p < 0.05 by chance alone. "
        f"'p (Holm)' is p adjusted over all {m} by Holm's step-down method (a comparison "
        f"without a p counts as p = 1); the simultaneous CI uses t(1 - 0.05/{2 * m}, df) "
        f"(Bonferroni), so that all {m} intervals hold their true d together with 95% "
        f"probability.",
        "- The verdict follows p (Holm): 'better' or 'worse' when it is below 0.05, else "
        "'within noise' (the arms are not ranked). Holm is never stricter than the "
        "simultaneous CI, so an arm can be 'worse' by Holm while that interval still holds 0.",
        "- The paper's numbers are ImageNet top-1 *errors* of ResNet-50 variants (TPAMI "
        "tables); npse's are CIFAR-10 test *accuracies* of networks about 100 times "
        "smaller, trained for a few epochs. Compare directions, not sizes.",
        "- 'SE hidden width' is the excitation's hidden width per stage (C // r); at r = 16 "
        "ResNet-50 has hidden widths 16-128, a regime a 16/32/64-channel network does not "
        "reach (its widths are 1, 2, 4).",
        "- The `stages` arms: npse's stage 3 is its last stage; the paper put SE in its "
        "stages 2, 3 and 4 alone, never in its last stage (5) alone, and mentions "
        "dropping the last stage's SE only in a remark of its section 4."]
    return lines


def _seed_range(n: int) -> str:
    return "seed 0" if n == 1 else f"seeds 0..{n - 1}"


def _binomial_points(results) -> float:
    accs = [a["mean"] for a in results["arms"] if a["mean"] is not None]
    p = sum(accs) / len(accs) if accs else 0.8
    n = QUICK["test_subset"] if results["protocol"].get("quick") else 10000
    return 100 * math.sqrt(p * (1 - p) / n)


def plot(results: dict, path: Path) -> None:
    """results.png: each arm's seeds as dots, d's intervals as bars around the reference's mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = results["arms"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(arms) + 1.6))
    for i, a in enumerate(arms):
        y = len(arms) - 1 - i
        ax.scatter([100 * x for x in a["test_acc"]], [y] * len(a["test_acc"]), s=18,
                   color="tab:blue", zorder=3)
        if a["mean"] is not None:
            ax.plot([100 * a["mean"]], [y], marker="|", markersize=14, color="black", zorder=4)
        ref = next((r for r in arms if r["arm"] == (a["vs_reference"] or {}).get("reference")),
                   None)
        v = a["vs_reference"]
        if v and v["low"] is not None and ref and ref["mean"] is not None:
            color = "tab:red" if v["verdict"] in ("better", "worse") else "tab:gray"
            for key, width in (("", 2.5), ("_simultaneous", 0.9)):
                if v.get("low" + key) is not None:
                    ax.plot([100 * (ref["mean"] + v["low" + key]),
                             100 * (ref["mean"] + v["high" + key])], [y - 0.18] * 2,
                            color=color, linewidth=width)
    ax.set_yticks(range(len(arms)))
    ax.set_yticklabels([a["arm"] for a in reversed(arms)])
    ax.set_xlabel("CIFAR-10 test accuracy, % (dots: seeds; tick: mean)\nbars: reference mean + "
                  "d, 95% CI (thick) and simultaneous CI (thin); red: Holm p < 0.05, grey: not;\nno bar: "
                  "no noise estimate for that network", fontsize=9)
    title = f"npse study {results['study']}"
    if results["protocol"].get("quick"):
        title += " (--quick: machinery only, not a result)"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out, names: str, log=print) -> None:
    out = Path(out)
    write_json(out / RESULTS_JSON, results)
    write_text_atomic(out / RESULTS_MD, markdown(results))
    written = [RESULTS_JSON, RESULTS_MD]
    try:
        plot(results, out / RESULTS_PNG)
        written.append(RESULTS_PNG)
    except ImportError:
        log("results.png not drawn: matplotlib is not installed (pip install 'npse[plot]')")
    log(f"wrote {', '.join(str(out / w) for w in written)}")


def report(names: str, out, log=print) -> dict:
    """``npse study NAME --report OUT``: redraw the table and plot from the files in OUT.

    The table is the folder's whole one, every study its study.json lists, whichever study
    ``names`` is (it is only checked to be one): a report of one study would otherwise
    replace the table of the others."""
    protocol, _ = read_protocol(out)
    protocol.validate()
    table = folder_studies(out, names)
    seeds = seeds_on_disk(Path(out), table)
    results = aggregate(table, out, protocol, seeds)
    for arm in results["arms"]:
        for bad in arm.get("damaged", []):
            log(f"not counted: {arm['arm']} seed {bad['seed']}: damaged: {bad['why']}")
    write_report(results, out, table, log=log)
    return results