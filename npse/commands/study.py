"""``npse study``: run one of the paper's ablations (npse/study/, docs/12-studies.md)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..backend import BACKENDS
from . import options

HELP = "run one of the paper's ablations (arms x seeds) and tabulate it"

DESCRIPTION = ("Run a study of the paper's ablations: every arm x seed is an ordinary "
               "training run in OUT/<arm>/seed-<s>/; finished runs are skipped, interrupted "
               "ones resumed. Writes OUT/results.{json,md,png}. See docs/12-studies.md.")


def add_arguments(p) -> None:
    # The help texts name the studies and the seed minimum; the arms module holds both (and
    # imports the training configuration), so it is read when the parser is built, not before.
    from ..study.arms import MAX_SEEDS, MIN_SEEDS, STUDIES
    p.add_argument("name", metavar="NAME",
                   help=f"a study ({', '.join(STUDIES)}) or a comma-separated list of them")
    p.add_argument("--out", metavar="DIR", help="the study folder (default: studies/NAME, or "
                   "studies/quick-NAME with --quick)")
    p.add_argument("--report", metavar="OUT", help="only redraw the table and plot of the "
                   "study folder OUT from its files: every study the folder holds, whichever "
                   "NAME is")
    p.add_argument("--epochs", type=options.positive_int, help="default: 5 (--quick: 1)")
    p.add_argument("--seeds", type=seed_count, default=1, help="seeds 0..N-1 for every arm; the "
                   f"baseline and the reference always get at least {MIN_SEEDS} (default: 1; "
                   f"at most {MAX_SEEDS})")
    p.add_argument("--train-subset", type=options.positive_int, metavar="N", help="train on a "
                   "fixed class-balanced subset of N images (default: all; --quick: 500)")
    p.add_argument("--batch-size", type=options.positive_int, help="default: 128 (--quick: 50)")
    p.add_argument("--depth", type=options.positive_int, help="depth of the BasicBlock arms "
                   "(default: 20; "
                   "--quick: 8); the se3x3 study's Bottleneck arms have depth 29 (--quick: 11)")
    p.add_argument("--backend", choices=BACKENDS, default="numpy")
    p.add_argument("--data-dir", metavar="DIR", help="CIFAR-10 (default: $NPSE_DATA, else "
                   "~/.cache/npse)")
    p.add_argument("--jobs", type=options.positive_int, default=1, metavar="K", help="K runs at once, each in "
                   "its own process (on the CPU each gets cores/K threads; default: 1)")
    p.add_argument("--threads", type=options.positive_int, metavar="T", help="threads per run on the CPU "
                   "(npse.fast.threads; default: cores/K)")
    p.add_argument("--quick", action="store_true", help="tiny networks, 500 images, 1 epoch: "
                   "shows the machinery in a minute or two, not a result")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--rerun", action="append", metavar="ARM:SEED", help="train this run again "
                   "(finished or damaged): its folder is moved to seed-SEED.replaced-<UTC "
                   "time>/, never deleted; repeatable")
    p.add_argument("--list", action="store_true", help="print the plan (arms, seeds, states) "
                   "and stop")
    p.add_argument("--time-limit", type=options.positive_float, metavar="MINUTES", help="start no run that the "
                   "runs finished so far say cannot end in time, and stop the running ones at "
                   "the limit (they keep their checkpoints and resume next time)")
    p.add_argument("--probe", metavar="K1,K2,...", help="instead of running the study, time "
                   "its reference arm with K processes side by side for each K, to choose "
                   "--jobs (most useful on a GPU); with --time-limit, the K whose runs end "
                   "within it")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run the runs as tasks of "
                   "the Dask distributed cluster whose scheduler is there (pip install "
                   "'npse[cluster]'; every worker must see --out and the data at the same "
                   "paths, on shared storage)")
    p.add_argument("--probe-seconds", type=options.positive_float, default=10.0, metavar="S",
                   help="how long each K is timed (default: 10)")


def seed_count(text) -> int:
    """argparse type: a number of seeds, 1 to MAX_SEEDS (a larger count is a typo, and would
    plan that many runs)."""
    from ..study.arms import MAX_SEEDS
    value = options.positive_int(text)
    if value > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SEEDS} seeds, got {text!r}")
    return value


def run(args) -> int:
    from ..study.report import report
    if args.report:
        report(args.name, args.report)
        return 0
    protocol = _protocol(args)
    if args.scheduler and not args.list:
        return _on_cluster(args, protocol)
    if args.probe:
        return _probe(args, protocol)
    from ..study.folder import check_study_folder
    from ..study.synthetic import ensure_quick_data
    out = _out(args)
    check_study_folder(out, protocol, args.name)     # before --quick writes its data there
    data_dir = ensure_quick_data(args.data_dir, out) if args.quick else args.data_dir
    if args.list:
        return _list(args, out, protocol, data_dir)
    from ..study.runs import run_study, stop_on_sigterm
    command = "npse study " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    stop_on_sigterm()
    run_study(args.name, out, protocol, seeds=args.seeds, jobs=args.jobs,
              retry_failed=args.retry_failed, rerun=args.rerun or (), command=command,
              threads=args.threads,
              time_limit=None if args.time_limit is None else 60 * args.time_limit,
              backend=args.backend, data_dir=data_dir)
    return 0


def _out(args) -> Path:
    return Path(args.out or os.path.join("studies", ("quick-" if args.quick else "")
                                         + args.name.replace(",", "+")))


def _on_cluster(args, protocol) -> int:
    """The study on the Dask cluster of --scheduler: connected to first, so that a wrong
    address is said before anything is written. The workers see the folder and the data at
    the same paths as this process, so both are made absolute."""
    if args.probe or args.jobs != 1 or args.time_limit is not None:
        raise ValueError("study: --scheduler runs as many runs at once as the cluster has "
                         "worker threads; --jobs, --time-limit and --probe are for this machine")
    from ..study.cluster import DaskRunner, connect
    from ..study.folder import check_study_folder
    from ..study.runs import run_study, stop_on_sigterm
    from ..study.synthetic import ensure_quick_data
    stop_on_sigterm()
    client = connect(args.scheduler)
    try:
        out = _out(args).absolute()
        check_study_folder(out, protocol, args.name)
        data_dir = ensure_quick_data(args.data_dir, out) if args.quick else args.data_dir
        data_dir = None if data_dir is None else str(Path(data_dir).absolute())
        command = "npse study " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
        run_study(args.name, out, protocol, seeds=args.seeds, retry_failed=args.retry_failed,
                  rerun=args.rerun or (), command=command, threads=args.threads,
                  runner=DaskRunner(client, out, data_dir), backend=args.backend,
                  data_dir=data_dir)
    finally:
        client.close()
    return 0


def _protocol(args):
    """The protocol the options ask for (--quick's defaults where an option is left out), and
    the checks every mode but --report makes before it starts."""
    from ..study.arms import QUICK, Protocol, study_arms
    quick = args.quick
    given = {k: getattr(args, k) for k in ("epochs", "batch_size", "train_subset", "depth")
             if getattr(args, k) is not None}
    for k, v in given.items():
        if v < 1:
            raise ValueError(f"study: --{k.replace('_', '-')} must be >= 1, got {v}")
    protocol = Protocol(
        epochs=given.get("epochs", QUICK["epochs"] if quick else 5),
        batch_size=given.get("batch_size", QUICK["batch_size"] if quick else 128),
        train_subset=given.get("train_subset", QUICK["train_subset"] if quick else None),
        depth=given.get("depth", QUICK["depth"] if quick else 20),
        bottleneck_depth=QUICK["bottleneck_depth"] if quick else 29,
        widths=QUICK["widths"] if quick else None, quick=quick)
    protocol.validate()
    study_arms(args.name)
    if args.time_limit is not None and not args.time_limit > 0:
        raise ValueError(f"study: --time-limit must be > 0 minutes, got {args.time_limit!r}")
    return protocol


def _probe(args, protocol) -> int:
    try:
        ks = [int(k) for k in args.probe.split(",")]
    except ValueError:
        raise ValueError(f"study: --probe takes positive integers like 1,2,4,8, got "
                         f"{args.probe!r}") from None
    from ..study.probe import probe
    probe(protocol, ks, backend=args.backend, seconds=args.probe_seconds,
          minutes=args.time_limit)
    return 0


def _list(args, out: Path, protocol, data_dir) -> int:
    from ..study.folder import LOCK, lock_holder
    from ..study.runs import plan
    holder = lock_holder(out / LOCK) if (out / LOCK).exists() else None
    if holder:
        print(f"being run by another npse study ({holder})")
    for j in plan(args.name, out, protocol, args.seeds, backend=args.backend,
                  data_dir=data_dir):
        print(f"{j.arm:22s} seed {j.seed}  {j.state}" + (f": {j.why}" if j.why else ""))
    return 0
