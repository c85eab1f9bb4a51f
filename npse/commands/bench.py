"""``npse bench``: speed, memory and profile of a training step (npse/bench.py; docs/B-speed.md)."""
from __future__ import annotations

import argparse

from ..backend import BACKENDS
from ..fast.policy import MEMORY_FORMATS
from . import options

HELP = "time forward and backward passes"

DESCRIPTION = "Benchmarks (see npse.bench)."

def model_names(text) -> list:
    """argparse type: a non-empty comma-separated list of model names."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated model names such as "
                                         f"se_resnet20,resnet20, got {text!r}")
    return names


def batch_sizes(text) -> list:
    """argparse type: a non-empty comma-separated list of batch sizes >= 2."""
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(b < 2 for b in sizes):
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes >= 2 such as "
                                         f"32,128, got {text!r}")
    return sizes


def thread_counts(text) -> list:
    """argparse type: a non-empty comma-separated list of thread counts >= 1."""
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or any(t < 1 for t in counts):
        raise argparse.ArgumentTypeError(f"expected comma-separated thread counts >= 1 such as "
                                         f"1,2, got {text!r}")
    return list(dict.fromkeys(counts))


def add_arguments(parser) -> None:
    parser.add_argument("--models", type=model_names, default="se_resnet20,se_resnet56",
                        help="comma-separated model names (default: se_resnet20,se_resnet56)")
    parser.add_argument("--batch-sizes", type=batch_sizes, default="32,128,512",
                        help="comma-separated, each >= 2 (default: 32,128,512)")
    parser.add_argument("--threads", type=thread_counts, metavar="T1,T2",
                        help="thread counts to time each step at, in turns, with PyTorch at the "
                             "same counts (npse.fast.threads; default: the cores this process "
                             "may use)")
    parser.add_argument("--repeats", type=options.positive_int, default=5,
                        help="timed steps per measurement (default 5)")
    parser.add_argument("--backend", choices=BACKENDS, default=None)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--memory-format", choices=MEMORY_FORMATS, default="auto",
                        help="how the model stores its activations (default auto: channels last on "
                             "NumPy, contiguous on CuPy; npse.fast.layout)")
    parser.add_argument("--no-fused", action="store_true",
                        help="the plain array expressions instead of the fused CuPy kernels (GPU only)")
    parser.add_argument("--reference", action="store_true",
                        help="time the reference layers of npse.nn only (the execution policy "
                             "npse.fast.REFERENCE); --memory-format and --no-fused then do not apply")
    parser.add_argument("--quick", action="store_true",
                        help="se_resnet20 at batch 128 only, 2 repeats (a one-minute look)")


def run(args) -> int:
    from .. import backend
    from ..bench import run_benchmarks

    backend.reuse_freed_memory()
    return run_benchmarks(args)
