"""``npse study NAME``: the paper's ablations, each arm x seed an ordinary ``train()`` run.

Chapter: docs/12-studies.md. The studies follow Hu et al., *Squeeze-and-Excitation Networks*
(TPAMI version, arXiv:1709.01507 v4, section 6), scaled down to CIFAR ResNets.

A study is a named list of *arms*; an arm is a set of :class:`npse.config.TrainConfig` overrides.
Every run of arm ``a`` with seed ``s`` lives in ``OUT/<a>/seed-<s>/`` and is what ``npse train``
would write there. Its state is read from the files alone, so that a fresh checkout holding only
the committed ``config.json`` and ``metrics.jsonl`` knows what is done:

    finished     config.json + metrics.jsonl with one line per epoch, epochs 1..E; never
                 trained or written again (only --rerun moves it aside and trains it anew)
    failed       failed.json (the error; shown in the table, not retried unless --retry-failed)
    running      its .run.lock is flock'd: a process trains there now; left alone
    interrupted  checkpoint.npz without a complete metrics file: resumed from the checkpoint
    damaged      files npse does not write, or that contradict each other (a line twice, a
                 missing config.json, run.json beside an incomplete metrics file, ...): left
                 untouched, said why, not counted; --rerun moves it aside and trains it anew
    absent       anything else: started (again) from scratch

``OUT/study.json`` holds the protocol (epochs, batch size, subset, depth, widths); a folder that
holds another protocol, or files that are not a study's, is refused. Several studies with one
protocol may share a folder: an arm they share (baseline, reference) is trained once.

Modules: ``arms`` (the studies and the protocol), ``folder`` (the folder's files and a run's
state), ``runs`` (the workers and the scheduler), ``report`` (the table), ``stats``, ``probe``
(``--probe``), ``synthetic`` (``--quick``'s data), ``cluster`` (``--scheduler``: the runs as
tasks of a Dask distributed cluster; the only module that imports Dask); the command is
:mod:`npse.commands.study`.
"""
from .arms import (ARMS, MAX_SEEDS, MIN_SEEDS, PRIMARY, QUICK, STUDIES, Arm, Protocol, seeds_for,
                   study_arms)
from .folder import (FAILED, LOCK, LOG, RUN_LOCK, RUN_RECORD, STUDY_FILE, STUDY_FORMAT, RunState,
                     inspect_run, lock_holder, lock_is_held, open_study_folder, read_metrics,
                     read_protocol, replace_run, run_dir, run_state, study_lock, try_lock)
from .report import aggregate, markdown, model_facts, noise, plot, report, write_report
from .runs import (LOCKED, Job, die_with_parent, git_commit, hold_run_lock, parse_rerun, plan,
                   run_one, run_study, stop_on_sigterm, worker_spec)
from .stats import (ALPHA, arm_stats, difference, holm, judge, pooled_sd, t_cdf, t_quantile,
                    t_two_sided_p, welch)
from .synthetic import ensure_quick_data, write_synthetic_cifar10
