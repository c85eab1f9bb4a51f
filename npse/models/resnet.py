"""CIFAR ResNets (He et al. 2016, section 4.2) and their SE variants (Hu et al., TPAMI, section 6).

Chapter: docs/10-se-resnet.md.

The network: a 3x3 conv (no bias) to widths[0] channels, BN, ReLU; three stages of n blocks with
widths[0], widths[1], widths[2] channels (times the block's expansion), stride 2 in the first block
of stages 2 and 3; global average pooling; a Linear layer to the classes.

In a block with branch F and shortcut S, the SE block (``se=``) sits at one of the places the
paper's integration study compares:

    None          relu(F(x) + S(x))
    "standard"    relu(SE(F(x)) + S(x))
    "pre"         relu(F(SE(x)) + S(x))
    "post"        SE(relu(F(x) + S(x)))
    "identity"    relu(F(x) + SE(S(x)))
    "3x3"         SE inside F, after the 3x3 conv's BN and ReLU (Bottleneck: the middle conv, where
                  the channels are fewest; BasicBlock: after the first 3x3 conv, which saves
                  nothing over "standard", since both positions have the same width)
    "nosqueeze"   the standard position, without pooling: fc1 and fc2 become 1x1 convolutions and
                  the gate is computed at every position
"""
from __future__ import annotations

import operator

import numpy

from .. import backend
from ..fast import REFERENCE, ExecutionPolicy, attach, elementwise
from ..nn import (GATES, SQUEEZES, BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear, Module, ReLU,
                  SEBlock, SEBlockNoSqueeze, Sequential, ShortcutA, init)
from ..fast.layout import to_channels_last
from ..nn.module import check_array

SE_VARIANTS = (None, "standard", "pre", "post", "identity", "3x3", "nosqueeze")
BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B")


class _Block(Module):
    """What BasicBlock and Bottleneck share: the shortcut, the SE placement, forward and backward.

    Subclasses build their branch modules and list their names, in order, in ``self.branch``.
    """

    expansion = 1

    def _finish(self, in_planes, planes, stride, shortcut, se, se_options, rng):
        out = planes * self.expansion
        self.se_variant = se
        if se is not None:
            channels = {"pre": in_planes, "3x3": planes}.get(se, out)
            if se == "nosqueeze":
                opts = {k: v for k, v in se_options.items() if k != "squeeze"}
                self.se = SEBlockNoSqueeze(channels, dtype=self.dtype, rng=rng, **opts)
            else:
                self.se = SEBlock(channels, dtype=self.dtype, rng=rng, **se_options)
            if se == "3x3":   # inside the branch, right after the 3x3 conv's BN and ReLU
                at = self.branch.index(self._after_3x3) + 1
                self.branch = self.branch[:at] + ["se"] + self.branch[at:]
        if stride != 1 or in_planes != out:
            if shortcut == "A":
                self.shortcut = ShortcutA(in_planes, out, stride, dtype=self.dtype)
            else:
                self.shortcut = Sequential(Conv2d(in_planes, out, 1, stride, bias=False, dtype=self.dtype, rng=rng),
                                           BatchNorm2d(out, dtype=self.dtype), dtype=self.dtype)
        else:
            self.shortcut = None
        self.relu_out = ReLU(dtype=self.dtype)
        self.in_planes, self.out_planes = in_planes, out

    def forward(self, x):
        self._check_input(x, 4, self.in_planes)
        v = self.se_variant
        f = self.se(x) if v == "pre" else x
        for name in self.branch:
            f = getattr(self, name)(f)
        if v in ("standard", "nosqueeze"):
            f = self.se(f)
        s = x if self.shortcut is None else self.shortcut(x)
        if v == "identity":
            s = self.se(s)
        out = self.relu_out(self.residual_sum(f, s))
        return self.se(out) if v == "post" else out

    def backward(self, dy):
        v = self.se_variant
        if v == "post":
            dy = self.se.backward(dy)
        d = self.relu_out.backward(dy)          # d/d(f + s): the same array flows into both paths
        ds = self.se.backward(d) if v == "identity" else d
        dx = ds if self.shortcut is None else self.shortcut.backward(ds)
        df = self.se.backward(d) if v in ("standard", "nosqueeze") else d
        for name in reversed(self.branch):
            df = getattr(self, name).backward(df)
        if v == "pre":
            df = self.se.backward(df)
        return self.residual_sum(dx, df)

    # F(x) + S(x), and the sum of the two paths' gradients: a + b under the reference policy;
    # use_policy sets the faster formulation of npse.fast.elementwise (the same numbers)
    residual_sum = staticmethod(operator.add)


