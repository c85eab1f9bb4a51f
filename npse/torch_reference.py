"""The same CIFAR (SE-)ResNet in PyTorch, for comparisons only (benchmarks and optional tests).

PyTorch is never a dependency of npse: this module imports it when called, and everything that
uses it skips or says so when it is absent.  Module and parameter names match npse's, so
``load_npse_state`` moves an npse model's weights into it (and ``state_dict`` back).
Supports the BasicBlock and Bottleneck networks with shortcuts A and B and the SE variants
None, "standard", "pre", "post" and "identity".

``python -m npse.torch_reference train [options of npse train]`` trains that twin with npse's
recipe and data pipeline, to recompute the PyTorch reference accuracies on any copy of CIFAR.
"""
from __future__ import annotations


def build_torch_model(config):
    """A torch.nn.Module with the architecture of ``npse.models.from_config(config)``."""
    import torch
    from torch import nn

    block_class = _block_class(config)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            bottleneck = config["block"] == "bottleneck"
            n = (config["depth"] - 2) // (9 if bottleneck else 6)
            widths = config["widths"]
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            cin = widths[0]
            for stage, planes in enumerate(widths, start=1):
                blocks = []
                for i in range(n):
                    stride = 2 if stage > 1 and i == 0 else 1
                    se = config["se"] if stage in config["se_stages"] else None
                    blocks.append(block_class(cin, planes, stride, se, bottleneck))
                    cin = planes * (4 if bottleneck else 1)
                setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.fc = nn.Linear(cin, config["num_classes"])

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean((2, 3)))

    return Net().to(getattr(torch, config["dtype"]))


