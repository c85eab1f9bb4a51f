"""The arms of each study, and the protocol every run of a study folder shares."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Arm:
    """One variant of the network. ``overrides`` are TrainConfig fields; ``paper`` the TPAMI
    ImageNet top-1 error (%) of the matching ResNet-50 variant, ``paper_note`` what it is."""
    name: str
    label: str
    overrides: dict
    network: str = "basic"         # "basic": ResNet-20 family; "bottleneck": depth-29 Bottleneck
    reference: str = "reference"   # the arm its difference is taken against
    paper: float | None = None
    paper_note: str = ""


def _se(**kw):
    # The paper's ablations use excitation FC layers without biases (TPAMI, section 6).
    return {"model": "se_resnet20", "se_bias": False, **kw}


ARMS = {a.name: a for a in [
    Arm("baseline", "ResNet (no SE)", {"model": "resnet20"}, paper=23.30,
        paper_note="ResNet-50"),
    Arm("reference", "SE, r=16, avg, sigmoid, all stages", _se(), paper=22.28,
        paper_note="SE-ResNet-50"),
    Arm("squeeze-max", "squeeze: max pooling", _se(se_squeeze="max"), paper=22.57,
        paper_note="max squeeze"),
    Arm("excitation-tanh", "excitation: tanh", _se(se_excitation="tanh"), paper=23.00,
        paper_note="tanh"),
    Arm("excitation-relu", "excitation: ReLU", _se(se_excitation="relu"), paper=23.47,
        paper_note="ReLU"),
    Arm("stages-1", "SE in stage 1 only", _se(se_stages=(1,)), paper=23.03,
        paper_note="SE_Stage_2 (the first stage)"),
    Arm("stages-2", "SE in stage 2 only", _se(se_stages=(2,)), paper=23.04,
        paper_note="SE_Stage_3 (a middle stage; SE_Stage_4: 22.68)"),
    Arm("stages-3", "SE in stage 3 (last) only", _se(se_stages=(3,)),
        paper_note="not tested: the paper never put SE in its last stage (5) alone"),
    Arm("stages-1-2", "SE in stages 1-2 (drop the last stage)", _se(se_stages=(1, 2)),
        paper_note="no table: a remark of section 4 on dropping the last stage's SE"),
    Arm("integration-pre", "SE-PRE", _se(se="pre"), paper=22.23, paper_note="SE-PRE"),
    Arm("integration-post", "SE-POST", _se(se="post"), paper=22.78, paper_note="SE-POST"),
    Arm("integration-identity", "SE-Identity", _se(se="identity"), paper=22.20,
        paper_note="SE-Identity"),
    Arm("nosqueeze", "NoSqueeze (1x1 convs, no pooling)", _se(se="nosqueeze"), paper=22.93,
        paper_note="NoSqueeze"),
    Arm("reduction-2", "r = 2", _se(se_reduction=2), paper=22.29, paper_note="r = 2"),
    Arm("reduction-4", "r = 4", _se(se_reduction=4), paper=22.25, paper_note="r = 4"),
    Arm("reduction-8", "r = 8", _se(se_reduction=8), paper=22.26, paper_note="r = 8"),
    Arm("reduction-32", "r = 32", _se(se_reduction=32), paper=22.72, paper_note="r = 32"),
    Arm("bottleneck-plain", "Bottleneck ResNet-29 (no SE)", {"model": "resnet29"},
        network="bottleneck", reference="bottleneck-standard", paper=23.30,
        paper_note="ResNet-50"),
    Arm("bottleneck-standard", "Bottleneck SE-ResNet-29, standard SE",
        {"model": "se_resnet29", "se_bias": False}, network="bottleneck",
        reference="bottleneck-standard", paper=22.28, paper_note="SE-ResNet-50 (28.1M params)"),
    Arm("bottleneck-3x3", "Bottleneck SE-ResNet-29, SE_3x3",
        {"model": "se_resnet29", "se": "3x3", "se_bias": False}, network="bottleneck",
        reference="bottleneck-standard", paper=22.48, paper_note="SE_3x3 (25.8M params)"),
]}

#: Each study: its arms, in table order. The first two are its baseline and its reference.
STUDIES = {
    "squeeze": ("baseline", "reference", "squeeze-max"),
    "excitation": ("baseline", "reference", "excitation-tanh", "excitation-relu"),
    "stages": ("baseline", "reference", "stages-1", "stages-2", "stages-3", "stages-1-2"),
    "integration": ("baseline", "reference", "integration-pre", "integration-post",
                    "integration-identity"),
    "nosqueeze": ("baseline", "reference", "nosqueeze"),
    "se3x3": ("bottleneck-plain", "bottleneck-standard", "bottleneck-3x3"),
    "reduction": ("baseline", "reduction-2", "reduction-4", "reduction-8", "reference",
                  "reduction-32"),
}
STUDIES["all"] = tuple(dict.fromkeys(a for arms in STUDIES.values() for a in arms))
MIN_SEEDS = 3   # the reference and the baseline always get at least this many seeds
# --seeds' upper bound: a folder named seed-999999999 (or a typo) must not make npse plan or
# read a billion runs.
MAX_SEEDS = 1000
PRIMARY = ("baseline", "reference")

# --quick: the machinery in about a minute, not a result.
QUICK = dict(epochs=1, train_subset=500, batch_size=50, depth=8, bottleneck_depth=11,
             widths=(8, 16, 32), test_subset=1000)


def study_arms(names: str) -> tuple:
    """The arms of ``names`` (a study name or a comma-separated list of them), in order."""
    parts = [n.strip() for n in str(names).split(",")]
    unknown = [n for n in parts if n not in STUDIES]
    if not parts or unknown:
        raise ValueError(f"unknown study {', '.join(map(repr, unknown or [names]))}; choose from "
                         f"{', '.join(STUDIES)} (or a comma-separated list)")
    return tuple(dict.fromkeys(a for n in parts for a in STUDIES[n]))


@dataclasses.dataclass
class Protocol:
    """What every run of a study folder shares. Stored in ``OUT/study.json``."""
    epochs: int = 5
    batch_size: int = 128
    train_subset: int | None = None
    depth: int = 20                # BasicBlock arms
    bottleneck_depth: int = 29     # the se3x3 study's arms
    widths: tuple | None = None    # None: (16, 32, 64)
    quick: bool = False

    def validate(self):
        for name in ("epochs", "batch_size", "depth", "bottleneck_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"study: {name} must be an integer >= 1, got {v!r}")
        if (self.depth - 2) % 6 or self.depth < 8:
            raise ValueError(f"study: --depth must be 6n+2 (8, 14, 20, ...) for the BasicBlock "
                             f"arms, got {self.depth}")
        if (self.bottleneck_depth - 2) % 9 or self.bottleneck_depth < 11:
            raise ValueError(f"study: the Bottleneck depth must be 9n+2 (11, 29, ...), got "
                             f"{self.bottleneck_depth}")

    def as_dict(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def train_config(self, arm: Arm, seed: int, out: Path, **runtime) -> TrainConfig:
        kw = dict(arm.overrides)
        kw.update(epochs=self.epochs, batch_size=self.batch_size, train_subset=self.train_subset,
                  seed=seed, depth=self.bottleneck_depth if arm.network == "bottleneck"
                  else self.depth, quiet=True)
        if self.widths is not None:
            kw["widths"] = tuple(self.widths)
        config = TrainConfig(out=str(out), **kw, **runtime)
        if self.quick:
            # One epoch is too short for a warm-up; a tenth of the test set is enough to show
            # the machinery.
            config.warmup_epochs, config.test_subset = 0.0, QUICK["test_subset"]
        return config


def seeds_for(arm: str, seeds: int) -> list:
    return list(range(max(seeds, MIN_SEEDS) if arm in PRIMARY else seeds))