class BasicBlock(_Block):
    """Two 3x3 convs: F(x) = bn2(conv2(relu(bn1(conv1(x))))). (N, in, H, W) -> (N, planes, H/s, W/s)."""

    expansion = 1
    _after_3x3 = "relu1"

    def __init__(self, in_planes, planes, stride=1, shortcut="A", se=None, se_options=None,
                 dtype=None, rng=None):
        super().__init__(dtype=dtype)
        self.conv1 = Conv2d(in_planes, planes, 3, stride, 1, bias=False, dtype=self.dtype, rng=rng)
        self.bn1 = BatchNorm2d(planes, dtype=self.dtype)
        self.relu1 = ReLU(dtype=self.dtype)
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False, dtype=self.dtype, rng=rng)
        self.bn2 = BatchNorm2d(planes, dtype=self.dtype)
        self.branch = ["conv1", "bn1", "relu1", "conv2", "bn2"]
        self._finish(in_planes, planes, stride, shortcut, se, se_options or {}, rng)


class Bottleneck(_Block):
    """1x1 (reduce), 3x3 (stride), 1x1 (expand by 4):
    F(x) = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))). (N, in, H, W) -> (N, 4*planes, H/s, W/s)."""

    expansion = 4
    _after_3x3 = "relu2"

    def __init__(self, in_planes, planes, stride=1, shortcut="A", se=None, se_options=None,
                 dtype=None, rng=None):
        super().__init__(dtype=dtype)
        self.conv1 = Conv2d(in_planes, planes, 1, bias=False, dtype=self.dtype, rng=rng)
        self.bn1 = BatchNorm2d(planes, dtype=self.dtype)
        self.relu1 = ReLU(dtype=self.dtype)
        self.conv2 = Conv2d(planes, planes, 3, stride, 1, bias=False, dtype=self.dtype, rng=rng)
        self.bn2 = BatchNorm2d(planes, dtype=self.dtype)
        self.relu2 = ReLU(dtype=self.dtype)
        self.conv3 = Conv2d(planes, planes * 4, 1, bias=False, dtype=self.dtype, rng=rng)
        self.bn3 = BatchNorm2d(planes * 4, dtype=self.dtype)
        self.branch = ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3"]
        self._finish(in_planes, planes, stride, shortcut, se, se_options or {}, rng)