def _se_class(config):
    """The SE block of ``config`` (squeeze, excitation gate, reduction, biases) as a torch class."""
    import torch
    from torch import nn

    gates = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}

    class SE(nn.Module):
        def __init__(self, c):
            super().__init__()
            h = max(1, c // config["se_reduction"])
            self.fc1 = nn.Linear(c, h, bias=config["se_bias"])
            self.fc2 = nn.Linear(h, c, bias=config["se_bias"])

        def forward(self, x):
            z = x.mean((2, 3)) if config["se_squeeze"] == "avg" else x.amax((2, 3))
            s = gates[config["se_excitation"]](self.fc2(torch.relu(self.fc1(z))))
            return x * s[:, :, None, None]

    return SE


def _block_class(config):
    """The residual block of ``config`` (basic or bottleneck, shortcut A or B, any SE variant but
    3x3 and nosqueeze) as a torch class."""
    import torch
    from torch import nn

    SE = _se_class(config)

    class ShortcutA(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.cin, self.cout, self.stride = cin, cout, stride

        def forward(self, x):
            x = x[:, :, ::self.stride, ::self.stride]
            before = (self.cout - self.cin) // 2
            return nn.functional.pad(x, (0, 0, 0, 0, before, self.cout - self.cin - before))

    class Block(nn.Module):
        def __init__(self, cin, planes, stride, se, bottleneck):
            super().__init__()
            self.bottleneck = bottleneck
            out = planes * (4 if bottleneck else 1)
            if bottleneck:
                self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(planes)
                self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(planes)
                self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
                self.bn3 = nn.BatchNorm2d(out)
            else:
                self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(planes)
                self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(planes)
            self.variant = se
            if se is not None:
                if se not in ("standard", "pre", "post", "identity"):
                    raise ValueError(f"torch reference: SE variant {se!r} is not implemented here")
                self.se = SE(cin if se == "pre" else out)
            if stride != 1 or cin != out:
                if config["shortcut"] == "A":
                    self.shortcut = ShortcutA(cin, out, stride)
                else:
                    self.shortcut = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            else:
                self.shortcut = nn.Identity()

        def branch(self, x):
            f = torch.relu(self.bn1(self.conv1(x)))
            if self.bottleneck:
                f = torch.relu(self.bn2(self.conv2(f)))
                return self.bn3(self.conv3(f))
            return self.bn2(self.conv2(f))

        def forward(self, x):
            v = self.variant
            f = self.branch(self.se(x) if v == "pre" else x)
            if v == "standard":
                f = self.se(f)
            s = self.shortcut(x)
            if v == "identity":
                s = self.se(s)
            out = torch.relu(f + s)
            return self.se(out) if v == "post" else out

    return Block


def load_npse_state(torch_model, npse_state):
    """Copy an npse ``state_dict`` (NumPy arrays, same names) into the torch model."""
    import numpy
    import torch
    from .backend import to_host
    tensors = {k: torch.from_numpy(numpy.array(to_host(v))) for k, v in npse_state.items()}
    torch_model.load_state_dict(tensors, strict=True)
    return torch_model


# ----------------------------------------------------------------------------- training
# ``python -m npse.torch_reference train [npse train's options]`` trains the PyTorch twin with
# npse's recipe, so that the PyTorch accuracies the docs quote can be recomputed on any copy of
# CIFAR. Everything but the arithmetic is npse's own: the options and their defaults, the initial
# weights (npse's, copied in), the class-balanced subset, the normalisation statistics, the
# per-epoch shuffle and pad-4 crop + flip (from (seed, epoch)), and the per-iteration schedule.
# PyTorch does the forward and backward passes and the SGD step (torch.optim.SGD, whose update
# npse.optim.SGD reproduces exactly).

PROG = "python -m npse.torch_reference"


def build_parser():
    """The command line: ``train`` with the options of ``npse train`` (its --threads: PyTorch's),
    plus --device; ``evaluate CHECKPOINT``."""
    from .commands.options import Parser, add_train_options, positive_int
    parser = Parser(prog=PROG, description="The PyTorch twin of npse's models, for reference runs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    p = sub.add_parser(
        "train", help="train the PyTorch twin of an npse model",
        description=(
            "Train the PyTorch twin of an npse model with npse's recipe and data pipeline (same "
            "initial weights, subset, normalisation, shuffle, augmentation and learning-rate "
            "schedule); PyTorch computes the passes and the SGD step. Prints one line per epoch "
            "and, with --out, writes OUT/metrics.jsonl in npse's format (for `npse plot OUT`). "
            "--resume, --overwrite and --backend do not apply here; --threads sets PyTorch's CPU "
            "threads (default: PyTorch's choice)."),
        epilog="Needs PyTorch (pip install torch); npse itself never does.")
    add_train_options(p)                               # the same options as `npse train`
    g = p.add_argument_group("PyTorch")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    e = sub.add_parser(
        "evaluate", help="score an npse checkpoint with the PyTorch twin and with npse",
        description=(
            "Load the weights of an npse checkpoint (or weights-only file) into the PyTorch twin "
            "and into npse, run both on the test images with the checkpoint's normalisation, and "
            "print each one's test loss and accuracy, the images on which their predictions "
            "differ, and the largest difference between their logits."),
        epilog="Needs PyTorch (pip install torch); npse itself never does.")
    e.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint.npz written by npse train, a weights-only file, or a run's folder")
    e.add_argument("--data-dir", metavar="DIR", help="where the CIFAR files are (as npse evaluate)")
    e.add_argument("--no-download", dest="download", action="store_false",
                   help="fail if the data are missing instead of downloading them")
    e.add_argument("--batch-size", type=positive_int, default=250, help="default: 250")
    e.add_argument("--threads", type=positive_int, metavar="N",
                   help="PyTorch's CPU threads and npse's (default: PyTorch's choice; npse: "
                        "the usable cores)")
    e.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    return parser


def train_reference(config, device="cpu", log=print) -> dict:
    """Train the PyTorch twin of ``config`` (an :class:`npse.train.TrainConfig`); last metrics."""
    import json
    import time
    from pathlib import Path

    import torch

    from . import models
    from .data import channel_stats, iterate_batches, load_cifar10, load_cifar100, num_batches, subset
    from .config import make_schedule   # the schedule npse itself uses
    from .rundir import METRICS, holds_run

    config.validate()
    out = Path(config.out) if config.out else None
    if out is not None and holds_run(out):
        raise FileExistsError(f"{out} already holds a run (checkpoint.npz or {METRICS}); "
                              f"choose another --out")
    npse_model = models.build_model(config.model, **config.model_overrides())
    model = load_npse_state(build_torch_model(npse_model.config), npse_model.state_dict()).to(device)
    loader = load_cifar100 if config.dataset == "cifar100" else load_cifar10
    data = loader(config.data_dir, download=config.download)
    x_train, y_train = subset(data.x_train, data.y_train, config.train_subset, seed=config.seed)
    x_test, y_test = subset(data.x_test, data.y_test, config.test_subset, seed=0)   # as npse does
    mean, std = (a.tolist() for a in channel_stats(x_train))
    steps = num_batches(len(y_train), config.batch_size)
    schedule = make_schedule(config, steps)
    # --no-decay-bn-bias exempts the 1-D parameters (BatchNorm, biases), as skip_bn_and_bias does
    decayed = [p for p in model.parameters() if config.decay_bn_bias or p.ndim > 1]
    exempt = [p for p in model.parameters() if not config.decay_bn_bias and p.ndim <= 1]
    groups = [{"params": decayed}] + ([{"params": exempt, "weight_decay": 0.0}] if exempt else [])
    opt = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                          weight_decay=config.weight_decay)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    def batches(x, y, batch_size, train_epoch=None):
        for xb, yb in iterate_batches(x, y, batch_size, mean, std, shuffle=train_epoch is not None,
                                      augment=config.augment and train_epoch is not None,
                                      seed=config.seed, epoch=train_epoch or 0,
                                      dtype=config.dtype):
            yield torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)

    log(f"PyTorch {torch.__version__} twin of {config.model} on {device} "
        f"({torch.get_num_threads()} threads): {len(y_train)} train / {len(y_test)} test "
        f"images, {steps} iterations per epoch; {schedule.describe()}")
    iteration, record = 0, None
    for epoch in range(config.epochs):
        started = time.perf_counter()
        loss_sum, correct, seen, lr, iteration = _torch_epoch(
            model, opt, schedule, batches(x_train, y_train, config.batch_size, train_epoch=epoch),
            iteration)
        train_seconds = time.perf_counter() - started
        model.eval()
        test_loss, test_right = 0.0, 0
        with torch.no_grad():
            for xb, yb in batches(x_test, y_test, config.eval_batch_size):
                logits = model(xb)
                test_loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
                test_right += int((logits.argmax(1) == yb).sum())
        n_test = len(y_test)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                  "test_loss": test_loss / n_test, "test_acc": test_right / n_test, "lr": lr,
                  "seconds": time.perf_counter() - started, "images_per_s": seen / train_seconds}
        if out is not None:
            with open(out / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        log(f"epoch {epoch + 1}/{config.epochs}  train loss {record['train_loss']:.4f} acc "
            f"{100 * record['train_acc']:.2f}%  test loss {record['test_loss']:.4f} acc "
            f"{100 * record['test_acc']:.2f}%  lr {lr:.4g}  {record['seconds']:.1f} s")
    return record


def _torch_epoch(model, opt, schedule, batches, iteration):
    """One training epoch of the twin, the learning rate set per iteration as npse sets it;
    ``(summed loss, correct predictions, images, last lr, iteration)``."""
    import torch

    model.train()
    loss_sum, correct, seen, lr = 0.0, 0, 0, None
    for xb, yb in batches:
        lr = schedule(iteration)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(xb)
        loss = torch.nn.functional.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        iteration += 1
        loss_sum += loss.item() * len(yb)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(yb)
    return loss_sum, correct, seen, lr, iteration


def main(argv=None) -> int:
    """``python -m npse.torch_reference train ...``; returns the exit status."""
    from .commands import options
    args, status = options.parse(build_parser(), argv)
    if args is None:
        return status
    if args.command == "evaluate":
        return options.guarded(_run_evaluate, args, PROG)
    if args.command != "train":
        options.fail(PROG, f"a command is required: train or evaluate (see '{PROG} --help')")
        return 2
    return options.guarded(_run_train, args, PROG)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("PyTorch is not installed (pip install torch); npse itself never "
                          "needs it, only this reference script does") from None
    return torch


def _run_train(args) -> int:
    from .commands.options import train_config
    if args.resume or args.overwrite or args.backend not in (None, "numpy"):
        raise ValueError("--resume, --overwrite and --backend are options of npse train only")
    torch = _import_torch()
    out_given = args.out
    config = train_config(args)
    config.out = out_given
    if args.threads:
        torch.set_num_threads(args.threads)
    record = train_reference(config, device=args.device)
    print(f"final test accuracy {100 * record['test_acc']:.2f}%")
    return 0


# ----------------------------------------------------------------------------- evaluation
# ``python -m npse.torch_reference evaluate CHECKPOINT``: the same weights, the same test images
# and the same normalisation through both implementations, batch by batch. Agreeing accuracies
# alone could hide errors that cancel; so the predictions are compared image by image, and the
# logits by their largest difference (float32 rounding: about 1e-5 of their scale).

def evaluate_reference(path, data_dir=None, download=True, batch_size=250, device="cpu",
                       threads=None) -> dict:
    """Score the npse checkpoint at ``path`` with npse and with its PyTorch twin.

    Returns ``{"npse": {...}, "torch": {...}, "images", "differing", "max_logit_diff",
    "max_logit"}``; each side's dict holds ``loss``, ``acc`` and ``per_class`` (a list, NaN
    where a class has no image), as ``npse evaluate`` reports them. npse runs on NumPy with
    ``threads`` threads (default: the usable cores, as ``npse evaluate``).
    """
    from pathlib import Path

    import numpy
    torch = _import_torch()

    from . import backend
    from .commands.evaluate import data_dir_for
    from .config import TrainConfig, load_dataset
    from .data import iterate_batches
    from .fast import FAST
    from .fast.threads import usable_cores, using
    from .nn import no_grad
    from .rundir import CHECKPOINT, load_model_for_inference
    from .train import per_class_accuracy

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    model, meta = load_model_for_inference(path, "numpy")
    model.use_policy(FAST)                               # as npse train and evaluate run it
    twin = load_npse_state(build_torch_model(model.config), model.state_dict()).to(device)
    model.eval()
    twin.eval()
    config = TrainConfig.from_dict(meta["config"])
    config.data_dir = data_dir_for(data_dir, meta.get("data_dir"))
    config.download = download
    logits = {"npse": [], "torch": []}
    with backend.using("numpy"), using(threads or usable_cores()), no_grad(), torch.no_grad():
        data = load_dataset(config)
        x, y = data.x_test, numpy.asarray(data.y_test, dtype=numpy.int64)
        for xb, _ in iterate_batches(x, y, batch_size, meta["mean"], meta["std"], shuffle=False,
                                     augment=False, dtype=model.dtype):
            logits["npse"].append(numpy.asarray(model(xb), dtype=numpy.float64))
            out = twin(torch.from_numpy(numpy.ascontiguousarray(xb)).to(device))
            logits["torch"].append(out.detach().cpu().double().numpy())
    result = {"images": len(y)}
    for side, parts in logits.items():
        z = numpy.concatenate(parts)
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True))
        pred = z.argmax(axis=1)
        per_class = per_class_accuracy(pred, y, z.shape[1])
        result[side] = {"loss": float(-log_p[numpy.arange(len(y)), y].mean()),
                        "acc": float((pred == y).mean()), "per_class": per_class.tolist(),
                        "logits": z, "pred": pred}
    a, b = result["npse"], result["torch"]
    result["differing"] = int((a["pred"] != b["pred"]).sum())
    result["max_logit_diff"] = float(numpy.abs(a["logits"] - b["logits"]).max())
    result["max_logit"] = float(numpy.abs(a["logits"]).max())
    result["classes"] = list(meta["classes"])
    result["epoch"], result["model"] = meta["epoch"], config.model
    for side in ("npse", "torch"):
        del result[side]["logits"], result[side]["pred"]
    return result


def _run_evaluate(args) -> int:
    torch = _import_torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = evaluate_reference(args.checkpoint, args.data_dir, args.download, args.batch_size,
                           args.device, args.threads)
    print(f"{args.checkpoint}: {r['model']}, epoch {r['epoch']}, {r['images']} test images; "
          f"PyTorch {torch.__version__} on {args.device}")
    for side, name in (("npse", "npse"), ("torch", "PyTorch twin")):
        print(f"{name:<13} test loss {r[side]['loss']:.4f}  test accuracy "
              f"{100 * r[side]['acc']:.2f}%")
    print(f"predictions differ on {r['differing']} of {r['images']} images; largest logit "
          f"difference {r['max_logit_diff']:.2e} (largest logit {r['max_logit']:.2f})")
    width = max(len(c) for c in r["classes"])
    for i, name in enumerate(r["classes"]):
        a, b = r["npse"]["per_class"][i], r["torch"]["per_class"][i]
        shown = "   n/a" if a != a else f"{100 * a:6.2f}% {100 * b:6.2f}%"
        print(f"  {name:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
