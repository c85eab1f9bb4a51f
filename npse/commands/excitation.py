"""``npse excitation``: what the SE gates of a trained network do (npse/excitation/,
docs/13-role-of-excitation.md)."""
from __future__ import annotations

import sys
from pathlib import Path

from . import options

HELP = "what the SE gates of a trained network do, per class and depth"

DESCRIPTION = ("Run the test set through a trained SE network, record every SE block's gates "
               "per class and their histograms (OUT/gates.npz), measure class-specificity, the "
               "class means' effective rank, saturation and spread, check the paper's claims, "
               "probe each stage by fixing its gates (at their mean over 5,000 training images, "
               "or at 1; paired bootstrap intervals), and draw the paper's figures 6 and 7 and "
               "the gates' histograms (OUT/*.png, needs matplotlib).")


def class_list(text) -> list:
    """argparse type: comma-separated class names (blanks dropped)."""
    return [c.strip() for c in text.split(",") if c.strip()]


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint.npz of npse train, a weights-only export of one, or a run "
                        "directory")
    p.add_argument("--out", metavar="DIR",
                   help="where gates.npz, excitation.json/.md and the plots go (default: "
                        "excitation/ next to the checkpoint)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where the CIFAR files are (default: $NPSE_DATA or ~/.cache/npse)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="fail if the data are missing instead of downloading them")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array backend (default: numpy)")
    p.add_argument("--batch-size", type=options.positive_int, default=250, help="default: 250")
    p.add_argument("--classes", type=class_list, metavar="A,B,...",
                   help="classes drawn in the figure-6 plot (default: the first four); the first "
                        "two are drawn in the figure-7 plot")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip the probe (each stage's gates fixed at test time; 2 test-set passes "
                        "per stage and one pass over 5,000 training images)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="write no PNG files")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier analysis in --out (refused without it)")
    p.add_argument("--study", metavar="DIR",
                   help="a folder of 'npse study stages': set its arms reference and stages-1-2 "
                        "(the last stage's SE dropped and the network retrained) beside the probe")
    p.add_argument("--compare", metavar="DIR",
                   help="an earlier analysis (a folder holding excitation.json, e.g. of the same "
                        "network after fewer epochs): put its numbers beside these in "
                        "OUT/comparison.md")
    options.add_threads_option(p)


def run(args) -> int:
    """Load, check, analyse, plot; prints where everything went."""
    from .. import backend
    from ..config import TrainConfig, load_dataset
    from ..rundir import write_text_atomic
    from ..excitation.compare import check_same_blocks, compare, comparison_markdown, read_report
    from ..excitation.report import analyse, plot_gates, report_markdown, study_side_by_side
    from ..excitation.stats import find_se_blocks
    from ..fast import FAST
    from ..rundir import CHECKPOINT, load_model_for_inference

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    out = Path(args.out) if args.out else path.parent / "excitation"
    check_out(out, args.overwrite)           # before the analysis, not after its minutes
    model, meta = load_model_for_inference(path, args.backend)
    model.use_policy(FAST)                   # the fast formulations, as npse train evaluated
    blocks = find_se_blocks(model, f"{path} (model {meta['config'].get('model')})")
    classes = list(meta["classes"])
    shown = args.classes or classes[:4]
    unknown = [c for c in shown if c not in classes]
    if unknown:
        raise ValueError(f"--classes: unknown {unknown}; the checkpoint's classes are {classes}")
    study = study_side_by_side(args.study) if args.study else None
    earlier = read_report(args.compare) if args.compare else None     # fail before the minutes
    if earlier is not None:
        check_same_blocks(earlier, [n for n, _ in blocks], str(path))
    config = TrainConfig.from_dict(meta["config"])
    config.data_dir, config.download = args.data_dir, args.download
    data = load_dataset(config)
    with backend.using(args.backend), options.threads_of(args):
        report = analyse(model, meta, data, out, path, args.batch_size, args.probe,
                         _command_line(args), study)
    print(report_markdown(report), end="")
    print(f"wrote {out / 'gates.npz'}, {out / 'excitation.json'}, {out / 'excitation.md'}")
    if earlier is not None:
        text = comparison_markdown(compare(earlier, report))
        write_text_atomic(out / "comparison.md", text)
        print(text, end="")
        print(f"wrote {out / 'comparison.md'}")
    if args.plots:
        try:
            hidden = {name: s["hidden"] for name, s in report["blocks"].items()}
            paths = plot_gates(report["stats"], classes, out, shown, shown[:2], hidden)
        except ImportError:
            print("npse: note: no plots, matplotlib is not installed (pip install 'npse[plot]')",
                  file=sys.stderr)
        else:
            print("wrote " + ", ".join(str(q) for q in paths))
    return 0


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, or that holds an earlier analysis (unless overwrite),
    as npse train refuses a folder that holds a run."""
    from ..excitation.report import OUTPUT_FILES
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder; choose another --out")
    held = [name for name in OUTPUT_FILES if (out / name).exists() or (out / name).is_symlink()]
    if held and not overwrite:
        raise FileExistsError(f"--out {out} already holds {', '.join(held)}; pass --overwrite "
                              f"to replace them, or choose another --out")


def _command_line(args) -> str:
    """The command as excitation.json records it: the data folder, a local path, as DIR, so that
    the same analysis records the same line on every machine. --overwrite is left out: it
    changes where the files may go, not what they hold."""
    given = [f"npse excitation {args.checkpoint}"] + (["--data-dir DIR"] if args.data_dir else [])
    given += [f"--out {args.out}"] if args.out else []
    given += [f"--classes {','.join(args.classes)}"] if args.classes else []
    given += [] if args.probe else ["--no-probe"]
    given += [f"--study {args.study}"] if args.study else []
    given += [f"--compare {args.compare}"] if args.compare else []
    given += [f"--threads {args.threads}"] if args.threads else []
    return " ".join(given)