class CifarResNet(Module):
    """A CIFAR ResNet: (N, 3, 32, 32) normalised images -> (N, num_classes) logits.

    Build it with :func:`cifar_resnet` (or a factory such as ``se_resnet20()``); ``config`` holds
    the arguments, so ``from_config(model.config)`` rebuilds the same architecture.
    """

    def __init__(self, config, dtype=None):
        super().__init__(dtype=dtype)
        c = config
        block = BasicBlock if c["block"] == "basic" else Bottleneck
        n = (c["depth"] - 2) // (6 if c["block"] == "basic" else 9)
        rng = backend.rng(c["seed"])
        se_options = dict(reduction=c["se_reduction"], squeeze=c["se_squeeze"],
                          excitation=c["se_excitation"], bias=c["se_bias"])
        w0 = c["widths"][0]
        self.conv1 = Conv2d(3, w0, 3, 1, 1, bias=False, dtype=self.dtype, rng=rng)
        self.bn1 = BatchNorm2d(w0, dtype=self.dtype)
        self.relu = ReLU(dtype=self.dtype)
        in_planes = w0
        for stage, planes in enumerate(c["widths"], start=1):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 1 and i == 0) else 1
                se = c["se"] if stage in c["se_stages"] else None
                blocks.append(block(in_planes, planes, stride, c["shortcut"], se, se_options,
                                    dtype=self.dtype, rng=rng))
                in_planes = planes * block.expansion
            setattr(self, f"layer{stage}", Sequential(*blocks, dtype=self.dtype))
        self.pool = GlobalAvgPool2d(dtype=self.dtype)
        self.fc = Linear(in_planes, c["num_classes"], dtype=self.dtype, rng=rng)
        # torchvision's ResNet initialisation: Kaiming normal (fan_out) for every convolution;
        # BatchNorm starts at weight 1, bias 0; Linear layers keep PyTorch's default.
        for _, m in self.named_modules():
            if isinstance(m, Conv2d):
                m.weight.data = init.kaiming_normal(m.weight.shape, rng, self.dtype, mode="fan_out")
        self.config = dict(c)
        # Built, a model computes by the reference layers; how fast it runs is its caller's
        # choice (use_policy), made where it can be seen: npse train, npse bench, npse evaluate.
        self.use_policy(REFERENCE)

    def use_policy(self, policy: ExecutionPolicy):
        """Compute from now on as ``policy`` says (npse.fast; docs/B-speed.md): the memory
        format of the activations and the formulation of every layer. A model starts under
        :data:`npse.fast.REFERENCE`; the callers that want speed choose :data:`npse.fast.FAST`.
        The numbers are the same under every policy (tests/test_formulations.py), and the
        policy is not part of ``config`` or ``state_dict``. Returns the model."""
        if not isinstance(policy, ExecutionPolicy):
            raise TypeError(f"CifarResNet.use_policy: expected an npse.fast.ExecutionPolicy, got "
                            f"{type(policy).__name__}")
        object.__setattr__(self, "policy", policy)
        attach(self, policy)
        residual_sum = elementwise.add if policy.formulations else operator.add
        for _, m in self.named_modules():
            if isinstance(m, _Block):
                object.__setattr__(m, "residual_sum", residual_sum)
        return self

    def to(self, name):
        super().to(name)
        return self.use_policy(self.policy)      # fresh workspaces on the new backend

    def forward(self, x):
        self._check_input(x, 4, 3)
        if self.policy.stores_channels_last(backend.get_array_module(x)):
            x = to_channels_last(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x))

    def backward(self, dlogits, input_grad=True):
        """dlogits (N, classes) -> dL/dx (N, 3, H, W), accumulating every parameter's gradient.

        ``input_grad=False`` returns None and skips the first convolution's input gradient, which
        training never uses (PyTorch likewise computes none for an input that does not require one).
        """
        check_array(dlogits, "CifarResNet.backward", 2, self.dtype, self.config["num_classes"], what="dlogits")
        d = self.pool.backward(self.fc.backward(dlogits))
        d = self.layer1.backward(self.layer2.backward(self.layer3.backward(d)))
        return self.conv1.backward(self.bn1.backward(self.relu.backward(d)), input_grad=input_grad)

    def se_blocks(self):
        """[(dotted name, SE module)] in depth order: their ``.gate`` after a forward pass is what
        the paper's "role of excitation" analysis plots."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, (SEBlock, SEBlockNoSqueeze))]


def cifar_resnet(depth=20, num_classes=10, block="basic", shortcut="A", widths=(16, 32, 64),
                 se=None, se_reduction=16, se_squeeze="avg", se_excitation="sigmoid",
                 se_stages=(1, 2, 3), se_bias=True, dtype=None, seed=0) -> CifarResNet:
    """Build a CIFAR (SE-)ResNet; every argument is checked and a bad one named."""
    def fail(msg):
        raise ValueError(f"cifar_resnet: {msg}")

    if block not in BLOCKS:
        fail(f"block must be one of {BLOCKS}, got {block!r}")
    per_block = 6 if block == "basic" else 9
    if not isinstance(depth, int) or depth < per_block + 2 or (depth - 2) % per_block:
        fail(f"depth for block={block!r} must be {per_block}n+2 with n >= 1 "
             f"({'8, 14, 20, 32, 44, 56, 110' if block == 'basic' else '11, 29, 56, 164'}), got {depth!r}")
    if shortcut not in SHORTCUTS:
        fail(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    widths = tuple(widths)
    if len(widths) != 3 or any(not isinstance(w, int) or w < 1 for w in widths):
        fail(f"widths must be three positive ints, got {widths!r}")
    if shortcut == "A" and block == "basic" and any(b < a for a, b in zip(widths, widths[1:])):
        fail(f"shortcut 'A' pads channels with zeros, so widths must not decrease, got {widths!r}")
    if se == "none":
        se = None
    if se not in SE_VARIANTS:
        fail(f"se must be one of {SE_VARIANTS}, got {se!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        fail(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(se_reduction, int) or se_reduction < 1:
        fail(f"se_reduction must be a positive int, got {se_reduction!r}")
    if se_squeeze not in SQUEEZES:
        fail(f"se_squeeze must be one of {sorted(SQUEEZES)}, got {se_squeeze!r}")
    if se == "nosqueeze" and se_squeeze != "avg":
        fail(f"se='nosqueeze' has no squeeze, so se_squeeze must stay 'avg', got {se_squeeze!r}")
    if se_excitation not in GATES:
        fail(f"se_excitation must be one of {sorted(GATES)}, got {se_excitation!r}")
    se_stages = tuple(sorted(set(int(s) for s in se_stages)))
    if any(s not in (1, 2, 3) for s in se_stages):
        fail(f"se_stages must be a subset of (1, 2, 3), got {se_stages!r}")
    dtype = backend.check_float_dtype(backend.default_dtype() if dtype is None else dtype, "cifar_resnet")
    config = dict(depth=depth, num_classes=num_classes, block=block, shortcut=shortcut,
                  widths=list(widths), se=se, se_reduction=se_reduction, se_squeeze=se_squeeze,
                  se_excitation=se_excitation, se_stages=list(se_stages), se_bias=bool(se_bias),
                  dtype=str(numpy.dtype(dtype)), seed=int(seed))
    return CifarResNet(config, dtype=dtype)


def from_config(config) -> CifarResNet:
    """Rebuild a model from ``model.config`` (e.g. read back from a checkpoint)."""
    return cifar_resnet(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()})
