"""A study's table from the files on disk: results.json, results.md, results.png."""
from __future__ import annotations

import math
from pathlib import Path

from ..rundir import write_text_atomic
from .arms import ARMS, MIN_SEEDS, QUICK, Arm, Protocol, seeds_for, study_arms
from .folder import (RESULTS_JSON, RESULTS_MD, RESULTS_PNG, STUDY_FORMAT, failed_error,
                     folder_studies, inspect_run, read_protocol, run_dir, seeds_on_disk,
                     wall_seconds, write_json)
from .stats import arm_stats, difference, pooled_sd, t_quantile


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


def aggregate(names: str, out, protocol: Protocol, seeds: int) -> dict:
    """Read every run of the study from disk and compute the table (JSON-ready)."""
    out = Path(out)
    arms = study_arms(names)
    finals, rows = {}, []
    for arm in arms:
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
        finals[arm] = accs
        rows.append((arm, accs, failed, walls, missing, damaged))
    # Pooled over every arm of the folder's basic network with >= 2 seeds.
    s_p, df = pooled_sd([a for a in finals.values()])
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
        entry["vs_reference"] = (None if arm == a.reference else
                                 {"reference": a.reference,
                                  **difference(accs, finals.get(a.reference, []), s_p, df)})
        table.append(entry)
    return {"format": STUDY_FORMAT, "study": names, "protocol": protocol.as_dict(),
            "seeds": seeds, "pooled_sd": s_p, "pooled_df": df,
            "t_975": t_quantile(0.975, df) if df else None, "arms": table}


def _pct(x, signed=False):
    return "–" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


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
    lines += [f"Protocol: {epochs}, batch {p['batch_size']}, {images}"
              f", BasicBlock depth {p['depth']}, Bottleneck depth {p['bottleneck_depth']}, "
              f"widths {tuple(p['widths']) if p['widths'] else (16, 32, 64)}; SE arms without "
              f"FC biases in the excitation (the paper's ablation setting); {_seed_range(results['seeds'])}"
              f" per arm, at least {MIN_SEEDS} for the baseline and the reference.", "",
              "| arm | params | mult-adds | SE hidden width | seeds | test acc % (mean ± sd) "
              "| d vs ref (95% CI), points | verdict | paper top-1 err % | paper's variant |",
              "|---|---:|---:|---|---:|---|---|---|---:|---|"]
    for a in results["arms"]:
        acc = ("failed" if a["failed"] and not a["n"] else "not run" if not a["n"] else
               f"{_pct(a['mean'])}" + (f" ± {_pct(a['sd'])}" if a["sd"] is not None else
                                       " (1 seed)"))
        if a["failed"]:
            acc += f" ({len(a['failed'])} failed)"
        if a.get("damaged"):
            acc += f" ({len(a['damaged'])} damaged, not counted)"
        v = a["vs_reference"]
        if v is None:
            dtext, verdict = "(reference)", ""
        elif v["d"] is None:
            dtext, verdict = "–", v["verdict"]
        elif v["low"] is None:
            dtext, verdict = f"{_pct(v['d'], True)}", v["verdict"]
        else:
            dtext = f"{_pct(v['d'], True)} [{_pct(v['low'], True)}, {_pct(v['high'], True)}]"
            verdict = v["verdict"]
        hidden = ", ".join(f"{v_}" for v_ in a["hidden"].values()) or "–"
        paper = "–" if a["paper_top1_error"] is None else f"{a['paper_top1_error']:.2f}"
        lines.append(f"| {a['arm']} | {a['parameters']:,} | {a['multiply_adds']:,} | {hidden} "
                     f"| {a['n']} | {acc} | {dtext} | {verdict} | {paper} | {a['paper_note']} |")
    s_p = results["pooled_sd"]
    lines += ["", "How to read it:", ""]
    if s_p is None:
        lines.append("- No arm has two finished seeds yet, so there is no estimate of the noise "
                     "and no interval.")
    else:
        lines.append(f"- Noise: the sd between seeds, pooled over every arm with at least 2 "
                     f"seeds (equal variances assumed), is s_p = {100 * s_p:.2f} points "
                     f"(df = {results['pooled_df']}, t(0.975) = {results['t_975']:.3f}). "
                     f"The test set alone adds binomial noise of about "
                     f"{_binomial_points(results):.2f} points.")
    lines += ["- d is the arm's mean minus its reference's (`reference`, or "
              "`bottleneck-standard` for the Bottleneck arms), in accuracy points; higher is "
              "better. Its interval is d ± t(0.975, df) · s_p · sqrt(1/n_arm + 1/n_ref). About "
              "1 interval in 20 misses 0 by chance alone, so one 'better' or 'worse' among many "
              "arms is weak evidence.",
              "- 'within noise': the interval holds 0; the arms are not ranked.",
              "- The paper's numbers are ImageNet top-1 *errors* of ResNet-50 variants (TPAMI "
              "tables); npse's are CIFAR-10 test *accuracies* of networks about 100 times "
              "smaller, trained for a few epochs. Compare directions, not sizes.",
              "- 'SE hidden width' is the excitation's hidden width per stage (C // r); at r = 16 "
              "ResNet-50 has hidden widths 16-128, a regime a 16/32/64-channel network does not "
              "reach (its widths are 1, 2, 4).",
              "- The `stages` arms: npse's stage 3 is its last stage; the paper put SE in its "
              "stages 2, 3 and 4 alone, never in its last stage (5) alone, and mentions "
              "dropping the last stage's SE only in a remark of its section 4."]
    if any(ARMS[a["arm"]].network == "bottleneck" for a in results["arms"]):
        lines.append("- The Bottleneck arms' intervals use the same s_p, pooled mostly from "
                     "ResNet-20 runs: the Bottleneck network's own seed-to-seed noise is "
                     "assumed equal to it, not measured.")
    return "\n".join(lines) + "\n"


def _seed_range(n: int) -> str:
    return "seed 0" if n == 1 else f"seeds 0..{n - 1}"


def _binomial_points(results) -> float:
    accs = [a["mean"] for a in results["arms"] if a["mean"] is not None]
    p = sum(accs) / len(accs) if accs else 0.8
    n = QUICK["test_subset"] if results["protocol"].get("quick") else 10000
    return 100 * math.sqrt(p * (1 - p) / n)


def plot(results: dict, path: Path) -> None:
    """results.png: each arm's seeds as dots, d and its interval as a bar beside the paper."""
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
            lo, hi = (100 * (ref["mean"] + v["low"]), 100 * (ref["mean"] + v["high"]))
            ax.plot([lo, hi], [y - 0.18] * 2, color="tab:red" if v["verdict"] != "within noise"
                    else "tab:gray", linewidth=2)
    ax.set_yticks(range(len(arms)))
    ax.set_yticklabels([a["arm"] for a in reversed(arms)])
    ax.set_xlabel("CIFAR-10 test accuracy, % (dots: seeds; tick: mean; bar: reference mean + "
                  "95% CI of d)")
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
