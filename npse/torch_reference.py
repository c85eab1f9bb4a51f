"""The same CIFAR (SE-)ResNet in PyTorch, for comparisons only (benchmarks and optional tests).

PyTorch is never a dependency of npse: this module imports it when called, and everything that
uses it skips or says so when it is absent.  Module and parameter names match npse's, so
``load_npse_state`` moves an npse model's weights into it (and ``state_dict`` back).
Supports the BasicBlock and Bottleneck networks with shortcuts A and B and the SE variants
None, "standard", "pre", "post" and "identity".
"""
from __future__ import annotations


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def build_torch_model(config):
    """A torch.nn.Module with the architecture of ``npse.models.from_config(config)``."""
    import torch
    from torch import nn

    dtype = getattr(torch, config["dtype"])
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
                    blocks.append(Block(cin, planes, stride, se, bottleneck))
                    cin = planes * (4 if bottleneck else 1)
                setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.fc = nn.Linear(cin, config["num_classes"])

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean((2, 3)))

    return Net().to(dtype)


def load_npse_state(torch_model, npse_state):
    """Copy an npse ``state_dict`` (NumPy arrays, same names) into the torch model."""
    import numpy
    import torch
    from .backend import to_host
    tensors = {k: torch.from_numpy(numpy.array(to_host(v))) for k, v in npse_state.items()}
    torch_model.load_state_dict(tensors, strict=True)
    return torch_model
